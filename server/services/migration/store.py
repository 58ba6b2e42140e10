"""The legacy store: legacy users, their key cards and code tokens, and the proof of a legacy
identity (user id + password + the code for a shown key number, or a code token's code), with the
legacy eID's own rules: five failed logins in a row lock the user id for an hour, failures from
one source are throttled as the new eID's are, and legacy login ends on a shutdown date.

Two callers prove people with it: the legacy login (``login``) and the
guided migration flow. The proof comes in two steps, because the key number to show is chosen
before the code is typed:

* ``begin_proof(user_id)`` picks the key number (a random unused position of the user's active
  card); the caller keeps it (a login transaction, or the flow's ``pending_index``) and passes
  it back. ``check_password`` does the same and checks the password, leaving a ``PasswordStep``.
* ``prove(user_id, password, index, code)`` (or ``complete_proof(step, code)``) decides.

Nothing in the first step tells whether the user id exists, the password was right or the card
has codes left: an unknown user id is shown a key number from a decoy card of its own (derived
from a keyed digest of the id, so it is the same set of 148 numbers every time, as a real card's
is), and the password check runs one PBKDF2 with a decoy hash. Every failure of the second step
is a ``LegacyProofFailed`` with the same public answer; ``reason`` (audit only) tells them apart.
Unknown user ids are locked after the same failures as real ones (a rate-limit row under their
digest), so a lock tells nobody who exists.

Failures are written to the session before the error is raised (counters, lock, audit): the
caller commits them, then answers. Concurrent uses of one code are settled by the ``version``
columns: of two transactions that read the card before either wrote, the later write raises
``StaleWrite`` (and one that reads after the other committed sees the code used).
"""

from __future__ import annotations

import datetime as dt
import hmac
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from server.services.identities import AuditHook, no_audit
from server.services.login.errors import Throttled
from server.services.migration.errors import (
    LegacyCardExhausted,
    LegacyCodeForOtherIndex,
    LegacyCodeUsed,
    LegacyError,
    LegacyMalformedCode,
    LegacyNewEidOnly,
    LegacyNoCard,
    LegacyProofFailed,
    LegacyShutDown,
    LegacyThrottled,
    LegacyTokenRejected,
    LegacyUnknownIndex,
    LegacyUnknownUser,
    LegacyUserClosed,
    LegacyWrongCode,
    LegacyWrongPassword,
)
from server.services.migration.formats import (
    CARD_SIZE,
    CODE_DIGITS,
    REPLACEMENT_AT,
    LegacyFormatError,
    LegacyPasswordHash,
    card_indexes,
    code_for,
    is_used,
    mark_used,
    unused_positions,
)
from server.services.migration.legacy_proof import LegacyPolicy, LegacyProof, Method, PasswordStep
from server.services.migration.legacy_users import LegacyUsers
from server.services.secretbox import SecretBox
from server.services.throttles import Throttles, network_of
from server.services.verifiers.errors import (
    CodeReplayed,
    CredentialBlocked,
    MalformedCode,
    VerificationFailed,
    WrongCode,
)
from server.services.verifiers.otp import (
    NIST_MAX_FAILURES,
    HotpState,
    TotpPolicy,
    TotpState,
    normalise_code,
    verify_hotp,
    verify_totp,
)
from server.storage.migration_tables import (
    KeyCardStatus,
    LegacyCodeToken,
    LegacyKeyCard,
    LegacyUser,
    LegacyUserStatus,
)

# Where a caller that names no source address counts from (a command on the server itself).
_NO_SOURCE = "local"


@dataclass
class _Card:
    """The card a code is checked against: the holder's, or a decoy with no row."""

    secret: bytes = field(repr=False)
    row: LegacyKeyCard | None


