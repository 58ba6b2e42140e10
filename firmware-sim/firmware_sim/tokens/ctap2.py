"""The simulated FIDO2 security key: a CTAP 2.1 authenticator core, byte-exact on the wire
and independent of the transport (CTAPHID over USB, or NFC) that carries its messages.

``handle_cbor`` takes a command byte and CBOR and returns a status byte and CBOR; it never
raises. The core's parts live beside it (``ctap_state``, ``ctap_keys``, ``ctap_presence``,
``cbor_strict``, ``ctap_request``, ``ctap_pin``, ``u2f``); the public names of the first
four are re-exported here, so ``ctap2`` stays the module to import the key from.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum, unique
from pathlib import Path
from typing import Any, NoReturn

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor

from firmware_sim import state as state_store
from firmware_sim.tokens.cbor_strict import MAX_CBOR_DEPTH as MAX_CBOR_DEPTH
from firmware_sim.tokens.cbor_strict import decode_cbor as decode_cbor
from firmware_sim.tokens.ctap_keys import ALGORITHMS
from firmware_sim.tokens.ctap_keys import CREDENTIAL_ID_LENGTH as CREDENTIAL_ID_LENGTH
from firmware_sim.tokens.ctap_keys import EDDSA as EDDSA
from firmware_sim.tokens.ctap_keys import ES256 as ES256
from firmware_sim.tokens.ctap_keys import CredentialKey as CredentialKey
from firmware_sim.tokens.ctap_keys import PrivateKey as PrivateKey
from firmware_sim.tokens.ctap_keys import cose_key as cose_key
from firmware_sim.tokens.ctap_keys import open_credential as open_credential
from firmware_sim.tokens.ctap_keys import seal_credential as seal_credential
from firmware_sim.tokens.ctap_pin import PIN_RETRIES, ClientPin, Permission
from firmware_sim.tokens.ctap_presence import STATUS_PROCESSING as STATUS_PROCESSING
from firmware_sim.tokens.ctap_presence import STATUS_UP_NEEDED as STATUS_UP_NEEDED
from firmware_sim.tokens.ctap_presence import AlwaysPresent as AlwaysPresent
from firmware_sim.tokens.ctap_presence import ButtonPresence as ButtonPresence
from firmware_sim.tokens.ctap_presence import CancellablePresence as CancellablePresence
from firmware_sim.tokens.ctap_presence import UserPresence as UserPresence
from firmware_sim.tokens.ctap_request import (
    CtapFailure,
    CtapStatus,
    choose_algorithm,
    descriptor_ids,
    known_options,
    member,
    need,
)
from firmware_sim.tokens.ctap_state import KIND as KIND
from firmware_sim.tokens.ctap_state import (
    MAX_DISCOVERABLE_CREDENTIALS as MAX_DISCOVERABLE_CREDENTIALS,
)
from firmware_sim.tokens.ctap_state import MAX_USER_ID_LENGTH as MAX_USER_ID_LENGTH
from firmware_sim.tokens.ctap_state import Credential as Credential
from firmware_sim.tokens.ctap_state import FidoState as FidoState
from firmware_sim.tokens.ctap_state import file_persister as file_persister
from firmware_sim.tokens.ctap_state import new_fido_state as new_fido_state
from firmware_sim.tokens.u2f import process_u2f

logger = logging.getLogger(__name__)

FIRMWARE_VERSION = 0x010000
MAX_MSG_SIZE = 1200
MAX_CREDENTIAL_COUNT_IN_LIST = 8
MAX_STORED_STRING = 64  # bytes of rp/user names kept, cut at a character boundary
RESET_WINDOW_SECONDS = 10.0
NEXT_ASSERTION_SECONDS = 30.0

FLAG_UP = 0x01
FLAG_UV = 0x04
FLAG_AT = 0x40


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


# --- command helpers -----------------------------------------------------------------------


def _truncate(text: str | None) -> str | None:
    if text is None:
        return None
    return text.encode("utf-8")[:MAX_STORED_STRING].decode("utf-8", errors="ignore")


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
        algorithm = choose_algorithm(need(member(params, 0x04, list)), ALGORITHMS)
        excluded = descriptor_ids(member(params, 0x05, list))
        member(params, 0x06, dict)  # no extensions are supported; unknown ones are ignored
        options = known_options(member(params, 0x07, dict))
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
        allowed = descriptor_ids(allow_list)
        member(params, 0x04, dict)
        options = known_options(member(params, 0x05, dict))
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


def load_authenticator(path: Path, presence: UserPresence, **kw: Any) -> Authenticator:
    """The key whose state is at ``path``, saving back there; ``kw`` are ``Authenticator``'s
    keyword arguments (``clock``, ``up_timeout``)."""
    state = FidoState.from_json(state_store.load(Path(path), KIND))
    return Authenticator(state, file_persister(Path(path)), presence, **kw)
