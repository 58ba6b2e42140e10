"""Legacy key cards (NemID-style "nøglekort"): printed cards of numbered one-time codes, kept only
hashed on the server, each code accepted once; used to prove a legacy identity in migration."""

from __future__ import annotations

import hmac
import math
import random
import secrets
from dataclasses import dataclass, field, replace

from server.services.verifiers.errors import (
    CardExhausted,
    CodeReplayed,
    CredentialBlocked,
    MalformedCode,
    UnknownIndex,
    WrongCode,
)
from server.services.verifiers.otp import DEFAULT_MAX_FAILURES, NIST_MAX_FAILURES, normalise_code

CARD_SIZE = 148  # index/code pairs on the legacy card
INDEX_DIGITS = 4  # the key number the screen shows
# The legacy card's code length. 10**6 codes hold log2(10**6) = 19.93 bits, just under NIST SP
# 800-63B 5.1.2.1's 20 bits for look-up secrets; 7 digits (23.25 bits) is the shortest length
# that meets it, so new cards should be issued with code_digits=7 where the printing allows.
LEGACY_CODE_DIGITS = 6
NIST_MIN_LOOKUP_BITS = 20
REPLACEMENT_AT = 20  # a new card is sent when this many codes remain
MIN_PEPPER_BYTES = 16
_SALT_BYTES = 16


def code_entropy_bits(code_digits: int) -> float:
    """The entropy of a uniformly random code of ``code_digits`` decimal digits."""
    return code_digits * math.log2(10)


def _check_code_digits(code_digits: int) -> None:
    if isinstance(code_digits, bool) or not 4 <= code_digits <= 10:
        raise ValueError(f"a key card code has 4 to 10 digits, not {code_digits}")


def _digest(pepper: bytes, salt: bytes, index: str, code: str) -> bytes:
    """HMAC-SHA-256 under the server's pepper over the card's salt, the index and the code.

    With 10**6 possible codes, no hash stored alone would resist a brute force by whoever reads
    the database (a salted SHA-256 falls in a million tries); the pepper, held outside the
    database, is what protects the codes. The salt keeps equal codes on different cards (and
    the index, at different positions) from having equal digests.
    """
    if len(pepper) < MIN_PEPPER_BYTES:
        raise ValueError(f"the key card pepper has at least {MIN_PEPPER_BYTES} bytes")
    message = b"%s|%s|%s" % (salt, index.encode("ascii"), code.encode("ascii"))
    return hmac.digest(pepper, message, "sha256")


@dataclass(frozen=True, slots=True)
class KeyCardState:
    """What the server keeps of a key card: a digest per index, the indexes used so far and the
    wrong codes in a row. ``digests`` is a tuple of (index, digest) pairs in card order."""

    serial: str
    salt: bytes = field(repr=False)
    digests: tuple[tuple[str, bytes], ...] = field(repr=False)
    code_digits: int = LEGACY_CODE_DIGITS
    used: frozenset[str] = frozenset()
    failures: int = 0

    def __post_init__(self) -> None:
        _check_code_digits(self.code_digits)
        indexes = [index for index, _ in self.digests]
        if not indexes or len(set(indexes)) != len(indexes):
            raise ValueError("a key card has at least one index and no index twice")
        if not self.used <= set(indexes):
            raise ValueError("the used indexes are on the card")
        if self.failures < 0:
            raise ValueError("the failure count is not negative")

    @property
    def size(self) -> int:
        return len(self.digests)

    @property
    def remaining(self) -> int:
        """Codes not used yet."""
        return self.size - len(self.used)

    @property
    def replacement_due(self) -> bool:
        """Whether a new card should be sent: when no more than ``REPLACEMENT_AT`` remain."""
        return self.remaining <= REPLACEMENT_AT

    @property
    def meets_nist_lookup_entropy(self) -> bool:
        """Whether each code holds the 20 bits NIST SP 800-63B asks of look-up secrets (the
        legacy 6-digit card does not: 19.93 bits)."""
        return code_entropy_bits(self.code_digits) >= NIST_MIN_LOOKUP_BITS

    def unused(self) -> list[str]:
        """The indexes not used yet, in card order."""
        return [index for index, _ in self.digests if index not in self.used]


