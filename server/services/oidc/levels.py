"""NSIS levels as the ``acr`` URIs relying parties see, and a login's factors as RFC 8176
``amr`` values."""

from __future__ import annotations

from collections.abc import Iterable

from server.domain.model import AuthenticatorKind, Level

ACR_BASE = "https://data.gov.dk/concept/core/nsis/loa/"
ACR: dict[Level, str] = {level: ACR_BASE + level.name.capitalize() for level in Level}
LEVEL_OF_ACR: dict[str, Level] = {uri: level for level, uri in ACR.items()}

# RFC 8176 method references for each kind of factor: a password is "pwd"; a code typed or
# read from a device is "otp"; a security key is a hardware key ("hwk"), with its PIN also
# "pin"; a smartcard is "sc" and its PIN, checked on the card, "pin".
_AMR: dict[AuthenticatorKind, tuple[str, ...]] = {
    AuthenticatorKind.PASSWORD: ("pwd",),
    AuthenticatorKind.CODE_DISPLAY: ("otp",),
    AuthenticatorKind.AUDIO_READER: ("otp",),
    AuthenticatorKind.OTP_TOKEN: ("otp",),
    AuthenticatorKind.KEY_CARD: ("otp",),
    AuthenticatorKind.FIDO2: ("hwk",),
    AuthenticatorKind.FIDO2_UV: ("hwk", "pin"),
    AuthenticatorKind.PIV: ("sc", "pin"),
}
assert set(_AMR) == set(AuthenticatorKind)  # noqa: S101 - import-time check


def acr_of(level: Level) -> str:
    return ACR[level]


def amr_of(kinds: Iterable[AuthenticatorKind], authenticators: int) -> list[str]:
    """The ``amr`` of a login that proved ``kinds`` with ``authenticators`` distinct
    credentials: each kind's references, and "mfa" when more than one credential was used."""
    found = {value for kind in kinds for value in _AMR[kind]}
    if authenticators > 1:
        found.add("mfa")
    return sorted(found)
