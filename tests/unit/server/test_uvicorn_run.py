"""The workers of ``akkreditiv serve --workers N`` answer without Nagle's algorithm: the
socket they share names its protocol, so asyncio sets TCP_NODELAY on every connection."""

from __future__ import annotations

import asyncio
import socket
import threading

from server.uvicorn_run import TcpConfig


def nodelay_of_accepted_connection(listening: socket.socket) -> int:
    """TCP_NODELAY of a connection accepted through asyncio on ``listening``, as a worker
    accepts it."""

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
    runner = threading.Thread(target=lambda: result.append(asyncio.run(accept_one())))
    runner.start()
    runner.join(timeout=30)
    assert result, "the connection was not accepted"
    return result[0]


def test_the_shared_socket_names_tcp_and_connections_get_nodelay() -> None:
    config = TcpConfig("server.app:app_from_environment", host="127.0.0.1", port=0, workers=2)
    listening = config.bind_socket()
    assert listening.proto == socket.IPPROTO_TCP
    assert listening.get_inheritable()
    listening.listen()
    assert nodelay_of_accepted_connection(listening) != 0
