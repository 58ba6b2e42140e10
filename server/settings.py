"""Service settings from ``AKKREDITIV_*`` environment variables; callers build ``Settings()``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_database_url() -> str:
    # Resolved when Settings() is built, so the embedded database follows the current directory.
    return f"sqlite+pysqlite:///{(Path.cwd() / 'var' / 'akkreditiv.db').resolve()}"


def _default_kek_file() -> Path:
    return Path.cwd() / "var" / "kek.bin"


class Settings(BaseSettings):
    """Everything the server and its storage need; no module-level instance exists."""

    model_config = SettingsConfigDict(env_prefix="AKKREDITIV_", extra="ignore")

    database_url: str = Field(default_factory=_default_database_url)
    kek_file: Path = Field(default_factory=_default_kek_file)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    database_pool_size: int = Field(default=5, ge=1)
    database_echo: bool = False
