"""What every command of the simulated FIDO2 key shares: the CTAP 2.1 status codes (8.2),
the failure that ends a command with one, and type-checked request fields (8.1)."""

from __future__ import annotations

from collections.abc import Container, Mapping
from enum import IntEnum, unique
from typing import Any, TypeVar, cast


@unique
class CtapStatus(IntEnum):
    """CTAP 2.1 8.2 status codes (the first byte of every response)."""

    OK = 0x00
    INVALID_COMMAND = 0x01
    INVALID_PARAMETER = 0x02
    INVALID_LENGTH = 0x03
    CBOR_UNEXPECTED_TYPE = 0x11
    INVALID_CBOR = 0x12
    MISSING_PARAMETER = 0x14
    LIMIT_EXCEEDED = 0x15
    CREDENTIAL_EXCLUDED = 0x19
    UNSUPPORTED_ALGORITHM = 0x26
    OPERATION_DENIED = 0x27
    KEY_STORE_FULL = 0x28
    UNSUPPORTED_OPTION = 0x2B
    INVALID_OPTION = 0x2C
    KEEPALIVE_CANCEL = 0x2D
    NO_CREDENTIALS = 0x2E
    USER_ACTION_TIMEOUT = 0x2F
    NOT_ALLOWED = 0x30
    PIN_INVALID = 0x31
    PIN_BLOCKED = 0x32
    PIN_AUTH_INVALID = 0x33
    PIN_AUTH_BLOCKED = 0x34
    PIN_NOT_SET = 0x35
    PUAT_REQUIRED = 0x36
    PIN_POLICY_VIOLATION = 0x37
    REQUEST_TOO_LARGE = 0x39
    INVALID_SUBCOMMAND = 0x3E
    UNAUTHORIZED_PERMISSION = 0x40
    OTHER = 0x7F


class CtapFailure(Exception):
    """Ends a command with ``status``; the core turns it into the one-byte response."""

    def __init__(self, status: CtapStatus) -> None:
        super().__init__(status.name)
        self.status = status


T = TypeVar("T")


def member(
    params: Mapping[Any, Any], key: Any, kind: type[T], *, required: bool = False
) -> T | None:
    """One member of a decoded request map, type-checked as CTAP 2.1 8.1 asks: absent and
    required -> MISSING_PARAMETER, present with another CBOR type -> CBOR_UNEXPECTED_TYPE."""
    if key not in params:
        if required:
            raise CtapFailure(CtapStatus.MISSING_PARAMETER)
        return None
    # Exact type: CBOR true is not an integer, and a negative integer is not unsigned.
    if type(params[key]) is not kind or (kind is int and params[key] < 0):
        raise CtapFailure(CtapStatus.CBOR_UNEXPECTED_TYPE)
    return cast(T, params[key])


def need(value: T | None) -> T:
    if value is None:
        raise CtapFailure(CtapStatus.MISSING_PARAMETER)
    return value


def known_options(options: Mapping[Any, Any] | None) -> dict[str, bool]:
    """Known options with boolean values; unknown option keys are ignored (6.1.2 step 5)."""
    found: dict[str, bool] = {}
    for name in ("rk", "up", "uv"):
        value = member(options or {}, name, bool)
        if value is not None:
            found[name] = value
    return found


def descriptor_ids(entries: list[Any] | None) -> list[bytes]:
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


def choose_algorithm(entries: list[Any], supported: Container[int]) -> int | None:
    """The first public-key algorithm of pubKeyCredParams in ``supported``, checking every
    entry's shape."""
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
        if chosen is None and kind == "public-key" and alg in supported:
            chosen = alg
    return chosen
