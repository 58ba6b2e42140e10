"""The server's composition root: built once from ``Settings`` when the app (or a command)
starts, it holds the engine, every key and policy, and makes each request's services."""

from __future__ import annotations

import datetime as dt
import functools
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from server.services.access import ApiKeys, Caller
from server.services.audit import AuditLog, AuditPartitions
from server.services.audit_checkpointer import Checkpointer, CheckpointPolicy
from server.services.audit_checkpoints import CheckpointFile, CheckpointKey
from server.services.authentication import AuthenticationService
from server.services.credentials import CredentialService
from server.services.desk_logins import DeskLogins
from server.services.errors import KeyMaterialRejected
from server.services.factors import PasswordCheck
from server.services.fido import FidoService
from server.services.fido_login import AssertionVerdict, verdict_beforehand
from server.services.identities import IdentityService
from server.services.identity_operations import IdentityOperations
from server.services.keycard.pepper import KeyCardSecrets
from server.services.keycard.service import KeyCardService
from server.services.login.ending import LoginEnding
from server.services.migration.flow import MigrationFlows
from server.services.migration.legacy_proof import LegacyPolicy, closing_time
from server.services.migration.login import LegacyLoginService
from server.services.migration.store import LegacyStore
from server.services.migration_operations import MigrationOperations
from server.services.passwords import Passwords, argon2id_parameters
from server.services.piv.ca import ServiceCa
from server.services.piv.enrolment import PivEnrolment
from server.services.piv.login import PivLogin
from server.services.piv.service import PivService
from server.services.proofing_approvals import ProofingApprovals
from server.services.pseudonyms import Pseudonyms
from server.services.secretbox import SecretBox
from server.services.shared_keys import check_shared_keys
from server.services.sweep import BackgroundSweep, Sweep, SweepPolicy
from server.services.tokens_jwt import AssertionSigner, RsaSigner, SigningKey
from server.settings import Settings
from server.storage.engine import create_engine_for, read_session_factory, session_factory
from server.storage.proofing_repositories import CustomerRepository

AuditHook = Callable[[str, dict[str, Any]], None]
_SUBJECT_KEYS = ("identity", "identity_id", "credential", "credential_id", "transaction")


@dataclass(frozen=True)
class FidoPolicy:
    """Which security keys may be registered: attestation roots (PEM files), optionally only
    some models (AAGUIDs), and whether keys without a verifiable attestation are accepted."""

    root_files: tuple[Path, ...] = ()
    allowed_aaguids: frozenset[uuid.UUID] | None = None
    allow_unattested: bool = False

    def trusted_roots(self) -> list[x509.Certificate]:
        """The roots' certificates. The files are read on each call, so a root an operator
        adds to a file counts at once; a file is parsed again only when it changed."""
        return _roots_of(self.root_files, "FIDO trusted roots")


@dataclass(frozen=True)
class PivAttestationPolicy:
    """Which smartcards may be enrolled: the card vendors' PIV attestation roots (PEM files),
    read as the FIDO policy reads its roots."""

    root_files: tuple[Path, ...] = ()

    def trusted_roots(self) -> list[x509.Certificate]:
        return _roots_of(self.root_files, "PIV attestation roots")


def _roots_of(files: tuple[Path, ...], what: str) -> list[x509.Certificate]:
    roots: list[x509.Certificate] = []
    for path in files:
        try:
            found = os.stat(path)
            roots.extend(_roots_in(str(path), found.st_ino, found.st_mtime_ns, found.st_size))
        except (OSError, ValueError) as exc:
            raise KeyMaterialRejected(f"{what}: {path}: {exc}") from None
    return roots


@functools.lru_cache(maxsize=32)
def _roots_in(path: str, inode: int, mtime_ns: int, size: int) -> tuple[x509.Certificate, ...]:
    # Keyed by what changes when the file is replaced, rewritten or appended to.
    return tuple(x509.load_pem_x509_certificates(Path(path).read_bytes()))


