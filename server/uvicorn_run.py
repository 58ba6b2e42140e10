"""Running an ASGI app under uvicorn the way ``akkreditiv serve`` does, for the service and for
the benchmark's baseline alike (``python -m server.uvicorn_run APP --port N --workers N``).

With several workers uvicorn binds the listening socket itself, as ``socket.socket(family)``,
whose ``proto`` is 0; asyncio sets ``TCP_NODELAY`` only on accepted sockets whose ``proto`` is
``IPPROTO_TCP``, so every worker's answers went out under Nagle's algorithm: the body waited
for the client's delayed ACK of the headers, 40 ms on Linux, on every request. One worker was
not affected (asyncio makes that socket itself). ``TcpConfig`` hands the workers the same
socket with its protocol named.

uvicorn's proxy headers are off: it would believe X-Forwarded-For from the addresses in the
environment's FORWARDED_ALLOW_IPS (127.0.0.1 and ::1 when unset). The service believes the
proxies of its own setting, ``AKKREDITIV_TRUSTED_PROXIES`` (``server.proxies``), and nobody
else.

uvicorn serves with httptools and uvloop where they are installed (they are dependencies of
the project): ``tests/unit/server/test_uvicorn_run.py`` checks that ``serve`` gets them.
"""

from __future__ import annotations

import argparse
import socket
import sys

import uvicorn
from uvicorn.supervisors import Multiprocess

STARTUP_FAILURE = 3


class TcpConfig(uvicorn.Config):
    def bind_socket(self) -> socket.socket:
        bound = super().bind_socket()
        if bound.family in (socket.AF_INET, socket.AF_INET6) and bound.proto == 0:
            tcp = socket.socket(bound.family, bound.type, socket.IPPROTO_TCP, fileno=bound.detach())
            tcp.set_inheritable(True)
            return tcp
        return bound


def run(
    app: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    factory: bool = True,
    app_dir: str | None = None,
) -> int:
    """Serve ``app`` (an import string) until stopped; the exit status."""
    if app_dir is not None:
        sys.path.insert(0, app_dir)
    config = TcpConfig(
        app, factory=factory, host=host, port=port, workers=workers, proxy_headers=False
    )
    server = uvicorn.Server(config)
    try:
        if workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
            return 0
        server.run()
    except KeyboardInterrupt:
        return 0
    return 0 if server.started else STARTUP_FAILURE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("app", help="module:attribute of an app factory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--app-dir", default=None)
    args = parser.parse_args(argv)
    return run(args.app, host=args.host, port=args.port, workers=args.workers, app_dir=args.app_dir)


if __name__ == "__main__":
    sys.exit(main())
