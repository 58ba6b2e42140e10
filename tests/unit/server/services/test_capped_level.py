"""A credential counts toward a level only up to the level at which it was admitted: the
properties of ``capped_level`` over any authenticators with any admitted levels, and the
cases the attack is made of."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.model import AuthenticatorKind, Level
from server.services.assurance import authenticator_level, capped_level
from server.services.errors import NoAuthenticator

K = AuthenticatorKind
S, H = Level.SUBSTANTIAL, Level.HIGH

admitted_levels = st.one_of(st.none(), st.sampled_from(list(Level)))
logins = st.lists(st.tuples(st.sampled_from(list(K)), admitted_levels), min_size=1, max_size=5)


@given(logins)
def test_never_above_the_uncapped_level(login: list[tuple[K, Level | None]]) -> None:
    assert capped_level(login) <= authenticator_level([kind for kind, _ in login])


@given(st.lists(st.sampled_from(list(K)), min_size=1, max_size=5), st.sampled_from([None, H]))
def test_the_same_as_uncapped_when_every_credential_was_admitted_at_high_or_before_levels(
    kinds: list[K], admitted: Level | None
) -> None:
    assert capped_level([(kind, admitted) for kind in kinds]) == authenticator_level(kinds)


@given(logins)
def test_never_above_the_highest_admitted_level_when_all_are_recorded(
    login: list[tuple[K, Level | None]],
) -> None:
    recorded = [(kind, at or Level.LOW) for kind, at in login]
    assert capped_level(recorded) <= max(at for _, at in recorded)


@given(logins, st.integers(min_value=0, max_value=4), st.sampled_from(list(Level)))
def test_admitting_a_credential_higher_never_lowers_the_login(
    login: list[tuple[K, Level | None]], index: int, raised: Level
) -> None:
    index %= len(login)
    kind, at = login[index]
    if at is None or raised < at:
        return
    higher = [*login[:index], (kind, raised), *login[index + 1 :]]
    assert capped_level(higher) >= capped_level(login)


@given(logins)
def test_every_login_reaches_at_least_low(login: list[tuple[K, Level | None]]) -> None:
    assert capped_level(login) >= Level.LOW


@pytest.mark.parametrize(
    ("login", "level"),
    [
        # The attack: the phisher's card, admitted by a Substantial login, alone.
        ([(K.PIV, S)], S),
        ([(K.PIV, H)], H),
        ([(K.PIV, None)], H),  # a card from before admitted levels: as before
        # With the person's own High card, the login is High (by that card alone).
        ([(K.PIV, S), (K.PIV, H)], H),
        # Two keys reach High together only if both were admitted at High.
        ([(K.FIDO2_UV, H), (K.FIDO2, S)], S),
        ([(K.FIDO2_UV, S), (K.FIDO2, H)], S),
        ([(K.FIDO2_UV, H), (K.FIDO2, H)], H),
        # Substantial needs its two factors admitted at Substantial.
        ([(K.PASSWORD, Level.LOW), (K.CODE_DISPLAY, S)], Level.LOW),
        ([(K.PASSWORD, S), (K.CODE_DISPLAY, S)], S),
        # A password and a code display never give High, however they were admitted.
        ([(K.PASSWORD, H), (K.CODE_DISPLAY, H)], S),
    ],
)
def test_the_cases(login: list[tuple[K, Level | None]], level: Level) -> None:
    assert capped_level(login) is level


def test_a_login_without_authenticators_has_no_level() -> None:
    with pytest.raises(NoAuthenticator):
        capped_level([])
