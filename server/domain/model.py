"""The words every layer of the server shares: assurance levels, authenticator and credential
kinds, credential and identity states, proofing channels. Storage maps them to columns."""

from __future__ import annotations

import uuid
from enum import IntEnum, StrEnum, unique

# Unassigned tokens from a PSKC batch belong to this reserved identity until assigned:
# credentials.identity_id is NOT NULL. Its person number is not a valid one, so it can never
# collide with a real person's; it is closed, so it can never log in.
STOCK_IDENTITY_ID = uuid.UUID("00000000-0000-0000-0000-000000000000")

# The audit log is this many hash chains at most, numbered from 0 (``audit_heads`` has a row
# for each); the service appends to as many as AKKREDITIV_AUDIT_PARTITIONS says.
AUDIT_CHAINS = 64


@unique
class Level(IntEnum):
    """NSIS assurance levels (as in eIDAS); ordered, so ``min`` and comparisons work. Stored
    and sent on the wire as their lower-case names (``label``)."""

    LOW = 1
    SUBSTANTIAL = 2
    HIGH = 3

    @property
    def label(self) -> str:
        """The level's name as stored, sent and shown: ``"low"``, ``"substantial"``, ``"high"``."""
        return self.name.lower()

    @classmethod
    def parse(cls, label: str) -> Level:
        """The level a label names; ``ValueError`` for anything else."""
        for level in cls:
            if level.label == label:
                return level
        raise ValueError("not an assurance level (low, substantial or high)")


@unique
class AuthenticatorKind(StrEnum):
    """What proved a factor of a login (see the domain brief's table). Not a credential kind:
    one FIDO2 credential proves ``FIDO2`` or, with its PIN verified, ``FIDO2_UV``."""

    PASSWORD = "password"  # noqa: S105 - a kind name, not a secret
    CODE_DISPLAY = "code_display"
    AUDIO_READER = "audio_reader"
    OTP_TOKEN = "otp_token"  # noqa: S105 - a kind name, not a secret
    FIDO2 = "fido2"
    FIDO2_UV = "fido2_uv"  # the key verified its PIN (or a built-in biometric) for this login
    PIV = "piv"  # the card verified its PIN before it signed the challenge
    KEY_CARD = "key_card"


# What a person holds: each credential is of one kind. (No docstrings on the enums the API
# sends: they would become descriptions in the OpenAPI document.)
@unique
class CredentialKind(StrEnum):
    PASSWORD = "password"  # noqa: S105 (a kind name, not a secret)
    CODE_DISPLAY = "code_display"
    AUDIO_READER = "audio_reader"
    OTP_TOKEN = "otp_token"  # noqa: S105
    FIDO2 = "fido2"
    PIV = "piv"
    KEY_CARD = "key_card"


@unique
class CredentialState(StrEnum):
    ORDERED = "ordered"
    SHIPPED = "shipped"
    ACTIVATION_PENDING = "activation_pending"
    ACTIVE = "active"
    BLOCKED = "blocked"
    LOST = "lost"
    REVOKED = "revoked"
    REPLACED = "replaced"


@unique
class IdentityStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


# Where a person's identity was proven (and where operators work).
@unique
class ProofingChannel(StrEnum):
    SELF_SERVICE = "self_service"
    BANK = "bank"
    SERVICE_CENTRE = "service_centre"


@unique
class CeremonyKind(StrEnum):
    """What a ceremony row is: each kind has its own steps, and no step takes another's row."""

    LOGIN = "login"
    LEGACY_LOGIN = "legacy_login"
    FIDO_REGISTRATION = "fido_registration"
    PIV_ENROLMENT = "piv_enrolment"
