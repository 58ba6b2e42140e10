"""Assurance levels (NSIS Low/Substantial/High, as in eIDAS): what a set of authenticators and an
identity proofing are worth, and the level of assurance of a login."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum, unique
from itertools import combinations_with_replacement
from types import MappingProxyType

from server.domain.model import AuthenticatorKind, CredentialKind, Level
from server.services.errors import NoAuthenticator


@unique
class Category(Enum):
    """Factor categories. A PIN or biometric checked on the device counts as knowledge."""

    KNOWLEDGE = "knowledge"
    POSSESSION = "possession"


@dataclass(frozen=True)
class Properties:
    """What an authenticator kind proves and how hard it is to copy or phish.

    ``dynamic``: each login proves something new (OTP, signed challenge), so a recording of one
    login cannot be replayed. ``resists_duplication``: the secret cannot be copied off the device
    (secure element, on-card PIN with a retry counter); a printed card or an OTP seed shared with
    the server can. ``manual_otp``: the person reads a code and types it in (NIST SP 800-63B:
    never phishing resistant).
    """

    categories: frozenset[Category]
    dynamic: bool
    phishing_resistant: bool
    resists_duplication: bool
    manual_otp: bool


_K = Category.KNOWLEDGE
_P = Category.POSSESSION

PROPERTIES: Mapping[AuthenticatorKind, Properties] = MappingProxyType(
    {
        AuthenticatorKind.PASSWORD: Properties(frozenset({_K}), False, False, False, False),
        AuthenticatorKind.CODE_DISPLAY: Properties(frozenset({_P}), True, False, False, True),
        AuthenticatorKind.AUDIO_READER: Properties(frozenset({_P}), True, False, False, True),
        # The token types its OTP itself, but the OTP can still be relayed, and the AES/HOTP
        # key is also held by the server, so the token is neither phishing nor copy resistant.
        AuthenticatorKind.OTP_TOKEN: Properties(frozenset({_P}), True, False, False, False),
        AuthenticatorKind.FIDO2: Properties(frozenset({_P}), True, True, True, False),
        AuthenticatorKind.FIDO2_UV: Properties(frozenset({_P, _K}), True, True, True, False),
        # Phishing resistant on condition that the challenge the card signs is bound to the
        # relying party (the smartcard verifier's job).
        AuthenticatorKind.PIV: Properties(frozenset({_P, _K}), True, True, True, False),
        AuthenticatorKind.KEY_CARD: Properties(frozenset({_P}), True, False, False, True),
    }
)


def _smartcard_with_pin_on_card(factors: Sequence[AuthenticatorKind]) -> bool:
    return AuthenticatorKind.PIV in factors


def _security_key_with_uv_and_another_possession(factors: Sequence[AuthenticatorKind]) -> bool:
    if AuthenticatorKind.FIDO2_UV not in factors:
        return False
    # Another authenticator (a second key counts, the same key twice never reaches here: the
    # caller passes one kind per credential), and it must itself resist duplication, which
    # rules out every OTP.
    others = list(factors)
    others.remove(AuthenticatorKind.FIDO2_UV)
    return any(
        Category.POSSESSION in PROPERTIES[kind].categories
        and PROPERTIES[kind].resists_duplication
        and not PROPERTIES[kind].manual_otp
        for kind in others
    )


def _two_categories_one_dynamic(factors: Sequence[AuthenticatorKind]) -> bool:
    categories = set().union(*(PROPERTIES[kind].categories for kind in factors))
    return len(categories) >= 2 and any(PROPERTIES[kind].dynamic for kind in factors)


def _one_factor(factors: Sequence[AuthenticatorKind]) -> bool:
    return len(factors) >= 1


@dataclass(frozen=True)
class Rule:
    """One line of the NSIS authenticator table: the level a factor set reaches if it holds."""

    level: Level
    name: str
    holds: Callable[[Sequence[AuthenticatorKind]], bool]


# Highest first; the first rule that holds gives the level. From the domain brief:
#   High: two authenticators resistant to duplication and tampering, e.g. smartcard + PIN
#         verified on card, or security key with PIN/UV + another possession factor.
#         Manually typed OTPs never reach High.
#   Substantial: two factors of different categories, dynamic.
#   Low: user ID + one factor.
RULES: tuple[Rule, ...] = (
    Rule(Level.HIGH, "smartcard with PIN verified on the card", _smartcard_with_pin_on_card),
    Rule(
        Level.HIGH,
        "security key with PIN/UV and another copy-resistant possession factor",
        _security_key_with_uv_and_another_possession,
    ),
    Rule(Level.SUBSTANTIAL, "two categories, one dynamic", _two_categories_one_dynamic),
    Rule(Level.LOW, "one factor", _one_factor),
)

if set(PROPERTIES) != set(AuthenticatorKind):  # pragma: no cover - a new kind needs a row
    raise RuntimeError("every AuthenticatorKind needs its Properties")


def authenticator_level(factors: Collection[AuthenticatorKind]) -> Level:
    """The authenticator assurance of a login that used ``factors`` (user ID implied): one
    kind per distinct authenticator (``login.record.authenticators``), so two keys are two
    entries and one key used twice is one."""
    kinds = [AuthenticatorKind(kind) for kind in factors]
    if not kinds:
        raise NoAuthenticator("a login needs at least one authenticator")
    for rule in RULES:
        if rule.holds(kinds):
            return rule.level
    raise AssertionError("unreachable: the one-factor rule holds for any non-empty set")


def capped_level(admitted: Collection[tuple[AuthenticatorKind, Level | None]]) -> Level:
    """The authenticator assurance of a login whose authenticators (one per distinct
    credential, as ``authenticator_level`` takes them) each come with the level its credential
    was admitted at (None: not recorded, a credential from before levels were: not capped).

    A credential counts toward a level only up to the level it was admitted at: the login
    reaches a level only if the authenticators admitted at that level or above (or not
    recorded) reach it by themselves. So a smartcard a Substantial login added gives no more
    than Substantial, whatever the identity's assurance became since. Never more than
    ``authenticator_level`` of them all (a subset reaches no more than the whole), and the same
    when every one was admitted at High."""
    if not admitted:
        raise NoAuthenticator("a login needs at least one authenticator")
    for level in sorted(Level, reverse=True):
        counted = [kind for kind, at in admitted if at is None or at >= level]
        if counted and authenticator_level(counted) >= level:
            return level
    raise AssertionError("unreachable: at Low every authenticator counts")


# What a credential of each kind proves at a login: a security key proves ``fido2``, or
# ``fido2_uv`` when it verified its PIN; every other kind the factor of its own name.
PROVES: Mapping[CredentialKind, frozenset[AuthenticatorKind]] = MappingProxyType(
    {
        kind: (
            frozenset({AuthenticatorKind.FIDO2, AuthenticatorKind.FIDO2_UV})
            if kind is CredentialKind.FIDO2
            else frozenset({AuthenticatorKind(kind.value)})
        )
        for kind in CredentialKind
    }
)
# No rule looks at more than two authenticators, so a credential and two others show every
# level it can lift a login to.
_OTHERS_AT_MOST = 2


def _reach(kind: CredentialKind) -> Level:
    best = Level.LOW
    for proof in PROVES[kind]:
        for count in range(_OTHERS_AT_MOST + 1):
            for others in combinations_with_replacement(list(AuthenticatorKind), count):
                with_it = authenticator_level([proof, *others])
                if not others or with_it > authenticator_level(others):
                    best = max(best, with_it)
    return best


# Worked out once from the rules above, so the two can never disagree.
REACH: Mapping[CredentialKind, Level] = MappingProxyType(
    {kind: _reach(kind) for kind in CredentialKind}
)


def credential_reach(kind: CredentialKind) -> Level:
    """The highest level a credential of ``kind`` can lift a login to: the most any other
    authenticators (other credentials, of any kind) reach with it and not without it. What a
    person who adds one can log in at afterwards, identity assurance permitting: a smartcard
    High alone, a security key High with a second key, a password or an OTP device
    Substantial with a factor of the other category."""
    return REACH[kind]


@unique
class Proofing(StrEnum):
    """How a person's identity was established."""

    CPR_QUESTIONS = "cpr_questions"  # knowledge-based questions from the population register
    PASSPORT_CHIP = "passport_chip"  # the document's chip read and its signature checked
    IN_PERSON = "in_person"  # at an assisted channel (citizen service centre, bank)


def identity_level(method: Proofing, *, approved_by: Collection[str] = ()) -> Level:
    """The identity assurance a proofing gives.

    Low or Substantial by document check: CPR questions give Low (anyone who knows the facts can
    answer them), a checked passport chip Substantial. High only in person at an assisted
    channel with two different staff members approving (``approved_by`` holds their staff ids);
    in person with fewer approvals counts as a document check, Substantial.
    """
    if method is Proofing.CPR_QUESTIONS:
        return Level.LOW
    if method is Proofing.IN_PERSON and len(set(approved_by)) >= 2:
        return Level.HIGH
    return Level.SUBSTANTIAL


def loa(identity_assurance: Level, authenticator_level: Level) -> Level:
    """The level of assurance of a login: the weaker of the identity and the authenticators."""
    return min(identity_assurance, authenticator_level)
