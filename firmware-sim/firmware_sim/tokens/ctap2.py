"""The simulated FIDO2 security key: a CTAP 2.1 authenticator core, byte-exact on the wire
and independent of the transport (CTAPHID over USB, or NFC) that carries its messages.

``handle_cbor`` takes a command byte and CBOR and returns a status byte and CBOR; it never
raises. Private keys never leave the key except sealed (AES-256-GCM under a per-device
master key, bound to the RP ID hash) inside credential IDs; discoverable credentials keep
their user entity in the state file, next to the sealed ID.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, unique
from pathlib import Path
from typing import Any, NoReturn, Protocol, runtime_checkable

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fido2 import cbor

from firmware_sim import state as state_store
from firmware_sim.tokens.attestation import Manufacturer
from firmware_sim.tokens.ctap_pin import (
    PIN_RETRIES,
    ClientPin,
    CtapFailure,
    CtapStatus,
    Permission,
    member,
    need,
)
from firmware_sim.tokens.u2f import process_u2f

logger = logging.getLogger(__name__)

KIND = "fido"
FIRMWARE_VERSION = 0x010000
MAX_MSG_SIZE = 1200
MAX_CREDENTIAL_COUNT_IN_LIST = 8
MAX_DISCOVERABLE_CREDENTIALS = 25
MAX_USER_ID_LENGTH = 64
MAX_STORED_STRING = 64  # bytes of rp/user names kept, cut at a character boundary
RESET_WINDOW_SECONDS = 10.0
NEXT_ASSERTION_SECONDS = 30.0
MAX_CBOR_DEPTH = 4  # CTAP 2.1 8: at most four levels of nested maps and arrays

STATUS_PROCESSING = 1
STATUS_UP_NEEDED = 2

ES256 = -7
EDDSA = -8
_ALG_CODES = {ES256: 1, EDDSA: 2}

FLAG_UP = 0x01
FLAG_UV = 0x04
FLAG_AT = 0x40

# Credential ID: format byte, GCM nonce, sealed (algorithm code, flags, 32-byte key), tag.
_CRED_FORMAT = 0x01
_CRED_DISCOVERABLE = 0x01
CREDENTIAL_ID_LENGTH = 1 + 12 + 2 + 32 + 16


@unique
class Command(IntEnum):
    MAKE_CREDENTIAL = 0x01
    GET_ASSERTION = 0x02
    GET_INFO = 0x04
    CLIENT_PIN = 0x06
    RESET = 0x07
    GET_NEXT_ASSERTION = 0x08
    SELECTION = 0x0B


_NO_PARAMETERS = {Command.GET_INFO, Command.RESET, Command.GET_NEXT_ASSERTION, Command.SELECTION}


# --- user presence -------------------------------------------------------------------------


class UserPresence(Protocol):
    def wait(self, timeout: float, keepalive: Callable[[int], None]) -> bool:
        """Block until the user touches the key (True) or timeout/cancel (False), calling
        ``keepalive(2)`` about every 100 ms meanwhile."""
        ...


@runtime_checkable
class CancellablePresence(UserPresence, Protocol):
    def take_cancel(self) -> bool:
        """Whether the host cancelled since the last call; clears the flag."""
        ...


class AlwaysPresent:
    """NFC: holding the key to the reader is the presence."""

    def wait(self, timeout: float, keepalive: Callable[[int], None]) -> bool:
        return True

    def take_cancel(self) -> bool:
        return False


class ButtonPresence:
    """A touch button another thread presses. A press before anyone waits is remembered
    and consumed by the next wait; ``cancel`` ends a pending wait (CTAPHID_CANCEL)."""

    keepalive_interval = 0.1

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._pressed = False
        self._cancelled = False

    def press(self) -> None:
        with self._condition:
            self._pressed = True
            self._condition.notify_all()

    def cancel(self) -> None:
        with self._condition:
            self._cancelled = True
            self._condition.notify_all()

    def take_cancel(self) -> bool:
        with self._condition:
            cancelled, self._cancelled = self._cancelled, False
            return cancelled

    @property
    def pending_press(self) -> bool:
        return self._pressed

    def wait(self, timeout: float, keepalive: Callable[[int], None]) -> bool:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            with self._condition:
                if self._cancelled:
                    return False
                if self._pressed:
                    self._pressed = False
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
            keepalive(STATUS_UP_NEEDED)  # outside the lock: it may press from this thread
            with self._condition:
                if not (self._pressed or self._cancelled):
                    self._condition.wait(min(self.keepalive_interval, remaining))


# --- strict CBOR decoding ------------------------------------------------------------------


class _CborError(ValueError):
    pass


def _cbor_head(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """Major type, additional info, argument and the position after the head. Only the
    shortest form of an argument is accepted (CTAP2 canonical CBOR)."""
    if pos >= len(data):
        raise _CborError("truncated")
    major, info = data[pos] >> 5, data[pos] & 0x1F
    pos += 1
    if info < 24:
        return major, info, info, pos
    if info > 27:
        raise _CborError("indefinite length or reserved additional information")
    size = 1 << (info - 24)
    if pos + size > len(data):
        raise _CborError("truncated")
    value = int.from_bytes(data[pos : pos + size], "big")
    if major != 7 and value < (24 if size == 1 else 1 << (4 * size)):
        raise _CborError("integer not in its shortest form")
    return major, info, value, pos + size


def _cbor_item(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    major, info, value, pos = _cbor_head(data, pos)
    if major == 0:
        return value, pos
    if major == 1:
        return -1 - value, pos
    if major in (2, 3):
        if pos + value > len(data):
            raise _CborError("truncated string")
        raw = data[pos : pos + value]
        if major == 2:
            return raw, pos + value
        try:
            return raw.decode("utf-8"), pos + value
        except UnicodeDecodeError as exc:
            raise _CborError("text string is not UTF-8") from exc
    if major in (4, 5):
        if depth >= MAX_CBOR_DEPTH:
            raise _CborError("nested too deeply")
        if major == 4:
            items = []
            for _ in range(value):
                item, pos = _cbor_item(data, pos, depth + 1)
                items.append(item)
            return items, pos
        mapping: dict[Any, Any] = {}
        previous: tuple[int, int, bytes] | None = None
        for _ in range(value):
            start = pos
            key, pos = _cbor_item(data, pos, depth + 1)
            encoded = data[start:pos]
            order = (encoded[0] >> 5, len(encoded), encoded)
            if previous is not None and order <= previous:
                raise _CborError("map keys not in canonical order, or repeated")
            if isinstance(key, list | dict):
                raise _CborError("container as map key")
            previous = order
            mapping[key], pos = _cbor_item(data, pos, depth + 1)
        return mapping, pos
    if major == 7 and info in (20, 21):
        return info == 21, pos
    if major == 7 and info == 22:
        return None, pos
    raise _CborError("tags, floats and other simple values are not used by CTAP")


def decode_cbor(data: bytes) -> Any:
    """Decode one CTAP2 canonical CBOR item filling ``data``; raises ValueError otherwise."""
    value, pos = _cbor_item(data, 0, 0)
    if pos != len(data):
        raise _CborError("bytes after the CBOR item")
    return value


# --- non-volatile state --------------------------------------------------------------------


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise state_store.StateError(f"FIDO state is damaged: {problem}")


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


@dataclass
class Credential:
    """A discoverable credential: its sealed ID and the entities it was made for."""

    credential_id: bytes
    rp_id: str
    user_id: bytes
    user_name: str | None = None
    display_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "credential_id": self.credential_id.hex(),
            "rp_id": self.rp_id,
            "user_id": self.user_id.hex(),
            "user_name": self.user_name,
            "display_name": self.display_name,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Credential:
        rp_id = data["rp_id"]
        if not isinstance(rp_id, str):
            raise TypeError("rp_id is not a string")
        return cls(
            credential_id=bytes.fromhex(data["credential_id"]),
            rp_id=rp_id,
            user_id=bytes.fromhex(data["user_id"]),
            user_name=_optional_str(data.get("user_name")),
            display_name=_optional_str(data.get("display_name")),
        )


@dataclass
class FidoState:
    """What the key keeps in non-volatile memory."""

    aaguid: bytes
    master_key: bytes
    batch_key: bytes  # PKCS#8 DER, copied from the manufacturer at creation
    batch_certificate: bytes  # DER
    pin_salt: bytes
    serial: str
    pin_verifier: bytes | None = None
    pin_retries: int = PIN_RETRIES
    sign_count: int = 0
    credentials: list[Credential] = field(default_factory=list)
    u2f: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "aaguid": self.aaguid.hex(),
            "master_key": self.master_key.hex(),
            "batch_key": self.batch_key.hex(),
            "batch_certificate": self.batch_certificate.hex(),
            "pin_salt": self.pin_salt.hex(),
            "serial": self.serial,
            "pin_verifier": None if self.pin_verifier is None else self.pin_verifier.hex(),
            "pin_retries": self.pin_retries,
            "sign_count": self.sign_count,
            "credentials": [credential.to_json() for credential in self.credentials],
            "u2f": self.u2f,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FidoState:
        try:
            verifier = data["pin_verifier"]
            retries, count, u2f = data["pin_retries"], data["sign_count"], data["u2f"]
            serial = data["serial"]
            _require(type(retries) is int and type(count) is int, "counters are not integers")
            _require(type(u2f) is bool, "u2f is not true or false")
            _require(isinstance(serial, str), "serial is not a string")
            return cls(
                aaguid=bytes.fromhex(data["aaguid"]),
                master_key=bytes.fromhex(data["master_key"]),
                batch_key=bytes.fromhex(data["batch_key"]),
                batch_certificate=bytes.fromhex(data["batch_certificate"]),
                pin_salt=bytes.fromhex(data["pin_salt"]),
                serial=serial,
                pin_verifier=None if verifier is None else bytes.fromhex(verifier),
                pin_retries=retries,
                sign_count=count,
                credentials=[Credential.from_json(entry) for entry in data["credentials"]],
                u2f=u2f,
            )
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise state_store.StateError(f"FIDO state is damaged: {exc!r}") from exc

    def __post_init__(self) -> None:
        """Refuse values no key could hold, so a damaged file fails at load."""
        _require(len(self.aaguid) == 16, "AAGUID is not 16 bytes")
        _require(len(self.master_key) == 32, "master key is not 32 bytes")
        _require(len(self.pin_salt) >= 16, "PIN salt shorter than 16 bytes")
        _require(self.serial.isdigit() and len(self.serial) <= 16, f"serial {self.serial!r}")
        _require(self.pin_verifier is None or len(self.pin_verifier) == 32, "PIN verifier length")
        _require(0 <= self.pin_retries <= PIN_RETRIES, f"pin_retries {self.pin_retries}")
        _require(0 <= self.sign_count <= 0xFFFFFFFF, f"sign_count {self.sign_count}")
        _require(len(self.credentials) <= MAX_DISCOVERABLE_CREDENTIALS, "too many credentials")
        for credential in self.credentials:
            _require(
                len(credential.credential_id) == CREDENTIAL_ID_LENGTH
                and 0 < len(credential.user_id) <= MAX_USER_ID_LENGTH
                and bool(credential.rp_id),
                "a discoverable credential is damaged",
            )
        try:
            key = serialization.load_der_private_key(self.batch_key, password=None)
            x509.load_der_x509_certificate(self.batch_certificate)
        except ValueError as exc:
            raise state_store.StateError(f"FIDO state is damaged: attestation: {exc}") from exc
        _require(isinstance(key, ec.EllipticCurvePrivateKey), "batch key is not an EC key")


def file_persister(path: Path) -> Callable[[FidoState], None]:
    def persist(state: FidoState) -> None:
        state_store.save(path, KIND, state.to_json())

    return persist


def new_fido_state(
    path: Path, *, manufacturer_home: Path | None = None, u2f: bool = True
) -> FidoState:
    """Manufacture a key: copy the batch attestation in, make a master key, save."""
    path = Path(path)
    if path.exists():
        raise state_store.StateError(f"{path} exists already; remove it to make a new key")
    maker = Manufacturer.load_or_create(manufacturer_home)
    state = FidoState(
        aaguid=maker.aaguid,
        master_key=secrets.token_bytes(32),
        batch_key=maker.batch_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        batch_certificate=maker.batch_certificate.public_bytes(serialization.Encoding.DER),
        pin_salt=secrets.token_bytes(16),
        serial=str(secrets.randbelow(90_000_000) + 10_000_000),
        u2f=u2f,
    )
    file_persister(path)(state)
    return state


def load_authenticator(path: Path, presence: UserPresence, **kw: Any) -> Authenticator:
    """The key whose state is at ``path``, saving back there; ``kw`` are ``Authenticator``'s
    keyword arguments (``clock``, ``up_timeout``)."""
    state = FidoState.from_json(state_store.load(Path(path), KIND))
    return Authenticator(state, file_persister(Path(path)), presence, **kw)


# --- credentials ---------------------------------------------------------------------------


PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def cose_key(public: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> dict[int, Any]:
    """A credential public key as a COSE_Key (RFC 8152 13.1 and 13.2)."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        numbers = public.public_numbers()
        return {
            1: 2,  # kty EC2
            3: ES256,
            -1: 1,  # crv P-256
            -2: numbers.x.to_bytes(32, "big"),
            -3: numbers.y.to_bytes(32, "big"),
        }
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {1: 1, 3: EDDSA, -1: 6, -2: raw}  # kty OKP, crv Ed25519


