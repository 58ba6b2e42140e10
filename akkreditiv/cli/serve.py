"""``akkreditiv serve``: run the service (uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            help="Worker processes. They share nothing but the database (PostgreSQL, or SQLite "
            "writes queued in turn), and each keeps one CPU busy at most: on a machine that "
            "runs only the service, use one per CPU.",
            min=1,
        ),
    ] = 1,
) -> None:
    """Run the akkreditiv service. The database is an embedded SQLite file unless
    AKKREDITIV_DATABASE_URL names PostgreSQL (postgresql+psycopg://...). Behind a reverse
    proxy that ends TLS, set AKKREDITIV_EXTERNAL_ORIGIN (where people reach the service) and
    AKKREDITIV_TRUSTED_PROXIES (whose X-Forwarded-For is believed)."""
    from server.uvicorn_run import run

    status = run("server.app:app_from_environment", host=host, port=port, workers=workers)
    if status:
        raise typer.Exit(status)
