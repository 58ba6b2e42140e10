"""HOTP and TOTP (devices.protocol.otp) against RFC 4226 Appendix D and RFC 6238 Appendix B,
kept in tests/vectors, and at the edges of their arguments."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from devices.protocol.otp import HashAlg, hotp, totp, totp_counter

VECTORS = Path(__file__).parents[2] / "vectors"
RFC4226 = json.loads((VECTORS / "rfc4226.json").read_text())
RFC6238 = json.loads((VECTORS / "rfc6238.json").read_text())
SECRET = RFC4226["secret_ascii"].encode()


# --- RFC 4226 Appendix D ----------------------------------------------------------------------


@pytest.mark.parametrize("vector", RFC4226["vectors"], ids=lambda v: f"count{v['count']}")
def test_hotp_matches_rfc4226_appendix_d(vector: dict[str, Any]) -> None:
    assert hotp(SECRET, vector["count"]) == vector["hotp"]


@pytest.mark.parametrize("vector", RFC4226["vectors"], ids=lambda v: f"count{v['count']}")
def test_hotp_truncation_matches_rfc4226_intermediate_values(vector: dict[str, Any]) -> None:
    # The vector file itself, checked with the standard library: Table 1's HMAC values.
    mac = hmac.new(SECRET, vector["count"].to_bytes(8, "big"), hashlib.sha1).hexdigest()
    assert mac == vector["hmac_sha1"]
    assert int(vector["truncated_hex"], 16) == vector["truncated_decimal"]
    # Dynamic truncation yields 31 bits, fewer than 10 decimal digits: a 10-digit code is the
    # whole truncated number of Table 2.
    assert hotp(SECRET, vector["count"], digits=10) == f"{vector['truncated_decimal']:010d}"


# --- RFC 6238 Appendix B ----------------------------------------------------------------------


@pytest.mark.parametrize("vector", RFC6238["vectors"], ids=lambda v: f"{v['time']}-{v['mode']}")
def test_totp_matches_rfc6238_appendix_b(vector: dict[str, Any]) -> None:
    secret = RFC6238["secrets_ascii"][vector["mode"]].encode()
    code = totp(
        secret,
        vector["time"],
        step=RFC6238["time_step"],
        t0=RFC6238["t0"],
        digits=RFC6238["digits"],
        alg=HashAlg(vector["mode"]),
    )
    assert code == vector["totp"]


@pytest.mark.parametrize("vector", RFC6238["vectors"][::3], ids=lambda v: str(v["time"]))
def test_totp_counter_matches_rfc6238_value_of_t(vector: dict[str, Any]) -> None:
    assert totp_counter(vector["time"], RFC6238["time_step"], RFC6238["t0"]) == int(
        vector["t_hex"], 16
    )


def test_rfc6238_vector_file_has_all_eighteen_rows() -> None:
    rows = {(v["time"], v["mode"]) for v in RFC6238["vectors"]}
    assert len(rows) == 18
    assert {len(s) for s in RFC6238["secrets_ascii"].values()} == {20, 32, 64}


# --- arguments --------------------------------------------------------------------------------


def test_hotp_keeps_leading_zeros() -> None:
    # RFC 6238's 1111111109 SHA1 row is 07081804.
    assert totp(SECRET, 1111111109, digits=8) == "07081804"
    assert all(len(hotp(SECRET, c, digits=d)) == d for c in range(50) for d in (6, 7, 8, 10))


def test_hotp_takes_the_hash_as_plain_string() -> None:
    secret = RFC6238["secrets_ascii"]["SHA256"].encode()
    assert totp(secret, 59, digits=8, alg="SHA256") == "46119246"  # type: ignore[arg-type]


@pytest.mark.parametrize("digits", [0, 5, 11, True])
def test_hotp_refuses_digit_counts_outside_6_to_10(digits: int) -> None:
    with pytest.raises(ValueError, match="digits"):
        hotp(SECRET, 0, digits=digits)


@pytest.mark.parametrize("counter", [-1, 1 << 64])
def test_hotp_refuses_counters_outside_8_bytes(counter: int) -> None:
    with pytest.raises(ValueError, match="counter"):
        hotp(SECRET, counter)


def test_hotp_accepts_the_largest_counter() -> None:
    assert len(hotp(SECRET, (1 << 64) - 1)) == 6


def test_hotp_refuses_an_empty_secret() -> None:
    with pytest.raises(ValueError, match="empty"):
        hotp(b"", 0)


def test_hotp_refuses_an_unknown_hash() -> None:
    with pytest.raises(ValueError, match="MD5"):
        hotp(SECRET, 0, alg="MD5")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("at", "step", "t0", "counter"),
    [
        (0, 30, 0, 0),
        (29.999, 30, 0, 0),
        (30, 30, 0, 1),
        (59.5, 30, 0, 1),
        (100, 30, 100, 0),
        (160, 60, 100, 1),
        (1_700_000_000.25, 30, 0, 56_666_666),
    ],
)
def test_totp_counter_is_the_floor_of_elapsed_steps(
    at: float, step: int, t0: int, counter: int
) -> None:
    assert totp_counter(at, step, t0) == counter


@pytest.mark.parametrize(
    ("at", "step", "t0"),
    [(10, 0, 0), (10, -30, 0), (99, 30, 100), (float("nan"), 30, 0), (float("inf"), 30, 0)],
)
def test_totp_counter_refuses_impossible_times(at: float, step: int, t0: int) -> None:
    with pytest.raises(ValueError, match="time"):
        totp_counter(at, step, t0)


def test_totp_is_hotp_of_the_time_step() -> None:
    assert totp(SECRET, 1234567890, step=60, t0=90, digits=7) == hotp(
        SECRET, (1234567890 - 90) // 60, digits=7
    )