@dataclass
class Services:
    """Everything a request's services are made from, built once (``build_services``), and the
    factories that make them for one database session."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    # Sessions that only read and never queue for the writer (``read_session_factory``).
    read_sessions: sessionmaker[Session]
    secrets: SecretBox
    passwords: Passwords
    pseudonyms: Pseudonyms
    signer: AssertionSigner
    # RS256 ID tokens, for relying parties registered for them (``providers add --id-token-alg``).
    rsa_signer: RsaSigner
    password_decoy: str
    api_keys: ApiKeys
    keycard_secrets: KeyCardSecrets
    piv_ca: ServiceCa
    fido_policy: FidoPolicy
    audit_checkpoints: Checkpointer
    # Over how many hash chains the audit log's appends spread (AKKREDITIV_AUDIT_PARTITIONS).
    audit_partitions: AuditPartitions = field(default_factory=AuditPartitions)
    clock: Callable[[], float] = field(default=time.time)
    piv_attestation: PivAttestationPolicy = field(default_factory=PivAttestationPolicy)
    # The service's own sweep of what expired (None when AKKREDITIV_SWEEP_EVERY_S is 0).
    background_sweep: BackgroundSweep | None = None

    def check_shared_keys(self) -> None:
        """Refuse to serve with keys other than those the database was first served with
        (``shared_keys``): several processes, on one machine or several, hold one set."""
        check_shared_keys(
            self.sessions,
            {
                "kek": self.secrets.key_id.hex(),
                "pseudonym": self.pseudonyms.fingerprint(),
                "signing": self.signer.key_id,
                "id_token_rsa": self.rsa_signer.key_id,
                "keycard_pepper": self.keycard_secrets.fingerprint(),
                "piv_ca": self.piv_ca.key_id.hex(),
                "audit_checkpoint": self.audit_checkpoints.key.key_id,
            },
            dt.datetime.fromtimestamp(self.clock(), dt.UTC),
        )

    def published_keys(self) -> dict[str, list[dict[str, str]]]:
        """The JWKS: the ES256 keys of assertions and ID tokens, then the RS256 key."""
        keys = self.signer.jwks()["keys"]
        return {"keys": [*keys, self.rsa_signer.jwk()]}

    @property
    def web_csrf_key(self) -> bytes:
        """The key of the pages' CSRF tokens (an HMAC of the browser's cookie token)."""
        return self.keycard_secrets.derive("web-csrf")

    # --- per-session factories ------------------------------------------------------------

    def audit_hook(self, session: Session, actor: str) -> AuditHook:
        """Services report security events through this: each becomes an entry of the hash-
        chained audit log, in the session's own transaction (so an event and the change it
        records are committed together or not at all)."""
        log = AuditLog(session, self.clock, self.audit_partitions)

        def record(event: str, details: dict[str, Any]) -> None:
            subject = next((str(details[k]) for k in _SUBJECT_KEYS if details.get(k)), "-")
            entry = log.append(event, actor=actor, subject=subject, details=details)
            self.audit_checkpoints.noticed(entry.chain, entry.seq)

        return record

    def credentials(self, session: Session, audit: AuditHook | None = None) -> CredentialService:
        """The credential service of one session, reporting to ``audit``."""
        return CredentialService(
            session,
            self.secrets,
            self.passwords,
            clock=self.clock,
            **({} if audit is None else {"audit": audit}),
        )

    def identities(self, session: Session, actor: str) -> IdentityService:
        credentials = self.credentials(session, self.audit_hook(session, actor))
        return IdentityService(
            session,
            self.pseudonyms,
            on_close=credentials.revoke_all,
            audit=self.audit_hook(session, actor),
        )

    def _assertions(self, session: Session, actor: str) -> dict[str, Any]:
        """What every login service that signs assertions is given."""
        settings = self.settings
        return {
            "signer": self.signer,
            "pseudonyms": self.pseudonyms,
            "issuer": settings.issuer,
            "transaction_lifetime": dt.timedelta(seconds=settings.transaction_lifetime_s),
            "assertion_lifetime": dt.timedelta(seconds=settings.assertion_lifetime_s),
            "audit": self.audit_hook(session, actor),
        }

    def authentication(self, session: Session, actor: str = "api") -> AuthenticationService:
        return AuthenticationService(
            session,
            **self._assertions(session, actor),
            clock=self._now,
            name_providers=frozenset(self.settings.name_providers),
        )

    def who_is(self, person_number: str) -> tuple[uuid.UUID | None, str]:
        """``AuthenticationService.who_is`` in a read session of its own: for the identify
        step, before its write transaction begins, so the look-up holds no lock."""
        with self.read_sessions() as session:
            return self.authentication(session).who_is(person_number)

    def password_check(
        self,
        transaction_id: uuid.UUID,
        submitted: dict[str, Any],
        *,
        source: str,
        binding: str | None = None,
    ) -> PasswordCheck:
        """The password check of a login step, its Argon2id verification already run in this
        thread outside any transaction (``PasswordCheck.beforehand``): called before the step's
        write transaction begins, so no request waits for the writer while it hashes."""
        check = PasswordCheck(
            self.secrets, self.passwords, self.clock, decoy_hash=self.password_decoy
        )

        def identity_of(session: Session) -> uuid.UUID | None:
            service = self.authentication(session)
            return service.factor_subject(transaction_id, source=source, binding=binding)

        return check.beforehand(self.read_sessions, identity_of, submitted)

    def login_ending(self, session: Session, actor: str = "web") -> LoginEnding:
        """Cancelling a login and reading one that ended (for the login pages)."""
        return LoginEnding(session, self._now, self.audit_hook(session, actor))

    def _now(self) -> dt.datetime:
        """The services' clock as a time (read at each call, so a test may set the clock)."""
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC)

    def fido(self, session: Session, actor: str = "api") -> FidoService:
        settings, policy = self.settings, self.fido_policy
        return FidoService(
            session,
            rp_id=settings.rp_id,
            origins=settings.rp_origins,
            trusted_roots=policy.trusted_roots(),
            decoy_key=self.keycard_secrets.derive("fido2-decoy"),
            allowed_aaguids=None if policy.allowed_aaguids is None else set(policy.allowed_aaguids),
            allow_unattested=policy.allow_unattested,
            clock=self.clock,
            audit=self.audit_hook(session, actor),
        )

    def fido_verdict(
        self,
        transaction_id: uuid.UUID,
        submitted: dict[str, Any],
        *,
        source: str,
        binding: str | None = None,
    ) -> AssertionVerdict | None:
        """A login step's security-key assertion verified now, in a read session of its own
        (``verdict_beforehand``): called before the step's write transaction begins, whose
        check (``FidoService.fido_check``) takes the verdict if it still holds."""

        def reader(read: Session) -> tuple[FidoService, uuid.UUID | None]:
            service = self.authentication(read)
            identity = service.factor_subject(transaction_id, source=source, binding=binding)
            return self.fido(read), identity

        return verdict_beforehand(self.read_sessions, reader, transaction_id, submitted)

    def keycards(self, session: Session, actor: str = "api") -> KeyCardService:
        audit = self.audit_hook(session, actor)
        return KeyCardService(
            session,
            self.secrets,
            self.credentials(session, audit),
            self.keycard_secrets,
            clock=self.clock,
            audit=audit,
        )

    def piv(self, session: Session, actor: str = "api") -> PivService:
        """The PIV service of one session; ``actor`` is who the audit log names."""
        audit = self.audit_hook(session, actor)
        enrolment = PivEnrolment(
            session,
            ca=self.piv_ca,
            credentials=self.credentials(session, audit),
            pseudonyms=self.pseudonyms,
            crl_url=self.settings.issuer.rstrip("/") + "/piv/crl",
            clock=self.clock,
            audit=audit,
            attestation_roots=self.piv_attestation.trusted_roots,
        )
        login = PivLogin(
            session,
            ca=self.piv_ca,
            clock=self.clock,
            audit=audit,
            provider_names=self.api_keys.display_name,
        )
        return PivService(session, ca=self.piv_ca, enrolment=enrolment, login=login)

    def legacy_policy(self) -> LegacyPolicy:
        settings = self.settings
        shutdown = settings.legacy_shutdown_date
        return LegacyPolicy(
            shutdown_at=closing_time(shutdown) if shutdown is not None else None,
            new_only_providers=frozenset(settings.legacy_new_only_providers),
        )

    def legacy_store(self, session: Session, actor: str) -> LegacyStore:
        """The legacy eID's store (the legacy login's and the migration flow's)."""
        return LegacyStore(
            session,
            self.secrets,
            self.clock,
            self.audit_hook(session, actor),
            decoy_key=self.keycard_secrets.derive("legacy-decoy"),
            policy=self.legacy_policy(),
        )

    def legacy_login(self, session: Session, actor: str) -> LegacyLoginService:
        return LegacyLoginService(
            session,
            self.legacy_store(session, actor),
            self.secrets,
            **self._assertions(session, actor),
        )

    def migration_flows(self, session: Session, actor: str) -> MigrationFlows:
        """The guided migration's flows (the API's and the pages')."""
        audit = self.audit_hook(session, actor)
        credentials = self.credentials(session, audit)
        identities = IdentityService(
            session, self.pseudonyms, audit=audit, on_close=credentials.revoke_all
        )
        return MigrationFlows(
            session,
            self.legacy_store(session, actor),
            identities,
            credentials,
            decoy_key=self.keycard_secrets.derive("migration-decoy"),
            clock=self.clock,
            audit=audit,
        )

    def identity_operations(self, session: Session, caller: Caller) -> IdentityOperations:
        """What ``caller`` (an API key, or an operator at the console) may do to identities,
        credentials and pending High proofings, audited with the caller as actor."""
        audit = self.audit_hook(session, caller.actor)
        credentials = self.credentials(session, audit)
        return IdentityOperations.build(
            session,
            caller,
            credentials,
            self.pseudonyms,
            audit,
            clock=self.clock,
            wait=dt.timedelta(minutes=self.settings.proofing_approval_minutes),
        )

    def desk_logins(self, session: Session, caller: Caller) -> DeskLogins:
        """The logins at ``caller``'s desk that make the person who completes one a customer
        of ``caller``'s organisation, audited with ``caller`` as actor."""
        audit = self.audit_hook(session, caller.actor)
        authentication = self.authentication(session, caller.actor)
        return DeskLogins(caller, authentication, CustomerRepository(session), audit)

    def migration_operations(
        self, session: Session, caller: Caller | None, actor: str, source: str
    ) -> MigrationOperations:
        """The migration flows as ``caller`` may drive them from ``source`` (the API's and the
        console's), a High proofing at an assisted start waiting for a second operator."""
        flows = self.migration_flows(session, actor)
        audit = self.audit_hook(session, actor)
        credentials = self.credentials(session, audit)
        identities = IdentityService(
            session, self.pseudonyms, audit=audit, on_close=credentials.revoke_all
        )
        approvals = ProofingApprovals(
            session,
            identities,
            audit,
            self.clock,
            dt.timedelta(minutes=self.settings.proofing_approval_minutes),
        )
        return MigrationOperations(flows, caller, source, approvals, CustomerRepository(session))


