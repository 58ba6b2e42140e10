"""The values of a legacy proof: the legacy eID's rules (``LegacyPolicy``), what the password
step leaves for the code step, the proof itself, and the names and times it is known by."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo

from server.services.migration.formats import DEFAULT_ITERATIONS
from server.storage.migration_tables import LegacyUser

# The zone the legacy eID's shutdown date is a date in.
SHUTDOWN_ZONE = "Europe/Copenhagen"
# What a legacy user id can be; anything else is looked up as nobody, without a query.
USER_ID = re.compile(r"^[^\x00-\x20\x7f]{1,64}$")
# Legacy users who have no identity yet are known to a provider by a pseudonym of this UUIDv5.
LEGACY_SUBJECT_NAMESPACE = uuid.UUID("6f0c6a52-3d55-5d0e-9b1e-2f4c8a6e7d11")
TOKEN_ALGORITHMS = ("totp", "hotp")


class Method(StrEnum):
    """What the person proved possession with, besides the password."""

    KEY_CARD = "key_card"
    CODE_TOKEN = "code_token"  # noqa: S105 - a method name, not a secret


def closing_time(day: dt.date) -> dt.datetime:
    """The moment legacy login closes for a shutdown date: the start of that day in Denmark."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=ZoneInfo(SHUTDOWN_ZONE))


def legacy_subject(user_id: str) -> uuid.UUID:
    """The id a provider's pseudonym is derived from for a legacy user with no new identity
    (a version 5 UUID, so it never equals an identity's random id)."""
    return uuid.uuid5(LEGACY_SUBJECT_NAMESPACE, user_id)


@dataclass(frozen=True)
class LegacyPolicy:
    """The legacy eID's rules, from settings (``legacy_*``)."""

    shutdown_at: dt.datetime | None = None
    new_only_providers: frozenset[str] = frozenset()
    # The decoy password hash's cost: that of the real hashes, so timing does not tell.
    decoy_iterations: int = DEFAULT_ITERATIONS

    def __post_init__(self) -> None:
        if self.shutdown_at is not None and self.shutdown_at.tzinfo is None:
            raise ValueError("the shutdown time is timezone-aware")


@dataclass(frozen=True)
class PasswordStep:
    """What the password step leaves for the code step. It says whether the password was
    right, so it is kept out of the person's reach (sealed, or in the caller's own row).

    ``user_id`` is the legacy user's id, or ``None`` when nobody has the id typed (which is not
    kept: it may be anything a person typed); ``subject`` is a keyed digest of the typed id,
    which locks unknown ids and derives their decoy card; ``index`` is the key number shown.
    """

    user_id: str | None
    subject: str
    password_ok: bool
    index: str | None

    def to_bytes(self) -> bytes:
        record = {"u": self.user_id, "s": self.subject, "p": self.password_ok, "i": self.index}
        return json.dumps(record, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> PasswordStep:
        record = json.loads(data)
        return cls(record["u"], record["s"], bool(record["p"]), record["i"])


@dataclass(frozen=True)
class LegacyProof:
    """A successful proof. ``new_card_due``: 20 codes or fewer remain on the card, and a new
    card is on its way (the person is told so)."""

    user: LegacyUser
    method: Method
    card_serial: str | None = None
    remaining: int | None = None
    new_card_due: bool = False
