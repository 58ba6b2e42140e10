"""PSKC token batches: each key of a vendor's PSKC file of token seeds becomes a token in stock
(shipped, owned by the reserved stock identity until assigned), its secret sealed."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from devices.errors import MalformedOtp, PskcError
from devices.protocol import pskc
from devices.protocol.otp import HashAlg
from devices.protocol.yubiotp import modhex_decode
from server.domain.model import (
    STOCK_IDENTITY_ID,
    CredentialKind,
    CredentialState,
    IdentityStatus,
    Level,
)
from server.services.credentials.lifecycle import CredentialLifecycle
from server.services.credentials.rules import TOKEN_KINDS
from server.services.credentials.sealing import YUBICO_KEY_SIZE, secret_context
from server.services.identities import STOCK_PERSON_NUMBER, AuditHook, no_audit
from server.services.lifecycle_errors import (
    DuplicateSerial,
    InvalidTokenBatch,
    UnsupportedCredential,
)
from server.services.secretbox import SecretBox
from server.services.verifiers import HotpState, TotpState, YubicoState
from server.storage.repositories import CredentialRepository
from server.storage.tables import Credential, Identity

MAX_SERIAL_LENGTH = 128
_KIND_BY_MODEL = {
    "otp-display": CredentialKind.CODE_DISPLAY,
    "audio-reader": CredentialKind.AUDIO_READER,
}
_ALGORITHMS = {pskc.ALG_TOTP: "totp", pskc.ALG_HOTP: "hotp", pskc.ALG_YUBICO_OTP: "yubico"}


def _token_fields(key: pskc.PskcKey) -> tuple[bytes, dict[str, Any]]:
    """The secret to seal and the public data of one PSKC key; refuses keys we cannot verify.

    ``public_data`` follows the convention the login factors read (``server.services.factors``):
    ``algorithm`` (totp, hotp, yubico), ``digits``, ``step``, ``hash``, and for Yubico OTP
    ``public_id`` in hex.
    """
    algorithm = _ALGORITHMS.get(key.algorithm)
    if algorithm is None:
        raise InvalidTokenBatch("Algorithm", "unsupported algorithm")
    public: dict[str, Any] = {
        "algorithm": algorithm,
        "manufacturer": key.manufacturer,
        "model": key.model,
        "key_id": key.key_id,
    }
    try:
        if algorithm == "yubico":
            if (
                key.public_id is None
                or key.private_id is None
                or len(key.secret) != YUBICO_KEY_SIZE
            ):
                raise InvalidTokenBatch("UserId", "a Yubico OTP key needs its ids and 16 bytes")
            public_id = modhex_decode(key.public_id)
            YubicoState(key.secret, public_id, key.private_id)
            public.update(public_id=public_id.hex())
            # The private id is sealed after the key (see ``sealing.yubico_secrets``).
            return key.secret + key.private_id, public
        hash_alg = HashAlg(key.hash_alg or "SHA1")
        digits = key.digits or 6
        public.update(digits=digits, hash=hash_alg.value)
        if algorithm == "totp":
            step = key.time_step or 30
            if key.time_origin:
                # The login factors count time steps from the Unix epoch, as RFC 6238's default.
                raise InvalidTokenBatch("Time", "only a TOTP time origin of 0 is supported")
            TotpState(key.secret, digits=digits, step=step, alg=hash_alg)
            public.update(step=step)
        else:
            HotpState(key.secret, digits=digits, alg=hash_alg, counter=key.counter or 0)
    except (ValueError, MalformedOtp) as exc:
        raise InvalidTokenBatch("Secret", str(exc)) from None
    return key.secret, public


class TokenBatches:
    """Imports PSKC batches into stock, in the caller's transaction; each import is audited."""

    def __init__(
        self,
        session: Session,
        lifecycle: CredentialLifecycle,
        secrets: SecretBox,
        *,
        audit: AuditHook = no_audit,
    ) -> None:
        self._session = session
        self._credentials = CredentialRepository(session)
        self._lifecycle = lifecycle
        self._secrets = secrets
        self._audit = audit

    def import_batch(
        self, document: bytes, *, psk: bytes | None = None, kind: CredentialKind | None = None
    ) -> list[Credential]:
        """Each key of a PSKC document becomes an unassigned token in state shipped, its secret
        sealed. The batch is all or nothing."""
        if kind is not None and kind not in TOKEN_KINDS:
            raise UnsupportedCredential("only code displays, audio readers and OTP tokens")
        try:
            keys = pskc.parse_pskc(document, psk=psk)
        except PskcError as exc:
            raise InvalidTokenBatch(exc.field, str(exc)) from None
        except ValueError as exc:  # a pre-shared key of the wrong size
            raise InvalidTokenBatch("EncryptionKey", str(exc)) from None
        if not keys:
            raise InvalidTokenBatch("KeyPackage", "the batch holds no keys")
        serials = [key.serial or key.key_id for key in keys]
        if any(len(serial) > MAX_SERIAL_LENGTH for serial in serials):
            raise InvalidTokenBatch("SerialNo", "serial number too long")
        if len(set(serials)) != len(serials) or self._credentials.serial_taken(*serials):
            raise DuplicateSerial
        self._ensure_stock()
        imported = []
        for key, serial in zip(keys, serials, strict=True):
            secret, public = _token_fields(key)
            token_kind = kind or _KIND_BY_MODEL.get(key.model or "", CredentialKind.OTP_TOKEN)
            credential_id = uuid.uuid4()
            imported.append(
                self._lifecycle.add(
                    Credential(
                        id=credential_id,
                        identity_id=STOCK_IDENTITY_ID,
                        kind=token_kind,
                        state=CredentialState.SHIPPED,
                        serial=serial,
                        secret_ciphertext=self._secrets.seal(
                            secret, context=secret_context(credential_id)
                        ),
                        public_data=public,
                        counter=key.counter or 0,
                    )
                )
            )
        self._audit("token_batch.imported", {"count": len(imported), "serials": serials})
        return imported

    def _ensure_stock(self) -> None:
        """Create the stock identity that owns unassigned tokens, once."""
        if self._session.get(Identity, STOCK_IDENTITY_ID) is not None:
            return
        stock = Identity(
            id=STOCK_IDENTITY_ID,
            person_number=STOCK_PERSON_NUMBER,
            name="unassigned tokens",
            status=IdentityStatus.CLOSED,
            identity_assurance=Level.LOW,
        )
        try:
            with self._session.begin_nested():
                self._session.add(stock)
        except IntegrityError:
            pass  # another import created it first
