"""The workers of ``akkreditiv serve --workers N`` answer without Nagle's algorithm: the
socket they share names its protocol, so asyncio sets TCP_NODELAY on every connection."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from server.uvicorn_run import TcpConfig


def nodelay_of_accepted_connection(
    listening: socket.socket, runner: Callable[[Coroutine[Any, Any, int]], int] = asyncio.run
) -> int:
    """TCP_NODELAY of a connection accepted on ``listening`` by an event loop (``runner``
    runs it: asyncio's by default), as a worker accepts it."""

    async def accept_one() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Protocol(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Protocol, sock=listening)
        port = listening.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            return await asyncio.wait_for(accepted, timeout=10)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    # In a thread of its own: the test's thread may have an event loop of another test set.
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(runner(accept_one())))
    thread.start()
    thread.join(timeout=30)
    assert result, "the connection was not accepted"
    return result[0]


def test_the_shared_socket_names_tcp_and_connections_get_nodelay() -> None:
    config = TcpConfig("server.app:app_from_environment", host="127.0.0.1", port=0, workers=2)
    listening = config.bind_socket()
    assert listening.proto == socket.IPPROTO_TCP
    assert listening.get_inheritable()
    listening.listen()
    assert nodelay_of_accepted_connection(listening) != 0


def test_serve_gets_the_c_http_parser_and_the_libuv_loop() -> None:
    # Dependencies of the project; without them uvicorn falls back to h11 and asyncio's loop
    # without a word, and every request costs more CPU (README, Benchmarks).
    import uvloop
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    config = TcpConfig("server.app:app_from_environment", host="127.0.0.1", port=0)
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol
    factory = config.get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_the_libuv_loop_sets_nodelay_even_on_a_socket_without_its_protocol() -> None:
    # The loop the workers run where uvloop is installed sets TCP_NODELAY on every TCP
    # connection itself; ``TcpConfig`` keeps asyncio's loop (the fallback) right too.
    import uvloop

    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # proto 0, as uvicorn's
    try:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert listening.proto == 0
        assert nodelay_of_accepted_connection(listening, runner=uvloop.run) != 0
    finally:
        listening.close()
