"""PersonNumber: parsing ddmmyy-ssss, the century rules of the 7th digit, real dates only, and a
masked representation."""

from __future__ import annotations

import calendar
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.services.errors import InvalidPersonNumber
from server.services.person_number import PersonNumber

# The CPR office's table of the 7th digit, written as ranges (not as the code's if/else).
CENTURIES: dict[int, list[tuple[range, int]]] = {
    **{digit: [(range(0, 100), 1900)] for digit in (0, 1, 2, 3)},
    **{digit: [(range(0, 37), 2000), (range(37, 100), 1900)] for digit in (4, 9)},
    **{digit: [(range(0, 58), 2000), (range(58, 100), 1800)] for digit in (5, 6, 7, 8)},
}


def _reference_year(seventh: int, yy: int) -> int:
    return next(century + yy for years, century in CENTURIES[seventh] if yy in years)


@pytest.mark.parametrize("text", ["010190-1234", "0101901234", "  010190-1234\n", "\t0101901234 "])
def test_parse_accepts_with_or_without_hyphen(text: str) -> None:
    number = PersonNumber.parse(text)
    assert number.digits == "0101901234"
    assert number.formatted == "010190-1234"
    assert number.birth_date == date(1990, 1, 1)


@pytest.mark.parametrize(
    ("text", "born"),
    [
        ("010199-0000", date(1999, 1, 1)),
        ("010100-3999", date(1900, 1, 1)),
        ("010136-4000", date(2036, 1, 1)),
        ("010137-4000", date(1937, 1, 1)),
        ("010136-9000", date(2036, 1, 1)),
        ("010137-9000", date(1937, 1, 1)),
        ("311257-5000", date(2057, 12, 31)),
        ("010158-5000", date(1858, 1, 1)),
        ("010100-8999", date(2000, 1, 1)),
        ("010199-8999", date(1899, 1, 1)),
        ("150620-6123", date(2020, 6, 15)),
        ("150680-7123", date(1880, 6, 15)),
    ],
)
def test_century_follows_the_seventh_digit(text: str, born: date) -> None:
    assert PersonNumber.parse(text).birth_date == born


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("", "format"),
        ("010190", "format"),
        ("010190-123", "format"),
        ("010190-12345", "format"),
        ("010190--1234", "format"),
        ("01019-01234", "format"),
        ("010190 1234", "format"),
        ("0101901234x", "format"),
        ("abcdef-ghij", "format"),
        ("٠١٠١٩٠-١٢٣٤", "format"),  # Arabic-Indic digits are digits to str.isdigit, not to us
        # full-width digits
        ("\uff10\uff11\uff10\uff11\uff19\uff10\uff11\uff12\uff13\uff14", "format"),
        ("011390-1234", "month"),
        ("010090-1234", "month"),
        ("000190-1234", "day"),
        ("320190-1234", "day"),
        ("310490-1234", "day"),
        ("290201-4000", "day"),  # 2001 is not a leap year
        ("290200-0000", "day"),  # 1900 is not a leap year
    ],
)
def test_parse_refuses(text: str, field: str) -> None:
    with pytest.raises(InvalidPersonNumber) as caught:
        PersonNumber.parse(text)
    assert caught.value.field == field
    if text.strip():
        assert text not in str(caught.value)
        assert text not in caught.value.detail


def test_leap_day_in_a_leap_year_is_accepted() -> None:
    assert PersonNumber.parse("290200-4000").birth_date == date(2000, 2, 29)


def _modulus_11_ok(digits: str) -> bool:
    weights = (4, 3, 2, 7, 6, 5, 4, 3, 2, 1)
    return sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11 == 0


def test_no_modulus_11_check() -> None:
    # Numbers issued since 2007 need not pass modulus 11; refusing them would lock people out.
    assert not _modulus_11_ok("0101901234")
    assert PersonNumber.parse("010190-1234").birth_date == date(1990, 1, 1)


def test_repr_and_str_mask_the_serial() -> None:
    number = PersonNumber.parse("010190-1234")
    assert repr(number) == "PersonNumber('010190-****')"
    assert str(number) == number.masked == "010190-****"
    assert "1234" not in repr(number)
    assert "1234" not in f"{number}"
    assert "1234" not in repr([number])


def test_equal_numbers_compare_and_hash_equal() -> None:
    assert PersonNumber.parse("010190-1234") == PersonNumber.parse("0101901234")
    assert len({PersonNumber.parse("010190-1234"), PersonNumber("0101901234")}) == 1
    assert PersonNumber.parse("010190-1234") != PersonNumber.parse("010190-1235")


def test_constructor_validates_digits() -> None:
    with pytest.raises(InvalidPersonNumber):
        PersonNumber("010190-1234")


@given(st.text())
def test_parse_arbitrary_text_parses_or_raises_invalid_person_number(text: str) -> None:
    try:
        number = PersonNumber.parse(text)
    except InvalidPersonNumber as exc:
        field = exc.field
    else:
        assert PersonNumber.parse(number.formatted) == number
        assert number.digits == text.strip().replace("-", "")
        return
    assert field in {"format", "month", "day"}


@given(st.text(alphabet="0123456789- \t", max_size=14))
def test_parse_digit_like_text_parses_or_raises_invalid_person_number(text: str) -> None:
    try:
        number = PersonNumber.parse(text)
    except InvalidPersonNumber:
        return
    assert number.formatted in {text.strip(), text.strip()[:6] + "-" + text.strip()[6:]}


@given(
    seventh=st.integers(0, 9),
    yy=st.integers(0, 99),
    month=st.integers(1, 12),
    day_seed=st.integers(0, 30),
    rest=st.integers(0, 999),
)
def test_valid_numbers_give_the_reference_birth_date(
    seventh: int, yy: int, month: int, day_seed: int, rest: int
) -> None:
    year = _reference_year(seventh, yy)
    day = day_seed % calendar.monthrange(year, month)[1] + 1
    text = f"{day:02d}{month:02d}{yy:02d}-{seventh}{rest:03d}"
    number = PersonNumber.parse(text)
    assert number.birth_date == date(year, month, day)
    assert number.formatted == text
