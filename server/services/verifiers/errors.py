"""Why a code was not accepted: one typed error per reason, each carrying a stable ``code``, a
``detail`` safe to show the user, and the credential ``state`` the caller must persist."""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

StateT = TypeVar("StateT")


class VerificationFailed(Exception, Generic[StateT]):
    """Base of every verifier error.

    ``state`` is what the caller persists before answering, whether or not it changed (a wrong
    code raises the failure count; a replay leaves the state as it was), so that handling is
    always "save ``exc.state``, then map ``exc.code`` to a response". Neither the message nor
    any attribute holds a secret or the submitted code.
    """

    code: ClassVar[str] = "verification-failed"
    detail: ClassVar[str] = "The code was not accepted."

    def __init__(self, state: StateT) -> None:
        super().__init__(self.detail)
        self.state = state

    def __repr__(self) -> str:
        # The default repr would include the state; the states hide their secrets, but the
        # error's repr has no need for any of it.
        return f"{type(self).__name__}(code={self.code!r})"


class MalformedCode(VerificationFailed[StateT]):
    """The input cannot be a code of this credential (wrong length or characters). It could
    never succeed, so it is not counted as a guess."""

    code = "malformed-code"
    detail = "That is not a code of the expected form; check it and type it again."


class WrongCode(VerificationFailed[StateT]):
    """A well-formed code that does not match; the failure is counted in ``state``.
    ``attempts_left`` is how many more wrong codes block the credential (``None`` where this
    credential kind keeps no count)."""

    code = "wrong-code"
    detail = "The code is not correct."

    def __init__(self, state: StateT, *, attempts_left: int | None = None) -> None:
        super().__init__(state)
        self.attempts_left = attempts_left


class CodeReplayed(VerificationFailed[StateT]):
    """A correct code that was used (or superseded) already. For counter-based tokens (Yubico
    OTP) a valid OTP whose counters are not above the last accepted ones is also the sign of a
    cloned token: callers should record it as a security event, not only refuse it."""

    code = "code-replayed"
    detail = "This code has been used already; use a new one."


class CredentialBlocked(VerificationFailed[StateT]):
    """Too many wrong codes in a row: the caller moves the credential to blocked. A blocked code
    display or key card is replaced, never unblocked by another code."""

    code = "credential-blocked"
    detail = "Too many wrong codes: this credential is blocked and must be replaced."


class WrongToken(VerificationFailed[StateT]):
    """The OTP was made by another token than the one on record (its public id differs)."""

    code = "wrong-token"
    detail = "That code comes from another token than the one registered."


class UnknownIndex(VerificationFailed[StateT]):
    """The key card has no such key number (a stale challenge, or the wrong card)."""

    code = "unknown-index"
    detail = "That key number is not on this key card."


class CardExhausted(VerificationFailed[StateT]):
    """Every code on the key card has been used."""

    code = "card-exhausted"
    detail = "Every code on this key card has been used; use the new card."
