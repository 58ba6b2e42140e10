"""Request bodies are bounded before they are read whole: a request whose Content-Length is over
the limit is refused (413) without reading a byte of it, and the body of one without (chunked)
is counted as the app reads it, which stops at the limit. A plain ASGI middleware, as
``SecurityHeaders`` is."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.domain.errors import TooLarge


class RequestTooLarge(TooLarge):
    """A request body over the service's limit for its route."""

    code = "request-too-large"
    title = "Request too large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"request body over {limit} bytes",
            detail=f"the request body may be at most {limit} bytes",
        )
        self.limit = limit


class _Over(Exception):
    """Raised into the app by ``receive`` once the body has passed the limit."""


Refusal = Callable[[Request, RequestTooLarge], Response]


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses it
    return None


async def _nothing() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class BodyLimit:
    """Answers 413 (``refuse`` makes the answer) to a body over ``limit`` bytes, or over the
    larger allowance ``larger`` names for a path (a route that legitimately takes more).

    A body that passes the limit while the app reads it ends the app's reading with an error
    raised from ``receive``; whatever the app then answers (a parse error, a 500) is dropped
    and the 413 sent in its place. The ASGI server holds only what it has buffered (uvicorn:
    64 KiB, then it stops reading the socket) and discards the rest of the body once the
    answer is sent."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        refuse: Refusal,
        larger: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.refuse = refuse
        self.larger = MappingProxyType(dict(larger or {}))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.limit)
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(scope, send, limit)
            return
        received = 0
        over = False
        started = False

        async def counted() -> Message:
            nonlocal received, over
            if over:
                raise _Over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise _Over
            return message

        async def answering(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the app's answer to a body it could not read: the 413 goes instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, answering)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await self._refuse(scope, send, limit)

    async def _refuse(self, scope: Scope, send: Send, limit: int) -> None:
        response = self.refuse(Request(scope), RequestTooLarge(limit))
        await response(scope, _nothing, send)
