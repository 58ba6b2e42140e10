"""Activation: a token awaiting activation becomes active with the code it shows now, and any
other credential once its holder has proven it by the kind's own flow."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from devices.protocol.otp import HashAlg
from server.domain.model import CredentialState
from server.services.credentials.admission import AddedBy
from server.services.credentials.lifecycle import CredentialLifecycle
from server.services.credentials.rules import TOKEN_KINDS
from server.services.credentials.sealing import secret_context, yubico_secrets
from server.services.identities import AuditHook, no_audit
from server.services.lifecycle_errors import (
    ActivationCodeRejected,
    InvalidTransition,
    UnsupportedCredential,
)
from server.services.secretbox import SecretBox
from server.services.verifiers import (
    CredentialBlocked,
    HotpState,
    TotpState,
    VerificationFailed,
    WrongCode,
    YubicoState,
    verify_hotp,
    verify_totp,
    verify_yubico,
)
from server.storage.tables import Credential

S = CredentialState


class Activation:
    """Activates credentials in the caller's transaction; each attempt is audited."""

    def __init__(
        self,
        lifecycle: CredentialLifecycle,
        secrets: SecretBox,
        *,
        clock: Callable[[], float],
        audit: AuditHook = no_audit,
    ) -> None:
        self._lifecycle = lifecycle
        self._secrets = secrets
        self._clock = clock
        self._audit = audit

    def activate_proven(self, credential_id: uuid.UUID, *, added_by: AddedBy) -> Credential:
        """Activate a credential awaiting activation whose holder has just proven it by the
        kind's own flow (a key card: the code printed beside the key number the service
        chose), with the identity and kind rules of any activation. ``added_by``: who
        activates it, for the level it is admitted at (``admission``)."""
        credential = self._lifecycle.get(credential_id)
        if credential.state is not S.ACTIVATION_PENDING:
            raise InvalidTransition("credential", credential.state.value, S.ACTIVE.value)
        identity = self._lifecycle.lock_identity(credential.identity_id)
        self._lifecycle.require_active(identity)
        self._lifecycle.activate_admitted(
            credential, identity, added_by, event="credential.activated"
        )
        return credential

    def activate(self, credential_id: uuid.UUID, code: str, *, added_by: AddedBy) -> Credential:
        """Activate an assigned token with the code it shows now. A rejected code raises
        ``ActivationCodeRejected`` after updating the counters on the credential: the caller
        commits before answering, so wrong codes count (three in a row block a code display).
        ``added_by``: who activates it, for the level it is admitted at (``admission``)."""
        credential = self._lifecycle.get(credential_id)
        if credential.kind not in TOKEN_KINDS or credential.secret_ciphertext is None:
            raise UnsupportedCredential("this credential is not activated with a code")
        if credential.state is not S.ACTIVATION_PENDING:
            raise InvalidTransition("credential", credential.state.value, S.ACTIVE.value)
        identity = self._lifecycle.lock_identity(credential.identity_id)
        self._lifecycle.require_active(identity)
        self._lifecycle.check_exclusive(credential)
        try:
            self._verify(credential, code)
        except VerificationFailed as exc:
            detail = str(exc.detail)
            if isinstance(exc, WrongCode) and exc.attempts_left is not None:
                detail = f"{detail} {exc.attempts_left} attempt(s) left."
            self._audit(
                "credential.activation_failed",
                {"credential_id": str(credential.id), "reason": exc.code},
            )
            if isinstance(exc, CredentialBlocked):
                self._lifecycle.move(credential, S.BLOCKED)
            else:
                self._lifecycle.update(credential)
            raise ActivationCodeRejected(exc.code, detail) from None
        self._lifecycle.activate_admitted(
            credential, identity, added_by, event="credential.activated"
        )
        return credential

    def _verify(self, credential: Credential, code: str) -> None:
        """Check ``code`` and copy the verifier's new state (or the state carried by its error)
        into the credential's counter, drift, last window and failures."""
        secret = self._secrets.open(
            credential.secret_ciphertext or b"", context=secret_context(credential.id)
        )
        public = credential.public_data
        algorithm = public.get("algorithm")
        try:
            if algorithm == "totp":
                totp = TotpState(
                    secret,
                    digits=int(public["digits"]),
                    step=int(public["step"]),
                    alg=HashAlg(public["hash"]),
                    drift_steps=credential.drift,
                    last_window=credential.last_used_window,
                    failures=credential.failures,
                )
                _store_totp(credential, verify_totp(totp, code, self._clock()))
            elif algorithm == "hotp":
                hotp = HotpState(
                    secret,
                    digits=int(public["digits"]),
                    alg=HashAlg(public["hash"]),
                    counter=credential.counter,
                    failures=credential.failures,
                )
                _store_hotp(credential, verify_hotp(hotp, code))
            elif algorithm == "yubico":
                aes_key, private_id = yubico_secrets(secret, public)
                yubico = YubicoState(
                    aes_key,
                    bytes.fromhex(str(public["public_id"])),
                    private_id,
                    usage_counter=credential.counter >> 8,
                    session_counter=credential.counter & 0xFF,
                )
                accepted = verify_yubico(yubico, code)
                # One column keeps both counters: usage in the high bits, session in the low 8.
                credential.counter = (accepted.usage_counter << 8) | accepted.session_counter
                credential.failures = 0
            else:
                raise UnsupportedCredential("this token's algorithm is not known")
        except VerificationFailed as exc:
            state = exc.state
            if isinstance(state, TotpState):
                _store_totp(credential, state)
            elif isinstance(state, HotpState):
                _store_hotp(credential, state)
            elif exc.code != "code-replayed" and exc.code != "malformed-code":
                credential.failures += 1  # Yubico OTP keeps no count of its own
            raise


def _store_totp(credential: Credential, state: TotpState) -> None:
    credential.drift = state.drift_steps
    credential.last_used_window = state.last_window
    credential.failures = state.failures


def _store_hotp(credential: Credential, state: HotpState) -> None:
    credential.counter = state.counter
    credential.failures = state.failures
