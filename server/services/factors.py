"""Factor checks for authentication transactions: each finds the identity's active credential
of its kind, runs the pure verifier on the stored verification state, and saves the state the
verifier returns (counters, drift, failures, replay window) whatever the outcome.

Stored convention for OTP credentials: the seed (or Yubico AES key and private id, see
``credentials.yubico_secrets``) is in ``secret_ciphertext`` sealed by the SecretBox with context
``credential:<id>``; ``public_data`` holds ``algorithm`` (totp, hotp, yubico), ``digits``,
``step``, ``hash``, and for Yubico OTP ``public_id`` (hex); ``counter``, ``drift``,
``last_used_window`` and ``failures`` are columns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import math
import secrets as secrets_module
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from devices.protocol.otp import HashAlg
from server.domain.errors import DomainError, FactorRejected, Unverified
from server.domain.model import AuthenticatorKind, CredentialKind, CredentialState
from server.services.credentials import CredentialService
from server.services.credentials.passwords import PasswordVerdict, fingerprint
from server.services.credentials.sealing import yubico_secrets
from server.services.errors import PasswordHashUnreadable, WrongPassword
from server.services.login.errors import TemporarilyBlocked
from server.services.login.record import FactorCheck, Proof
from server.services.passwords import Passwords
from server.services.secretbox import SecretBox
from server.services.throttles import block_length
from server.services.verifiers import (
    HotpState,
    TotpState,
    VerificationFailed,
    YubicoState,
    verify_hotp,
    verify_totp,
    verify_yubico,
)
from server.storage.repositories import CredentialRepository, FactorState

OTP_KINDS = {
    CredentialKind.CODE_DISPLAY: AuthenticatorKind.CODE_DISPLAY,
    CredentialKind.AUDIO_READER: AuthenticatorKind.AUDIO_READER,
    CredentialKind.OTP_TOKEN: AuthenticatorKind.OTP_TOKEN,
}


class NoSuchFactor(Unverified):
    code = "verification-failed"


def _verified(credential: FactorState, secret: bytes, code: str, at: float) -> FactorState:
    """The credential's state after ``code`` was accepted; raises ``VerificationFailed``, whose
    ``state`` holds what to save after a failure."""
    data = credential.public_data
    algorithm = data.get("algorithm", "totp")
    if algorithm == "totp":
        totp = verify_totp(
            TotpState(
                secret=secret,
                digits=int(data.get("digits", 6)),
                step=int(data.get("step", 30)),
                alg=HashAlg(data.get("hash", "SHA1")),
                drift_steps=credential.drift,
                last_window=credential.last_used_window,
                failures=credential.failures,
            ),
            code,
            at,
        )
        return dataclasses.replace(
            credential,
            drift=totp.drift_steps,
            last_used_window=totp.last_window,
            failures=totp.failures,
        )
    if algorithm == "hotp":
        hotp = verify_hotp(
            HotpState(
                secret=secret,
                digits=int(data.get("digits", 6)),
                alg=HashAlg(data.get("hash", "SHA1")),
                counter=credential.counter,
                failures=credential.failures,
            ),
            code,
        )
        return dataclasses.replace(credential, counter=hotp.counter, failures=hotp.failures)
    aes_key, private_id = yubico_secrets(secret, data)
    yubico = verify_yubico(
        YubicoState(
            aes_key=aes_key,
            public_id=bytes.fromhex(data["public_id"]),
            private_id=private_id,
            usage_counter=credential.counter >> 8,
            session_counter=credential.counter & 0xFF,
        ),
        code,
    )
    return dataclasses.replace(
        credential, counter=(yubico.usage_counter << 8) | yubico.session_counter
    )


_FAILURE_FIELDS = {
    "failures": "failures",
    "counter": "counter",
    "drift_steps": "drift",
    "last_window": "last_used_window",
}


def _after_failure(
    credential: FactorState, exc: VerificationFailed[Any], *, counted: bool, now: dt.datetime
) -> FactorState:
    """The credential's state after a rejected code. A wrong code counts against the token
    only when the login proved another factor first (``counted``): a stranger who knows only a
    person number can then change nothing of it. Counted wrong codes up to the limit block it
    for a while (``block_length``), never for good."""
    if not counted:
        return credential
    changes: dict[str, Any] = {
        column: getattr(exc.state, field)
        for field, column in _FAILURE_FIELDS.items()
        if hasattr(exc.state, field)
    }
    if exc.code == "credential-blocked":
        changes.update(
            failures=0,
            blocks=credential.blocks + 1,
            blocked_until=now + block_length(credential.blocks),
        )
    return dataclasses.replace(credential, **changes)


def blocked_now(blocked_until: dt.datetime | None, now: dt.datetime) -> int:
    """Seconds a token is still blocked for (0: it is not)."""
    if blocked_until is None or blocked_until <= now:
        return 0
    return max(1, math.ceil((blocked_until - now).total_seconds()))


def otp_check(secrets: SecretBox, clock: Callable[[], float]) -> FactorCheck:
    """A check for ``{"code": "..."}`` against the identity's active OTP credentials: one
    statement reads them, and each one tried is written back only if its state changed. A
    token blocked for a while is not tried; when every token is, a login that proved another
    factor is told how long to wait, any other is refused as for a wrong code."""

    def check(
        session: Session,
        identity_id: uuid.UUID,
        submitted: dict[str, Any],
        proven: frozenset[uuid.UUID] = frozenset(),
    ) -> Proof:
        code = str(submitted.get("code", ""))
        repository = CredentialRepository(session)
        candidates = repository.factor_states(identity_id, OTP_KINDS)
        if not candidates:
            raise NoSuchFactor("no active OTP credential")
        at = clock()
        now = dt.datetime.fromtimestamp(at, dt.UTC)
        last: VerificationFailed[Any] | None = None
        waits: list[int] = []
        for credential in candidates:
            wait = blocked_now(credential.blocked_until, now)
            if wait:
                waits.append(wait)
                continue
            counted = bool(proven - {credential.id})
            secret = secrets.open(
                credential.secret_ciphertext or b"", context=f"credential:{credential.id}"
            )
            try:
                verified = _verified(credential, secret, code, at)
            except VerificationFailed as exc:
                after = _after_failure(credential, exc, counted=counted, now=now)
                repository.save_factor_state(credential, after)
                if after.blocked_until is not None and after.blocked_until > now:
                    waits.append(blocked_now(after.blocked_until, now))
                last = exc
                continue
            if credential.blocks or credential.blocked_until is not None:
                verified = dataclasses.replace(verified, blocks=0, blocked_until=None)
            repository.save_factor_state(credential, verified)
            return Proof(OTP_KINDS[credential.kind], credential.id)
        if proven and waits and len(waits) == len(candidates):
            raise TemporarilyBlocked.after(min(waits)).record()
        raise FactorRejected(last.code if last else "temporarily-blocked")

    return check


class PasswordCheck:
    """A check for ``{"password": "..."}``. For a person who does not exist, or has no
    password, it still runs one Argon2id verification, so the time taken reveals neither.

    Made ``beforehand``, it carries the verdict of an Argon2id verification run before the
    step's write transaction, outside any, and does not hash again while the credential is
    unchanged: the writer queue is not held for the hashing."""

    def __init__(
        self,
        secrets: SecretBox,
        passwords: Passwords,
        clock: Callable[[], float],
        *,
        decoy_hash: str,
        verdict: PasswordVerdict | None = None,
    ) -> None:
        self.secrets = secrets
        self.passwords = passwords
        self.clock = clock
        self._decoy = decoy_hash  # the hash of a random password: made once per process
        self._verdict = verdict

    @staticmethod
    def make_decoy(passwords: Passwords) -> str:
        return passwords.hash_password(secrets_module.token_urlsafe(24))

    def beforehand(
        self,
        sessions: sessionmaker[Session],
        identity_of: Callable[[Session], uuid.UUID | None],
        submitted: dict[str, Any],
    ) -> PasswordCheck:
        """This check with the verdict on ``submitted`` reached now: the identity the step
        checks (``identity_of``, in a read session of ``sessions``), its password's stored
        hash, then, the read session closed, Argon2id on it (or on the decoy when there is
        no such person or password). A step refused before any check (``identity_of``
        raises) is not checked here: it is refused in its transaction as ever."""
        with sessions() as session:  # closed (rolled back) before the hashing
            try:
                identity_id = identity_of(session)
            except DomainError:
                return self
            service = CredentialService(session, self.secrets, self.passwords, clock=self.clock)
            stored = None if identity_id is None else service.stored_password(identity_id)
        if stored is None:
            self._verify_decoy(submitted)
            verdict = PasswordVerdict(None, b"", right=False)
        else:
            credential, password_hash = stored
            try:
                self.passwords.verify_password(password_hash, str(submitted.get("password", "")))
                right = True
            except WrongPassword:
                right = False
            except PasswordHashUnreadable:
                return self  # the step's own check fails as it always did
            verdict = PasswordVerdict(credential.id, fingerprint(credential), right)
        return PasswordCheck(
            self.secrets, self.passwords, self.clock, decoy_hash=self._decoy, verdict=verdict
        )

    def __call__(
        self,
        session: Session,
        identity_id: uuid.UUID,
        submitted: dict[str, Any],
        proven: frozenset[uuid.UUID] = frozenset(),
    ) -> Proof:
        password = str(submitted.get("password", ""))
        active = CredentialRepository(session).for_identity(identity_id, {CredentialState.ACTIVE})
        if not any(credential.kind is CredentialKind.PASSWORD for credential in active):
            # Answered after the same Argon2id work as a wrong password: who has one is secret.
            self.on_unknown(submitted)
            raise FactorRejected("no-password")
        service = CredentialService(session, self.secrets, self.passwords, clock=self.clock)
        try:
            credential = service.check_password(identity_id, password, verdict=self._verdict)
        except WrongPassword as exc:
            raise FactorRejected("wrong-password") from exc
        return Proof(AuthenticatorKind.PASSWORD, credential.id)

    def on_unknown(self, submitted: dict[str, Any]) -> None:
        if self._verdict is not None and self._verdict.credential_id is None:
            return  # the decoy was verified beforehand: the same work, done once
        self._verify_decoy(submitted)

    def _verify_decoy(self, submitted: dict[str, Any]) -> None:
        with contextlib.suppress(WrongPassword):
            self.passwords.verify_password(self._decoy, str(submitted.get("password", "")))
