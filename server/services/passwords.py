"""Password hashing with Argon2id and the password policy (NIST SP 800-63B: length, no
composition rules, a blocklist)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from argon2 import Parameters, PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from server.services.errors import (
    PasswordHashUnreadable,
    PasswordProblem,
    WeakPassword,
    WrongPassword,
)

MIN_LENGTH = 12
MAX_LENGTH = 256

# RFC 9106 section 4, second recommended option ("if much less memory is available"):
# Argon2id, t=3 passes over m=64 MiB with p=4 lanes, a 16-byte salt and a 32-byte tag. It costs
# about 50 ms per hash on a server core; raise memory_cost when the hardware allows, and
# ``needs_rehash`` upgrades stored hashes at the next successful login.
ARGON2ID_RFC9106_LOW_MEMORY = Parameters(
    type=Type.ID,
    version=19,
    salt_len=16,
    hash_len=32,
    time_cost=3,
    memory_cost=64 * 1024,  # KiB
    parallelism=4,
)


def argon2id_parameters(time_cost: int, memory_kib: int, parallelism: int) -> Parameters:
    """Argon2id parameters of the given cost, with RFC 9106's 16-byte salt and 32-byte tag (the
    cost comes from settings, so an operator can raise it to suit the hardware)."""
    if time_cost < 1 or parallelism < 1 or memory_kib < 8 * parallelism:
        raise ValueError("Argon2id needs t >= 1, p >= 1 and at least 8 KiB of memory per lane")
    return Parameters(
        type=Type.ID,
        version=19,
        salt_len=16,
        hash_len=32,
        time_cost=time_cost,
        memory_cost=memory_kib,
        parallelism=parallelism,
    )


class Passwords:
    """Hashes, verifies and vets passwords.

    Passwords are NFKC-normalised before hashing and counting (NIST SP 800-63B 5.1.1.2), so the
    same password typed on another keyboard or pasted from a password manager still matches.
    Paste must never be blocked (WCAG 2.2 SC 3.3.8): that is the UI's business, not this one's.
    """

    __slots__ = ("_blocklist", "_hasher", "_parameters")

    def __init__(
        self,
        parameters: Parameters = ARGON2ID_RFC9106_LOW_MEMORY,
        *,
        blocklist: Iterable[str] = (),
    ) -> None:
        if parameters.type is not Type.ID:
            raise ValueError("passwords are hashed with Argon2id only")
        self._parameters = parameters
        self._hasher = PasswordHasher.from_parameters(parameters)
        self._blocklist = frozenset(_fold(word) for word in blocklist)

    def check_policy(self, password: str, *, avoid: Iterable[str] = ()) -> None:
        """Raise ``WeakPassword`` if ``password`` may not be chosen.

        The rules are those of NIST SP 800-63B 5.1.1.2: at least 12 and at most 256 characters,
        not one character repeated, not on the blocklist nor one of the context words in
        ``avoid`` (the user ID, the service name). No composition rules (digits, capitals):
        800-63B forbids them, since they push people to predictable patterns.
        """
        normalised = _normalise(password)
        if len(normalised) < MIN_LENGTH:
            raise WeakPassword(
                PasswordProblem.TOO_SHORT,
                f"the password must be at least {MIN_LENGTH} characters long",
            )
        if len(normalised) > MAX_LENGTH:
            raise WeakPassword(
                PasswordProblem.TOO_LONG,
                f"the password must be at most {MAX_LENGTH} characters long",
            )
        if len(set(normalised)) == 1:
            raise WeakPassword(
                PasswordProblem.REPEATED_CHARACTER,
                "the password must not be one character repeated",
            )
        folded = _fold(normalised)
        if folded in self._blocklist or folded in {_fold(word) for word in avoid}:
            raise WeakPassword(
                PasswordProblem.BLOCKLISTED,
                "the password is too common or too easy to guess; choose another",
            )

    def hash_password(self, password: str) -> str:
        """The Argon2id hash (PHC string, ``$argon2id$...``) to store for ``password``.

        This does not apply the policy (call ``check_policy`` where a person chooses one), but
        it does refuse passwords over the maximum length, so ``verify_password`` can too.
        """
        normalised = _normalise(password)
        if len(normalised) > MAX_LENGTH:
            raise WeakPassword(
                PasswordProblem.TOO_LONG,
                f"the password must be at most {MAX_LENGTH} characters long",
            )
        return self._hasher.hash(normalised)

    def verify_password(self, password_hash: str, password: str) -> None:
        """Return if ``password`` matches ``password_hash``; raise ``WrongPassword`` if not.

        A stored hash that cannot be checked at all raises ``PasswordHashUnreadable``: that is
        corrupt data for operators, not a wrong guess by the user.
        """
        normalised = _normalise(password)
        if len(normalised) > MAX_LENGTH:
            raise WrongPassword("password is longer than any stored password can be")
        if not password_hash.startswith("$argon2id$"):
            raise PasswordHashUnreadable("stored password hash is not an Argon2id hash")
        try:
            self._hasher.verify(password_hash, normalised)
        except VerifyMismatchError:
            raise WrongPassword("password does not match") from None
        except (InvalidHashError, VerificationError) as exc:
            raise PasswordHashUnreadable(f"stored password hash cannot be checked: {exc}") from None

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether ``password_hash`` was made with other parameters than the current ones;
        rehash it from the password the user just proved."""
        return self._hasher.check_needs_rehash(password_hash)

    def __repr__(self) -> str:
        p = self._parameters
        return f"Passwords(argon2id t={p.time_cost} m={p.memory_cost} p={p.parallelism})"


def _normalise(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def _fold(word: str) -> str:
    return unicodedata.normalize("NFKC", word).casefold()