@dataclass(frozen=True, slots=True)
class KeyCard:
    """A newly made card as it is printed and posted: ``pairs`` of (index, code) in print order.
    The codes exist only here; the server keeps ``state(pepper)`` and must drop the card once
    it has been printed."""

    serial: str
    pairs: tuple[tuple[str, str], ...] = field(repr=False)
    salt: bytes = field(repr=False)
    code_digits: int = LEGACY_CODE_DIGITS

    @classmethod
    def new(
        cls, serial: str, *, size: int = CARD_SIZE, code_digits: int = LEGACY_CODE_DIGITS
    ) -> KeyCard:
        """A card of ``size`` distinct random 4-digit indexes, each with a random code of
        ``code_digits`` digits, all drawn from ``secrets``."""
        _check_code_digits(code_digits)
        if not 1 <= size <= 10**INDEX_DIGITS:
            raise ValueError(f"a key card has 1 to {10**INDEX_DIGITS} codes")
        indexes = secrets.SystemRandom().sample(range(10**INDEX_DIGITS), size)
        pairs = tuple(
            (
                str(index).zfill(INDEX_DIGITS),
                str(secrets.randbelow(10**code_digits)).zfill(code_digits),
            )
            for index in indexes
        )
        return cls(serial, pairs, secrets.token_bytes(_SALT_BYTES), code_digits)

    def state(self, pepper: bytes) -> KeyCardState:
        """The hashed form the server stores."""
        return KeyCardState(
            serial=self.serial,
            salt=self.salt,
            digests=tuple(
                (index, _digest(pepper, self.salt, index, code)) for index, code in self.pairs
            ),
            code_digits=self.code_digits,
        )


def challenge(
    state: KeyCardState, rng: random.Random, *, max_failures: int = DEFAULT_MAX_FAILURES
) -> str:
    """An unused index to ask for. The caller keeps it in the login flow's state and passes
    that same index to ``verify_keycard``; the user never chooses it. ``rng`` is normally
    ``secrets.SystemRandom()``; tests pass a seeded ``random.Random``.

    Raises ``CredentialBlocked`` for a blocked card and ``CardExhausted`` for a used-up one.
    """
    if state.failures >= max_failures:
        raise CredentialBlocked(state)
    unused = state.unused()
    if not unused:
        raise CardExhausted(state)
    return rng.choice(unused)


def verify_keycard(
    state: KeyCardState,
    index: str,
    code: str,
    *,
    pepper: bytes,
    max_failures: int = DEFAULT_MAX_FAILURES,
) -> KeyCardState:
    """Check the code typed for the challenged ``index`` and return the state with that index
    used, so it is never accepted again. The caller persists it (with a compare-and-set on the
    previous state, so two concurrent logins cannot both spend the code) before answering.

    Raises ``CredentialBlocked``, ``UnknownIndex`` (not on this card: a stale challenge),
    ``CodeReplayed`` (that index was used already), ``MalformedCode`` or ``WrongCode`` (counted:
    ``max_failures`` in a row block the card). A wrong code does not spend the index.
    """
    if not 1 <= max_failures <= NIST_MAX_FAILURES:
        raise ValueError(f"max_failures is 1..{NIST_MAX_FAILURES}, not {max_failures}")
    if state.failures >= max_failures:
        raise CredentialBlocked(state)
    stored = dict(state.digests).get(index)
    if stored is None:
        raise UnknownIndex(state)
    if index in state.used:
        raise CodeReplayed(state)
    submitted = normalise_code(code, state.code_digits)
    if submitted is None:
        raise MalformedCode(state)
    if not hmac.compare_digest(_digest(pepper, state.salt, index, submitted), stored):
        failures = state.failures + 1
        failed = replace(state, failures=failures)
        if failures >= max_failures:
            raise CredentialBlocked(failed)
        raise WrongCode(failed, attempts_left=max_failures - failures)
    return replace(state, used=state.used | {index}, failures=0)
