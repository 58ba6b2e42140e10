"""Credentials: the lifecycle of every authenticator (an explicit transition table checked at
import), the rules between kinds, token batches imported from PSKC, token activation with a
current code, and passwords.

Storage choices: OTP seeds (or a Yubico token's AES key followed by its 6-byte private id, see
``yubico_secrets``) are sealed with ``SecretBox`` under the context ``"credential:<id>"``, and
``public_data`` follows the convention the login factors read (``server.services.factors``):
``algorithm`` (totp, hotp, yubico), ``digits``, ``step``, ``hash``, and for Yubico OTP
``public_id`` in hex. A password's Argon2id PHC
string is sealed the same way in ``secret_ciphertext`` (so a database dump alone cannot be used
to guess passwords offline), with ``public_data = {"hash": "argon2id"}``. Unassigned tokens
belong to the reserved stock identity (``identities.STOCK_IDENTITY_ID``) until assigned.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from devices.errors import MalformedOtp, PskcError
from devices.protocol import pskc
from devices.protocol.otp import HashAlg
from devices.protocol.yubiotp import modhex_decode
from server.domain.model import CredentialKind, CredentialState, IdentityStatus, Level
from server.services.errors import WrongPassword
from server.services.identities import (
    STOCK_IDENTITY_ID,
    STOCK_PERSON_NUMBER,
    AuditHook,
    no_audit,
)
from server.services.lifecycle_errors import (
    ActivationCodeRejected,
    ConcurrentChange,
    ConflictingCredential,
    CredentialLimitReached,
    CredentialNotFound,
    DuplicateSerial,
    IdentityNotActive,
    IdentityNotFound,
    InvalidTokenBatch,
    InvalidTransition,
    TokenNotFound,
    UnsupportedCredential,
)
from server.services.passwords import Passwords
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
from server.storage.errors import NotFound, StaleWrite
from server.storage.repositories import CredentialRepository
from server.storage.tables import Credential, Identity

K = CredentialKind
S = CredentialState

# --- the transition table ---------------------------------------------------------------------

TRANSITIONS: Mapping[CredentialState, frozenset[CredentialState]] = MappingProxyType(
    {
        S.ORDERED: frozenset({S.SHIPPED, S.REVOKED}),
        S.SHIPPED: frozenset({S.ACTIVATION_PENDING, S.LOST, S.REVOKED}),
        S.ACTIVATION_PENDING: frozenset({S.ACTIVE, S.BLOCKED, S.LOST, S.REVOKED}),
        S.ACTIVE: frozenset({S.BLOCKED, S.LOST, S.REVOKED, S.REPLACED}),
        # Unblocking (blocked -> active) is refused for REPLACED_WHEN_BLOCKED kinds below.
        S.BLOCKED: frozenset({S.ACTIVE, S.LOST, S.REVOKED, S.REPLACED}),
        S.LOST: frozenset({S.REVOKED, S.REPLACED}),
        S.REVOKED: frozenset(),
        S.REPLACED: frozenset(),
    }
)
# Where a credential starts: ordered (a device to send), shipped (a token from a PSKC batch) or
# activation pending (a password, created and activated in one step).
INITIAL_STATES = frozenset({S.ORDERED, S.SHIPPED, S.ACTIVATION_PENDING})
TERMINAL_STATES = frozenset({S.REVOKED, S.REPLACED})
LIVE_STATES = frozenset(CredentialState) - TERMINAL_STATES

# A blocked code display (or audio reader, or key card) is replaced, never reused.
REPLACED_WHEN_BLOCKED = frozenset({K.CODE_DISPLAY, K.AUDIO_READER, K.KEY_CARD})

# How many live credentials of each kind one identity may hold.
LIMITS: Mapping[CredentialKind, int] = MappingProxyType(
    {
        K.PASSWORD: 1,
        K.CODE_DISPLAY: 1,
        K.AUDIO_READER: 1,
        K.OTP_TOKEN: 5,
        K.FIDO2: 5,
        K.PIV: 2,
        K.KEY_CARD: 1,
    }
)
# Kinds that come as tokens in PSKC batches and are activated with a code.
TOKEN_KINDS = frozenset({K.CODE_DISPLAY, K.AUDIO_READER, K.OTP_TOKEN})


def validate_transitions(
    table: Mapping[CredentialState, frozenset[CredentialState]],
    initial: Collection[CredentialState],
    terminal: Collection[CredentialState],
) -> None:
    """Raise ``RuntimeError`` unless every state has a row, every state is reachable from an
    initial state, terminal states have no exits and every other state has one."""
    states = set(CredentialState)
    if set(table) != states:
        raise RuntimeError(f"transition table rows missing: {sorted(states - set(table))}")
    for state, targets in table.items():
        if state in targets:
            raise RuntimeError(f"{state} transitions to itself")
        if state in terminal and targets:
            raise RuntimeError(f"terminal state {state} has exits")
        if state not in terminal and not targets:
            raise RuntimeError(f"state {state} is a dead end but not terminal")
    seen = set(initial)
    frontier = list(initial)
    while frontier:
        for target in table[frontier.pop()]:
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    if seen != states:
        raise RuntimeError(f"unreachable states: {sorted(states - seen)}")


validate_transitions(TRANSITIONS, INITIAL_STATES, TERMINAL_STATES)
if set(LIMITS) != set(CredentialKind):  # pragma: no cover - a new kind needs a limit
    raise RuntimeError("every credential kind needs a limit")

# --- PSKC ----------------------------------------------------------------------------------

MAX_SERIAL_LENGTH = 128
_KIND_BY_MODEL = {"otp-display": K.CODE_DISPLAY, "audio-reader": K.AUDIO_READER}
_ALGORITHMS = {pskc.ALG_TOTP: "totp", pskc.ALG_HOTP: "hotp", pskc.ALG_YUBICO_OTP: "yubico"}
_YUBICO_KEY = 16
_YUBICO_PRIVATE_ID = 6


def _context(credential_id: uuid.UUID) -> str:
    return f"credential:{credential_id}"


def yubico_secrets(secret: bytes, public_data: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The AES key and private id of a Yubico OTP credential, from its opened secret.

    The private id is part of what an OTP proves (it is checked inside every decrypted OTP),
    so it is kept as the key is, not in ``public_data`` for any reader of the database: the
    sealed secret is the 16-byte key followed by the 6-byte private id. A row stored before
    that holds the key alone and the private id in ``public_data`` (hex); it is still read.
    """
    if len(secret) == _YUBICO_KEY + _YUBICO_PRIVATE_ID:
        return secret[:_YUBICO_KEY], secret[_YUBICO_KEY:]
    return secret, bytes.fromhex(str(public_data["private_id"]))