@dataclass(frozen=True)
class CredentialKey:
    alg: int
    discoverable: bool
    private: PrivateKey

    @classmethod
    def generate(cls, alg: int, discoverable: bool) -> CredentialKey:
        private: PrivateKey
        if alg == ES256:
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            private = ed25519.Ed25519PrivateKey.generate()
        return cls(alg, discoverable, private)

    def raw(self) -> bytes:
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            return self.private.private_numbers().private_value.to_bytes(32, "big")
        return self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def cose_public(self) -> dict[int, Any]:
        return cose_key(self.private.public_key())

    def sign(self, message: bytes) -> bytes:
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            return self.private.sign(message, ec.ECDSA(hashes.SHA256()))
        return self.private.sign(message)


def seal_credential(master_key: bytes, rp_id_hash: bytes, key: CredentialKey) -> bytes:
    nonce = secrets.token_bytes(12)
    flags = _CRED_DISCOVERABLE if key.discoverable else 0
    plaintext = bytes((_ALG_CODES[key.alg], flags)) + key.raw()
    sealed = AESGCM(master_key).encrypt(nonce, plaintext, bytes((_CRED_FORMAT,)) + rp_id_hash)
    return bytes((_CRED_FORMAT,)) + nonce + sealed


def open_credential(
    master_key: bytes, rp_id_hash: bytes, credential_id: bytes
) -> CredentialKey | None:
    """The key inside a credential ID this device sealed for this RP, else None."""
    if len(credential_id) != CREDENTIAL_ID_LENGTH or credential_id[0] != _CRED_FORMAT:
        return None
    try:
        plaintext = AESGCM(master_key).decrypt(
            credential_id[1:13], credential_id[13:], bytes((_CRED_FORMAT,)) + rp_id_hash
        )
    except InvalidTag:
        return None
    code, flags, raw = plaintext[0], plaintext[1], plaintext[2:]
    private: PrivateKey
    if code == _ALG_CODES[ES256]:
        private = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
        alg = ES256
    elif code == _ALG_CODES[EDDSA]:
        private = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
        alg = EDDSA
    else:
        return None
    return CredentialKey(alg, bool(flags & _CRED_DISCOVERABLE), private)


