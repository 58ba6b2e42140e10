"""ISO 7816-4 status words, and the conversion of a non-success status word to a typed error."""

from __future__ import annotations

from enum import IntEnum, unique

from devices.protocol.errors import (
    ApduError,
    ConditionsNotSatisfied,
    FileNotFound,
    InvalidPin,
    PinBlocked,
    SecurityStatusNotSatisfied,
    WrongLength,
)


@unique
class SW(IntEnum):
    """Status words with a fixed value. Families with a count in SW2 have helpers below."""

    SUCCESS = 0x9000
    NO_INFORMATION = 0x6200
    MEMORY_FAILURE = 0x6581
    WRONG_LENGTH = 0x6700
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
    SECURE_MESSAGING_NOT_SUPPORTED = 0x6882
    LAST_COMMAND_OF_CHAIN_EXPECTED = 0x6883
    COMMAND_CHAINING_NOT_SUPPORTED = 0x6884
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTH_METHOD_BLOCKED = 0x6983
    DATA_INVALID = 0x6984
    CONDITIONS_NOT_SATISFIED = 0x6985
    COMMAND_NOT_ALLOWED = 0x6986
    WRONG_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    NOT_ENOUGH_MEMORY = 0x6A84
    INCORRECT_P1P2 = 0x6A86
    REFERENCED_DATA_NOT_FOUND = 0x6A88
    WRONG_P1P2 = 0x6B00
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00


def bytes_remaining(count: int) -> int:
    """61xx: ``count`` more response bytes wait for GET RESPONSE (00 means 256 or more)."""
    return 0x6100 | min(count, 256) & 0xFF


def retries_remaining(count: int) -> int:
    """63Cx: verification failed, ``count`` tries left."""
    if not 0 <= count <= 15:
        raise ValueError("a retry count fits in four bits")
    return 0x63C0 | count


def wrong_le(exact: int) -> int:
    """6Cxx: wrong Le; ``exact`` is the length the card would return."""
    return 0x6C00 | exact & 0xFF


def is_success(sw: int) -> bool:
    return sw == SW.SUCCESS


def error_for_sw(sw: int) -> ApduError:
    """The typed error for a status word that is not 9000 (and not a 61xx continuation)."""
    if sw & 0xFFF0 == 0x63C0:
        return InvalidPin(retries_left=sw & 0x0F, sw=sw)
    if sw == SW.AUTH_METHOD_BLOCKED:
        return PinBlocked(sw)
    if sw == SW.WRONG_LENGTH or sw & 0xFF00 == 0x6C00:
        return WrongLength(sw, f"the card rejected the command length ({sw:04X})")
    if sw == SW.SECURITY_STATUS_NOT_SATISFIED:
        return SecurityStatusNotSatisfied(sw, "security status not satisfied (6982)")
    if sw in (SW.FILE_NOT_FOUND, SW.REFERENCED_DATA_NOT_FOUND):
        return FileNotFound(sw, f"not found on the card ({sw:04X})")
    if sw == SW.CONDITIONS_NOT_SATISFIED:
        return ConditionsNotSatisfied(sw, "conditions of use not satisfied (6985)")
    try:
        name = SW(sw).name.lower().replace("_", " ")
    except ValueError:
        name = "status word"
    return ApduError(sw, f"card answered {name} ({sw:04X})")
