"""The benchmark script keeps working (its figures are read by people, not asserted here)."""

from __future__ import annotations

import json
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
