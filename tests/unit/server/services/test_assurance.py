"""Assurance: the NSIS rules of the domain brief, table by table, and exhaustive checks of the
properties every factor set must keep."""

from __future__ import annotations

from itertools import combinations

import pytest

from server.domain.model import AuthenticatorKind, Level
from server.services.assurance import (
    PROPERTIES,
    RULES,
    Category,
    Proofing,
    authenticator_level,
    identity_level,
    loa,
)
from server.services.errors import NoAuthenticator

K = AuthenticatorKind
ALL_SETS = [
    frozenset(combo) for size in range(1, len(K) + 1) for combo in combinations(list(K), size)
]
MANUAL_OTP = {kind for kind, props in PROPERTIES.items() if props.manual_otp}


@pytest.mark.parametrize(
    ("factors", "level"),
    [
        # Low: user ID + one factor.
        ({K.PASSWORD}, Level.LOW),  # a password never alone above Low
        ({K.FIDO2}, Level.LOW),  # a security key alone
        ({K.CODE_DISPLAY}, Level.LOW),
        ({K.AUDIO_READER}, Level.LOW),
        ({K.OTP_TOKEN}, Level.LOW),
        ({K.KEY_CARD}, Level.LOW),
        # Two factors of the same category are still Low.
        ({K.CODE_DISPLAY, K.FIDO2}, Level.LOW),
        ({K.CODE_DISPLAY, K.AUDIO_READER}, Level.LOW),
        ({K.OTP_TOKEN, K.KEY_CARD, K.FIDO2}, Level.LOW),
        # Substantial: two factors of different categories, dynamic.
        ({K.CODE_DISPLAY, K.PASSWORD}, Level.SUBSTANTIAL),
        ({K.FIDO2, K.PASSWORD}, Level.SUBSTANTIAL),
        ({K.AUDIO_READER, K.PASSWORD}, Level.SUBSTANTIAL),
        ({K.OTP_TOKEN, K.PASSWORD}, Level.SUBSTANTIAL),
        ({K.KEY_CARD, K.PASSWORD}, Level.SUBSTANTIAL),  # the legacy login used to migrate
        ({K.FIDO2_UV}, Level.SUBSTANTIAL),  # possession + PIN/UV on the key, dynamic
        ({K.FIDO2_UV, K.PASSWORD}, Level.SUBSTANTIAL),
        # Manually typed OTPs never reach High, whatever they are combined with.
        ({K.FIDO2_UV, K.CODE_DISPLAY}, Level.SUBSTANTIAL),
        ({K.FIDO2_UV, K.AUDIO_READER}, Level.SUBSTANTIAL),
        ({K.FIDO2_UV, K.KEY_CARD}, Level.SUBSTANTIAL),
        ({K.FIDO2_UV, K.CODE_DISPLAY, K.PASSWORD}, Level.SUBSTANTIAL),
        # An OTP token's key is shared with the server: not resistant to duplication.
        ({K.FIDO2_UV, K.OTP_TOKEN}, Level.SUBSTANTIAL),
        # High: smartcard + PIN verified on card.
        ({K.PIV}, Level.HIGH),
        ({K.PIV, K.PASSWORD}, Level.HIGH),
        ({K.PIV, K.CODE_DISPLAY}, Level.HIGH),
        # High: security key with PIN/UV + another possession factor (resistant to duplication).
        ({K.FIDO2_UV, K.FIDO2}, Level.HIGH),
        ({K.FIDO2_UV, K.PIV}, Level.HIGH),
        ({K.FIDO2_UV, K.FIDO2, K.CODE_DISPLAY}, Level.HIGH),
    ],
)
def test_authenticator_level(factors: set[AuthenticatorKind], level: Level) -> None:
    assert authenticator_level(factors) is level


def test_authenticator_level_without_factors_raises_no_authenticator() -> None:
    with pytest.raises(NoAuthenticator):
        authenticator_level(set())


def test_authenticator_level_accepts_kind_values() -> None:
    assert authenticator_level(["password", "code_display"]) is Level.SUBSTANTIAL  # type: ignore[list-item]


