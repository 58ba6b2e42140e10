"""TOTP (RFC 6238) and HOTP (RFC 4226) verification for code displays, audio code readers and
OATH tokens: stored state plus submitted code in, new state to persist out."""

from __future__ import annotations

import hmac
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from devices.protocol.otp import MAX_DIGITS, MIN_DIGITS, HashAlg, hotp, totp_counter
from server.services.verifiers.errors import (
    CodeReplayed,
    CredentialBlocked,
    MalformedCode,
    WrongCode,
)

# NIST SP 800-63B 5.2.2: at most 100 consecutive failed attempts on one authenticator.
NIST_MAX_FAILURES = 100
# The code display is blocked after three wrong codes in a row, then replaced.
DEFAULT_MAX_FAILURES = 3
MIN_SECRET_BYTES = 14  # NIST SP 800-63B 5.1.4.1: OTP keys of at least 112 bits
_COUNTER_LIMIT = 1 << 64
_MAX_INPUT = 64  # longer input cannot be a code; do not spend work on it


def normalise_code(code: str, digits: int) -> str | None:
    """The code as ``digits`` ASCII digits, with any whitespace (a displayed "123 456" grouping,
    a pasted newline) removed; ``None`` when it cannot be such a code."""
    if len(code) > _MAX_INPUT:
        return None
    text = "".join(code.split())
    # isdigit() alone accepts other scripts' digits ("١٢٣"), which no token shows.
    if len(text) != digits or not (text.isascii() and text.isdigit()):
        return None
    return text


def _check_max_failures(max_failures: int) -> None:
    if not 1 <= max_failures <= NIST_MAX_FAILURES:
        raise ValueError(f"max_failures is 1..{NIST_MAX_FAILURES}, not {max_failures}")


def _check_oath(secret: bytes, digits: int, failures: int) -> None:
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"an OATH secret has at least {MIN_SECRET_BYTES} bytes (112 bits)")
    if isinstance(digits, bool) or not MIN_DIGITS <= digits <= MAX_DIGITS:
        raise ValueError(f"an OTP has {MIN_DIGITS} to {MAX_DIGITS} digits, not {digits}")
    if failures < 0:
        raise ValueError("the failure count is not negative")


def _first_match(candidates: Sequence[str], code: str) -> int | None:
    """Position of the first candidate equal to ``code``. Every candidate is compared in
    constant time and the loop never stops early, so timing says nothing about which matched."""
    submitted = code.encode("ascii")
    found: int | None = None
    for position, candidate in enumerate(candidates):
        if hmac.compare_digest(candidate.encode("ascii"), submitted) and found is None:
            found = position
    return found


# --- TOTP -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TotpState:
    """A TOTP credential's verification state. ``drift_steps`` is the token clock's learned
    offset in time steps (positive: the token runs fast); ``last_window`` the time step of the
    last accepted code, so no window is accepted twice; ``failures`` the wrong codes in a row."""

    secret: bytes = field(repr=False)
    digits: int = 6
    step: int = 30
    alg: HashAlg = HashAlg.SHA1
    drift_steps: int = 0
    last_window: int | None = None
    failures: int = 0

    def __post_init__(self) -> None:
        _check_oath(self.secret, self.digits, self.failures)
        if self.step <= 0:
            raise ValueError(f"the TOTP time step is positive, not {self.step}")


@dataclass(frozen=True, slots=True)
class TotpPolicy:
    """How far a TOTP may stray from the server's clock (in time steps).

    One step back is always accepted for transmission and typing delay (RFC 6238 section 5.2)
    and teaches nothing. Beyond it, codes up to ``drift_ahead`` steps ahead of the learned drift
    (or ``drift_behind`` steps further back) are accepted and re-learn the drift, as long as the
    total stays within ``max_drift`` (RFC 6238 section 6). ``drift_behind`` defaults to 0: a
    code from behind cannot be told from an old code someone saw on the display, whereas a code
    from ahead can only come from a fast clock. Three steps ahead learns a display 90 s fast.
    """

    drift_ahead: int = 3
    drift_behind: int = 0
    max_drift: int = 10
    max_failures: int = DEFAULT_MAX_FAILURES

    def __post_init__(self) -> None:
        if min(self.drift_ahead, self.drift_behind) < 0:
            raise ValueError("drift windows are not negative")
        if self.max_drift < max(self.drift_ahead, self.drift_behind + 1):
            raise ValueError("max_drift is at least as wide as the drift windows")
        _check_max_failures(self.max_failures)


DEFAULT_TOTP_POLICY = TotpPolicy()


def _totp_offsets(policy: TotpPolicy) -> list[int]:
    """Offsets from the expected window in order of preference: expected, delay, then outward
    (ahead before behind at equal distance)."""
    offsets = [0, -1]
    for distance in range(1, max(policy.drift_ahead, policy.drift_behind + 1) + 1):
        if distance <= policy.drift_ahead:
            offsets.append(distance)
        if 2 <= distance <= policy.drift_behind + 1:
            offsets.append(-distance)
    return offsets


