"""Credential verifiers: pure functions from (stored state, submitted code, time) to the new
state to persist, or a typed ``VerificationFailed`` carrying the state to persist instead."""

from __future__ import annotations

from server.services.verifiers.errors import (
    CardExhausted,
    CodeReplayed,
    CredentialBlocked,
    MalformedCode,
    UnknownIndex,
    VerificationFailed,
    WrongCode,
    WrongToken,
)
from server.services.verifiers.keycard import (
    KeyCard,
    KeyCardState,
    challenge,
    code_entropy_bits,
    verify_keycard,
)
from server.services.verifiers.otp import (
    HotpState,
    TotpPolicy,
    TotpState,
    resync_hotp,
    verify_hotp,
    verify_totp,
)
from server.services.verifiers.yubico import YubicoState, verify_yubico

__all__ = [
    "CardExhausted",
    "CodeReplayed",
    "CredentialBlocked",
    "HotpState",
    "KeyCard",
    "KeyCardState",
    "MalformedCode",
    "TotpPolicy",
    "TotpState",
    "UnknownIndex",
    "VerificationFailed",
    "WrongCode",
    "WrongToken",
    "YubicoState",
    "challenge",
    "code_entropy_bits",
    "resync_hotp",
    "verify_hotp",
    "verify_keycard",
    "verify_totp",
    "verify_yubico",
]