class LegacyStore(LegacyUsers):
    """The legacy store over one session (see the module docstring). ``clock`` returns seconds
    since the epoch, like ``Services.clock``; ``decoy_key`` (32 bytes, from the key-card pepper)
    keys the decoys and the digests of typed user ids."""

    def __init__(
        self,
        session: Session,
        secrets_box: SecretBox,
        clock: Callable[[], float] = time.time,
        audit: AuditHook = no_audit,
        *,
        decoy_key: bytes,
        policy: LegacyPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if len(decoy_key) < 32:
            raise ValueError("the decoy key has at least 32 bytes")
        super().__init__(session, secrets_box, clock, audit)
        self._decoy_key = decoy_key
        self.policy = policy or LegacyPolicy()
        self._rng = rng or random.SystemRandom()
        self._throttles = Throttles(session, audit)
        salt = hmac.digest(decoy_key, b"legacy-password-decoy", "sha256")[:16]
        self._decoy_hash = LegacyPasswordHash(
            self.policy.decoy_iterations, salt, secrets.token_bytes(32)
        )

    # --- the rules that need no user ------------------------------------------------------------

    def require_open(self, now: dt.datetime | None = None) -> None:
        """Raise ``LegacyShutDown`` from the shutdown time on."""
        shutdown = self.policy.shutdown_at
        if shutdown is not None and (now or self.now()) >= shutdown:
            raise LegacyShutDown("legacy login is past its shutdown time")

    def check_provider(self, provider: str) -> None:
        """Raise ``LegacyNewEidOnly`` for a service provider that takes only the new eID."""
        if provider in self.policy.new_only_providers:
            raise LegacyNewEidOnly(f"provider {provider!r} accepts only the new eID")

    def _throttle(self, source: str | None, subject: str, now: dt.datetime) -> None:
        """Refuse, before any check, while the source network or this user id from it is
        throttled (the same throttles as the new eID's login; a user id nobody has is
        throttled as one somebody has)."""
        network, subject_key = _counted_as(source, subject)
        try:
            Throttles.guard(self._throttles.standing(network, subject_key, now), now)
        except Throttled as exc:
            refused = LegacyThrottled("throttled")
            refused.retry_after = exc.retry_after
            raise refused from None

    def failures_counted(self, user_id: str, source: str | None = None) -> int:
        """The failures naming ``user_id`` from ``source``'s network still in its throttle
        (since it was last empty or a proof succeeded from there)."""
        network, subject_key = _counted_as(source, self._subject(user_id))
        state = self._throttles.standing(network, subject_key, self.now()).subject
        return 0 if state is None else state.failures

    # --- the proof ------------------------------------------------------------------------------

    def begin_proof(self, user_id: str) -> str:
        """The key number to show: a random unused position of the user's active card, or of
        a decoy card for anyone without one. The caller keeps it and passes it to ``prove``."""
        self.require_open()
        user = self.find(user_id)
        card = self.active_card(user.user_id) if user is not None else None
        if card is not None:
            positions = unused_positions(card.used)
            if positions:
                indexes = card_indexes(self._open_card(card))
                return indexes[self._rng.choice(positions)]
        decoy = card_indexes(self._decoy_secret(self._subject(user_id)))
        return decoy[self._rng.randrange(CARD_SIZE)]

    def check_password(
        self, user_id: str, password: str, *, source: str | None = None, index: str | None = None
    ) -> PasswordStep:
        """Check the password (one PBKDF2 for anyone) and pick the key number to show, unless
        the caller chose it already. The outcome is told only by ``complete_proof``."""
        now = self.now()
        self.require_open(now)
        self._throttle(source, self._subject(user_id), now)
        user = self.find(user_id)
        password_ok = False
        if user is None:
            self._decoy_hash.matches(password)
        else:
            try:
                password_ok = LegacyPasswordHash.parse(user.password_hash).matches(password)
            except LegacyFormatError:
                self._decoy_hash.matches(password)
        if index is None:
            index = self.begin_proof(user_id)
        return PasswordStep(
            user.user_id if user is not None else None, self._subject(user_id), password_ok, index
        )

    def prove(
        self,
        user_id: str,
        password: str,
        index: str,
        code: str,
        *,
        source: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> LegacyProof:
        """Prove a legacy identity with password and the code for ``index`` (the key number
        ``begin_proof`` gave and the caller kept). Raises ``LegacyProofFailed`` (one public
        answer, ``reason`` for the audit log), ``LegacyThrottled``,
        ``LegacyShutDown``, ``LegacyCardExhausted`` or ``LegacyNoCard``; the failure's
        counters and audit entry are in the session, for the caller to commit."""
        step = self.check_password(user_id, password, source=source, index=index)
        return self.complete_proof(step, code, source=source, context=context)

    def prove_with_token(
        self,
        user_id: str,
        password: str,
        code: str,
        *,
        source: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> LegacyProof:
        """As ``prove``, with the code of the user's legacy code token instead of the card."""
        step = self.check_password(user_id, password, source=source, index="")
        return self.complete_proof(
            step, code, method=Method.CODE_TOKEN, source=source, context=context
        )

    def complete_proof(
        self,
        step: PasswordStep,
        code: str,
        *,
        method: Method = Method.KEY_CARD,
        source: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> LegacyProof:
        """The second step: the code, against the key number of ``step`` (or the code token).
        Raises as ``prove`` does."""
        now = self.now()
        details: dict[str, Any] = {
            **(context or {}),
            "legacy_user": step.user_id,
            "method": method.value,
        }
        try:
            self.require_open(now)
            self._throttle(source, step.subject, now)
        except (LegacyShutDown, LegacyThrottled) as exc:
            self._audit("legacy.login", {**details, "result": "refused", "reason": exc.code})
            raise
        user = self.find(step.user_id) if step.user_id is not None else None
        try:
            if method is Method.CODE_TOKEN:
                proof = self._check_token(user, step, code, now)
            else:
                proof = self._check_card(user, step, code)
        except LegacyProofFailed as exc:
            self._failed(user, step, exc, source, now)
            self._audit("legacy.login", {**details, "result": "failed", "reason": exc.reason})
            raise
        except LegacyError as exc:
            self._audit("legacy.login", {**details, "result": "refused", "reason": exc.code})
            raise
        if proof.user.failures or proof.user.locked_until is not None:
            proof.user.failures = 0
            proof.user.locked_until = None
        network, subject_key = _counted_as(source, step.subject)
        self._throttles.succeeded(network=network, subject=subject_key, now=now)
        self._users.save("legacy user", proof.user.user_id)
        self._audit(
            "legacy.login",
            {
                **details,
                "result": "ok",
                "card": proof.card_serial,
                "remaining": proof.remaining,
                "identity": str(proof.user.identity_id) if proof.user.identity_id else None,
            },
        )
        return proof

    def _check_card(self, user: LegacyUser | None, step: PasswordStep, code: str) -> LegacyProof:
        submitted = normalise_code(code, CODE_DIGITS)
        row = self.active_card(user.user_id) if user is not None else None
        card = _Card(self._open_card(row), row) if row is not None else None
        checked = card or _Card(self._decoy_secret(step.subject), None)
        # Every code of the card is compared, in constant time and without stopping early, for
        # everyone: the work does not depend on who logs in or which code matched.
        indexes = card_indexes(checked.secret)
        typed = (submitted or "").encode("ascii")
        matches = [
            hmac.compare_digest(code_for(checked.secret, index).encode("ascii"), typed)
            for index in indexes
        ]
        if submitted is None:
            raise LegacyMalformedCode
        user = self._usable(user, step)
        if card is None or card.row is None:
            raise self._no_card(user)
        position = indexes.index(step.index) if step.index in indexes else None
        if position is None:
            raise LegacyUnknownIndex
        bitmap = card.row.used
        if matches[position]:
            if is_used(bitmap, position):
                raise LegacyCodeUsed
            return self._use(user, card.row, position)
        if any(hit and is_used(bitmap, p) for p, hit in enumerate(matches)):
            raise LegacyCodeUsed
        if any(matches):
            raise LegacyCodeForOtherIndex
        raise LegacyWrongCode

    def _use(self, user: LegacyUser, card: LegacyKeyCard, position: int) -> LegacyProof:
        before = card.remaining
        card.used = mark_used(card.used, position)
        card.remaining = len(unused_positions(card.used))
        if card.remaining == 0:
            card.status = KeyCardStatus.EXHAUSTED
        self._users.save("legacy key card", card.serial)
        if before > REPLACEMENT_AT >= card.remaining:
            self._audit(
                "legacy.card.replacement_due",
                {"legacy_user": user.user_id, "card": card.serial, "remaining": card.remaining},
            )
        if card.remaining == 0:
            self._audit("legacy.card.exhausted", {"legacy_user": user.user_id, "card": card.serial})
        return LegacyProof(
            user,
            Method.KEY_CARD,
            card_serial=card.serial,
            remaining=card.remaining,
            new_card_due=card.remaining <= REPLACEMENT_AT,
        )

    def _check_token(
        self, user: LegacyUser | None, step: PasswordStep, code: str, now: dt.datetime
    ) -> LegacyProof:
        token = self.code_token(user.user_id) if user is not None else None
        secret = (
            self._box.open(token.sealed_secret, context=f"legacy-token:{token.serial}")
            if token is not None
            else self._decoy_secret(step.subject)[:20]
        )
        algorithm = token.algorithm if token is not None else "totp"
        digits = token.digits if token is not None else 6
        state: TotpState | HotpState
        try:
            if algorithm == "hotp":
                state = HotpState(
                    secret,
                    digits,
                    counter=token.counter if token else 0,
                    failures=token.failures if token else 0,
                )
                state = verify_hotp(state, code, max_failures=NIST_MAX_FAILURES)
            else:
                state = TotpState(
                    secret,
                    digits,
                    last_window=token.last_used_window if token else None,
                    failures=token.failures if token else 0,
                )
                policy = TotpPolicy(max_failures=NIST_MAX_FAILURES)
                state = verify_totp(state, code, now.timestamp(), policy)
            failure: VerificationFailed[Any] | None = None
        except (MalformedCode, WrongCode, CodeReplayed, CredentialBlocked) as exc:
            failure, state = exc, exc.state
        if isinstance(failure, MalformedCode):
            raise LegacyMalformedCode
        user = self._usable(user, step)
        if token is None:
            raise LegacyTokenRejected("no code token")
        self._save_token(token, state)
        if failure is not None:
            raise LegacyTokenRejected(f"token: {failure.code}")
        return LegacyProof(user, Method.CODE_TOKEN)

    def _save_token(self, token: LegacyCodeToken, state: TotpState | HotpState) -> None:
        token.failures = state.failures
        if isinstance(state, HotpState):
            token.counter = state.counter
        elif state.last_window is not None:
            token.last_used_window = state.last_window
        self._users.save("legacy code token", token.serial)

    def _usable(self, user: LegacyUser | None, step: PasswordStep) -> LegacyUser:
        """The user, if the proof may go on to the possession factor."""
        if user is None:
            raise LegacyUnknownUser
        if user.status is LegacyUserStatus.CLOSED:
            raise LegacyUserClosed
        if not step.password_ok:
            raise LegacyWrongPassword
        return user

    def _no_card(self, user: LegacyUser) -> LegacyError:
        spent = self._users.has_exhausted_card(user.user_id)
        return LegacyCardExhausted() if spent else LegacyNoCard()

    # --- limits ---------------------------------------------------------------------------------

    def _failed(
        self,
        user: LegacyUser | None,
        step: PasswordStep,
        exc: LegacyProofFailed,
        source: str | None,
        now: dt.datetime,
    ) -> None:
        """Count a failed proof on the throttles (a malformed code is not a guess). Nothing
        of the user changes: a stranger's failures lock no one out."""
        if isinstance(exc, LegacyMalformedCode):
            return
        network, subject_key = _counted_as(source, step.subject)
        self._throttles.failed(
            network=network,
            subject=subject_key,
            now=now,
            identity=None if user is None else f"legacy:{user.user_id}",
            what="legacy login",
        )

    # --- secrets and decoys ---------------------------------------------------------------------

    def _subject(self, user_id: str) -> str:
        mac = hmac.digest(self._decoy_key, b"legacy-user|" + user_id.encode("utf-8"), "sha256")
        return mac[:16].hex()

    def _decoy_secret(self, subject: str) -> bytes:
        return hmac.digest(self._decoy_key, b"legacy-card-decoy|" + subject.encode(), "sha256")


def _counted_as(source: str | None, subject: str) -> tuple[str, str]:
    """The network a legacy proof's failures count from, and the subject they count on."""
    return network_of(source or _NO_SOURCE), f"legacy:{subject}"
