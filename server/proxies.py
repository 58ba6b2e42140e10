"""Who a request came from when reverse proxies stand in front of the service: the
X-Forwarded-For and X-Forwarded-Proto of the proxies in ``AKKREDITIV_TRUSTED_PROXIES`` are
believed, nobody else's, so the throttles and the audit log name the client a proxy saw."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_SCHEMES = {"http": {"http": "http", "https": "https"}, "websocket": {"http": "ws", "https": "wss"}}


def address_of(text: str) -> Address | None:
    """An X-Forwarded-For entry (or a peer) as an address, a port after it dropped and an
    IPv4-mapped IPv6 address read as IPv4; None when it is no address."""
    text = text.strip()
    if text.startswith("["):  # [2001:db8::1]:443
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:  # 192.0.2.1:443
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The addresses and networks of the proxies whose forwarded headers are believed."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)
        # The peer is nearly always the same proxy, and a client comes back: reading an
        # address and looking it up cost about 10 us each here, as much as all the rest.
        self._read = functools.lru_cache(maxsize=4096)(self._read_uncached)

    def _read_uncached(self, text: str) -> tuple[str | None, bool]:
        """``text`` as an address (None when it is none) and whether a trusted proxy has it."""
        address = address_of(text)
        if address is None:
            return None, False
        return str(address), any(address in network for network in self.networks)

    def is_proxy(self, peer: str) -> bool:
        """Whether the peer a request came from is a trusted proxy."""
        return self._read(peer)[1]

    def client(self, peer: str, forwarded_for: Iterable[str]) -> str:
        """The client behind ``peer``. A peer that is no trusted proxy is the client, whatever
        it sends. Behind a trusted one, X-Forwarded-For is read from the right, where each
        proxy appends the address it was reached from: the first address no trusted proxy
        has is the client. What is left of it was written by the client itself, and anyone
        can write anything there. Should a trusted proxy have written something that is no
        address, nothing past it is believed and that proxy counts as the client."""
        hop, trusted = self._read(peer)
        if hop is None or not trusted:
            return peer
        entries = [entry for value in forwarded_for for entry in value.split(",")]
        for entry in reversed(entries):
            address, trusted = self._read(entry.strip())
            if address is None:
                break
            hop = address
            if not trusted:
                break
        return hop

    def scheme(self, peer: str, forwarded_proto: Sequence[str], scheme: str) -> str:
        """The scheme the client used: a trusted peer's X-Forwarded-Proto when it says one
        thing, http or https, else ``scheme`` as the request came."""
        if not self.is_proxy(peer) or len(forwarded_proto) != 1:
            return scheme
        said = forwarded_proto[0].strip().lower()
        return said if said in ("http", "https") else scheme


class ForwardedBy:
    """Puts the client and scheme a trusted proxy forwarded into the request's scope (as
    ``request.client`` and ``request.url.scheme`` then read them). A plain ASGI middleware,
    as ``server.app.SecurityHeaders`` is."""

    def __init__(self, app: ASGIApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if scope["type"] not in _SCHEMES or not peer or not self.proxies.is_proxy(peer[0]):
            await self.app(scope, receive, send)
            return
        forwarded_for: list[str] = []
        forwarded_proto: list[str] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                forwarded_for.append(value.decode("latin-1"))
            elif name == b"x-forwarded-proto":
                forwarded_proto.append(value.decode("latin-1"))
        client = self.proxies.client(peer[0], forwarded_for)
        plain = "https" if scope["scheme"] in ("https", "wss") else "http"
        scheme = self.proxies.scheme(peer[0], forwarded_proto, plain)
        forwarded = {**scope, "client": (client, 0), "scheme": _SCHEMES[scope["type"]][scheme]}
        await self.app(forwarded, receive, send)
