"""authenticatorClientPIN of the simulated FIDO2 key: PIN/UV auth protocols 1 and 2
(CTAP 2.1 6.5.6 and 6.5.7), the PIN retry counters and the volatile pinUvAuthToken.

The retry counter is decremented and saved *before* a PIN is compared, so pulling the key
mid-command never gives a free guess. Key agreement keys and tokens live only in memory and
change every power-up.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum, IntFlag, unique
from typing import Any, ClassVar, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Re-exported for code that imports them from this module.
from firmware_sim.tokens.ctap_request import CtapFailure as CtapFailure
from firmware_sim.tokens.ctap_request import CtapStatus as CtapStatus
from firmware_sim.tokens.ctap_request import member as member
from firmware_sim.tokens.ctap_request import need as need

PIN_RETRIES = 8
PIN_TRIES_PER_BOOT = 3
MIN_PIN_LENGTH = 4  # Unicode code points
MAX_PIN_BYTES = 63
PADDED_PIN_LENGTH = 64
TOKEN_LENGTH = 32
TOKEN_INITIAL_USE_SECONDS = 30.0  # a token never used within this expires
TOKEN_LIFETIME_SECONDS = 600.0


@unique
class PinSubCommand(IntEnum):
    GET_PIN_RETRIES = 0x01
    GET_KEY_AGREEMENT = 0x02
    SET_PIN = 0x03
    CHANGE_PIN = 0x04
    GET_PIN_TOKEN = 0x05
    GET_TOKEN_USING_UV = 0x06
    GET_UV_RETRIES = 0x07
    GET_TOKEN_USING_PIN = 0x09


@unique
class Permission(IntFlag):
    MAKE_CREDENTIAL = 0x01
    GET_ASSERTION = 0x02
    CREDENTIAL_MANAGEMENT = 0x04
    BIO_ENROLLMENT = 0x08
    LARGE_BLOB_WRITE = 0x10
    AUTHENTICATOR_CONFIG = 0x20
    PERSISTENT_CREDENTIAL_MGMT_READ = 0x40


SUPPORTED_PERMISSIONS = Permission.MAKE_CREDENTIAL | Permission.GET_ASSERTION


# --- PIN/UV auth protocols (authenticator side) -------------------------------------------


class PinUvAuthProtocol:
    version: ClassVar[int]

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    def regenerate(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    def public_cose(self) -> dict[int, Any]:
        numbers = self._key.public_key().public_numbers()
        # alg -25 (ECDH-ES+HKDF-256) "although this is not the algorithm actually used".
        return {
            1: 2,
            3: -25,
            -1: 1,
            -2: numbers.x.to_bytes(32, "big"),
            -3: numbers.y.to_bytes(32, "big"),
        }

    def decapsulate(self, peer: Mapping[Any, Any]) -> bytes:
        x, y = peer.get(-2), peer.get(-3)
        if peer.get(1) != 2 or peer.get(-1) != 1 or type(x) is not bytes or type(y) is not bytes:
            raise CtapFailure(CtapStatus.INVALID_PARAMETER)
        if len(x) != 32 or len(y) != 32:
            raise CtapFailure(CtapStatus.INVALID_PARAMETER)
        try:
            public = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            ).public_key()
        except ValueError as exc:  # not a point on P-256
            raise CtapFailure(CtapStatus.INVALID_PARAMETER) from exc
        return self.kdf(self._key.exchange(ec.ECDH(), public))

    def kdf(self, z: bytes) -> bytes:
        raise NotImplementedError

    def encrypt(self, key: bytes, plaintext: bytes) -> bytes:
        raise NotImplementedError

    def decrypt(self, key: bytes, ciphertext: bytes) -> bytes | None:
        """The plaintext, or None when the ciphertext cannot be one of this protocol."""
        raise NotImplementedError

    def authenticate(self, key: bytes, message: bytes) -> bytes:
        raise NotImplementedError

    def verify(self, key: bytes, message: bytes, signature: bytes) -> bool:
        return hmac.compare_digest(self.authenticate(key, message), signature)


def _aes_cbc(key: bytes, iv: bytes, data: bytes, *, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


class ProtocolOne(PinUvAuthProtocol):
    """6.5.6: SHA-256 of the ECDH x-coordinate; AES-256-CBC with a zero IV; HMAC truncated
    to 16 bytes."""

    version = 1

    def kdf(self, z: bytes) -> bytes:
        return hashlib.sha256(z).digest()

    def encrypt(self, key: bytes, plaintext: bytes) -> bytes:
        return _aes_cbc(key, bytes(16), plaintext, encrypt=True)

    def decrypt(self, key: bytes, ciphertext: bytes) -> bytes | None:
        if len(ciphertext) % 16:
            return None
        return _aes_cbc(key, bytes(16), ciphertext, encrypt=False)

    def authenticate(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, hashlib.sha256).digest()[:16]


class ProtocolTwo(PinUvAuthProtocol):
    """6.5.7: HKDF-SHA-256 into an HMAC key and an AES key; AES-256-CBC with a random IV
    in front; full 32-byte HMAC."""

    version = 2

    def kdf(self, z: bytes) -> bytes:
        def hkdf(info: bytes) -> bytes:
            return HKDF(hashes.SHA256(), 32, salt=bytes(32), info=info).derive(z)

        return hkdf(b"CTAP2 HMAC key") + hkdf(b"CTAP2 AES key")

    def encrypt(self, key: bytes, plaintext: bytes) -> bytes:
        iv = secrets.token_bytes(16)
        return iv + _aes_cbc(key[32:], iv, plaintext, encrypt=True)

    def decrypt(self, key: bytes, ciphertext: bytes) -> bytes | None:
        if len(ciphertext) < 16 or len(ciphertext) % 16:
            return None
        return _aes_cbc(key[32:], ciphertext[:16], ciphertext[16:], encrypt=False)

    def authenticate(self, key: bytes, message: bytes) -> bytes:
        # The shared secret is HMAC key || AES key; a pinUvAuthToken is the HMAC key itself.
        return hmac.new(key[:32], message, hashlib.sha256).digest()


# --- ClientPIN -----------------------------------------------------------------------------


class PinStore(Protocol):
    """The non-volatile part ClientPIN needs (``FidoState`` provides it)."""

    pin_salt: bytes
    pin_verifier: bytes | None
    pin_retries: int


def pin_verifier(salt: bytes, pin_hash: bytes) -> bytes:
    """What is stored for a PIN: a keyed hash of LEFT(SHA-256(PIN), 16), never the PIN."""
    return hmac.new(salt, pin_hash, hashlib.sha256).digest()


@dataclass
class _TokenState:
    permissions: int
    rp_id: str | None
    issued: float
    user_present: bool = False  # a PIN proves knowledge, not presence
    user_verified: bool = True
    used: bool = False


class ClientPin:
    """ClientPIN's state machine. ``save`` writes the store to non-volatile memory."""

    def __init__(self, store: PinStore, save: Callable[[], None], clock: Callable[[], float]):
        self.store = store
        self._save = save
        self._clock = clock
        self.protocols: dict[int, PinUvAuthProtocol] = {2: ProtocolTwo(), 1: ProtocolOne()}
        self._tokens: dict[int, bytes] = {}
        self._token: _TokenState | None = None
        self._mismatches = 0
        self.power_up()

    # --- volatile state --------------------------------------------------------------------

    def power_up(self) -> None:
        for protocol in self.protocols.values():
            protocol.regenerate()
        self._reset_tokens()
        self._mismatches = 0

    def _reset_tokens(self) -> None:
        self._tokens = {version: secrets.token_bytes(TOKEN_LENGTH) for version in self.protocols}
        self._token = None

    @property
    def pin_set(self) -> bool:
        return self.store.pin_verifier is not None

    @property
    def auth_blocked(self) -> bool:
        """Three wrong PINs since power-up: no PIN is taken until the next power cycle."""
        return self._mismatches >= PIN_TRIES_PER_BOOT

    def protocol(self, version: int | None) -> PinUvAuthProtocol:
        if version is None:
            raise CtapFailure(CtapStatus.MISSING_PARAMETER)
        found = self.protocols.get(version)
        if found is None:
            raise CtapFailure(CtapStatus.INVALID_PARAMETER)
        return found

    # --- using a pinUvAuthToken ------------------------------------------------------------

    def _live_token(self) -> _TokenState | None:
        token = self._token
        if token is None:
            return None
        age = self._clock() - token.issued
        if age > TOKEN_LIFETIME_SECONDS or (not token.used and age > TOKEN_INITIAL_USE_SECONDS):
            self._token = None
            return None
        return token

    def check_token(
        self,
        version: int | None,
        message: bytes,
        param: bytes,
        permission: Permission,
        rp_id: str,
    ) -> None:
        """pinUvAuthParam of makeCredential/getAssertion (6.1.2 step 11, 6.2.2 step 6)."""
        protocol = self.protocol(version)
        token = self._live_token()
        if token is None or not protocol.verify(self._tokens[protocol.version], message, param):
            raise CtapFailure(CtapStatus.PIN_AUTH_INVALID)
        if not token.permissions & permission:
            raise CtapFailure(CtapStatus.PIN_AUTH_INVALID)
        if token.rp_id is not None and token.rp_id != rp_id:
            raise CtapFailure(CtapStatus.PIN_AUTH_INVALID)
        if not token.user_verified:
            raise CtapFailure(CtapStatus.PIN_AUTH_INVALID)
        token.rp_id = rp_id
        token.used = True

    def token_user_present(self) -> bool:
        return self._token is not None and self._token.user_present

    def token_consumed(self) -> None:
        """After an operation that collected user presence: clearUserPresentFlag,
        clearUserVerifiedFlag, clearPinUvAuthTokenPermissionsExceptLbw."""
        if self._token is not None:
            self._token.user_present = False
            self._token.user_verified = False
            self._token.permissions &= Permission.LARGE_BLOB_WRITE

    # --- the command -----------------------------------------------------------------------

    def process(self, params: Mapping[Any, Any]) -> dict[int, Any] | None:
        version = member(params, 0x01, int)
        sub_command = need(member(params, 0x02, int))
        key_agreement = member(params, 0x03, dict)
        pin_uv_auth_param = member(params, 0x04, bytes)
        new_pin_enc = member(params, 0x05, bytes)
        pin_hash_enc = member(params, 0x06, bytes)
        permissions = member(params, 0x09, int)
        rp_id = member(params, 0x0A, str)

        if sub_command == PinSubCommand.GET_PIN_RETRIES:
            if version is not None:
                self.protocol(version)
            return {0x03: self.store.pin_retries, 0x04: self.auth_blocked}
        if sub_command == PinSubCommand.GET_KEY_AGREEMENT:
            return {0x01: self.protocol(version).public_cose()}
        if sub_command == PinSubCommand.SET_PIN:
            self._set_pin(
                need(version), need(key_agreement), need(pin_uv_auth_param), need(new_pin_enc)
            )
            return None
        if sub_command == PinSubCommand.CHANGE_PIN:
            self._change_pin(
                need(version),
                need(key_agreement),
                need(pin_hash_enc),
                need(new_pin_enc),
                need(pin_uv_auth_param),
            )
            return None
        if sub_command == PinSubCommand.GET_PIN_TOKEN:
            protocol = self.protocol(need(version))
            key_agreement, pin_hash_enc = need(key_agreement), need(pin_hash_enc)
            if permissions is not None or rp_id is not None:
                raise CtapFailure(CtapStatus.INVALID_PARAMETER)
            return self._issue_token(
                protocol, key_agreement, pin_hash_enc, SUPPORTED_PERMISSIONS, None
            )
        if sub_command == PinSubCommand.GET_TOKEN_USING_PIN:
            protocol = self.protocol(need(version))
            key_agreement, pin_hash_enc = need(key_agreement), need(pin_hash_enc)
            permissions = need(permissions)
            if permissions == 0:
                raise CtapFailure(CtapStatus.INVALID_PARAMETER)
            if permissions & ~SUPPORTED_PERMISSIONS:
                raise CtapFailure(CtapStatus.UNAUTHORIZED_PERMISSION)
            return self._issue_token(protocol, key_agreement, pin_hash_enc, permissions, rp_id)
        # No built-in user verification: the UV subcommands do not exist on this key.
        raise CtapFailure(CtapStatus.INVALID_SUBCOMMAND)

    def _set_pin(
        self, version: int, key_agreement: Mapping[Any, Any], param: bytes, new_pin_enc: bytes
    ) -> None:
        protocol = self.protocol(version)
        if self.pin_set:
            raise CtapFailure(CtapStatus.PIN_AUTH_INVALID)
        shared = protocol.decapsulate(key_agreement)
        if not protocol.verify(shared, new_pin_enc, param):
            raise CtapFailure(CtapStatus.PIN_AUTH_INVALID)
        self._store_pin(self._new_pin(protocol, shared, new_pin_enc))

    def _change_pin(
        self,
        version: int,
        key_agreement: Mapping[Any, Any],
        pin_hash_enc: bytes,
        new_pin_enc: bytes,
        param: bytes,
    ) -> None:
        protocol = self.protocol(version)
        self._check_can_try()
        shared = protocol.decapsulate(key_agreement)
        if not protocol.verify(shared, new_pin_enc + pin_hash_enc, param):
            raise CtapFailure(CtapStatus.PIN_AUTH_INVALID)
        self._verify_pin_hash(protocol, shared, pin_hash_enc)
        self._store_pin(self._new_pin(protocol, shared, new_pin_enc))
        self._reset_tokens()

    def _issue_token(
        self,
        protocol: PinUvAuthProtocol,
        key_agreement: Mapping[Any, Any],
        pin_hash_enc: bytes,
        permissions: int,
        rp_id: str | None,
    ) -> dict[int, Any]:
        self._check_can_try()
        shared = protocol.decapsulate(key_agreement)
        self._verify_pin_hash(protocol, shared, pin_hash_enc)
        self._reset_tokens()
        self._token = _TokenState(permissions=permissions, rp_id=rp_id, issued=self._clock())
        return {0x02: protocol.encrypt(shared, self._tokens[protocol.version])}

    def _check_can_try(self) -> None:
        if not self.pin_set:
            raise CtapFailure(CtapStatus.PIN_NOT_SET)
        if self.store.pin_retries <= 0:
            raise CtapFailure(CtapStatus.PIN_BLOCKED)
        if self.auth_blocked:
            raise CtapFailure(CtapStatus.PIN_AUTH_BLOCKED)

    def _verify_pin_hash(
        self, protocol: PinUvAuthProtocol, shared: bytes, pin_hash_enc: bytes
    ) -> None:
        self.store.pin_retries -= 1
        self._save()  # before comparing: a pulled plug must not give a free guess
        candidate = protocol.decrypt(shared, pin_hash_enc)
        expected = self.store.pin_verifier
        if (
            candidate is None
            or len(candidate) != 16
            or expected is None
            or not hmac.compare_digest(pin_verifier(self.store.pin_salt, candidate), expected)
        ):
            protocol.regenerate()
            self._mismatches += 1
            if self.store.pin_retries <= 0:
                raise CtapFailure(CtapStatus.PIN_BLOCKED)
            if self.auth_blocked:
                raise CtapFailure(CtapStatus.PIN_AUTH_BLOCKED)
            raise CtapFailure(CtapStatus.PIN_INVALID)
        self._mismatches = 0
        self.store.pin_retries = PIN_RETRIES
        self._save()

    @staticmethod
    def _new_pin(protocol: PinUvAuthProtocol, shared: bytes, new_pin_enc: bytes) -> bytes:
        padded = protocol.decrypt(shared, new_pin_enc)
        if padded is None:
            raise CtapFailure(CtapStatus.PIN_AUTH_INVALID)
        if len(padded) != PADDED_PIN_LENGTH:
            raise CtapFailure(CtapStatus.INVALID_PARAMETER)
        pin = padded.rstrip(b"\x00")
        try:
            code_points = len(pin.decode("utf-8"))
        except UnicodeDecodeError:
            code_points = 0
        if code_points < MIN_PIN_LENGTH or len(pin) > MAX_PIN_BYTES:
            raise CtapFailure(CtapStatus.PIN_POLICY_VIOLATION)
        return pin

    def _store_pin(self, pin: bytes) -> None:
        self.store.pin_verifier = pin_verifier(
            self.store.pin_salt, hashlib.sha256(pin).digest()[:16]
        )
        self.store.pin_retries = PIN_RETRIES
        self._save()
