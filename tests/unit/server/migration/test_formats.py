"""The legacy formats: PBKDF2 password hashes, key cards derived from a card secret."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.services.migration.formats import (
    CARD_SIZE,
    LegacyFormatError,
    LegacyPasswordHash,
    bitmap_from_positions,
    card_indexes,
    code_for,
    empty_bitmap,
    hash_legacy_password,
    is_used,
    mark_used,
    new_card_secret,
    printed_card,
    unused_positions,
)


def test_password_hash_round_trips_and_matches_only_its_password() -> None:
    text = hash_legacy_password("correct horse", iterations=1000)
    parsed = LegacyPasswordHash.parse(text)
    assert parsed.encode() == text
    assert parsed.matches("correct horse")
    assert not parsed.matches("correct horsE")


def test_password_hash_is_standard_pbkdf2() -> None:
    salt = b"0123456789abcdef"
    parsed = LegacyPasswordHash.parse(hash_legacy_password("pw", iterations=7, salt=salt))
    assert parsed.digest == hashlib.pbkdf2_hmac("sha256", b"pw", salt, 7)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "md5$1$abc$def",
        "pbkdf2_sha256$x$c2FsdHNhbHQ=$" + "A" * 44,
        "pbkdf2_sha256$0$c2FsdHNhbHQ=$" + "A" * 43 + "=",
        "pbkdf2_sha256$10$c2FsdA==$" + "A" * 43 + "=",  # salt too short
        "pbkdf2_sha256$10$c2FsdHNhbHQ=$QUFB",  # hash too short
        "pbkdf2_sha256$10$!!!$" + "A" * 43 + "=",
    ],
)
def test_malformed_password_hashes_are_refused(text: str) -> None:
    with pytest.raises(LegacyFormatError):
        LegacyPasswordHash.parse(text)


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_the_format_error(text: str) -> None:
    try:
        LegacyPasswordHash.parse(text)
    except LegacyFormatError:
        pass


def test_a_card_has_148_unique_four_digit_indexes_and_six_digit_codes() -> None:
    secret = new_card_secret()
    pairs = list(printed_card(secret))
    assert len(pairs) == CARD_SIZE
    assert len({index for index, _ in pairs}) == CARD_SIZE
    assert all(len(i) == 4 and i.isdigit() and len(c) == 6 and c.isdigit() for i, c in pairs)
    assert card_indexes(secret) == [index for index, _ in pairs]  # deterministic
    assert list(printed_card(new_card_secret())) != pairs


def test_codes_depend_on_the_secret_and_the_index() -> None:
    secret = bytes(range(32))
    first, second = card_indexes(secret)[:2]
    assert code_for(secret, first) == code_for(secret, first)
    assert code_for(secret, first) != code_for(bytes(32), first)
    with pytest.raises(LegacyFormatError):
        code_for(secret, "12345")
    with pytest.raises(LegacyFormatError):
        code_for(b"short", first)
    assert second != first


def test_the_used_bitmap_marks_positions() -> None:
    bitmap = empty_bitmap()
    assert len(unused_positions(bitmap)) == CARD_SIZE
    bitmap = mark_used(bitmap, 0)
    bitmap = mark_used(bitmap, 147)
    assert is_used(bitmap, 0)
    assert is_used(bitmap, 147)
    assert not is_used(bitmap, 1)
    assert len(unused_positions(bitmap)) == CARD_SIZE - 2
    assert bitmap_from_positions([0, 147]) == bitmap
    with pytest.raises(LegacyFormatError):
        mark_used(bitmap, CARD_SIZE)
