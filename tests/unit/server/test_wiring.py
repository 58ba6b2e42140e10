"""The composition root: every database setting reaches the engine, every key is loaded once
when the app is built, and the FIDO policy comes from the settings."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from server.app import create_app
from server.services.errors import KeyMaterialRejected
from server.settings import Settings
from server.storage.engine import migrate
from server.wiring import build_services, engine_for
from tests.unit.server.conftest import CHEAP_PASSWORD_HASHING, SQLITE_ONLY


def _settings(database_url: str, folder: Path, **extra: object) -> Settings:
    return Settings(
        database_url=database_url,
        kek_file=folder / "keys" / "kek.bin",
        pseudonym_key_file=folder / "keys" / "pseudonym.key",
        signing_key_file=folder / "keys" / "signing.pem",
        api_keys_file=folder / "api-keys.json",
        **CHEAP_PASSWORD_HASHING,
        **extra,  # type: ignore[arg-type]
    )


def test_the_database_settings_reach_the_engine(database_url: str, tmp_path: Path) -> None:
    settings = _settings(
        database_url,
        tmp_path,
        database_pool_size=3,
        sqlite_busy_timeout_ms=1234,
        sqlite_synchronous="normal",
        database_echo=True,
    )
    engine = create_app(settings).state.services.engine
    try:
        assert engine.echo is True
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 1234
                assert connection.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
            else:
                assert isinstance(engine.pool, QueuePool)
                assert engine.pool.size() == 3
    finally:
        engine.dispose()


@SQLITE_ONLY
def test_every_commit_is_synced_to_disk_unless_the_settings_say_otherwise(
    database_url: str, tmp_path: Path
) -> None:
    engine = engine_for(_settings(database_url, tmp_path), server=True)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    finally:
        engine.dispose()


@SQLITE_ONLY
def test_the_checkpointer_signs_while_a_writer_holds_the_database(
    database_url: str, tmp_path: Path
) -> None:
    """The checkpointer only reads the chain; in a server under load a writer nearly always
    holds SQLite's queue, so its reads must not wait for it (they did, an entry at a time)."""
    settings = _settings(
        database_url,
        tmp_path,
        sqlite_busy_timeout_ms=300,
        audit_checkpoint_dir=tmp_path / "checkpoints",
        audit_checkpoint_key_file=tmp_path / "keys" / "checkpoint-key.pem",
    )
    engine = engine_for(settings, server=True)
    migrate(engine)
    services = build_services(settings, engine)
    try:
        for n in range(30):
            with services.sessions.begin() as session:
                services.audit_hook(session, "test")("tick", {"n": n})
        with services.sessions.begin() as writer:  # holds the queue until the block ends
            services.audit_hook(writer, "test")("tick", {"n": 30})
            checkpoint = services.audit_checkpoints.checkpoint_if_due(force=True)
        assert checkpoint is not None
        assert checkpoint.entries == 30  # the committed head, not the entry still being written
    finally:
        engine.dispose()


@SQLITE_ONLY
def test_the_app_uses_the_engine_of_its_services(database_url: str, tmp_path: Path) -> None:
    app = create_app(_settings(database_url, tmp_path))
    services = app.state.services
    assert app.state.engine is services.engine
    assert services.sessions.kw["bind"] is services.engine
    services.engine.dispose()


@SQLITE_ONLY
def test_keys_are_made_in_their_folder_once_at_start(database_url: str, tmp_path: Path) -> None:
    settings = _settings(database_url, tmp_path)
    first = build_services(settings, engine_for(settings))
    files = sorted(path.name for path in (tmp_path / "keys").iterdir())
    assert files == sorted(
        [
            "kek.bin",
            "pseudonym.key",
            "signing.pem",
            "id-token-rsa.pem",
            "keycard-pepper.bin",
            "piv-ca-key.pem",
            "piv-ca.pem",
            "audit-checkpoint-key.pem",
        ]
    )
    assert (tmp_path / "keys" / "audit-checkpoint-key.pem").stat().st_mode & 0o777 == 0o600
    again = build_services(settings, engine_for(settings))
    assert again.signer.jwks() == first.signer.jwks()
    assert again.rsa_signer.jwk() == first.rsa_signer.jwk()
    assert again.audit_checkpoints.key.jwk() == first.audit_checkpoints.key.jwk()
    assert again.piv_ca.certificate_pem == first.piv_ca.certificate_pem
    first.engine.dispose()
    again.engine.dispose()


@SQLITE_ONLY
def test_a_missing_key_stops_the_app_when_keys_are_not_made(
    database_url: str, tmp_path: Path
) -> None:
    with pytest.raises(KeyMaterialRejected):
        create_app(_settings(database_url, tmp_path, create_keys=False))


def test_the_fido_policy_comes_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AKKREDITIV_FIDO_TRUSTED_ROOTS", f"{tmp_path / 'a.pem'}:{tmp_path / 'b.pem'}"
    )
    monkeypatch.setenv("AKKREDITIV_FIDO_ALLOWED_AAGUIDS", f"{uuid.UUID(int=1)}, {uuid.UUID(int=2)}")
    monkeypatch.setenv("AKKREDITIV_FIDO_ALLOW_UNATTESTED", "true")
    settings = _settings(f"sqlite+pysqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    policy = build_services(settings, engine_for(settings)).fido_policy
    assert policy.root_files == (tmp_path / "a.pem", tmp_path / "b.pem")
    assert policy.allowed_aaguids == frozenset({uuid.UUID(int=1), uuid.UUID(int=2)})
    assert policy.allow_unattested is True
