"""The one error hierarchy of the host side: every failure a caller can act on has a type.

Each error carries a ``hint``: one sentence telling a person what to do about it. Transport
libraries' own exceptions are converted to these at the seams (see ``devices.transports``).
The codecs' errors live with the codecs (``devices.protocol.errors``) and are re-exported here,
so that callers find every error in one place.
"""

from __future__ import annotations

from devices.protocol.errors import (
    ApduError,
    ConditionsNotSatisfied,
    DeviceError,
    FileNotFound,
    InvalidOtp,
    InvalidPin,
    MalformedApdu,
    MalformedNdef,
    MalformedOtp,
    MalformedReport,
    MalformedTlv,
    PinBlocked,
    PinError,
    PinFormatError,
    ProtocolError,
    PskcError,
    SecurityStatusNotSatisfied,
    UnknownCharacter,
    UnknownLayout,
    WrongLength,
)

__all__ = [
    "ApduError",
    "ConditionsNotSatisfied",
    "CredentialExcluded",
    "DeviceError",
    "DeviceRemoved",
    "DeviceTimeout",
    "FidoError",
    "FidoPinBlocked",
    "FidoPinInvalid",
    "FileNotFound",
    "InvalidOtp",
    "InvalidPin",
    "MalformedApdu",
    "MalformedNdef",
    "MalformedOtp",
    "MalformedReport",
    "MalformedTlv",
    "NoCard",
    "NoCredentials",
    "NoReader",
    "NotSupported",
    "OperationCancelled",
    "PcscUnavailable",
    "PinAuthBlocked",
    "PinBlocked",
    "PinError",
    "PinFormatError",
    "PinNotSet",
    "PinRequired",
    "ProtocolError",
    "PskcError",
    "ReaderBusy",
    "SecurityStatusNotSatisfied",
    "TouchTimeout",
    "TransportError",
    "UnknownCharacter",
    "UnknownLayout",
    "WrongLength",
]


# --- FIDO authenticators (CTAP2 status codes) ---------------------------------------------


class FidoError(DeviceError):
    """The authenticator answered a CTAP status other than success; ``code`` is that status."""

    def __init__(self, code: int, message: str | None = None, *, hint: str | None = None) -> None:
        self.code = code
        super().__init__(
            message or f"the security key answered CTAP status 0x{code:02X}", hint=hint
        )


class FidoPinInvalid(FidoError, PinError):
    """A wrong PIN; ``retries_left`` tries remain (CTAP2_ERR_PIN_INVALID)."""

    def __init__(self, retries_left: int | None) -> None:
        self.retries_left = retries_left
        left = "" if retries_left is None else f", {retries_left} tries left"
        super().__init__(
            0x31, f"wrong PIN{left}", hint="check the PIN; it blocks after 8 wrong tries"
        )


class FidoPinBlocked(FidoError, PinError):
    """No PIN tries are left (CTAP2_ERR_PIN_BLOCKED): only a reset helps."""

    hint = "the key must be reset, which deletes its credentials"


class PinAuthBlocked(FidoError, PinError):
    """Three wrong PINs in a row (CTAP2_ERR_PIN_AUTH_BLOCKED)."""

    hint = "unplug the key and plug it in again, then retry"


class PinRequired(FidoError, PinError):
    """The key has a PIN and this operation needs it (CTAP2_ERR_PUAT_REQUIRED)."""

    hint = "enter the key's PIN"


class PinNotSet(FidoError, PinError):
    """The operation needs a PIN but none is set (CTAP2_ERR_PIN_NOT_SET)."""

    hint = "set a PIN on the key first"


class TouchTimeout(FidoError):
    """Nobody touched the key in time (CTAP2_ERR_USER_ACTION_TIMEOUT)."""

    hint = "touch the key when it blinks"


class OperationCancelled(FidoError):
    """The operation was cancelled (CTAP2_ERR_KEEPALIVE_CANCEL)."""


class NoCredentials(FidoError):
    """The key holds no credential for this service (CTAP2_ERR_NO_CREDENTIALS)."""

    hint = "use the key you registered with this service"


class CredentialExcluded(FidoError):
    """The key is registered already (CTAP2_ERR_CREDENTIAL_EXCLUDED)."""


class NotSupported(FidoError):
    """The key cannot do what was asked (unsupported option, algorithm or command)."""


# --- the transport failed --------------------------------------------------------------------


class TransportError(DeviceError):
    """The path to the token failed (daemon, reader, cable, radio)."""


class PcscUnavailable(TransportError):
    """pcscd is not installed, not running, or not reachable."""

    hint = "install and start pcscd (Debian: apt-get install pcscd; then run pcscd)"


class NoReader(TransportError):
    """pcscd runs but has no (matching) reader."""

    hint = "connect a smartcard reader, or start the simulator's vpcd reader (vsmartcard-vpcd)"


class NoCard(TransportError):
    """The reader is empty."""

    hint = "insert the card into the reader (or attach a simulated card)"


class DeviceRemoved(TransportError):
    """The token went away, possibly in the middle of a command."""

    hint = "put the card back and try again; the last command may not have completed"


class ReaderBusy(TransportError):
    """Another process holds the reader exclusively."""

    hint = "close the other program that uses the card, then try again"


class DeviceTimeout(TransportError):
    """Nothing happened within the time allowed."""
