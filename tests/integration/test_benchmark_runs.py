"""The benchmark script keeps working (its figures are read by people, not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_sim.attach.pcscd import VpcdReader

pytestmark = pytest.mark.integration

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_piv.py"


def test_piv_benchmark_reports_all_three_rates(free_reader: VpcdReader) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--seconds", "0", "--minimum", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["operations"] == {"bare": 3, "in_process": 3, "pcscd": 3}
    for key in (
        "bare_ecdsa_p256_sign_per_s",
        "in_process_verify_sign_per_s",
        "pcscd_verify_sign_per_s",
    ):
        assert figures[key] > 0


def test_fido_benchmark_reports_all_three_rates(free_reader: VpcdReader, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK.with_name("bench_fido.py")),
            "--seconds",
            "0",
            "--minimum",
            "3",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "AKKREDITIV_SIM_HOME": str(tmp_path / "home")},
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["operations"] == {"in_process": 3, "usb": 3, "nfc": 3}
    for key in (
        "in_process_assertions_per_s",
        "usb_assertions_per_s",
        "nfc_pcscd_assertions_per_s",
    ):
        assert figures[key] > 0


def test_otp_benchmark_reports_all_five_rates() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK.with_name("bench_otp.py")),
            "--seconds",
            "0",
            "--minimum",
            "3",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["operations"] == {
        "bare_hmac": 3,
        "hotp": 3,
        "totp": 3,
        "bare_aes": 3,
        "parse_otp_check": 3,
    }
    for key in (
        "bare_hmac_sha1_per_s",
        "hotp_per_s",
        "totp_per_s",
        "bare_aes128_ecb_decrypt_per_s",
        "parse_otp_check_per_s",
        "hotp_vs_bare_hmac_ratio",
        "totp_vs_bare_hmac_ratio",
        "parse_otp_check_vs_bare_aes_ratio",
    ):
        assert figures[key] > 0


def test_speech_benchmark_reports_both_languages() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK.with_name("bench_speech.py")),
            "--seconds",
            "0",
            "--minimum",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["operations"] == {
        language: {"press": 2, "cold": 2, "warm": 2, "sentence": 2} for language in ("da", "en")
    }
    for language in ("da", "en"):
        for key in (
            "key_press_to_first_speech_ms",
            "cold_time_to_first_speech_ms",
            "warm_time_to_first_speech_ms",
            "sentence_real_time_factor",
        ):
            assert figures[language][key] > 0