def _truncate(text: str | None) -> str | None:
    if text is None:
        return None
    return text.encode("utf-8")[:MAX_STORED_STRING].decode("utf-8", errors="ignore")


# --- request parsing -----------------------------------------------------------------------


def _options(options: Mapping[Any, Any] | None) -> dict[str, bool]:
    """Known options with boolean values; unknown option keys are ignored (6.1.2 step 5)."""
    found: dict[str, bool] = {}
    for name in ("rk", "up", "uv"):
        value = member(options or {}, name, bool)
        if value is not None:
            found[name] = value
    return found


def _descriptors(entries: list[Any] | None) -> list[bytes]:
    """Credential IDs of the public-key descriptors in an allow or exclude list."""
    ids = []
    for entry in entries or []:
        if type(entry) is not dict:
            raise CtapFailure(CtapStatus.CBOR_UNEXPECTED_TYPE)
        kind = need(member(entry, "type", str))
        credential_id = need(member(entry, "id", bytes))
        member(entry, "transports", list)
        if kind == "public-key":
            ids.append(credential_id)
    return ids


def _choose_algorithm(entries: list[Any]) -> int | None:
    chosen = None
    for entry in entries:
        if type(entry) is not dict:
            raise CtapFailure(CtapStatus.CBOR_UNEXPECTED_TYPE)
        kind = need(member(entry, "type", str))
        if "alg" not in entry:
            raise CtapFailure(CtapStatus.MISSING_PARAMETER)
        alg = entry["alg"]
        if type(alg) is not int:
            raise CtapFailure(CtapStatus.CBOR_UNEXPECTED_TYPE)
        if chosen is None and kind == "public-key" and alg in _ALG_CODES:
            chosen = alg
    return chosen


