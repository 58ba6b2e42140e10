"""The national person number (CPR-style ``ddmmyy-ssss``): parsing, the birth date it encodes,
and a representation that never shows the serial part."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from server.services.errors import InvalidPersonNumber

# ASCII digits only: str.isdigit() and \d also accept other scripts' digits (Arabic-Indic, ...).
_PATTERN = re.compile(r"([0-9]{6})-?([0-9]{4})")
_DIGITS = re.compile(r"[0-9]{10}")


def century(serial_first_digit: int, yy: int) -> int:
    """The century of the birth year from the 7th digit, by the Danish CPR rules.

    0-3: 1900s; 4 and 9: 2000s if yy <= 36 else 1900s; 5-8: 2000s if yy <= 57 else 1800s.
    """
    if 0 <= serial_first_digit <= 3:
        return 1900
    if serial_first_digit in (4, 9):
        return 2000 if yy <= 36 else 1900
    if 5 <= serial_first_digit <= 8:
        return 2000 if yy <= 57 else 1800
    raise ValueError(f"not a digit: {serial_first_digit}")


@dataclass(frozen=True, repr=False)
class PersonNumber:
    """A valid person number: ten digits whose first six are a real birth date.

    There is deliberately no modulus-11 check: the CPR office stopped guaranteeing it in 2007,
    when some birth dates ran out of numbers that pass it, so valid numbers fail it.

    ``repr`` and ``str`` show only the birth date part (``ddmmyy-****``) so the number does not end
    up in logs by accident; ``formatted`` and ``digits`` give the whole number where it is due.
    """

    digits: str
    birth_date: date = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.digits, str) or not _DIGITS.fullmatch(self.digits):
            raise InvalidPersonNumber("format", "a person number is ten digits, ddmmyy-ssss")
        day, month, yy = int(self.digits[0:2]), int(self.digits[2:4]), int(self.digits[4:6])
        year = century(int(self.digits[6]), yy) + yy
        if not 1 <= month <= 12:
            raise InvalidPersonNumber("month", "the month of the person number does not exist")
        try:
            born = date(year, month, day)
        except ValueError:
            raise InvalidPersonNumber(
                "day", "the day of the person number does not exist in that month"
            ) from None
        object.__setattr__(self, "birth_date", born)

    @classmethod
    def parse(cls, text: str) -> PersonNumber:
        """Parse ``ddmmyy-ssss`` or ``ddmmyyssss``, ignoring surrounding whitespace."""
        match = _PATTERN.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise InvalidPersonNumber("format", "a person number is written ddmmyy-ssss")
        return cls(match[1] + match[2])

    @property
    def formatted(self) -> str:
        """The whole number, normalised to ``ddmmyy-ssss``."""
        return f"{self.digits[:6]}-{self.digits[6:]}"

    @property
    def masked(self) -> str:
        """``ddmmyy-****``: safe for logs and support screens."""
        return f"{self.digits[:6]}-****"

    def __repr__(self) -> str:
        return f"PersonNumber({self.masked!r})"

    def __str__(self) -> str:
        return self.masked