def sweep_for(settings: Settings, sessions: sessionmaker[Session], actor: str) -> Sweep:
    """The sweep of what expired, with the settings' grace, audited as ``actor``."""
    policy = SweepPolicy(grace=dt.timedelta(seconds=settings.sweep_grace_s))
    return Sweep(sessions, policy, actor=actor)


def key_folders(settings: Settings) -> set[Path]:
    """The folders of every file the service keeps its keys in."""
    files = (
        settings.kek_file,
        settings.pseudonym_key_file,
        settings.signing_key_file,
        settings.id_token_rsa_key_file,
        settings.keycard_pepper_file,
        settings.piv_ca_key_file,
        settings.piv_ca_cert_file,
        settings.api_keys_file,
        settings.audit_checkpoint_key_file,
    )
    return {Path(path).parent for path in files}


def engine_for(settings: Settings, *, server: bool = False) -> Engine:
    """The engine from every database setting. ``server``: SQLite transactions take the write
    lock up front and queue for it (nearly every request writes, the audit log at least)
    instead of failing when they upgrade, and a PostgreSQL lock is waited for only so long
    (a request then answers 503; a command waits as long as it takes)."""
    return create_engine_for(
        settings.database_url,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        pool_size=settings.database_pool_size,
        pool_overflow=settings.database_pool_overflow,
        pool_timeout_s=settings.database_pool_timeout_s,
        lock_timeout_ms=settings.database_lock_timeout_ms if server else None,
        echo=settings.database_echo,
        sqlite_immediate=server,
        sqlite_synchronous=settings.sqlite_synchronous,
    )


