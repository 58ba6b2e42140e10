"""The non-volatile state of the simulated FIDO2 key: the state file's contents, the
discoverable credentials kept in it with their user entities, and manufacturing a new key."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from firmware_sim import state as state_store
from firmware_sim.tokens.attestation import Manufacturer
from firmware_sim.tokens.ctap_keys import CREDENTIAL_ID_LENGTH
from firmware_sim.tokens.ctap_pin import PIN_RETRIES

KIND = "fido"
MAX_DISCOVERABLE_CREDENTIALS = 25
MAX_USER_ID_LENGTH = 64


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
