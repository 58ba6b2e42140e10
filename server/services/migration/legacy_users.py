"""Legacy users and what they prove possession with (key cards, code tokens): finding them,
adding and issuing them (tests, small imports), and marking one migrated. ``LegacyStore``
builds the legacy proof on this."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import uuid
from collections.abc import Callable

from sqlalchemy.orm import Session

from server.services.identities import AuditHook
from server.services.migration.errors import (
    LegacyAlreadyMigrated,
    LegacyUserExists,
    LegacyUserNotFound,
)
from server.services.migration.formats import (
    LegacyFormatError,
    LegacyPasswordHash,
    bitmap_from_positions,
    card_indexes,
    unused_positions,
)
from server.services.migration.legacy_proof import TOKEN_ALGORITHMS, USER_ID
from server.services.person_number import PersonNumber
from server.services.secretbox import SecretBox
from server.services.verifiers.otp import HotpState, TotpState
from server.storage.legacy_repositories import LegacyUserRepository
from server.storage.migration_tables import (
    KeyCardStatus,
    LegacyCodeToken,
    LegacyKeyCard,
    LegacyUser,
    LegacyUserStatus,
)


class LegacyUsers:
    """Legacy users over one session. ``clock`` returns seconds since the epoch, like
    ``Services.clock``."""

    def __init__(
        self,
        session: Session,
        secrets_box: SecretBox,
        clock: Callable[[], float],
        audit: AuditHook,
    ) -> None:
        self._users = LegacyUserRepository(session)
        self._box = secrets_box
        self._clock = clock
        self._audit = audit

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    # --- lookups ------------------------------------------------------------------------------

    def find(self, user_id: str) -> LegacyUser | None:
        if not USER_ID.fullmatch(user_id):
            return None
        return self._users.get(user_id)

    def get(self, user_id: str) -> LegacyUser:
        user = self.find(user_id)
        if user is None:
            raise LegacyUserNotFound(f"no legacy user {user_id!r}")
        return user

    def active_card(self, user_id: str) -> LegacyKeyCard | None:
        return self._users.active_card(user_id)

    def code_token(self, user_id: str) -> LegacyCodeToken | None:
        return self._users.code_token(user_id)

    # --- administration -------------------------------------------------------------------------

    def add_user(
        self,
        user_id: str,
        person_number: str,
        name: str,
        birth_year: int,
        password_hash: str,
        *,
        bank: str | None = None,
        row_digest: str | None = None,
    ) -> LegacyUser:
        """Add one legacy user (tests, small imports). The password hash must be in the legacy
        format (``LegacyFormatError`` if not); the person number is stored as ddmmyy-ssss."""
        if not USER_ID.fullmatch(user_id):
            raise LegacyFormatError("user id: 1-64 characters, no spaces or control characters")
        LegacyPasswordHash.parse(password_hash)
        number = PersonNumber.parse(person_number).formatted
        if row_digest is None:
            canonical = [user_id, number, name, birth_year, bank, password_hash]
            row_digest = hashlib.sha256(
                json.dumps(canonical, ensure_ascii=False).encode("utf-8")
            ).hexdigest()
        user = LegacyUser(
            user_id=user_id,
            person_number=number,
            name=name,
            birth_year=birth_year,
            bank=bank,
            password_hash=password_hash,
            status=LegacyUserStatus.ACTIVE,
            failures=0,
            row_digest=row_digest,
            imported_at=self.now(),
        )
        if not self._users.add(user):
            raise LegacyUserExists("legacy user id or person number taken")
        return user

    def issue_card(
        self,
        user_id: str,
        secret: bytes,
        *,
        serial: str | None = None,
        used_positions: tuple[int, ...] | list[int] = (),
    ) -> LegacyKeyCard:
        """Give the user a key card made from ``secret`` (32 bytes, sealed at once); a card
        active before is replaced. ``used_positions`` marks codes used already (imports)."""
        user = self.get(user_id)
        card_indexes(secret)  # checks the secret's size
        serial = serial or f"KC{secrets.randbelow(10**10):010d}"
        for previous in self._users.active_cards(user.user_id):
            previous.status = KeyCardStatus.REPLACED
        bitmap = bitmap_from_positions(list(used_positions))
        remaining = len(unused_positions(bitmap))
        card = LegacyKeyCard(
            serial=serial,
            user_id=user.user_id,
            sealed_secret=self._box.seal(secret, context=f"legacy-card:{serial}"),
            used=bitmap,
            remaining=remaining,
            status=KeyCardStatus.ACTIVE if remaining else KeyCardStatus.EXHAUSTED,
            issued_at=self.now(),
        )
        if not self._users.add(card):
            raise LegacyUserExists("key card serial taken", detail="this serial is taken")
        return card

    def issue_token(
        self,
        user_id: str,
        secret: bytes,
        *,
        algorithm: str = "totp",
        digits: int = 6,
        serial: str | None = None,
        counter: int = 0,
    ) -> LegacyCodeToken:
        """Give the user a legacy code token (TOTP or HOTP); its seed is sealed at once."""
        user = self.get(user_id)
        if algorithm not in TOKEN_ALGORITHMS:
            raise LegacyFormatError("code token: algorithm is totp or hotp")
        # The verifier's own checks: a seed of at least 112 bits, 6 to 8 digits.
        if algorithm == "totp":
            TotpState(secret, digits)
        else:
            HotpState(secret, digits, counter=counter)
        serial = serial or f"CT{secrets.randbelow(10**10):010d}"
        token = LegacyCodeToken(
            serial=serial,
            user_id=user.user_id,
            sealed_secret=self._box.seal(secret, context=f"legacy-token:{serial}"),
            algorithm=algorithm,
            digits=digits,
            counter=counter,
            failures=0,
        )
        if not self._users.add(token):
            raise LegacyUserExists("code token serial taken", detail="this serial is taken")
        return token

    def mark_migrated(self, user_id: str, identity_id: uuid.UUID) -> LegacyUser:
        """Record that the legacy user moved to ``identity_id``. Legacy login keeps working
        until the shutdown date. Repeating it for the same identity changes nothing."""
        user = self.get(user_id)
        if user.status is LegacyUserStatus.MIGRATED:
            if user.identity_id == identity_id:
                return user
            raise LegacyAlreadyMigrated("migrated to another identity")
        if user.status is LegacyUserStatus.CLOSED:
            raise LegacyAlreadyMigrated(
                "legacy user closed", detail="this legacy user ID is closed"
            )
        user.status = LegacyUserStatus.MIGRATED
        user.identity_id = identity_id
        user.migrated_at = self.now()
        self._users.save("legacy user", user.user_id)
        self._audit(
            "legacy.user.migrated", {"legacy_user": user.user_id, "identity": str(identity_id)}
        )
        return user

    # --- secrets ---------------------------------------------------------------------------------

    def _open_card(self, card: LegacyKeyCard) -> bytes:
        return self._box.open(card.sealed_secret, context=f"legacy-card:{card.serial}")
