"""Why a legacy login or proof did not succeed: one typed error per reason for the service and
the audit log, but one public answer for every reason that would tell an attacker something.

Every subclass of ``LegacyProofFailed`` shares its ``code`` and ``detail``: an unknown user id,
a wrong password, a wrong code, a used code and the code of another key number all look the
same from outside. The errors that are safe to tell apart (a lock, which unknown user ids get
too; the close-down; a card with no codes left, told only after the password was right) have
their own codes and words.
"""

from __future__ import annotations

from server.domain.errors import (
    ConflictingState,
    DomainError,
    Expired,
    Refused,
    TooManyAttempts,
    UnknownSubject,
    Unverified,
)


class LegacyError(DomainError):
    """Base of the legacy store's errors."""

    code = "legacy-error"


# --- the one public answer for a failed proof ----------------------------------------------


class LegacyProofFailed(LegacyError, Unverified):
    """The legacy credentials were not accepted. ``reason`` names the cause for the audit log;
    the public ``detail`` is the same for every cause."""

    code = "verification-failed"
    default_detail = "the user ID, password or code is not right; try again"
    reason = "failed"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.reason)


class LegacyUnknownUser(LegacyProofFailed):
    reason = "unknown-user"


class LegacyUserClosed(LegacyProofFailed):
    reason = "user-closed"


class LegacyWrongPassword(LegacyProofFailed):
    reason = "wrong-password"


class LegacyWrongCode(LegacyProofFailed):
    """A well-formed code that is on no position of the card."""

    reason = "wrong-code"


class LegacyCodeUsed(LegacyProofFailed):
    """The code of a position that was used already (a replay, or the loser of a race)."""

    reason = "code-used"


class LegacyCodeForOtherIndex(LegacyProofFailed):
    """The code printed beside another key number than the one shown."""

    reason = "code-for-other-index"


class LegacyUnknownIndex(LegacyProofFailed):
    """The key number the caller kept is not on the holder's card (a stale or decoy one)."""

    reason = "unknown-index"


class LegacyMalformedCode(LegacyProofFailed):
    """Input that cannot be a code: it is refused but not counted as a guess."""

    reason = "malformed-code"


class LegacyTokenRejected(LegacyProofFailed):
    """The legacy code token's code was wrong, replayed, or the user has no token."""

    reason = "token-rejected"


# --- answers that may differ -----------------------------------------------------------------


class LegacyThrottled(LegacyError, TooManyAttempts):
    """Too many failures from one source network, or naming one user id from it: nothing is
    checked until the wait (``retry_after``) is over."""

    code = "rate-limited"
    default_detail = "too many attempts; wait and try again"


class LegacyShutDown(LegacyError, Expired):
    """The legacy eID closed on its shutdown date."""

    code = "legacy-closed"
    default_detail = "the legacy eID has closed; log in with the new eID"


class LegacyNewEidOnly(LegacyError, Refused):
    """The service provider accepts only the new eID."""

    code = "new-eid-only"
    default_detail = (
        "this service accepts only the new eID; log in with it, or move to it from the legacy "
        "eID first"
    )


class LegacyCardExhausted(LegacyError, ConflictingState):
    """Every code of the holder's card is used (told only after the password was right)."""

    code = "card-exhausted"
    default_detail = (
        "every code on your key card has been used; use the new key card that was sent to you"
    )


class LegacyNoCard(LegacyError):
    """The holder has no key card at all (told only after the password was right)."""

    code = "no-key-card"
    default_detail = "there is no key card for this user ID; ask for one, or use your code token"


# --- administration --------------------------------------------------------------------------


class LegacyUserNotFound(LegacyError, UnknownSubject):
    code = "not-found"
    default_detail = "there is no such legacy user"


class LegacyUserExists(LegacyError, ConflictingState):
    code = "conflict"
    default_detail = "a legacy user with this user ID or person number exists already"


class LegacyAlreadyMigrated(LegacyError, ConflictingState):
    """The legacy user was moved to another identity already."""

    code = "conflict"
    default_detail = "this person has moved to the new eID already"
