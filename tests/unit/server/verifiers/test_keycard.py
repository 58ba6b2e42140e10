"""Legacy key cards (server.services.verifiers.keycard): generation, hashed storage, challenges,
codes accepted once, blocking, replacement at 20 remaining and the NIST entropy shortfall."""

from __future__ import annotations

import random

import pytest

from server.services.verifiers import (
    CardExhausted,
    CodeReplayed,
    CredentialBlocked,
    KeyCard,
    KeyCardState,
    MalformedCode,
    UnknownIndex,
    WrongCode,
    challenge,
    code_entropy_bits,
    verify_keycard,
)
from server.services.verifiers.keycard import REPLACEMENT_AT

PEPPER = b"server-pepper-for-tests-only-32b"


@pytest.fixture(scope="module")
def card() -> KeyCard:
    return KeyCard.new("KC-0001")


@pytest.fixture
def state(card: KeyCard) -> KeyCardState:
    return card.state(PEPPER)


@pytest.fixture
def rng() -> random.Random:
    # Seeded so that a failure repeats; production passes secrets.SystemRandom().
    return random.Random(1)  # noqa: S311


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


def test_new_card_has_148_distinct_four_digit_indexes_and_six_digit_codes(card: KeyCard) -> None:
    indexes = [index for index, _ in card.pairs]

    assert len(card.pairs) == 148
    assert len(set(indexes)) == 148
    assert all(len(i) == 4 and i.isdigit() for i in indexes)
    assert all(len(c) == 6 and c.isdigit() for _, c in card.pairs)


def test_stored_state_holds_no_plaintext_code(card: KeyCard, state: KeyCardState) -> None:
    stored = b"".join(digest for _, digest in state.digests)

    assert all(code.encode() not in stored for _, code in card.pairs)
    assert all(code not in repr(state) for _, code in card.pairs)
    assert all(code not in repr(card) for _, code in card.pairs)


def test_same_codes_on_two_cards_hash_differently() -> None:
    first, second = KeyCard.new("A"), KeyCard.new("B")
    twin = KeyCard(second.serial, first.pairs, second.salt)

    assert first.state(PEPPER).digests != twin.state(PEPPER).digests


def test_challenge_picks_an_unused_index(
    card: KeyCard, state: KeyCardState, rng: random.Random
) -> None:
    index = challenge(state, rng)

    assert index in dict(card.pairs)
    assert index not in state.used


def test_challenge_never_picks_a_used_index(
    card: KeyCard, state: KeyCardState, rng: random.Random
) -> None:
    for index, code in card.pairs[:-1]:
        state = verify_keycard(state, index, code, pepper=PEPPER)

    assert challenge(state, rng) == card.pairs[-1][0]


def test_right_code_accepted_and_used_once(
    card: KeyCard, state: KeyCardState, rng: random.Random
) -> None:
    index = challenge(state, rng)
    code = dict(card.pairs)[index]

    used = verify_keycard(state, index, code, pepper=PEPPER)

    assert index in used.used
    assert used.remaining == 147
    with pytest.raises(CodeReplayed) as caught:
        verify_keycard(used, index, code, pepper=PEPPER)
    assert caught.value.state == used


def test_wrong_code_counted_and_index_not_spent(card: KeyCard, state: KeyCardState) -> None:
    index, code = card.pairs[0]

    with pytest.raises(WrongCode) as caught:
        verify_keycard(state, index, _wrong(code), pepper=PEPPER)

    assert caught.value.state.failures == 1
    assert caught.value.attempts_left == 2
    assert verify_keycard(caught.value.state, index, code, pepper=PEPPER).failures == 0


def test_three_wrong_codes_block_card(
    card: KeyCard, state: KeyCardState, rng: random.Random
) -> None:
    index, code = card.pairs[0]
    for _ in range(2):
        with pytest.raises(WrongCode) as caught:
            verify_keycard(state, index, _wrong(code), pepper=PEPPER)
        state = caught.value.state

    with pytest.raises(CredentialBlocked) as blocked:
        verify_keycard(state, index, _wrong(code), pepper=PEPPER)

    with pytest.raises(CredentialBlocked):
        verify_keycard(blocked.value.state, index, code, pepper=PEPPER)
    with pytest.raises(CredentialBlocked):
        challenge(blocked.value.state, rng)


def test_code_under_another_pepper_rejected(card: KeyCard, state: KeyCardState) -> None:
    index, code = card.pairs[0]

    with pytest.raises(WrongCode):
        verify_keycard(state, index, code, pepper=b"another-pepper-of-enough-length!")


def test_unknown_index_rejected_without_counting(state: KeyCardState) -> None:
    missing = next(f"{i:04d}" for i in range(10_000) if f"{i:04d}" not in dict(state.digests))

    with pytest.raises(UnknownIndex) as caught:
        verify_keycard(state, missing, "123456", pepper=PEPPER)

    assert caught.value.state.failures == 0


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef"])
def test_malformed_code_rejected_without_counting(state: KeyCardState, code: str) -> None:
    index = state.digests[0][0]

    with pytest.raises(MalformedCode) as caught:
        verify_keycard(state, index, code, pepper=PEPPER)

    assert caught.value.state.failures == 0


def test_replacement_due_when_20_codes_remain(card: KeyCard, state: KeyCardState) -> None:
    for index, code in card.pairs[: 148 - REPLACEMENT_AT - 1]:
        state = verify_keycard(state, index, code, pepper=PEPPER)
    assert state.remaining == 21
    assert not state.replacement_due

    index, code = card.pairs[148 - REPLACEMENT_AT - 1]
    state = verify_keycard(state, index, code, pepper=PEPPER)

    assert state.remaining == 20
    assert state.replacement_due


def test_exhausted_card_offers_no_challenge(
    card: KeyCard, state: KeyCardState, rng: random.Random
) -> None:
    for index, code in card.pairs:
        state = verify_keycard(state, index, code, pepper=PEPPER)

    assert state.remaining == 0
    with pytest.raises(CardExhausted):
        challenge(state, rng)


def test_six_digit_codes_fall_short_of_nist_20_bits(state: KeyCardState) -> None:
    # NIST SP 800-63B 5.1.2.1: look-up secrets of at least 20 bits; 10**6 codes are 19.93.
    assert code_entropy_bits(6) == pytest.approx(19.93, abs=0.01)
    assert code_entropy_bits(6) < 20
    assert not state.meets_nist_lookup_entropy


def test_seven_digit_card_meets_nist_and_verifies() -> None:
    card = KeyCard.new("KC-7", code_digits=7)
    state = card.state(PEPPER)
    index, code = card.pairs[0]

    assert len(code) == 7
    assert state.meets_nist_lookup_entropy
    assert index in verify_keycard(state, index, code, pepper=PEPPER).used


def test_short_pepper_refused(card: KeyCard) -> None:
    with pytest.raises(ValueError, match="pepper"):
        card.state(b"short")
