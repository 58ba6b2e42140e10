"""The errors the pure codecs raise: bytes that do not parse, and status words that say no.

Each error carries a ``hint``: one sentence telling a person what to do about it. The drivers'
own errors (``devices.errors``) share the base class ``DeviceError`` defined here.
"""

from __future__ import annotations

from collections.abc import Iterable


class DeviceError(Exception):
    """Base of every error raised by ``devices``."""

    hint: str = ""
    # Set once a driver has told its event listener about this error, so that the layer
    # above does not say the same thing twice.
    announced: bool = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message} ({self.hint})" if self.hint else message


# --- malformed bytes -------------------------------------------------------------------------


class ProtocolError(DeviceError):
    """Bytes that do not parse as the protocol says; ``field`` names what was wrong."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class MalformedApdu(ProtocolError):
    """A command or response APDU that does not follow ISO 7816-4."""


class PinFormatError(DeviceError, ValueError):
    """A PIN or PUK that the token cannot take (wrong length or characters); no try is spent."""

    hint = "a PIV PIN is 6 to 8 digits, a PUK 8 digits by default"


class MalformedTlv(ProtocolError):
    """BER-TLV data that is truncated or badly encoded."""


class MalformedOtp(ProtocolError):
    """Text that is not a Yubico OTP: wrong length, or characters outside modhex."""


class InvalidOtp(DeviceError):
    """A well-formed OTP that does not decrypt to a valid token under this key (the CRC check
    fails); ``field`` names the check that failed."""

    hint = "the OTP was not made by the key on record for this public id, or was mistyped"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PskcError(ProtocolError):
    """A PSKC (RFC 6030) key container that is malformed, unsupported or fails its MAC check."""


class MalformedReport(ProtocolError):
    """A HID keyboard input report that is not an 8-byte boot report, or reports a key error."""


class MalformedNdef(ProtocolError):
    """An NDEF message, NDEF file or Type 4 Tag capability container that breaks its spec."""


# --- keyboard layouts ------------------------------------------------------------------------


class UnknownCharacter(DeviceError, ValueError):
    """A character the keyboard layout has no single keystroke for; ``char`` is that character."""

    hint = "program the token with modhex (cbdefghijklnrtuv), which types the same on most layouts"

    def __init__(self, char: str, layout: str | None = None) -> None:
        self.char = char
        self.layout = layout
        where = f"the {layout!r} keyboard layout" if layout else "the keyboard layout"
        super().__init__(f"{where} has no keystroke for {char!r}")


class UnknownLayout(DeviceError, ValueError):
    """A keyboard layout name that is not known; ``name`` is that name."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        self.known = tuple(sorted(known))
        choices = ", ".join(self.known) or "none"
        super().__init__(
            f"unknown keyboard layout {name!r}", hint=f"use one of the known layouts: {choices}"
        )


# --- the card said no ------------------------------------------------------------------------


class ApduError(DeviceError):
    """The card answered with a status word other than 9000; ``sw`` is that status word."""

    def __init__(self, sw: int, message: str | None = None, *, hint: str | None = None) -> None:
        self.sw = sw
        super().__init__(message or f"card answered status word {sw:04X}", hint=hint)


class WrongLength(ApduError):
    """The card rejected the command's length (6700 or 6Cxx)."""


class SecurityStatusNotSatisfied(ApduError):
    """The operation needs a PIN or management-key authentication first (6982)."""

    hint = "verify the PIN (or authenticate with the management key) first"


class FileNotFound(ApduError):
    """The application or data object does not exist on the card (6A82)."""


class ConditionsNotSatisfied(ApduError):
    """The card refused the command in its current state (6985)."""


class PinError(DeviceError):
    """Any PIN problem, on any kind of token (the speech layer says these the same way)."""


class InvalidPin(ApduError, PinError):
    """A wrong PIN or PUK; ``retries_left`` tries remain before it blocks (63Cx)."""

    def __init__(self, retries_left: int, sw: int | None = None) -> None:
        self.retries_left = retries_left
        super().__init__(
            sw if sw is not None else 0x63C0 | retries_left,
            f"wrong PIN, {retries_left} {'try' if retries_left == 1 else 'tries'} left",
            hint="check the PIN; it blocks when no tries are left",
        )


class PinBlocked(ApduError, PinError):
    """The PIN (or PUK) has no tries left (6983)."""

    def __init__(self, sw: int = 0x6983, message: str = "the PIN is blocked") -> None:
        super().__init__(
            sw,
            message,
            hint="unblock the PIN with the PUK; if the PUK is blocked too, the card must be "
            "replaced",
        )
