"""OTP codec throughput: hotp() and totp() against a bare HMAC-SHA1 over 8 bytes, and a Yubico
OTP parse-and-check (modhex, AES decrypt, CRC, private id compared in constant time) against a
bare AES-128-ECB single-block decrypt, each ratio measured in the same run.

    .venv/bin/python benchmarks/bench_otp.py [--seconds 3] [--minimum 20] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import sys

from bench_common import rate
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from devices.protocol.otp import hotp, totp
from devices.protocol.yubiotp import OtpBlock, generate_otp, parse_otp

SECRET = b"12345678901234567890"  # RFC 4226's test secret
COUNTER = (1234).to_bytes(8, "big")
AT = 1_700_000_000.0
AES_KEY = bytes(range(16))
PRIVATE_ID = bytes.fromhex("a1a2a3a4a5a6")
OTP = generate_otp(
    b"\x00\x01\x02\x03\x04\x05",
    AES_KEY,
    OtpBlock(private_id=PRIVATE_ID, usage_counter=1, timestamp=2, session_counter=3, random=4),
)
CIPHERTEXT = bytes.fromhex("00112233445566778899aabbccddeeff")


def bare_hmac() -> bytes:
    return hmac.new(SECRET, COUNTER, hashlib.sha1).digest()


def bare_aes() -> bytes:
    decryptor = Cipher(algorithms.AES(AES_KEY), modes.ECB()).decryptor()  # noqa: S305
    return decryptor.update(CIPHERTEXT) + decryptor.finalize()


def parse_and_check() -> None:
    parsed = parse_otp(OTP, AES_KEY)
    if not hmac.compare_digest(parsed.block.private_id, PRIVATE_ID):
        raise SystemExit("the benchmark OTP's private id does not match")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--minimum", type=int, default=20, help="operations per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()

    hmac_rate, hmac_n = rate(bare_hmac, args.seconds, args.minimum)
    hotp_rate, hotp_n = rate(lambda: hotp(SECRET, 1234), args.seconds, args.minimum)
    totp_rate, totp_n = rate(lambda: totp(SECRET, AT), args.seconds, args.minimum)
    aes_rate, aes_n = rate(bare_aes, args.seconds, args.minimum)
    parse_rate, parse_n = rate(parse_and_check, args.seconds, args.minimum)

    results = {
        "bare_hmac_sha1_per_s": round(hmac_rate, 1),
        "hotp_per_s": round(hotp_rate, 1),
        "totp_per_s": round(totp_rate, 1),
        "bare_aes128_ecb_decrypt_per_s": round(aes_rate, 1),
        "parse_otp_check_per_s": round(parse_rate, 1),
        "hotp_vs_bare_hmac_ratio": round(hotp_rate / hmac_rate, 3),
        "totp_vs_bare_hmac_ratio": round(totp_rate / hmac_rate, 3),
        "parse_otp_check_vs_bare_aes_ratio": round(parse_rate / aes_rate, 3),
        "operations": {
            "bare_hmac": hmac_n,
            "hotp": hotp_n,
            "totp": totp_n,
            "bare_aes": aes_n,
            "parse_otp_check": parse_n,
        },
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for label, value, note in (
            ("bare HMAC-SHA1, 8 bytes", hmac_rate, "(baseline)"),
            ("hotp()", hotp_rate, f"{hotp_rate / hmac_rate:.3f} x HMAC"),
            ("totp()", totp_rate, f"{totp_rate / hmac_rate:.3f} x HMAC"),
            ("bare AES-128-ECB decrypt", aes_rate, "(baseline)"),
            ("parse_otp() + private id check", parse_rate, f"{parse_rate / aes_rate:.3f} x AES"),
        ):
            print(f"{label:31}{value:12.1f} /s   {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
