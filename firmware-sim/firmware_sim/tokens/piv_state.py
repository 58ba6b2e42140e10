"""What the simulated PIV card keeps in non-volatile memory (PINs, keys, data objects), and
its state file."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devices.protocol import tlv
from devices.protocol.piv import (
    AID,
    DEFAULT_MANAGEMENT_KEY,
    DEFAULT_PIN,
    DEFAULT_PUK,
    PIN_TRIES,
    PUK_TRIES,
    Algorithm,
    Chuid,
    ObjectId,
    PinPolicy,
    Slot,
    pad_pin,
)
from firmware_sim import state as state_store

KIND = "piv"
# FASC-N of a non-federal issuer (agency code 9999), the form PIV-compatible cards use.
DEFAULT_FASCN = bytes.fromhex("d4e739da739ced39ce739d836858210842108421c84210c3eb")
# Where a slot's key came from (its entry's "origin"): only a key the card generated can be
# attested. An entry without one predates the field and is not attested either.
GENERATED = "generated"
IMPORTED = "imported"


def hash_secret(salt: bytes, secret: bytes) -> str:
    return hmac.new(salt, secret, hashlib.sha256).hexdigest()


@dataclass
class PivState:
    """What the card keeps in non-volatile memory."""

    pin_hash: str
    puk_hash: str
    salt: bytes
    pin_tries: int = PIN_TRIES
    puk_tries: int = PUK_TRIES
    management_key: bytes = DEFAULT_MANAGEMENT_KEY
    management_alg: Algorithm = Algorithm.TDES
    keys: dict[int, dict[str, Any]] = field(default_factory=dict)
    objects: dict[bytes, bytes] = field(default_factory=dict)
    serial: int = 0
    # The slot F9 key (PKCS#8, hex) that signs key attestations; its certificate is object
    # 5FFF01. Empty on a card made before attestation: it attests nothing.
    attestation_key: str = ""

    @classmethod
    def new(cls, pin: str = DEFAULT_PIN, puk: str = DEFAULT_PUK) -> PivState:
        salt = secrets.token_bytes(16)
        state = cls(
            pin_hash=hash_secret(salt, pad_pin(pin)),
            puk_hash=hash_secret(salt, pad_pin(puk)),
            salt=salt,
            serial=secrets.randbelow(90_000_000) + 10_000_000,
        )
        expiry = (dt.datetime.now(dt.UTC) + dt.timedelta(days=5 * 365)).strftime("%Y%m%d")
        chuid = Chuid(fascn=DEFAULT_FASCN, guid=secrets.token_bytes(16), expiry=expiry)
        state.objects[ObjectId.CHUID.value] = chuid.encode()
        state.objects[ObjectId.CCC.value] = tlv.encode_all(
            [
                (0xF0, bytes.fromhex("a000000116ff02") + secrets.token_bytes(14)),
                (0xF1, b"\x21"),
                (0xF2, b"\x21"),
                (0xF3, b""),
                (0xF4, b"\x00"),
                (0xF5, b"\x10"),
                (0xF6, b""),
                (0xF7, b""),
                (0xFA, b""),
                (0xFB, b""),
                (0xFC, b""),
                (0xFD, b""),
                (0xFE, b""),
            ]
        )
        # Discovery object: the PIV AID and a PIN usage policy saying the PIV PIN applies.
        state.objects[ObjectId.DISCOVERY.value] = tlv.encode_all(
            [(0x4F, AID), (0x5F2F, b"\x40\x00")]
        )
        return state

    def to_json(self) -> dict[str, Any]:
        return {
            "pin_hash": self.pin_hash,
            "puk_hash": self.puk_hash,
            "salt": self.salt.hex(),
            "pin_tries": self.pin_tries,
            "puk_tries": self.puk_tries,
            "management_key": self.management_key.hex(),
            "management_alg": int(self.management_alg),
            "keys": {f"{slot:02x}": key for slot, key in self.keys.items()},
            "objects": {tag.hex(): value.hex() for tag, value in self.objects.items()},
            "serial": self.serial,
            "attestation_key": self.attestation_key,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PivState:
        try:
            return cls(
                pin_hash=str(data["pin_hash"]),
                puk_hash=str(data["puk_hash"]),
                salt=bytes.fromhex(data["salt"]),
                pin_tries=int(data["pin_tries"]),
                puk_tries=int(data["puk_tries"]),
                management_key=bytes.fromhex(data["management_key"]),
                management_alg=Algorithm(int(data["management_alg"])),
                keys={int(slot, 16): dict(key) for slot, key in data["keys"].items()},
                objects={
                    bytes.fromhex(tag): bytes.fromhex(value)
                    for tag, value in data["objects"].items()
                },
                serial=int(data["serial"]),
                attestation_key=str(data.get("attestation_key", "")),
            )
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise state_store.StateError(f"PIV state is damaged: {exc!r}") from exc

    def __post_init__(self) -> None:
        """Refuse values no card could hold, so a damaged file fails at load, not mid-command."""
        problems = []
        if not 0 <= self.pin_tries <= PIN_TRIES:
            problems.append(f"pin_tries {self.pin_tries} outside 0..{PIN_TRIES}")
        if not 0 <= self.puk_tries <= PUK_TRIES:
            problems.append(f"puk_tries {self.puk_tries} outside 0..{PUK_TRIES}")
        if not self.management_alg.is_symmetric:
            problems.append(f"management key algorithm {self.management_alg.name}")
        elif len(self.management_key) != self.management_alg.key_length:
            problems.append(
                f"management key of {len(self.management_key)} bytes for {self.management_alg.name}"
            )
        if len(self.salt) < 16:
            problems.append("salt shorter than 16 bytes")
        for slot, entry in self.keys.items():
            try:
                Slot(slot)
                if not Algorithm(entry["alg"]).is_ec:
                    problems.append(f"key {slot:02x} is not an EC key")
                PinPolicy(entry["pin_policy"])
                bytes.fromhex(entry["pkcs8"])
                if entry.get("origin", GENERATED) not in (GENERATED, IMPORTED):
                    problems.append(f"key {slot:02x} has an unknown origin")
            except (KeyError, ValueError, TypeError):
                problems.append(f"key entry {slot:02x} is damaged")
        try:
            bytes.fromhex(self.attestation_key)
        except ValueError:
            problems.append("attestation key is damaged")
        if problems:
            raise state_store.StateError("PIV state is damaged: " + "; ".join(problems))


def file_persister(path: Path) -> Callable[[PivState], None]:
    def persist(state: PivState) -> None:
        state_store.save(path, KIND, state.to_json())

    return persist
