"""Settings come from AKKREDITIV_* variables, with defaults relative to the current directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import Settings


def test_defaults_point_into_var_when_environment_is_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "KEK_FILE", "HOST", "PORT"):
        monkeypatch.delenv(f"AKKREDITIV_{name}", raising=False)

    settings = Settings()

    db = tmp_path.resolve() / "var" / "akkreditiv.db"
    assert settings.database_url == f"sqlite+pysqlite:///{db}"
    assert settings.kek_file == tmp_path / "var" / "kek.bin"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_environment_overrides_defaults_when_prefixed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AKKREDITIV_DATABASE_URL", "postgresql+psycopg://u@db/akk")
    monkeypatch.setenv("AKKREDITIV_KEK_FILE", "/etc/akk/kek.bin")
    monkeypatch.setenv("AKKREDITIV_PORT", "9000")

    settings = Settings()

    assert settings.database_url == "postgresql+psycopg://u@db/akk"
    assert settings.kek_file == Path("/etc/akk/kek.bin")
    assert settings.port == 9000
