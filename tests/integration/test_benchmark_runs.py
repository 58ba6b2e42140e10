"""The benchmark scripts keep working (their figures are read by people, not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from akkreditiv.cli.pcscd import VpcdReader
from tests.unit.server.storage.databases import POSTGRES_URL, postgres_schema

pytestmark = pytest.mark.integration

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_benchmark(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a benchmark for a few operations only and return its JSON figures."""
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--seconds", "0", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def test_piv_benchmark_reports_all_three_rates(free_reader: VpcdReader) -> None:
    figures = run_benchmark("bench_piv.py", "--minimum", "3")
    assert figures["operations"] == {"bare": 3, "in_process": 3, "pcscd": 3}
    for key in (
        "bare_ecdsa_p256_sign_per_s",
        "in_process_verify_sign_per_s",
        "pcscd_verify_sign_per_s",
    ):
        assert figures[key] > 0


def test_fido_benchmark_reports_all_three_rates(free_reader: VpcdReader, tmp_path: Path) -> None:
    figures = run_benchmark(
        "bench_fido.py", "--minimum", "3", env={"AKKREDITIV_SIM_HOME": str(tmp_path / "home")}
    )
    assert figures["operations"] == {"in_process": 3, "usb": 3, "nfc": 3}
    for key in (
        "in_process_assertions_per_s",
        "usb_assertions_per_s",
        "nfc_pcscd_assertions_per_s",
    ):
        assert figures[key] > 0


def test_otp_benchmark_reports_all_five_rates() -> None:
    figures = run_benchmark("bench_otp.py", "--minimum", "3")
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
    figures = run_benchmark("bench_speech.py", "--minimum", "2")
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


def test_server_benchmark_reports_every_row_and_the_baseline() -> None:
    figures = run_benchmark(
        "bench_server.py", "--in-flight", "2", "--minimum", "3", "--workers", "1", "--rounds", "1"
    )
    assert figures["database"] == "sqlite"
    rows = ("otp_login", "password_login", "otp_step", "fido2_login", "piv_login")
    for side in (*rows, "baseline_hmac_and_update"):
        assert figures[side]["journeys"] >= 2 * 3, figures[side]
        assert figures[side]["failures"] == 0, figures[side]
        assert figures[side]["client_cpu_us_per_request"] > 0
        assert figures[side]["server_cores"] > 0
    # A whole login is its requests, every one answered.
    assert figures["otp_login"]["requests"] == 4 * figures["otp_login"]["journeys"]
    assert figures["piv_login"]["requests"] == 5 * figures["piv_login"]["journeys"]
    assert figures["ratios"].keys() == set(rows)


def test_legacy_import_benchmark_reports_both_sizes_and_the_baseline() -> None:
    figures = run_benchmark("bench_legacy_import.py", "--minimum", "400")
    assert (figures["database"], figures["rows"]) == ("sqlite", 400)
    assert (figures["small"]["rows"], figures["large"]["rows"]) == (40, 400)
    for size in ("small", "large"):
        assert figures[size]["rows_per_s"] > 0
        assert figures[size]["peak_rss_mb"] > 0
    for key in ("generate_rows_per_s", "baseline_rows_per_s", "import_vs_baseline_ratio"):
        assert figures[key] > 0
    assert figures["extrapolated_5m_minutes"] > 0


def test_migration_flow_benchmark_reports_each_variant() -> None:
    figures = run_benchmark("bench_migration_flows.py", "--minimum", "2")
    assert figures["database"] == "sqlite"
    for variant in ("with_password", "code_display_only", "code_display_only_cheap_legacy_hash"):
        assert figures[variant]["flows"] >= 2
        assert figures[variant]["flows_per_s"] > 0
    assert figures["bare_legacy_pbkdf2_per_s"] > 0
    assert figures["bare_argon2id_hash_per_s"] > 0


def test_audit_append_benchmark_reports_one_chain_and_several() -> None:
    with postgres_schema():  # skips, or fails when CI=true, without PostgreSQL
        pass
    figures = run_benchmark(
        "bench_audit_append.py",
        *("--postgres", POSTGRES_URL, "--processes", "3", "--partitions", "4"),
        *("--minimum", "10", "--rounds", "1"),
    )
    assert figures["processes"] == 3
    for layout, chains in (("one_chain", 1), ("partitioned", 4)):
        assert figures[layout]["partitions"] == chains
        assert figures[layout]["appends"] >= 3 * 10  # every one verified in its chain
        assert 1 <= figures[layout]["chains_used"] <= chains
        assert figures[layout]["appends_per_s"] > 0
        assert figures[layout]["client_lock_wait_ms_per_append"] > 0
        assert figures[layout]["server_lock_wait_ms_per_append"] >= 0
    assert figures["ratios"]["appends_per_s"] > 0