@dataclass
class _Candidate:
    credential_id: bytes
    key: CredentialKey
    record: Credential | None


@dataclass
class _PendingAssertions:
    """What getNextAssertion continues with (6.3)."""

    remaining: list[_Candidate]
    rp_id_hash: bytes
    client_data_hash: bytes
    flags: int
    verified: bool
    deadline: float


def _no_keepalive(status: int) -> None:
    pass


# --- the authenticator ---------------------------------------------------------------------


class Authenticator:
    """The CTAP 2.1 authenticator. ``persist`` is called with the state after every change
    to non-volatile memory, before the key answers."""

    def __init__(
        self,
        state: FidoState,
        persist: Callable[[FidoState], None],
        presence: UserPresence,
        *,
        clock: Callable[[], float] = time.monotonic,
        up_timeout: float = 30.0,
    ) -> None:
        self.state = state
        self._persist = persist
        self.presence = presence
        self._clock = clock
        self.up_timeout = up_timeout
        self._lock = threading.RLock()
        self.client_pin = ClientPin(state, self._save, clock)
        self._pending: _PendingAssertions | None = None
        self._booted = clock()
        self.power_up()

    @property
    def aaguid(self) -> bytes:
        return self.state.aaguid

    @property
    def u2f_enabled(self) -> bool:
        return self.state.u2f

    @u2f_enabled.setter
    def u2f_enabled(self, enabled: bool) -> None:
        with self._lock:
            self.state.u2f = enabled
            self._save()

    @property
    def serial(self) -> str:
        return self.state.serial

    def power_up(self) -> None:
        """A new power cycle. Waits for a command in progress to finish, as the core has one
        thread of control; transports cancel a pending touch wait first."""
        with self._lock:
            self._booted = self._clock()
            self.client_pin.power_up()
            self._pending = None
            self._take_cancel()  # a cancel from before the power cycle is stale

    def _save(self) -> None:
        self._persist(self.state)

    # --- the wire --------------------------------------------------------------------------

    def handle_cbor(
        self, request: bytes, keepalive: Callable[[int], None] = _no_keepalive
    ) -> bytes:
        with self._lock:
            command = "--"
            try:
                raw = bytes(request)
                command = raw[:1].hex()
                response = self._handle_cbor(raw, keepalive)
            except CtapFailure as failure:
                response = bytes((failure.status,))
            except Exception:
                logger.exception("internal error in a CTAP2 command")
                response = bytes((CtapStatus.OTHER,))
            finally:
                self._take_cancel()  # a cancel belongs to the request it arrived during
            logger.debug("CTAP2 command %s -> status %02X", command, response[0])
            return response

    def handle_u2f(self, apdu: bytes) -> bytes:
        with self._lock:
            self._pending = None
            try:
                if not self.state.u2f:
                    return b"\x6d\x00"
                return process_u2f(_U2fBridge(self), bytes(apdu))
            except Exception:
                logger.exception("internal error in a U2F command")
                return b"\x6f\x00"
            finally:
                self._take_cancel()

    def _handle_cbor(self, request: bytes, keepalive: Callable[[int], None]) -> bytes:
        if not request:
            raise CtapFailure(CtapStatus.INVALID_LENGTH)
        if len(request) > MAX_MSG_SIZE:
            raise CtapFailure(CtapStatus.REQUEST_TOO_LARGE)
        command, payload = request[0], request[1:]
        if command != Command.GET_NEXT_ASSERTION:
            self._pending = None
        handlers: dict[int, Callable[[Mapping[Any, Any], Callable[[int], None]], Any]] = {
            Command.MAKE_CREDENTIAL: self._make_credential,
            Command.GET_ASSERTION: self._get_assertion,
            Command.GET_INFO: lambda params, keepalive: self._get_info(),
            Command.CLIENT_PIN: lambda params, keepalive: self.client_pin.process(params),
            Command.RESET: lambda params, keepalive: self._reset(keepalive),
            Command.GET_NEXT_ASSERTION: lambda params, keepalive: self._get_next_assertion(),
            Command.SELECTION: lambda params, keepalive: self._wait_up(keepalive),
        }
        handler = handlers.get(command)
        if handler is None:
            raise CtapFailure(CtapStatus.INVALID_COMMAND)
        params: Mapping[Any, Any] = {}
        if command in _NO_PARAMETERS:
            if payload:
                raise CtapFailure(CtapStatus.INVALID_LENGTH)
        elif payload:
            try:
                decoded = decode_cbor(payload)
            except (ValueError, RecursionError) as exc:
                raise CtapFailure(CtapStatus.INVALID_CBOR) from exc
            if type(decoded) is not dict:
                raise CtapFailure(CtapStatus.CBOR_UNEXPECTED_TYPE)
            params = decoded
        result = handler(params, keepalive)
        return b"\x00" if result is None else b"\x00" + cbor.encode(result)

    # --- user presence ---------------------------------------------------------------------

    def _take_cancel(self) -> bool:
        presence = self.presence
        return isinstance(presence, CancellablePresence) and presence.take_cancel()

    def _wait_up(
        self,
        keepalive: Callable[[int], None],
        on_timeout: CtapStatus = CtapStatus.USER_ACTION_TIMEOUT,
    ) -> None:
        if self.presence.wait(self.up_timeout, keepalive):
            return
        if self._take_cancel():
            raise CtapFailure(CtapStatus.KEEPALIVE_CANCEL)
        raise CtapFailure(on_timeout)

    def _probe(self, keepalive: Callable[[int], None]) -> NoReturn:
        """A zero-length pinUvAuthParam: the platform asks the user to pick this key
        (6.1.2 step 1, 6.2.2 step 1)."""
        self._wait_up(keepalive, on_timeout=CtapStatus.OPERATION_DENIED)
        raise CtapFailure(
            CtapStatus.PIN_INVALID if self.client_pin.pin_set else CtapStatus.PIN_NOT_SET
        )

    def _collect_presence(self, keepalive: Callable[[int], None], with_token: bool) -> None:
        if not (with_token and self.client_pin.token_user_present()):
            self._wait_up(keepalive)
        if with_token:
            self.client_pin.token_consumed()

    # --- credentials -----------------------------------------------------------------------

    def _find(self, rp_id_hash: bytes, credential_id: bytes) -> _Candidate | None:
        key = open_credential(self.state.master_key, rp_id_hash, credential_id)
        if key is None:
            return None
        record = None
        if key.discoverable:
            record = next(
                (c for c in self.state.credentials if c.credential_id == credential_id), None
            )
            if record is None:  # overwritten by a newer credential for the same user
                return None
        return _Candidate(credential_id, key, record)

    def _next_counter(self) -> int:
        self.state.sign_count = min(self.state.sign_count + 1, 0xFFFFFFFF)
        self._save()
        return self.state.sign_count

    # --- authenticatorGetInfo (6.4) ---------------------------------------------------------

    def _get_info(self) -> dict[int, Any]:
        versions = ["FIDO_2_0", "FIDO_2_1"]
        if self.state.u2f:
            versions.insert(0, "U2F_V2")
        return {
            0x01: versions,
            0x03: self.state.aaguid,
            0x04: {
                "rk": True,
                "up": True,
                "plat": False,
                "clientPin": self.client_pin.pin_set,
                "pinUvAuthToken": True,
                "makeCredUvNotRqd": True,
            },
            0x05: MAX_MSG_SIZE,
            0x06: list(self.client_pin.protocols),
            0x07: MAX_CREDENTIAL_COUNT_IN_LIST,
            0x08: CREDENTIAL_ID_LENGTH,
            0x09: ["nfc", "usb"],
            0x0A: [{"alg": ES256, "type": "public-key"}, {"alg": EDDSA, "type": "public-key"}],
            0x0C: False,
            0x0D: 4,
            0x0E: FIRMWARE_VERSION,
            0x14: MAX_DISCOVERABLE_CREDENTIALS - len(self.state.credentials),
        }

    # --- authenticatorMakeCredential (6.1) --------------------------------------------------

    def _make_credential(
        self, params: Mapping[Any, Any], keepalive: Callable[[int], None]
    ) -> dict[int, Any]:
        client_data_hash = need(member(params, 0x01, bytes))
        rp = need(member(params, 0x02, dict))
        user = need(member(params, 0x03, dict))
        algorithm = _choose_algorithm(need(member(params, 0x04, list)))
        excluded = _descriptors(member(params, 0x05, list))
        member(params, 0x06, dict)  # no extensions are supported; unknown ones are ignored
        options = _options(member(params, 0x07, dict))
        pin_param = member(params, 0x08, bytes)
        pin_protocol = member(params, 0x09, int)
        enterprise = member(params, 0x0A, int)
        rp_id = need(member(rp, "id", str))
        member(rp, "name", str)
        user_id = need(member(user, "id", bytes))
        user_name = member(user, "name", str)
        display_name = member(user, "displayName", str)
        if not 0 < len(user_id) <= MAX_USER_ID_LENGTH:
            raise CtapFailure(CtapStatus.INVALID_PARAMETER)

        if pin_param is not None and not pin_param:
            self._probe(keepalive)
        if pin_param is not None:
            self.client_pin.protocol(pin_protocol)
        if algorithm is None:
            raise CtapFailure(CtapStatus.UNSUPPORTED_ALGORITHM)
        resident = options.get("rk", False)
        if not options.get("up", True):
            raise CtapFailure(CtapStatus.INVALID_OPTION)
        if options.get("uv", False) and pin_param is None:
            raise CtapFailure(CtapStatus.INVALID_OPTION)  # no built-in user verification
        if enterprise is not None:
            raise CtapFailure(CtapStatus.INVALID_PARAMETER)
        # makeCredUvNotRqd: with a PIN set, only discoverable credentials need the token.
        if pin_param is None and self.client_pin.pin_set and resident:
            raise CtapFailure(CtapStatus.PUAT_REQUIRED)
        if pin_param is not None:
            self.client_pin.check_token(
                pin_protocol, client_data_hash, pin_param, Permission.MAKE_CREDENTIAL, rp_id
            )
        rp_id_hash = hashlib.sha256(rp_id.encode("utf-8")).digest()
        if any(self._find(rp_id_hash, credential_id) for credential_id in excluded):
            # Touch first either way, so an exclude list cannot be probed silently.
            if not (pin_param is not None and self.client_pin.token_user_present()):
                present = self.presence.wait(self.up_timeout, keepalive)
                if not present and self._take_cancel():
                    raise CtapFailure(CtapStatus.KEEPALIVE_CANCEL)
            raise CtapFailure(CtapStatus.CREDENTIAL_EXCLUDED)
        self._collect_presence(keepalive, with_token=pin_param is not None)

        keepalive(STATUS_PROCESSING)
        key = CredentialKey.generate(algorithm, discoverable=resident)
        credential_id = seal_credential(self.state.master_key, rp_id_hash, key)
        if resident:
            kept = [
                c for c in self.state.credentials if not (c.rp_id == rp_id and c.user_id == user_id)
            ]
            if len(kept) >= MAX_DISCOVERABLE_CREDENTIALS:
                raise CtapFailure(CtapStatus.KEY_STORE_FULL)
            kept.append(
                Credential(
                    credential_id, rp_id, user_id, _truncate(user_name), _truncate(display_name)
                )
            )
            self.state.credentials = kept
        flags = FLAG_UP | FLAG_AT | (FLAG_UV if pin_param is not None else 0)
        auth_data = (
            rp_id_hash
            + bytes((flags,))
            + self._next_counter().to_bytes(4, "big")
            + self.state.aaguid
            + len(credential_id).to_bytes(2, "big")
            + credential_id
            + cbor.encode(key.cose_public())
        )
        batch_key = serialization.load_der_private_key(self.state.batch_key, password=None)
        assert isinstance(batch_key, ec.EllipticCurvePrivateKey)  # noqa: S101 - checked at load
        signature = batch_key.sign(auth_data + client_data_hash, ec.ECDSA(hashes.SHA256()))
        return {
            0x01: "packed",
            0x02: auth_data,
            0x03: {"alg": ES256, "sig": signature, "x5c": [self.state.batch_certificate]},
        }

    # --- authenticatorGetAssertion (6.2) and authenticatorGetNextAssertion (6.3) ---------

    def _get_assertion(
        self, params: Mapping[Any, Any], keepalive: Callable[[int], None]
    ) -> dict[int, Any]:
        rp_id = need(member(params, 0x01, str))
        client_data_hash = need(member(params, 0x02, bytes))
        allow_list = member(params, 0x03, list)
        allowed = _descriptors(allow_list)
        member(params, 0x04, dict)
        options = _options(member(params, 0x05, dict))
        pin_param = member(params, 0x06, bytes)
        pin_protocol = member(params, 0x07, int)

        if pin_param is not None and not pin_param:
            self._probe(keepalive)
        if pin_param is not None:
            self.client_pin.protocol(pin_protocol)
        if "rk" in options:
            raise CtapFailure(CtapStatus.UNSUPPORTED_OPTION)
        up = options.get("up", True)
        if options.get("uv", False) and pin_param is None:
            raise CtapFailure(CtapStatus.INVALID_OPTION)
        verified = pin_param is not None
        if pin_param is not None:
            self.client_pin.check_token(
                pin_protocol, client_data_hash, pin_param, Permission.GET_ASSERTION, rp_id
            )
        rp_id_hash = hashlib.sha256(rp_id.encode("utf-8")).digest()
        candidates: list[_Candidate] = []
        if allow_list:  # present and non-empty, even if no entry is of a type we know
            # With an allow list one applicable credential is used (6.2.2 step 11).
            for credential_id in allowed:
                found = self._find(rp_id_hash, credential_id)
                if found is not None:
                    candidates = [found]
                    break
        else:
            for record in reversed(self.state.credentials):  # most recent first
                if record.rp_id == rp_id:
                    found = self._find(rp_id_hash, record.credential_id)
                    if found is not None:
                        candidates.append(found)
        if not candidates:
            raise CtapFailure(CtapStatus.NO_CREDENTIALS)
        if up:
            self._collect_presence(keepalive, with_token=pin_param is not None)
        flags = (FLAG_UP if up else 0) | (FLAG_UV if verified else 0)
        number = len(candidates) if not allow_list and len(candidates) > 1 else None
        if number is not None:
            self._pending = _PendingAssertions(
                remaining=candidates[1:],
                rp_id_hash=rp_id_hash,
                client_data_hash=client_data_hash,
                flags=flags,
                verified=verified,
                deadline=self._clock() + NEXT_ASSERTION_SECONDS,
            )
        return self._assertion(candidates[0], rp_id_hash, client_data_hash, flags, verified, number)

    def _get_next_assertion(self) -> dict[int, Any]:
        pending = self._pending
        if pending is None or not pending.remaining or self._clock() > pending.deadline:
            self._pending = None
            raise CtapFailure(CtapStatus.NOT_ALLOWED)
        candidate = pending.remaining.pop(0)
        pending.deadline = self._clock() + NEXT_ASSERTION_SECONDS
        return self._assertion(
            candidate,
            pending.rp_id_hash,
            pending.client_data_hash,
            pending.flags,
            pending.verified,
            None,
        )

    def _assertion(
        self,
        candidate: _Candidate,
        rp_id_hash: bytes,
        client_data_hash: bytes,
        flags: int,
        verified: bool,
        number: int | None,
    ) -> dict[int, Any]:
        auth_data = rp_id_hash + bytes((flags,)) + self._next_counter().to_bytes(4, "big")
        response: dict[int, Any] = {
            0x01: {"id": candidate.credential_id, "type": "public-key"},
            0x02: auth_data,
            0x03: candidate.key.sign(auth_data + client_data_hash),
        }
        record = candidate.record
        if record is not None:
            user: dict[str, Any] = {"id": record.user_id}
            # Names identify a person: only after user verification (6.2.2 step 12).
            if verified and record.user_name is not None:
                user["name"] = record.user_name
            if verified and record.display_name is not None:
                user["displayName"] = record.display_name
            response[0x04] = user
        if number is not None:
            response[0x05] = number
        return response

    # --- authenticatorReset (6.6) ----------------------------------------------------------

    def _reset(self, keepalive: Callable[[int], None]) -> None:
        if self._clock() - self._booted > RESET_WINDOW_SECONDS:
            raise CtapFailure(CtapStatus.NOT_ALLOWED)
        self._wait_up(keepalive)
        self.state.master_key = secrets.token_bytes(32)
        self.state.credentials = []
        self.state.pin_salt = secrets.token_bytes(16)
        self.state.pin_verifier = None
        self.state.pin_retries = PIN_RETRIES
        self.state.sign_count = 0
        self._save()
        self.client_pin.power_up()
        logger.info("authenticator reset: credentials and PIN erased")


class _U2fBridge:
    """The authenticator core as CTAP1/U2F sees it."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    def u2f_new_credential(self, application: bytes) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
        key = CredentialKey.generate(ES256, discoverable=False)
        assert isinstance(key.private, ec.EllipticCurvePrivateKey)  # noqa: S101
        state = self._authenticator.state
        return seal_credential(state.master_key, application, key), key.private

    def u2f_key(self, key_handle: bytes, application: bytes) -> ec.EllipticCurvePrivateKey | None:
        found = self._authenticator._find(application, key_handle)
        if found is None or not isinstance(found.key.private, ec.EllipticCurvePrivateKey):
            return None
        return found.key.private

    def u2f_next_counter(self) -> int:
        return self._authenticator._next_counter()

    def u2f_user_present(self) -> bool:
        return self._authenticator.presence.wait(0.0, _no_keepalive)

    def u2f_attestation(self) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        state = self._authenticator.state
        key = serialization.load_der_private_key(state.batch_key, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # noqa: S101 - checked at load
        return key, state.batch_certificate
