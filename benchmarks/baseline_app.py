"""The benchmark's baseline: a bare FastAPI endpoint doing what an OTP check must at least do,
one HMAC-based code check and one row update, on the same database as the service.

    AKKREDITIV_DATABASE_URL=... uvicorn --factory baseline_app:app --port 8101
"""

from __future__ import annotations

import hmac
import os

from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import create_engine, event, text

from devices.protocol.otp import hotp

SECRET = b"12345678901234567890"


class Check(BaseModel):
    client: int
    code: str


def app() -> FastAPI:
    url = os.environ["AKKREDITIV_DATABASE_URL"]
    engine = create_engine(url, pool_size=8, pool_pre_ping=True)
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Workers start together: one creates the table, the others wait and find it.
            connection.execute(text("SELECT pg_advisory_xact_lock(7)"))
        connection.execute(
            text(
                "CREATE TABLE IF NOT EXISTS bench_baseline (id INTEGER PRIMARY KEY, counter BIGINT)"
            )
        )
    if engine.dialect.name == "sqlite":
        # As the service sets SQLite up: WAL, and the same ``synchronous`` (each connection's).
        synchronous = os.environ.get("AKKREDITIV_SQLITE_SYNCHRONOUS", "full").upper()
        event.listen(
            engine,
            "connect",
            lambda dbapi, _record: dbapi.execute(f"PRAGMA synchronous = {synchronous}"),
        )
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    api = FastAPI()

    @api.post("/check")
    def check(body: Check) -> dict[str, bool]:
        with engine.begin() as connection:
            counter = connection.execute(
                text("SELECT counter FROM bench_baseline WHERE id = :id"), {"id": body.client}
            ).scalar()
            if counter is None:
                connection.execute(
                    text("INSERT INTO bench_baseline (id, counter) VALUES (:id, 0)"),
                    {"id": body.client},
                )
                counter = 0
            ok = hmac.compare_digest(hotp(SECRET, int(counter)), body.code)
            if ok:
                connection.execute(
                    text("UPDATE bench_baseline SET counter = counter + 1 WHERE id = :id"),
                    {"id": body.client},
                )
        return {"ok": ok}

    return api
