"""Passwords: Argon2id hashing with the documented parameters, verification that raises, and the
NIST SP 800-63B policy."""

from __future__ import annotations

import unicodedata

import pytest
from argon2 import Parameters, Type, extract_parameters

from server.services.errors import (
    PasswordHashUnreadable,
    PasswordProblem,
    WeakPassword,
    WrongPassword,
)
from server.services.passwords import ARGON2ID_RFC9106_LOW_MEMORY, MAX_LENGTH, Passwords

# Cheap parameters keep the tests fast; one test checks the production ones.
FAST = Parameters(
    type=Type.ID, version=19, salt_len=16, hash_len=32, time_cost=1, memory_cost=8, parallelism=1
)
GOOD = "correct horse battery staple"


@pytest.fixture
def passwords() -> Passwords:
    return Passwords(FAST, blocklist=["password1234", "Qwertyuiop123"])


def test_production_parameters_are_argon2id_rfc9106() -> None:
    hashed = Passwords().hash_password(GOOD)
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert extract_parameters(hashed) == ARGON2ID_RFC9106_LOW_MEMORY
    Passwords().verify_password(hashed, GOOD)


def test_hash_is_argon2id_and_salted(passwords: Passwords) -> None:
    first, second = passwords.hash_password(GOOD), passwords.hash_password(GOOD)
    assert first.startswith("$argon2id$")
    assert first != second
    assert GOOD not in first


def test_verify_matching_password_returns(passwords: Passwords) -> None:
    passwords.verify_password(passwords.hash_password(GOOD), GOOD)


def test_verify_wrong_password_raises_wrong_password(passwords: Passwords) -> None:
    hashed = passwords.hash_password(GOOD)
    with pytest.raises(WrongPassword):
        passwords.verify_password(hashed, GOOD + "!")


def test_verify_over_long_password_raises_wrong_password(passwords: Passwords) -> None:
    with pytest.raises(WrongPassword):
        passwords.verify_password(passwords.hash_password(GOOD), "x" * (MAX_LENGTH + 1))


def test_verify_matches_composed_and_decomposed_forms(passwords: Passwords) -> None:
    # The same password typed on a keyboard with dead keys, or pasted, may arrive decomposed.
    hashed = passwords.hash_password("blåbærgrød med fløde")
    passwords.verify_password(hashed, unicodedata.normalize("NFD", "blåbærgrød med fløde"))


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "not a hash",
        "$argon2id$v=19$m=8,t=1,p=1$broken",
        "$argon2i$v=19$m=8,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$2b$12$abcdefghijklmnopqrstuuQeZfUJ5YgcG0yZr7wKzS5v9mUNjqV7G",
    ],
)
def test_verify_unreadable_hash_raises_password_hash_unreadable(
    passwords: Passwords, stored: str
) -> None:
    with pytest.raises(PasswordHashUnreadable):
        passwords.verify_password(stored, GOOD)


def test_needs_rehash_when_parameters_change(passwords: Passwords) -> None:
    hashed = passwords.hash_password(GOOD)
    assert not passwords.needs_rehash(hashed)
    stronger = Passwords(
        Parameters(
            type=Type.ID,
            version=19,
            salt_len=16,
            hash_len=32,
            time_cost=2,
            memory_cost=16,
            parallelism=1,
        )
    )
    assert stronger.needs_rehash(hashed)


def test_only_argon2id_is_accepted() -> None:
    argon2i = Parameters(
        type=Type.I, version=19, salt_len=16, hash_len=32, time_cost=1, memory_cost=8, parallelism=1
    )
    with pytest.raises(ValueError, match="Argon2id"):
        Passwords(argon2i)


@pytest.mark.parametrize(
    "password",
    [
        GOOD,
        "twelve chars",  # exactly 12
        "x" * 255 + "y",  # exactly 256
        "allLowercaseLetters".lower(),  # no composition rules
        "123456789012",
        "🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑🗝",
    ],
)
def test_policy_accepts(passwords: Passwords, password: str) -> None:
    passwords.check_policy(password)


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("", PasswordProblem.TOO_SHORT),
        ("eleven char", PasswordProblem.TOO_SHORT),
        ("x" * 256 + "y", PasswordProblem.TOO_LONG),
        ("a" * 12, PasswordProblem.REPEATED_CHARACTER),
        ("password1234", PasswordProblem.BLOCKLISTED),
        ("PASSWORD1234", PasswordProblem.BLOCKLISTED),
        ("qwertyuiop123", PasswordProblem.BLOCKLISTED),
    ],
)
def test_policy_refuses(passwords: Passwords, password: str, problem: PasswordProblem) -> None:
    with pytest.raises(WeakPassword) as caught:
        passwords.check_policy(password)
    assert caught.value.reason is problem
    if password:
        assert password not in caught.value.detail
        assert password not in str(caught.value)


def test_policy_refuses_context_words(passwords: Passwords) -> None:
    with pytest.raises(WeakPassword) as caught:
        passwords.check_policy("Jens.Hansen1970", avoid=["jens.hansen1970"])
    assert caught.value.reason is PasswordProblem.BLOCKLISTED


def test_policy_counts_characters_after_normalisation(passwords: Passwords) -> None:
    # Twelve letters written with combining rings are twelve characters, not twenty-four.
    passwords.check_policy("a\u030a" * 6 + "b" * 6)


def test_hash_refuses_over_long_password(passwords: Passwords) -> None:
    with pytest.raises(WeakPassword):
        passwords.hash_password("x" * (MAX_LENGTH + 1))


def test_repr_shows_parameters_only(passwords: Passwords) -> None:
    assert repr(passwords) == "Passwords(argon2id t=1 m=8 p=1)"
