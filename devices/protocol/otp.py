"""HOTP (RFC 4226) and TOTP (RFC 6238) one-time codes, computed from a shared secret with no
I/O: the token simulator generates with these and the service checks with them."""

from __future__ import annotations

import hmac
import math
from enum import StrEnum, unique

MIN_DIGITS = 6  # RFC 4226 section 5.3: at least 6 digits
MAX_DIGITS = 10  # dynamic truncation yields 31 bits, which is at most 10 decimal digits
_COUNTER_LIMIT = 1 << 64  # the moving factor is an 8-byte big-endian integer


@unique
class HashAlg(StrEnum):
    """The HMAC hash: SHA1 is RFC 4226's; RFC 6238 adds SHA256 and SHA512."""

    SHA1 = "SHA1"
    SHA256 = "SHA256"
    SHA512 = "SHA512"


_DIGEST_NAMES = {HashAlg.SHA1: "sha1", HashAlg.SHA256: "sha256", HashAlg.SHA512: "sha512"}


def hotp(secret: bytes, counter: int, digits: int = 6, alg: HashAlg = HashAlg.SHA1) -> str:
    """The ``digits``-digit code for ``counter``, zero-padded (RFC 4226 section 5.3).

    Raises ``ValueError`` for an empty secret, a counter outside 0..2**64-1, a digit count
    outside 6..10 or an unknown hash name.
    """
    if not secret:
        raise ValueError("the HOTP secret is empty")
    if not 0 <= counter < _COUNTER_LIMIT:
        raise ValueError(f"the HOTP counter {counter} does not fit in 8 bytes")
    if isinstance(digits, bool) or not MIN_DIGITS <= digits <= MAX_DIGITS:
        raise ValueError(f"an OTP has {MIN_DIGITS} to {MAX_DIGITS} digits, not {digits}")
    mac = hmac.digest(secret, counter.to_bytes(8, "big"), _DIGEST_NAMES[HashAlg(alg)])
    offset = mac[-1] & 0x0F
    code = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(code % 10**digits).zfill(digits)


def totp_counter(at: float, step: int = 30, t0: int = 0) -> int:
    """The time step number T = floor((at - t0) / step) of RFC 6238 section 4.2.

    ``at`` and ``t0`` are Unix times in seconds. Raises ``ValueError`` for a step that is not
    positive, a time that is not finite or one before ``t0``.
    """
    if step <= 0:
        raise ValueError(f"the TOTP time step must be positive, not {step}")
    if not math.isfinite(at):
        raise ValueError(f"the time {at} is not a finite number")
    if at < t0:
        raise ValueError(f"the time {at} is before the TOTP start time {t0}")
    return int((at - t0) // step)


def totp(
    secret: bytes,
    at: float,
    step: int = 30,
    t0: int = 0,
    digits: int = 6,
    alg: HashAlg = HashAlg.SHA1,
) -> str:
    """The TOTP code at Unix time ``at``: HOTP of the time step number (RFC 6238 section 4)."""
    return hotp(secret, totp_counter(at, step, t0), digits, alg)