def test_every_kind_has_properties_and_a_category() -> None:
    assert set(PROPERTIES) == set(K)
    assert all(
        props.categories <= set(Category) and props.categories for props in PROPERTIES.values()
    )


def test_manual_otps_are_never_phishing_or_duplication_resistant() -> None:
    assert MANUAL_OTP == {K.CODE_DISPLAY, K.AUDIO_READER, K.KEY_CARD}
    for kind in MANUAL_OTP:
        assert not PROPERTIES[kind].phishing_resistant
        assert not PROPERTIES[kind].resists_duplication


def test_rules_are_ordered_from_high_to_low() -> None:
    levels = [rule.level for rule in RULES]
    assert levels == sorted(levels, reverse=True)
    assert levels[-1] is Level.LOW


def test_adding_a_factor_never_lowers_the_level() -> None:
    for factors in ALL_SETS:
        level = authenticator_level(factors)
        for extra in set(K) - factors:
            assert authenticator_level(factors | {extra}) >= level, (factors, extra)


def test_manual_otps_never_contribute_to_high() -> None:
    for factors in ALL_SETS:
        if authenticator_level(factors) is Level.HIGH:
            assert authenticator_level(factors - MANUAL_OTP) is Level.HIGH, factors


def test_high_needs_duplication_resistant_factors_in_two_categories() -> None:
    for factors in ALL_SETS:
        if authenticator_level(factors) is not Level.HIGH:
            continue
        resistant = [PROPERTIES[kind] for kind in factors if PROPERTIES[kind].resists_duplication]
        assert set().union(*(props.categories for props in resistant)) == set(Category), factors
        assert all(props.phishing_resistant for props in resistant), factors


def test_substantial_or_more_exactly_when_two_categories_and_a_dynamic_factor() -> None:
    for factors in ALL_SETS:
        categories = set().union(*(PROPERTIES[kind].categories for kind in factors))
        dynamic = any(PROPERTIES[kind].dynamic for kind in factors)
        expected = len(categories) == 2 and dynamic
        assert (authenticator_level(factors) >= Level.SUBSTANTIAL) == expected, factors


@pytest.mark.parametrize(
    ("method", "approvers", "level"),
    [
        (Proofing.CPR_QUESTIONS, (), Level.LOW),
        (Proofing.PASSPORT_CHIP, (), Level.SUBSTANTIAL),
        (Proofing.IN_PERSON, ("staff-1", "staff-2"), Level.HIGH),
        (Proofing.IN_PERSON, ("staff-1", "staff-2", "staff-3"), Level.HIGH),
        (Proofing.IN_PERSON, ("staff-1",), Level.SUBSTANTIAL),
        (Proofing.IN_PERSON, ("staff-1", "staff-1"), Level.SUBSTANTIAL),  # two different people
        (Proofing.IN_PERSON, (), Level.SUBSTANTIAL),
        (Proofing.PASSPORT_CHIP, ("staff-1", "staff-2"), Level.SUBSTANTIAL),  # High: in person only
        (Proofing.CPR_QUESTIONS, ("staff-1", "staff-2"), Level.LOW),
    ],
)
def test_identity_level(method: Proofing, approvers: tuple[str, ...], level: Level) -> None:
    assert identity_level(method, approved_by=approvers) is level


@pytest.mark.parametrize("identity", list(Level))
@pytest.mark.parametrize("authenticator", list(Level))
def test_loa_is_the_weaker_of_identity_and_authenticator(
    identity: Level, authenticator: Level
) -> None:
    assert loa(identity, authenticator) is Level(min(identity.value, authenticator.value))


def test_loa_examples() -> None:
    assert loa(Level.HIGH, authenticator_level({K.PASSWORD})) is Level.LOW
    assert loa(Level.SUBSTANTIAL, authenticator_level({K.PIV})) is Level.SUBSTANTIAL
    assert loa(Level.HIGH, authenticator_level({K.PIV})) is Level.HIGH


def test_levels_are_ordered() -> None:
    assert Level.LOW < Level.SUBSTANTIAL < Level.HIGH
    assert (Level.LOW.value, Level.SUBSTANTIAL.value, Level.HIGH.value) == (1, 2, 3)