def _token_fields(key: pskc.PskcKey) -> tuple[bytes, dict[str, Any]]:
    """The secret to seal and the public data of one PSKC key; refuses keys we cannot verify."""
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
            if key.public_id is None or key.private_id is None or len(key.secret) != _YUBICO_KEY:
                raise InvalidTokenBatch("UserId", "a Yubico OTP key needs its ids and 16 bytes")
            public_id = modhex_decode(key.public_id)
            YubicoState(key.secret, public_id, key.private_id)
            public.update(public_id=public_id.hex())
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


class CredentialService:
    """Every credential change, in the caller's transaction; each change is audited."""

    def __init__(
        self,
        session: Session,
        secrets: SecretBox,
        passwords: Passwords,
        *,
        clock: Callable[[], float],
        audit: AuditHook = no_audit,
    ) -> None:
        self._session = session
        self._credentials = CredentialRepository(session)
        self._secrets = secrets
        self._passwords = passwords
        self._clock = clock
        self._audit = audit

    # --- reading ---

    def get(self, credential_id: uuid.UUID) -> Credential:
        try:
            return self._credentials.get(credential_id)
        except NotFound:
            raise CredentialNotFound from None

    def for_identity(self, identity_id: uuid.UUID) -> list[Credential]:
        self._identity(identity_id)
        return self._credentials.for_identity(identity_id)

    # --- lifecycle ---

    def transition(self, credential_id: uuid.UUID, target: CredentialState) -> Credential:
        """Move a credential by hand (ship, block, lose, revoke, unblock). Activation has its own
        step with a code, and replacement its own with the new credential."""
        credential = self.get(credential_id)
        if target is S.REPLACED:
            raise InvalidTransition(
                "credential", credential.state.value, target.value, reason="use replace"
            )
        if target is S.ACTIVE and credential.state is not S.BLOCKED:
            raise InvalidTransition(
                "credential", credential.state.value, target.value, reason="activate it"
            )
        self._move(credential, target)
        return credential

    def order(self, identity_id: uuid.UUID, kind: CredentialKind, label: str = "") -> Credential:
        """A device ordered for an identity (sent, then activated by the kind's own flow)."""
        if kind is K.PASSWORD:
            raise UnsupportedCredential("a password is set, not ordered")
        identity = self._lock_identity(identity_id)
        self._require_active(identity)
        self._check_limit(identity_id, kind)
        credential = self._add(
            Credential(id=uuid.uuid4(), identity_id=identity_id, kind=kind, label=label)
        )
        self._audit(
            "credential.ordered",
            {"credential_id": str(credential.id), "identity_id": str(identity_id), "kind": kind},
        )
        return credential

    def replace(self, credential_id: uuid.UUID, serial: str | None = None) -> Credential:
        """Move the credential to replaced and give its identity a new one of the same kind: the
        token in stock with ``serial`` (awaiting activation), or else a new order."""
        old = self.get(credential_id)
        if old.kind is K.PASSWORD:
            raise UnsupportedCredential("a password is changed, not replaced")
        if old.identity_id == STOCK_IDENTITY_ID:
            raise InvalidTransition("credential", old.state.value, S.REPLACED.value)
        self._move(old, S.REPLACED)
        if serial is not None:
            new = self.assign(old.identity_id, serial, kind=old.kind)
        else:
            new = self.order(old.identity_id, old.kind, old.label)
        old.public_data = {**old.public_data, "replaced_by": str(new.id)}
        new.public_data = {**new.public_data, "replaces": str(old.id)}
        self._update(old)
        self._update(new)
        self._audit(
            "credential.replaced",
            {"credential_id": str(old.id), "replacement_id": str(new.id), "kind": old.kind},
        )
        return new

    def revoke_all(self, identity_id: uuid.UUID) -> None:
        """Revoke every live credential of an identity (when it closes)."""
        for credential in self._credentials.for_identity(identity_id, LIVE_STATES):
            self._move(credential, S.REVOKED)

    # --- devices enrolled with a proof of possession ---

    def check_room(self, identity_id: uuid.UUID, kind: CredentialKind) -> None:
        """Raise unless the identity is active and may take one more ``kind``: checked when an
        enrolment begins, so nobody goes through the device steps to be refused at the end.
        An open order of the kind is the room the new credential fills (see ``add_proven``)."""
        self._require_active(self._identity(identity_id))
        live = [
            c for c in self._credentials.for_identity(identity_id, LIVE_STATES) if c.kind is kind
        ]
        if len(live) - any(c.state is S.ORDERED for c in live) >= LIMITS[kind]:
            raise CredentialLimitReached(kind.value, LIMITS[kind])

    def add_proven(
        self,
        identity_id: uuid.UUID,
        kind: CredentialKind,
        *,
        serial: str,
        public_data: dict[str, Any],
        label: str = "",
    ) -> Credential:
        """Store a device whose possession was just proven (a PIV card's own key signed the
        service's challenge): active at once, within the kind's limit, for an active identity.
        It fulfils an open order of its kind, as ``assign`` does for a token."""
        identity = self._lock_identity(identity_id)
        self._require_active(identity)
        if self._session.scalar(select(Credential.id).where(Credential.serial == serial).limit(1)):
            raise DuplicateSerial
        data = dict(public_data)
        for placeholder in self._credentials.for_identity(identity_id, {S.ORDERED}):
            if placeholder.kind is kind:
                self._move(placeholder, S.REVOKED, reason="fulfilled")
                if "replaces" in placeholder.public_data:
                    data.setdefault("replaces", placeholder.public_data["replaces"])
                break
        self._check_limit(identity_id, kind)
        credential = self._add(
            Credential(
                id=uuid.uuid4(),
                identity_id=identity_id,
                kind=kind,
                state=S.ACTIVATION_PENDING,
                serial=serial,
                label=label,
                public_data=data,
            )
        )
        self._move(credential, S.ACTIVE, event="credential.registered")
        return credential

    # --- token batches and activation ---

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
        if len(set(serials)) != len(serials) or self._session.scalar(
            select(Credential.id).where(Credential.serial.in_(serials)).limit(1)
        ):
            raise DuplicateSerial
        self._ensure_stock()
        imported = []
        for key, serial in zip(keys, serials, strict=True):
            secret, public = _token_fields(key)
            token_kind = kind or _KIND_BY_MODEL.get(key.model or "", K.OTP_TOKEN)
            credential_id = uuid.uuid4()
            imported.append(
                self._add(
                    Credential(
                        id=credential_id,
                        identity_id=STOCK_IDENTITY_ID,
                        kind=token_kind,
                        state=S.SHIPPED,
                        serial=serial,
                        secret_ciphertext=self._secrets.seal(
                            secret, context=_context(credential_id)
                        ),
                        public_data=public,
                        counter=key.counter or 0,
                    )
                )
            )
        self._audit("token_batch.imported", {"count": len(imported), "serials": serials})
        return imported

    def assign(
        self, identity_id: uuid.UUID, serial: str, *, kind: CredentialKind | None = None
    ) -> Credential:
        """Give the shipped token ``serial`` to an identity; it then awaits activation."""
        identity = self._lock_identity(identity_id)
        self._require_active(identity)
        token = self._session.scalar(
            select(Credential).where(
                Credential.serial == serial,
                Credential.identity_id == STOCK_IDENTITY_ID,
                Credential.state == S.SHIPPED,
            )
        )
        if token is None or (kind is not None and token.kind is not kind):
            raise TokenNotFound
        # An open order for this kind is what the token fulfils: it must not count twice.
        for placeholder in self._credentials.for_identity(identity_id, {S.ORDERED}):
            if placeholder.kind is token.kind:
                self._move(placeholder, S.REVOKED, reason="fulfilled")
                break
        self._check_limit(identity_id, token.kind)
        token.identity_id = identity_id
        self._move(token, S.ACTIVATION_PENDING, event="credential.assigned")
        return token

    def activate_proven(self, credential_id: uuid.UUID) -> Credential:
        """Activate a credential awaiting activation whose holder has just proven it by the
        kind's own flow (a key card: the code printed beside the key number the service
        chose), with the identity and kind rules of any activation."""
        credential = self.get(credential_id)
        if credential.state is not S.ACTIVATION_PENDING:
            raise InvalidTransition("credential", credential.state.value, S.ACTIVE.value)
        self._require_active(self._lock_identity(credential.identity_id))
        self._move(credential, S.ACTIVE, event="credential.activated")
        return credential

    def activate(self, credential_id: uuid.UUID, code: str) -> Credential:
        """Activate an assigned token with the code it shows now. A rejected code raises
        ``ActivationCodeRejected`` after updating the counters on the credential: the caller
        commits before answering, so wrong codes count (three in a row block a code display)."""
        credential = self.get(credential_id)
        if credential.kind not in TOKEN_KINDS or credential.secret_ciphertext is None:
            raise UnsupportedCredential("this credential is not activated with a code")
        if credential.state is not S.ACTIVATION_PENDING:
            raise InvalidTransition("credential", credential.state.value, S.ACTIVE.value)
        identity = self._lock_identity(credential.identity_id)
        self._require_active(identity)
        self._check_exclusive(credential)
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
                self._move(credential, S.BLOCKED)
            else:
                self._update(credential)
            raise ActivationCodeRejected(exc.code, detail) from None
        self._move(credential, S.ACTIVE, event="credential.activated")
        return credential

    def _verify(self, credential: Credential, code: str) -> None:
        """Check ``code`` and copy the verifier's new state (or the state carried by its error)
        into the credential's counter, drift, last window and failures."""
        secret = self._secrets.open(
            credential.secret_ciphertext or b"", context=_context(credential.id)
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
                self._store_totp(credential, verify_totp(totp, code, self._clock()))
            elif algorithm == "hotp":
                hotp = HotpState(
                    secret,
                    digits=int(public["digits"]),
                    alg=HashAlg(public["hash"]),
                    counter=credential.counter,
                    failures=credential.failures,
                )
                self._store_hotp(credential, verify_hotp(hotp, code))
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
                self._store_totp(credential, state)
            elif isinstance(state, HotpState):
                self._store_hotp(credential, state)
            elif exc.code != "code-replayed" and exc.code != "malformed-code":
                credential.failures += 1  # Yubico OTP keeps no count of its own
            raise

    @staticmethod
    def _store_totp(credential: Credential, state: TotpState) -> None:
        credential.drift = state.drift_steps
        credential.last_used_window = state.last_window
        credential.failures = state.failures

    @staticmethod
    def _store_hotp(credential: Credential, state: HotpState) -> None:
        credential.counter = state.counter
        credential.failures = state.failures

    # --- passwords ---

    def set_password(
        self, identity_id: uuid.UUID, password: str, *, current_password: str | None = None
    ) -> Credential:
        """Set the identity's password, or change it (proving ``current_password``)."""
        identity = self._lock_identity(identity_id)
        self._require_active(identity)
        existing = self._password_credential(identity_id)
        if existing is not None:
            if current_password is None:
                raise WrongPassword("changing a password needs the current one")
            self._passwords.verify_password(self._password_hash(existing), current_password)
        self._passwords.check_policy(password, avoid=identity.name.split())
        hashed = self._passwords.hash_password(password).encode("utf-8")
        if existing is not None:
            existing.secret_ciphertext = self._secrets.seal(hashed, context=_context(existing.id))
            existing.failures = 0
            self._update(existing)
            self._audit(
                "password.changed",
                {"credential_id": str(existing.id), "identity_id": str(identity_id)},
            )
            return existing
        self._check_limit(identity_id, K.PASSWORD)
        credential_id = uuid.uuid4()
        credential = self._add(
            Credential(
                id=credential_id,
                identity_id=identity_id,
                kind=K.PASSWORD,
                state=S.ACTIVATION_PENDING,
                secret_ciphertext=self._secrets.seal(hashed, context=_context(credential_id)),
                public_data={"hash": "argon2id"},
            )
        )
        self._move(credential, S.ACTIVE, event="password.set")
        return credential

    def check_password(self, identity_id: uuid.UUID, password: str) -> Credential:
        """Return the active password credential if ``password`` matches; raise
        ``WrongPassword`` if not (also when the identity has no password)."""
        credential = self._password_credential(identity_id)
        if credential is None:
            raise WrongPassword("the identity has no active password")
        self._passwords.verify_password(self._password_hash(credential), password)
        return credential

    def _password_credential(self, identity_id: uuid.UUID) -> Credential | None:
        for credential in self._credentials.for_identity(identity_id, {S.ACTIVE}):
            if credential.kind is K.PASSWORD:
                return credential
        return None

    def _password_hash(self, credential: Credential) -> str:
        blob = credential.secret_ciphertext or b""
        return self._secrets.open(blob, context=_context(credential.id)).decode("utf-8")

    # --- rules ---

    def _move(
        self,
        credential: Credential,
        target: CredentialState,
        *,
        event: str = "credential.state_changed",
        reason: str = "",
    ) -> None:
        current = credential.state
        if target not in TRANSITIONS[current]:
            raise InvalidTransition("credential", current.value, target.value)
        if current is S.BLOCKED and target is S.ACTIVE:
            if credential.kind in REPLACED_WHEN_BLOCKED:
                raise InvalidTransition(
                    "credential", current.value, target.value, reason="replace it instead"
                )
            credential.failures = 0
        if target is S.ACTIVE:
            self._check_exclusive(credential)
        credential.state = target
        self._update(credential)
        details: dict[str, Any] = {
            "credential_id": str(credential.id),
            "identity_id": None
            if credential.identity_id == STOCK_IDENTITY_ID
            else str(credential.identity_id),
            "kind": credential.kind.value,
            "from": current.value,
            "to": target.value,
        }
        if reason:
            details["reason"] = reason
        self._audit(event, details)

    def _check_limit(self, identity_id: uuid.UUID, kind: CredentialKind) -> None:
        live = self._credentials.for_identity(identity_id, LIVE_STATES)
        if sum(1 for credential in live if credential.kind is kind) >= LIMITS[kind]:
            raise CredentialLimitReached(kind.value, LIMITS[kind])

    def _check_exclusive(self, credential: Credential) -> None:
        if credential.kind not in (K.CODE_DISPLAY, K.AUDIO_READER):
            return
        for other in self._credentials.for_identity(credential.identity_id, {S.ACTIVE}):
            if other.id == credential.id:
                continue
            if credential.kind is K.CODE_DISPLAY and other.kind is K.CODE_DISPLAY:
                raise ConflictingCredential("only one code display can be active at a time")
            if {credential.kind, other.kind} == {K.CODE_DISPLAY, K.AUDIO_READER}:
                raise ConflictingCredential(
                    "a code display and an audio code reader cannot be active at the same time"
                )

    def _identity(self, identity_id: uuid.UUID) -> Identity:
        identity = (
            None if identity_id == STOCK_IDENTITY_ID else self._session.get(Identity, identity_id)
        )
        if identity is None:
            raise IdentityNotFound
        return identity

    def _lock_identity(self, identity_id: uuid.UUID) -> Identity:
        """The identity, locked for the rest of the transaction on PostgreSQL, so two requests
        cannot both pass the per-identity rules (SQLite allows one writer at a time anyway)."""
        if identity_id == STOCK_IDENTITY_ID:
            raise IdentityNotFound
        identity = self._session.scalar(
            select(Identity)
            .where(Identity.id == identity_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if identity is None:
            raise IdentityNotFound
        return identity

    @staticmethod
    def _require_active(identity: Identity) -> None:
        if identity.status is not IdentityStatus.ACTIVE:
            raise IdentityNotActive

    # --- storage ---

    def _add(self, credential: Credential) -> Credential:
        try:
            return self._credentials.add(credential)
        except NotFound:
            raise IdentityNotFound from None

    def _update(self, credential: Credential) -> None:
        try:
            self._credentials.update(credential)
        except StaleWrite:
            raise ConcurrentChange from None

    def _ensure_stock(self) -> None:
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
