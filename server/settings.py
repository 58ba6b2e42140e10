"""Service settings from ``AKKREDITIV_*`` environment variables; callers build ``Settings()``."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, IPvAnyNetwork, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_database_url() -> str:
    # Resolved when Settings() is built, so the embedded database follows the current directory.
    return f"sqlite+pysqlite:///{(Path.cwd() / 'var' / 'akkreditiv.db').resolve()}"


def _default_kek_file() -> Path:
    return Path.cwd() / "var" / "kek.bin"


LOCAL_ORIGIN = "http://localhost:8000"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def web_origin(value: str) -> str:
    """``value`` as an origin, ``scheme://host[:port]`` in lower case without the scheme's
    default port; ``ValueError`` for anything else (a path, a query, credentials)."""
    parts = urlsplit(value.strip())
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r}: the port is not a number") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{value!r}: an origin is http(s)://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{value!r}: an origin has no path, query or credentials")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    shown = "" if port is None or port == _DEFAULT_PORTS[parts.scheme] else f":{port}"
    return f"{parts.scheme}://{host}{shown}"


def _host_of(origin: str | None) -> str:
    return (urlsplit(origin).hostname if origin else None) or "localhost"


class Settings(BaseSettings):
    """Everything the server and its storage need; no module-level instance exists."""

    model_config = SettingsConfigDict(env_prefix="AKKREDITIV_", extra="ignore")

    database_url: str = Field(default_factory=_default_database_url)
    kek_file: Path = Field(default_factory=_default_kek_file)
    # Keys the service makes on first start when the files are missing (mode 0600).
    pseudonym_key_file: Path = Field(default_factory=lambda: Path.cwd() / "var" / "pseudonym.key")
    signing_key_file: Path = Field(default_factory=lambda: Path.cwd() / "var" / "signing-key.pem")
    # The RSA key of ID tokens for relying parties registered for RS256 (OpenID Connect
    # Discovery asks every provider to offer it); beside the ES256 signing key by default.
    id_token_rsa_key_file: Path = Field(
        default_factory=lambda data: Path(data["signing_key_file"]).parent / "id-token-rsa.pem"
    )
    # The pepper of key-card code digests: outside the database, so a dump alone cannot be
    # brute-forced (10**6 codes per index); decoy answers use keys derived from it. Default:
    # beside the key-encryption key (var/keycard-pepper.bin).
    keycard_pepper_file: Path = Field(
        default_factory=lambda data: Path(data["kek_file"]).parent / "keycard-pepper.bin"
    )
    # The PIV smartcards' CA: its key (0600) and self-signed certificate, made on first use.
    # Default: beside the key-encryption key (var/piv-ca-key.pem, var/piv-ca.pem).
    piv_ca_key_file: Path = Field(
        default_factory=lambda data: Path(data["kek_file"]).parent / "piv-ca-key.pem"
    )
    piv_ca_cert_file: Path = Field(
        default_factory=lambda data: Path(data["kek_file"]).parent / "piv-ca.pem"
    )
    create_keys: bool = True
    # API keys of operators, supervisors and service providers (``akkreditiv keys add``).
    api_keys_file: Path = Field(default_factory=lambda: Path.cwd() / "var" / "api-keys.json")
    # Where people reach the service when a reverse proxy stands in front of it (scheme, host
    # and port only, e.g. "https://eid.example.dk"): the pages' own origin (a form from any
    # other is refused), their cookies Secure and named __Host- when it is https, and the
    # default of the issuer and of the FIDO2 relying party id and origins. Unset: each
    # request's own origin, as its Host header and scheme give it.
    external_origin: str | None = None
    # The reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed: addresses
    # or networks, comma-separated ("127.0.0.1,10.20.0.0/16"). Default none: a request's
    # client is the address it came from, whatever it sends (server.proxies).
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = Field(default_factory=list)
    issuer: str = Field(default_factory=lambda data: data.get("external_origin") or LOCAL_ORIGIN)
    assertion_lifetime_s: int = Field(default=300, ge=30, le=3600)
    # How long a login stays open (each "more time" adds as much again, ten times at most),
    # how long a browser session of the pages lasts without a request (never more than 12
    # hours in all), and how long before either ends a page warns and offers more time.
    # Shorter than the defaults only for tests and demonstrations.
    transaction_lifetime_s: int = Field(default=600, ge=5, le=3600)
    session_idle_s: int = Field(default=1200, ge=5, le=12 * 3600)
    timeout_warning_s: int = Field(default=120, ge=2, le=3600)
    # Where FIDO2 ceremonies happen: the relying party id and the origins allowed (by default
    # the external origin's host and the external origin).
    rp_id: str = Field(default_factory=lambda data: _host_of(data.get("external_origin")))
    rp_origins: list[str] = Field(
        default_factory=lambda data: [data.get("external_origin") or LOCAL_ORIGIN]
    )
    # Which security keys may be registered: PEM files of attestation roots (separated by
    # os.pathsep in AKKREDITIV_FIDO_TRUSTED_ROOTS; a root added to a file counts at once),
    # optionally only some models (comma-separated AAGUIDs; unset allows any), and whether a
    # key without a verifiable attestation (self or "none") is accepted.
    fido_trusted_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    fido_allowed_aaguids: Annotated[list[uuid.UUID] | None, NoDecode] = None
    fido_allow_unattested: bool = False
    # The legacy eID: legacy login ends at the start of legacy_shutdown_date (Danish time);
    # the providers listed in legacy_new_only_providers accept only the new eID. Failures are
    # throttled as the new eID's are (server.services.throttles); nothing locks a user id.
    legacy_shutdown_date: dt.date | None = None
    legacy_new_only_providers: list[str] = Field(default_factory=list)
    # The migration plan (``akkreditiv migration waves remind``, the weekly report): people
    # invited migration_reminder_after_days ago who have not started, and flows untouched for
    # migration_idle_reminder_days, are reminded, nobody twice within
    # migration_reminder_interval_days nor more than migration_max_reminders times; the report
    # counts a flow idle for migration_abandon_days as dropped at its last step.
    migration_reminder_after_days: int = Field(default=14, ge=1)
    migration_idle_reminder_days: int = Field(default=3, ge=1)
    migration_reminder_interval_days: int = Field(default=7, ge=1)
    migration_max_reminders: int = Field(default=3, ge=1, le=100)
    migration_abandon_days: int = Field(default=14, ge=1)
    # The largest request body the service reads (a route that takes more says so, as the
    # token batches do); a larger one is answered 413 before it is read whole.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # The sweep of what expired (``akkreditiv maintenance sweep``): the service sweeps every
    # sweep_every_s seconds (one process at a time; 0 leaves it to the command), and keeps a
    # login or ceremony sweep_grace_s after it expired, so its pages can still say so.
    sweep_every_s: int = Field(default=600, ge=0)
    sweep_grace_s: int = Field(default=24 * 3600, ge=0)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # How long a request waits for the database before it is answered 503 with Retry-After
    # (overload): for SQLite's write lock, for a connection from the pool (pool_size, and up
    # to pool_overflow more while busy), and for a lock in PostgreSQL (its lock_timeout).
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    # SQLite's ``synchronous`` (storage.engine.create_engine_for): "full" syncs every commit to
    # disk; "normal" only at checkpoints (a power loss may undo the last commits).
    sqlite_synchronous: Literal["full", "normal"] = "full"
    database_pool_size: int = Field(default=5, ge=1)
    database_pool_overflow: int = Field(default=10, ge=0)
    database_pool_timeout_s: float = Field(default=10.0, gt=0)
    database_lock_timeout_ms: int = Field(default=5000, ge=0)
    database_echo: bool = False
    # How people reach the eID support, shown on the help and accessibility pages and where a
    # login ends because the eID is suspended: a phone number and an address as written for
    # people (e.g. "+45 70 10 20 30", "support@example.dk"); either left empty is not shown
    # (the way through a citizen service centre always is).
    support_phone: str = Field(default="", max_length=40)
    support_email: str = Field(default="", max_length=120)
    # The Argon2id cost of password hashes: by default RFC 9106's second recommended option
    # (t=3 passes over 64 MiB with 4 lanes). Raise the memory where the hardware allows: each
    # hash records its own cost, so stored hashes still verify. Test suites lower it for speed.
    password_hash_time_cost: int = Field(default=3, ge=1)
    password_hash_memory_kib: int = Field(default=64 * 1024, ge=8)
    password_hash_parallelism: int = Field(default=4, ge=1)
    # Which smartcards may be enrolled: PEM files of card vendors' PIV attestation roots
    # (separated by os.pathsep in AKKREDITIV_PIV_ATTESTATION_ROOTS). A card key is certified
    # only with the card's attestation chaining to one of them; with none, no card enrols.
    piv_attestation_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # The audit chains' signed checkpoints, kept outside the database (``akkreditiv audit
    # verify`` checks the database against them): the service's own ES256 key (0600, made on
    # first start) and the folder of the checkpoint file, both beside the key-encryption key by
    # default. The heads are signed once audit_checkpoint_every_entries entries or
    # audit_checkpoint_every_s seconds have passed since the last checkpoint.
    audit_checkpoint_key_file: Path = Field(
        default_factory=lambda data: Path(data["kek_file"]).parent / "audit-checkpoint-key.pem"
    )
    audit_checkpoint_dir: Path = Field(
        default_factory=lambda data: Path(data["kek_file"]).parent / "audit-checkpoints"
    )
    audit_checkpoint_every_entries: int = Field(default=1000, ge=1)
    audit_checkpoint_every_s: int = Field(default=300, ge=1)
    # Over how many hash chains the audit log's appends spread (1 to 64), so that appends from
    # many requests and processes each lock a chain's end of their own instead of queueing for
    # one; the checkpoints bind every chain's head. Unset: 8 on PostgreSQL, 1 on SQLite (whose
    # write transaction holds the whole database anyway).
    audit_partitions: int | None = Field(default=None, ge=1, le=64)
    # The service providers (API key names) entitled to the person's name in the assertion;
    # every other provider gets the per-provider pseudonym and the level only.
    name_providers: list[str] = Field(default_factory=list)
    # How long a High proofing waits for the second operator's approval (the person is at the
    # desk meanwhile); after that the first operator records it again.
    proofing_approval_minutes: int = Field(default=30, ge=1, le=24 * 60)

    @field_validator("fido_trusted_roots", "piv_attestation_roots", mode="before")
    @classmethod
    def _path_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(os.pathsep) if part.strip()]
        return value

    @field_validator("external_origin")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else web_origin(value)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _network_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("fido_allowed_aaguids", mode="before")
    @classmethod
    def _aaguid_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            return parts or None
        return value
