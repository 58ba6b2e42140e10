"""The simulated OATH applet (Yubico's YKOATH protocol), byte-exact on the wire: it keeps TOTP
and HOTP secrets, which no command returns, and computes codes on request."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices.protocol import tlv
from devices.protocol.apdu import CommandApdu
from devices.protocol.errors import ProtocolError
from devices.protocol.sw import SW
from devices.protocol.ykoath import (
    AID,
    CHALLENGE_LENGTH,
    MAX_CHALLENGE_LENGTH,
    MAX_DIGITS,
    MAX_NAME_LENGTH,
    MIN_DIGITS,
    MIN_KEY_LENGTH,
    P2_FULL,
    P2_TRUNCATED,
    RESET_P1P2,
    Credential,
    Ins,
    OathAlgorithm,
    OathResponse,
    OathType,
    PutRequest,
    SelectResponse,
    Tag,
    dynamic_truncate,
    encode_calculate_all_entry,
    encode_list_entry,
    oath_hmac,
    parse_put,
    put_data,
)
from firmware_sim import state as state_store
from firmware_sim.tokens.card import CardError, SimulatedCard, build_atr

KIND = "oath"
# New enough that hosts offer SHA-512 and touch (4.3.1, 4.2.6), older than the 5.3.1 that
# brought RENAME, which this applet does not implement.
VERSION = (5, 2, 0)
MAX_CREDENTIALS = 32
SALT_LENGTH = 8
ATR = build_atr(b"\x80\x5a" + b"akkreditiv", contactless=True)
CONTACT_ATR = build_atr(b"\x80\x5a" + b"akkreditiv")
DEMO_NAME = "akkreditiv:demo"
_COUNTER_LIMIT = 1 << 64  # RFC 4226: the moving factor is eight bytes
# Commands a card with an access code answers before VALIDATE: a forgotten code must not
# make the application unusable for good.
_OPEN_WHEN_LOCKED = {Ins.VALIDATE, Ins.RESET, Ins.SEND_REMAINING}


@dataclass
class StoredCredential:
    oath_type: OathType
    algorithm: OathAlgorithm
    digits: int
    secret: bytes = field(repr=False)
    touch: bool = False
    counter: int = 0

    @classmethod
    def from_request(cls, request: PutRequest) -> StoredCredential:
        return cls(
            request.oath_type,
            request.algorithm,
            request.digits,
            request.secret,
            request.touch,
            request.counter,
        )


@dataclass
class OathState:
    """What the card keeps in non-volatile memory. ``credentials`` keeps the order of LIST."""

    salt: bytes
    credentials: dict[bytes, StoredCredential] = field(default_factory=dict)
    code_key: bytes | None = field(default=None, repr=False)
    code_algorithm: OathAlgorithm = OathAlgorithm.SHA1

    @classmethod
    def new(cls) -> OathState:
        return cls(salt=secrets.token_bytes(SALT_LENGTH))

    def to_json(self) -> dict[str, Any]:
        return {
            "salt": self.salt.hex(),
            "credentials": [
                {
                    "name": name.hex(),
                    "type": int(entry.oath_type),
                    "algorithm": int(entry.algorithm),
                    "digits": entry.digits,
                    "secret": entry.secret.hex(),
                    "touch": entry.touch,
                    "counter": entry.counter,
                }
                for name, entry in self.credentials.items()
            ],
            "code_key": None if self.code_key is None else self.code_key.hex(),
            "code_algorithm": int(self.code_algorithm),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OathState:
        try:
            credentials = {
                bytes.fromhex(item["name"]): StoredCredential(
                    oath_type=OathType(int(item["type"])),
                    algorithm=OathAlgorithm(int(item["algorithm"])),
                    digits=int(item["digits"]),
                    secret=bytes.fromhex(item["secret"]),
                    touch=bool(item["touch"]),
                    counter=int(item["counter"]),
                )
                for item in data["credentials"]
            }
            code_key = data["code_key"]
            return cls(
                salt=bytes.fromhex(data["salt"]),
                credentials=credentials,
                code_key=None if code_key is None else bytes.fromhex(code_key),
                code_algorithm=OathAlgorithm(int(data["code_algorithm"])),
            )
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise state_store.StateError(f"OATH state is damaged: {exc!r}") from exc

    def __post_init__(self) -> None:
        """Refuse values no card could hold, so a damaged file fails at load, not mid-command."""
        problems = []
        if len(self.salt) != SALT_LENGTH:
            problems.append(f"salt of {len(self.salt)} bytes")
        if len(self.credentials) > MAX_CREDENTIALS:
            problems.append(f"{len(self.credentials)} credentials, more than {MAX_CREDENTIALS}")
        for name, entry in self.credentials.items():
            if not 1 <= len(name) <= MAX_NAME_LENGTH:
                problems.append(f"a name of {len(name)} bytes")
            if not MIN_DIGITS <= entry.digits <= MAX_DIGITS:
                problems.append(f"{entry.digits} digits for {name.hex()}")
            if not MIN_KEY_LENGTH <= len(entry.secret) <= entry.algorithm.block_size:
                problems.append(f"a key of {len(entry.secret)} bytes for {name.hex()}")
            if not 0 <= entry.counter < _COUNTER_LIMIT or (
                entry.oath_type is OathType.TOTP and entry.counter
            ):
                problems.append(f"counter {entry.counter} for {name.hex()}")
        if self.code_key is not None and not (
            1 <= len(self.code_key) <= self.code_algorithm.block_size
        ):
            problems.append(f"an access key of {len(self.code_key)} bytes")
        if problems:
            raise state_store.StateError("OATH state is damaged: " + "; ".join(problems))


def _tapped() -> bool:
    """Over NFC, holding the card to the reader is the touch."""
    return True


def _expect_p1p2(apdu: CommandApdu, p1: int, p2: int) -> None:
    if (apdu.p1, apdu.p2) != (p1, p2):
        raise CardError(SW.INCORRECT_P1P2)


def _challenge_field(fields: dict[int, bytes]) -> bytes:
    challenge = fields.get(Tag.CHALLENGE)
    if challenge is None or not 1 <= len(challenge) <= MAX_CHALLENGE_LENGTH:
        raise CardError(SW.WRONG_DATA)
    return challenge


class OathApplet:
    """The OATH card application. ``persist`` is called with the new state after every change
    to non-volatile memory, before the card answers. ``touch`` is asked when a credential that
    needs a touch is calculated: True if the user touched in time (a refusal answers 6982,
    as a YubiKey does when the touch times out)."""

    aid = AID
    get_response_ins = frozenset({Ins.SEND_REMAINING})

    def __init__(
        self,
        state: OathState,
        persist: Callable[[OathState], None],
        *,
        touch: Callable[[], bool] = _tapped,
    ) -> None:
        self.state = state
        self._persist = persist
        self._touch = touch
        self.power_reset()

    # --- volatile state ------------------------------------------------------------------

    def power_reset(self) -> None:
        self._validated = False
        self._challenge: bytes | None = None

    def deselect(self) -> None:
        self.power_reset()

    @property
    def locked(self) -> bool:
        return self.state.code_key is not None and not self._validated

    def select(self, apdu: CommandApdu) -> bytes:
        # Every SELECT starts a new session: with an access code, a fresh challenge to answer.
        self.power_reset()
        if self.state.code_key is None:
            return SelectResponse(VERSION, self.state.salt).encode()
        self._challenge = secrets.token_bytes(CHALLENGE_LENGTH)
        return SelectResponse(
            VERSION, self.state.salt, self._challenge, self.state.code_algorithm
        ).encode()

    def _save(self) -> None:
        self._persist(self.state)

    # --- dispatch ------------------------------------------------------------------------

    def process(self, apdu: CommandApdu) -> tuple[bytes, int]:
        handlers: dict[int, Callable[[CommandApdu], tuple[bytes, int]]] = {
            Ins.PUT: self._put,
            Ins.DELETE: self._delete,
            Ins.SET_CODE: self._set_code,
            Ins.RESET: self._reset,
            Ins.LIST: self._list,
            Ins.CALCULATE: self._calculate,
            Ins.VALIDATE: self._validate,
            Ins.CALCULATE_ALL: self._calculate_all,
            Ins.SEND_REMAINING: self._send_remaining,
        }
        if apdu.cla & 0xF0:
            return b"", SW.CLA_NOT_SUPPORTED
        handler = handlers.get(apdu.ins)
        if handler is None:
            return b"", SW.INS_NOT_SUPPORTED
        if self.locked and apdu.ins not in _OPEN_WHEN_LOCKED:
            return b"", SW.SECURITY_STATUS_NOT_SATISFIED
        try:
            return handler(apdu)
        except ProtocolError:
            return b"", SW.WRONG_DATA

    # --- credentials ---------------------------------------------------------------------

    def _store(self, request: PutRequest) -> None:
        """Keep a credential (replacing one of the same name) and save."""
        if request.name not in self.state.credentials and (
            len(self.state.credentials) >= MAX_CREDENTIALS
        ):
            raise CardError(SW.NOT_ENOUGH_MEMORY)
        self.state.credentials[request.name] = StoredCredential.from_request(request)
        self._save()

    def _put(self, apdu: CommandApdu) -> tuple[bytes, int]:
        _expect_p1p2(apdu, 0x00, 0x00)
        self._store(parse_put(apdu.data))
        return b"", SW.SUCCESS

    def _named(self, fields: dict[int, bytes]) -> tuple[bytes, StoredCredential]:
        name = fields.get(Tag.NAME)
        if not name:
            raise CardError(SW.WRONG_DATA)
        entry = self.state.credentials.get(name)
        if entry is None:
            raise CardError(SW.DATA_INVALID)  # 6984: no such credential
        return name, entry

    def _delete(self, apdu: CommandApdu) -> tuple[bytes, int]:
        _expect_p1p2(apdu, 0x00, 0x00)
        name, _ = self._named(tlv.parse_dict(apdu.data))
        del self.state.credentials[name]
        self._save()
        return b"", SW.SUCCESS

    def _list(self, apdu: CommandApdu) -> tuple[bytes, int]:
        _expect_p1p2(apdu, 0x00, 0x00)
        answer = b"".join(
            encode_list_entry(name, entry.oath_type, entry.algorithm)
            for name, entry in self.state.credentials.items()
        )
        return answer, SW.SUCCESS

    def _reset(self, apdu: CommandApdu) -> tuple[bytes, int]:
        _expect_p1p2(apdu, *RESET_P1P2)
        # A new salt too: the application is a new one, with a new device id.
        self.state = OathState.new()
        self._save()
        self.power_reset()
        return b"", SW.SUCCESS

    # --- codes ---------------------------------------------------------------------------

    @staticmethod
    def _truncate(apdu: CommandApdu) -> bool:
        if apdu.p1 != 0x00 or apdu.p2 not in (P2_FULL, P2_TRUNCATED):
            raise CardError(SW.INCORRECT_P1P2)
        return apdu.p2 == P2_TRUNCATED

    @staticmethod
    def _response(entry: StoredCredential, message: bytes, truncate: bool) -> OathResponse:
        digest = oath_hmac(entry.algorithm, entry.secret, message)
        return OathResponse(
            entry.digits, dynamic_truncate(digest) if truncate else digest, truncate
        )

    def _calculate(self, apdu: CommandApdu) -> tuple[bytes, int]:
        truncate = self._truncate(apdu)
        fields = tlv.parse_dict(apdu.data)
        _, entry = self._named(fields)
        if entry.oath_type is OathType.TOTP:
            message = _challenge_field(fields)
        elif entry.counter >= _COUNTER_LIMIT - 1:
            return b"", SW.CONDITIONS_NOT_SATISFIED  # the counter is used up
        else:
            # HOTP ignores any challenge, as YubiKeys do: the counter is the message.
            message = entry.counter.to_bytes(8, "big")
        if entry.touch and not self._touch():
            return b"", SW.SECURITY_STATUS_NOT_SATISFIED
        if entry.oath_type is OathType.HOTP:
            # Saved before the code leaves the card: pulling the card mid-command can skip a
            # code but never hand out the same one twice.
            entry.counter += 1
            self._save()
        return self._response(entry, message, truncate).encode(), SW.SUCCESS

    def _calculate_all(self, apdu: CommandApdu) -> tuple[bytes, int]:
        """Codes for every TOTP credential at the host's challenge (whatever its period);
        HOTP and touch credentials are named with their digits but not calculated."""
        truncate = self._truncate(apdu)
        challenge = _challenge_field(tlv.parse_dict(apdu.data))
        out = bytearray()
        for name, entry in self.state.credentials.items():
            response = None
            if entry.oath_type is OathType.TOTP and not entry.touch:
                response = self._response(entry, challenge, truncate)
            out += encode_calculate_all_entry(
                name, entry.oath_type, entry.digits, entry.touch, response
            )
        return bytes(out), SW.SUCCESS

    def _send_remaining(self, apdu: CommandApdu) -> tuple[bytes, int]:
        # The runtime answers SEND REMAINING while an answer waits; reaching here, none does.
        return b"", SW.CONDITIONS_NOT_SATISFIED

    # --- access code ---------------------------------------------------------------------

    def _set_code(self, apdu: CommandApdu) -> tuple[bytes, int]:
        _expect_p1p2(apdu, 0x00, 0x00)
        fields = tlv.parse_dict(apdu.data)
        key = fields.get(Tag.KEY)
        if key is None:
            return b"", SW.WRONG_DATA
        if not key:
            if set(fields) != {Tag.KEY}:
                return b"", SW.WRONG_DATA
            self.state.code_key = None
            self._save()
            return b"", SW.SUCCESS
        try:
            OathType(key[0] & 0xF0)
            algorithm = OathAlgorithm(key[0] & 0x0F)
        except ValueError:
            return b"", SW.WRONG_DATA
        secret, challenge = key[1:], _challenge_field(fields)
        expected_fields = {Tag.KEY, Tag.CHALLENGE, Tag.RESPONSE}
        if set(fields) != expected_fields or not 1 <= len(secret) <= algorithm.block_size:
            return b"", SW.WRONG_DATA
        # The host proves it holds the key it sets, so a garbled key cannot lock the card.
        if not hmac.compare_digest(fields[Tag.RESPONSE], oath_hmac(algorithm, secret, challenge)):
            return b"", SW.WRONG_DATA
        self.state.code_key, self.state.code_algorithm = secret, algorithm
        self._save()
        self._validated = True
        return b"", SW.SUCCESS

    def _validate(self, apdu: CommandApdu) -> tuple[bytes, int]:
        _expect_p1p2(apdu, 0x00, 0x00)
        fields = tlv.parse_dict(apdu.data)
        response, host_challenge = fields.get(Tag.RESPONSE), _challenge_field(fields)
        if response is None:
            return b"", SW.WRONG_DATA
        # One try per SELECT: the challenge is spent whether the answer is right or not.
        pending, self._challenge = self._challenge, None
        key, algorithm = self.state.code_key, self.state.code_algorithm
        if key is None or pending is None:
            return b"", SW.DATA_INVALID
        if not hmac.compare_digest(response, oath_hmac(algorithm, key, pending)):
            return b"", SW.DATA_INVALID
        self._validated = True
        return tlv.encode_tlv(Tag.RESPONSE, oath_hmac(algorithm, key, host_challenge)), SW.SUCCESS


def file_persister(path: Path) -> Callable[[OathState], None]:
    def persist(state: OathState) -> None:
        state_store.save(path, KIND, state.to_json())

    return persist


def load_applet(path: Path, *, touch: Callable[[], bool] = _tapped) -> OathApplet:
    return OathApplet(
        OathState.from_json(state_store.load(path, KIND)), file_persister(path), touch=touch
    )


def new_oath_state(
    path: Path, credentials: Iterable[tuple[Credential, bytes]] | None = None
) -> OathApplet:
    """A new OATH card saved at ``path``, personalised with ``credentials`` (credential,
    secret) pairs; by default one TOTP credential, ``akkreditiv:demo``, with a random secret."""
    if path.exists():
        raise state_store.StateError(f"{path} exists already; remove it to make a new card")
    if credentials is None:
        credentials = [(Credential(DEMO_NAME, OathType.TOTP), secrets.token_bytes(20))]
    requests = [parse_put(put_data(credential, secret)) for credential, secret in credentials]
    if len({request.name for request in requests}) > MAX_CREDENTIALS:
        raise ValueError(f"the card holds at most {MAX_CREDENTIALS} credentials")
    applet = OathApplet(OathState.new(), file_persister(path))
    for request in requests:
        applet.state.credentials[request.name] = StoredCredential.from_request(request)
    applet._save()
    return applet


def make_card(
    applet: OathApplet, *, strict: bool = False, contactless: bool = True
) -> SimulatedCard:
    """A card with the OATH applet; its ATR says NFC unless ``contactless`` is False."""
    return SimulatedCard(atr=ATR if contactless else CONTACT_ATR, applets=[applet], strict=strict)
