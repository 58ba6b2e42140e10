"""Migration 0006 on SQLite and PostgreSQL: rows written before it, told apart by prefixes in
``service_provider``, get their ``kind``; an open FIDO2 registration keeps working (its state
moves into ``ceremony_state`` in python-fido2's own shape); it downgrades to the prefixes."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from alembic import command
from fido2.utils import websafe_decode
from sqlalchemy import Engine, text

from server.storage.engine import _alembic_config, migrate

AT = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
IDENTITY = uuid.UUID("11111111-2222-3333-4444-555555555555")


def _row(engine: Engine, provider: str, state: str, challenge: bytes | None) -> uuid.UUID:
    row_id = uuid.uuid4()
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO auth_transactions (id, service_provider, min_level, state,"
                " identity_id, factors, challenge, created_at, expires_at, version)"
                " VALUES (:id, :provider, 'low', :state, NULL, :factors, :challenge,"
                " :at, :at, 1)"
            ),
            {
                "id": row_id if engine.dialect.name == "postgresql" else row_id.hex,
                "provider": provider,
                "state": state,
                "factors": "[]",
                "challenge": challenge,
                "at": AT if engine.dialect.name == "postgresql" else AT.replace(tzinfo=None),
            },
        )
    return row_id


def _read(engine: Engine, row_id: uuid.UUID) -> dict[str, Any]:
    key = row_id if engine.dialect.name == "postgresql" else row_id.hex
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT kind, service_provider, state, challenge, ceremony_state"
                " FROM auth_transactions WHERE id = :id"
            ),
            {"id": key},
        ).one()
    return dict(row._mapping)


def test_rows_of_every_kind_get_theirs(empty_engine: Engine) -> None:
    migrate(empty_engine, "0005")
    challenge = bytes(range(32))
    login = _row(empty_engine, "https://sp.example", "identified", None)
    legacy = _row(empty_engine, "legacy-login:https://sp.example", "legacy-begun", None)
    fido = _row(empty_engine, f"fido-registration:{IDENTITY}", "fido-reg:preferred", challenge)
    piv = _row(empty_engine, f"piv-enrolment:{IDENTITY}", "piv-enrol", challenge)

    migrate(empty_engine, "0006")

    assert _read(empty_engine, login)["kind"] == "login"
    assert _read(empty_engine, login)["service_provider"] == "https://sp.example"
    assert (
        _read(empty_engine, legacy)["kind"],
        _read(empty_engine, legacy)["service_provider"],
    ) == (
        "legacy_login",
        "https://sp.example",
    )
    registration = _read(empty_engine, fido)
    assert (registration["kind"], registration["state"]) == ("fido_registration", "open")
    state = registration["ceremony_state"]
    if isinstance(state, str):  # SQLite's JSON text
        state = json.loads(state)
    assert websafe_decode(state["challenge"]) == challenge
    assert state["user_verification"] == "preferred"
    enrolment = _read(empty_engine, piv)
    assert (enrolment["kind"], enrolment["state"]) == ("piv_enrolment", "open")
    assert bytes(enrolment["challenge"]) == challenge


def test_it_downgrades_to_the_prefixes(empty_engine: Engine) -> None:
    migrate(empty_engine, "0005")
    legacy = _row(empty_engine, "legacy-login:https://sp.example", "legacy-begun", None)
    migrate(empty_engine, "0006")
    with empty_engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "0005")
    key = legacy if empty_engine.dialect.name == "postgresql" else legacy.hex
    with empty_engine.connect() as connection:
        provider = connection.execute(
            text("SELECT service_provider FROM auth_transactions WHERE id = :id"), {"id": key}
        ).scalar_one()
    assert provider == "legacy-login:https://sp.example"
