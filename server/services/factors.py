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
import secrets as secrets_module
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from devices.protocol.otp import HashAlg
from server.domain.errors import FactorRejected, Unverified
from server.domain.model import AuthenticatorKind, CredentialKind, CredentialState
from server.services.credentials import CredentialService
from server.services.credentials.sealing import yubico_secrets
from server.services.errors import WrongPassword
from server.services.login.record import Proof
from server.services.passwords import Passwords
from server.services.secretbox import SecretBox
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


def _after_failure(credential: FactorState, exc: VerificationFailed[Any]) -> FactorState:
    """The credential's state after a rejected code: the verifier's counters, and blocked
    when the verifier says so."""
    changes: dict[str, Any] = {
        column: getattr(exc.state, field)
        for field, column in _FAILURE_FIELDS.items()
        if hasattr(exc.state, field)
    }
    if exc.code == "credential-blocked":
        changes["state"] = CredentialState.BLOCKED
    return dataclasses.replace(credential, **changes)


def otp_check(secrets: SecretBox, clock: Callable[[], float]) -> Callable[..., Proof]:
    """A check for ``{"code": "..."}`` against the identity's active OTP credentials: one
    statement reads them, and each one tried is written back only if its state changed."""

    def check(session: Session, identity_id: uuid.UUID, submitted: dict[str, Any]) -> Proof:
        code = str(submitted.get("code", ""))
        repository = CredentialRepository(session)
        candidates = repository.factor_states(identity_id, OTP_KINDS)
        if not candidates:
            raise NoSuchFactor("no active OTP credential")
        last: VerificationFailed[Any] | None = None
        for credential in candidates:
            secret = secrets.open(
                credential.secret_ciphertext or b"", context=f"credential:{credential.id}"
            )
            try:
                verified = _verified(credential, secret, code, clock())
            except VerificationFailed as exc:
                repository.save_factor_state(credential, _after_failure(credential, exc))
                last = exc
                continue
            repository.save_factor_state(credential, verified)
            return Proof(OTP_KINDS[credential.kind], credential.id)
        raise FactorRejected(last.code if last else "no-match")

    return check


class PasswordCheck:
    """A check for ``{"password": "..."}``. For a person who does not exist, or has no
    password, it still runs one Argon2id verification, so the time taken reveals neither."""

    def __init__(
        self,
        secrets: SecretBox,
        passwords: Passwords,
        clock: Callable[[], float],
        *,
        decoy_hash: str,
    ) -> None:
        self.secrets = secrets
        self.passwords = passwords
        self.clock = clock
        self._decoy = decoy_hash  # the hash of a random password: made once per process

    @staticmethod
    def make_decoy(passwords: Passwords) -> str:
        return passwords.hash_password(secrets_module.token_urlsafe(24))

    def __call__(
        self, session: Session, identity_id: uuid.UUID, submitted: dict[str, Any]
    ) -> Proof:
        password = str(submitted.get("password", ""))
        active = CredentialRepository(session).for_identity(identity_id, {CredentialState.ACTIVE})
        if not any(credential.kind is CredentialKind.PASSWORD for credential in active):
            # Answered after the same Argon2id work as a wrong password: who has one is secret.
            self.on_unknown(submitted)
            raise FactorRejected("no-password")
        service = CredentialService(session, self.secrets, self.passwords, clock=self.clock)
        try:
            credential = service.check_password(identity_id, password)
        except WrongPassword as exc:
            raise FactorRejected("wrong-password") from exc
        return Proof(AuthenticatorKind.PASSWORD, credential.id)

    def on_unknown(self, submitted: dict[str, Any]) -> None:
        with contextlib.suppress(WrongPassword):
            self.passwords.verify_password(self._decoy, str(submitted.get("password", "")))