def verify_totp(
    state: TotpState, code: str, at: float, policy: TotpPolicy = DEFAULT_TOTP_POLICY
) -> TotpState:
    """Check a TOTP typed at Unix time ``at`` and return the state to persist.

    Raises ``CredentialBlocked`` (the credential was, or now is, blocked after
    ``policy.max_failures`` wrong codes in a row), ``MalformedCode``, ``CodeReplayed`` (a code
    of a window no later than the last accepted one: a TOTP is accepted once per window) or
    ``WrongCode``; each carries the state to persist. ``ValueError`` means ``at`` is not a
    valid time, which is the caller's bug, not the user's.
    """
    if state.failures >= policy.max_failures:
        raise CredentialBlocked(state)
    now = totp_counter(at, state.step)
    submitted = normalise_code(code, state.digits)
    if submitted is None:
        raise MalformedCode(state)
    expected = now + state.drift_steps
    windows = [
        expected + offset
        for offset in _totp_offsets(policy)
        if expected + offset >= 0
        and (offset in (0, -1) or abs(expected + offset - now) <= policy.max_drift)
    ]
    fresh = [w for w in windows if state.last_window is None or w > state.last_window]
    stale = [w for w in windows if w not in fresh]
    # One pass over every candidate, fresh ones first so a fresh match wins a collision.
    candidates = [hotp(state.secret, w, state.digits, state.alg) for w in fresh + stale]
    position = _first_match(candidates, submitted)
    if position is None:
        failures = state.failures + 1
        failed = replace(state, failures=failures)
        if failures >= policy.max_failures:
            raise CredentialBlocked(failed)
        raise WrongCode(failed, attempts_left=policy.max_failures - failures)
    if position >= len(fresh):
        raise CodeReplayed(state)
    window = fresh[position]
    drift = state.drift_steps if window - expected in (0, -1) else window - now
    return replace(state, drift_steps=drift, last_window=window, failures=0)


# --- HOTP -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HotpState:
    """An HOTP credential's verification state: ``counter`` is the next counter value the token
    is expected to use; ``failures`` the wrong codes in a row."""

    secret: bytes = field(repr=False)
    digits: int = 6
    alg: HashAlg = HashAlg.SHA1
    counter: int = 0
    failures: int = 0

    def __post_init__(self) -> None:
        _check_oath(self.secret, self.digits, self.failures)
        if not 0 <= self.counter < _COUNTER_LIMIT:
            raise ValueError(f"the HOTP counter {self.counter} does not fit in 8 bytes")


def _hotp_codes(state: HotpState, first: int, count: int) -> list[str]:
    last = min(first + count, _COUNTER_LIMIT)
    return [hotp(state.secret, c, state.digits, state.alg) for c in range(first, last)]


def _hotp_failure(
    state: HotpState, max_failures: int
) -> CredentialBlocked[HotpState] | WrongCode[HotpState]:
    failures = state.failures + 1
    failed = replace(state, failures=failures)
    if failures >= max_failures:
        return CredentialBlocked(failed)
    return WrongCode(failed, attempts_left=max_failures - failures)


def verify_hotp(
    state: HotpState,
    code: str,
    look_ahead: int = 10,
    *,
    max_failures: int = DEFAULT_MAX_FAILURES,
) -> HotpState:
    """Check an HOTP against counters ``counter`` .. ``counter + look_ahead`` (RFC 4226 section
    7.4's look-ahead window) and return the state with the counter just past the match.

    Raises ``CredentialBlocked``, ``MalformedCode``, ``CodeReplayed`` (the code of the counter
    just before the expected one: used or skipped already) or ``WrongCode``, each carrying the
    state to persist. A code older than that is simply wrong.
    """
    if look_ahead < 0:
        raise ValueError("the look-ahead window is not negative")
    _check_max_failures(max_failures)
    if state.failures >= max_failures:
        raise CredentialBlocked(state)
    submitted = normalise_code(code, state.digits)
    if submitted is None:
        raise MalformedCode(state)
    candidates = _hotp_codes(state, state.counter, look_ahead + 1)
    previous = _hotp_codes(state, state.counter - 1, 1) if state.counter else []
    position = _first_match(candidates + previous, submitted)
    if position is None:
        raise _hotp_failure(state, max_failures)
    if position >= len(candidates):
        raise CodeReplayed(state)
    return replace(state, counter=state.counter + position + 1, failures=0)


def resync_hotp(
    state: HotpState,
    code1: str,
    code2: str,
    window: int = 100,
    *,
    max_failures: int = DEFAULT_MAX_FAILURES,
) -> HotpState:
    """Resynchronise a token whose counter ran past the look-ahead window: ``code1`` and
    ``code2`` must be the codes of two consecutive counters within ``counter`` ..
    ``counter + window`` (RFC 4226 section 7.4). Returns the state with the counter past
    ``code2``; it is a successful use of the token, so the failure count resets.

    A blocked credential stays blocked (resync is for a lost count, not for wrong guesses).
    Raises as ``verify_hotp`` does; a pair that does not match counts as one failure.
    """
    if window < 1:
        raise ValueError("the resync window is at least 1")
    _check_max_failures(max_failures)
    if state.failures >= max_failures:
        raise CredentialBlocked(state)
    first = normalise_code(code1, state.digits)
    second = normalise_code(code2, state.digits)
    if first is None or second is None:
        raise MalformedCode(state)
    codes = _hotp_codes(state, state.counter, window + 2)
    # Pairs are joined into one string so that one constant-time comparison checks both.
    pairs = [a + b for a, b in itertools.pairwise(codes)]
    position = _first_match(pairs, first + second)
    if position is None:
        raise _hotp_failure(state, max_failures)
    return replace(state, counter=state.counter + position + 2, failures=0)