def build_services(settings: Settings, engine: Engine | None = None) -> Services:
    """Load every key (making the missing ones where ``create_keys``; processes starting at
    once end with one set, see ``secretbox._create_private_file``) and build the services.
    A missing, unsafe or corrupt key stops the service here, before it answers anyone."""
    create = settings.create_keys
    if create:
        for folder in key_folders(settings):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = engine if engine is not None else engine_for(settings, server=True)
    passwords = Passwords(
        argon2id_parameters(
            settings.password_hash_time_cost,
            settings.password_hash_memory_kib,
            settings.password_hash_parallelism,
        )
    )
    sessions = session_factory(engine)
    read_sessions = read_session_factory(engine)
    services = Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        read_sessions=read_sessions,
        secrets=SecretBox.from_file(settings.kek_file, create=create),
        passwords=passwords,
        password_decoy=PasswordCheck.make_decoy(passwords),
        pseudonyms=Pseudonyms.from_file(settings.pseudonym_key_file, create=create),
        signer=SigningKey.from_file(settings.signing_key_file, create=create).signer(),
        rsa_signer=RsaSigner.from_file(settings.id_token_rsa_key_file, create=create),
        api_keys=ApiKeys(settings.api_keys_file),
        keycard_secrets=KeyCardSecrets.from_file(settings.keycard_pepper_file, create=create),
        piv_ca=ServiceCa.from_files(
            settings.piv_ca_key_file, settings.piv_ca_cert_file, create=create
        ),
        fido_policy=FidoPolicy(
            root_files=tuple(settings.fido_trusted_roots),
            allowed_aaguids=(
                None
                if settings.fido_allowed_aaguids is None
                else frozenset(settings.fido_allowed_aaguids)
            ),
            allow_unattested=settings.fido_allow_unattested,
        ),
        piv_attestation=PivAttestationPolicy(root_files=tuple(settings.piv_attestation_roots)),
        audit_partitions=AuditPartitions.for_database(
            engine.dialect.name, settings.audit_partitions
        ),
        audit_checkpoints=Checkpointer(
            # It only reads the chain: under load, its reads must not queue for the writer.
            read_sessions,
            CheckpointKey.from_file(settings.audit_checkpoint_key_file, create=create),
            CheckpointFile(settings.audit_checkpoint_dir),
            CheckpointPolicy(
                every_entries=settings.audit_checkpoint_every_entries,
                every_s=settings.audit_checkpoint_every_s,
            ),
        ),
    )
    if settings.sweep_every_s:
        services.background_sweep = BackgroundSweep(
            sweep_for(settings, sessions, "service:sweep"), settings.sweep_every_s
        )
    return services
