"""Password credentials: setting a password, changing it with the current one, and checking it
(the hashing and the policy are ``services.passwords``)."""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from server.domain.model import CredentialKind, CredentialState
from server.services.credentials.admission import AddedBy, record
from server.services.credentials.lifecycle import CredentialLifecycle
from server.services.credentials.sealing import secret_context
from server.services.errors import WrongPassword
from server.services.identities import AuditHook, no_audit
from server.services.passwords import Passwords
from server.services.secretbox import SecretBox
from server.storage.repositories import CredentialRepository
from server.storage.tables import Credential

# A password's ``last_used_window`` is the day (UTC, days since 1970) it was last checked
# right: a day, because the overview shows a date, and so the row is written at most once a day
# rather than at every login.
USE_DAY_S = 86_400


@dataclass(frozen=True)
class PasswordVerdict:
    """A password checked before the write transaction of a login step, outside any: against
    the credential ``credential_id``, whose sealed hash had ``fingerprint`` then (None: there
    was no password to check, and the decoy was verified instead)."""

    credential_id: uuid.UUID | None
    fingerprint: bytes
    right: bool

    def holds_for(self, credential: Credential) -> bool:
        """Whether the verdict is about ``credential`` as it is stored now (its password was
        not changed in between)."""
        return self.credential_id == credential.id and hmac.compare_digest(
            self.fingerprint, fingerprint(credential)
        )


def fingerprint(credential: Credential) -> bytes:
    """A digest of the credential's sealed password hash: a changed password changes it."""
    return hashlib.sha256(credential.secret_ciphertext or b"").digest()


class PasswordCredentials:
    """An identity's one password credential, in the caller's transaction; changes are
    audited. Its Argon2id PHC string is sealed in ``secret_ciphertext`` (see ``sealing``), with
    ``public_data = {"hash": "argon2id"}``; ``last_used_window`` is the day of its last use
    (``USE_DAY_S``)."""

    def __init__(
        self,
        session: Session,
        lifecycle: CredentialLifecycle,
        secrets: SecretBox,
        passwords: Passwords,
        *,
        audit: AuditHook = no_audit,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credentials = CredentialRepository(session)
        self._clock = clock
        self._lifecycle = lifecycle
        self._secrets = secrets
        self._passwords = passwords
        self._audit = audit

    def set_password(
        self,
        identity_id: uuid.UUID,
        password: str,
        *,
        added_by: AddedBy,
        current_password: str | None = None,
    ) -> Credential:
        """Set the identity's password, or change it (proving ``current_password``). The
        password (a new one is a new secret) is admitted at the level ``added_by`` gives."""
        identity = self._lifecycle.lock_identity(identity_id)
        self._lifecycle.require_active(identity)
        existing = self._password_credential(identity_id)
        if existing is not None:
            if current_password is None:
                raise WrongPassword("changing a password needs the current one")
            self._passwords.verify_password(self._password_hash(existing), current_password)
        self._passwords.check_policy(password, avoid=identity.name.split())
        hashed = self._passwords.hash_password(password).encode("utf-8")
        if existing is not None:
            existing.secret_ciphertext = self._secrets.seal(
                hashed, context=secret_context(existing.id)
            )
            existing.failures = 0
            level = record(existing, identity, added_by)
            self._lifecycle.update(existing)
            self._audit(
                "password.changed",
                {
                    "credential_id": str(existing.id),
                    "identity_id": str(identity_id),
                    "admitted_level": level.label,
                    "added_by": added_by.label,
                },
            )
            return existing
        self._lifecycle.check_limit(identity_id, CredentialKind.PASSWORD)
        credential_id = uuid.uuid4()
        credential = self._lifecycle.add(
            Credential(
                id=credential_id,
                identity_id=identity_id,
                kind=CredentialKind.PASSWORD,
                state=CredentialState.ACTIVATION_PENDING,
                secret_ciphertext=self._secrets.seal(hashed, context=secret_context(credential_id)),
                public_data={"hash": "argon2id"},
            )
        )
        self._lifecycle.activate_admitted(credential, identity, added_by, event="password.set")
        return credential

    def check_password(
        self,
        identity_id: uuid.UUID,
        password: str,
        *,
        record_use: bool = True,
        verdict: PasswordVerdict | None = None,
    ) -> Credential:
        """Return the active password credential if ``password`` matches; raise
        ``WrongPassword`` if not (also when the identity has no password). A match is recorded
        as the day the password was last used, unless ``record_use`` is false (a password
        typed only to change it). A ``verdict`` on this password reached before, outside the
        transaction, stands in for hashing again while the credential is unchanged."""
        credential = self._password_credential(identity_id)
        if credential is None:
            raise WrongPassword("the identity has no active password")
        if verdict is not None and verdict.holds_for(credential):
            if not verdict.right:
                raise WrongPassword("password does not match")
        else:
            self._passwords.verify_password(self._password_hash(credential), password)
        day = int(self._clock() // USE_DAY_S)
        if record_use and credential.last_used_window != day:
            credential.last_used_window = day
            self._lifecycle.update(credential)
        return credential

    def stored_password(self, identity_id: uuid.UUID) -> tuple[Credential, str] | None:
        """The identity's active password credential and its Argon2id hash, read only."""
        credential = self._password_credential(identity_id)
        if credential is None:
            return None
        return credential, self._password_hash(credential)

    def _password_credential(self, identity_id: uuid.UUID) -> Credential | None:
        for credential in self._credentials.for_identity(identity_id, {CredentialState.ACTIVE}):
            if credential.kind is CredentialKind.PASSWORD:
                return credential
        return None

    def _password_hash(self, credential: Credential) -> str:
        blob = credential.secret_ciphertext or b""
        return self._secrets.open(blob, context=secret_context(credential.id)).decode("utf-8")
