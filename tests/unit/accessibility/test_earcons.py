"""Generated earcons (accessibility.earcons): lengths, direction of pitch, no clicks."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import pytest

from accessibility.audio import FULL_SCALE, read_wav, segments
from accessibility.earcons import Earcon, earcon_samples, render_earcon
from accessibility.errors import SettingOutOfRange

RATE = 22050


def frequency(samples: Sequence[int], rate: int) -> float:
    """Estimated by zero crossings: a sine crosses zero twice per period."""
    crossings = sum(1 for a, b in itertools.pairwise(samples) if (a < 0) != (b < 0))
    return crossings * rate / (2 * len(samples))


def thirds(samples: Sequence[int]) -> tuple[Sequence[int], Sequence[int]]:
    third = len(samples) // 3
    return samples[:third], samples[-third:]


@pytest.mark.parametrize(
    ("kind", "seconds", "tones"),
    [(Earcon.SUCCESS, 0.330, 2), (Earcon.FAILURE, 0.430, 2), (Earcon.YOUR_TURN, 0.120, 1)],
)
def test_earcon_has_expected_duration_and_tone_count(
    kind: Earcon, seconds: float, tones: int
) -> None:
    samples = earcon_samples(kind, volume=0.5)
    assert len(samples) / RATE == pytest.approx(seconds, abs=0.002)  # whole samples per part
    assert len(segments(samples, RATE, min_gap_ms=20, min_segment_ms=20)) == tones
    assert len(samples) / RATE < 0.5  # a cue, not a wait


def test_success_rises_when_estimated_by_zero_crossings() -> None:
    first, last = thirds(earcon_samples(Earcon.SUCCESS, volume=0.5))
    assert frequency(first, RATE) == pytest.approx(660, rel=0.05)
    assert frequency(last, RATE) == pytest.approx(990, rel=0.05)


def test_failure_falls_when_estimated_by_zero_crossings() -> None:
    first, last = thirds(earcon_samples(Earcon.FAILURE, volume=0.5))
    assert frequency(first, RATE) == pytest.approx(440, rel=0.05)
    assert frequency(last, RATE) == pytest.approx(294, rel=0.05)


@pytest.mark.parametrize("kind", list(Earcon))
def test_earcon_fades_in_and_out_when_generated(kind: Earcon) -> None:
    samples = earcon_samples(kind, volume=1.0)
    ms = RATE // 1000
    # a hard start or stop at full level is an audible click
    assert max(abs(s) for s in samples[:ms]) < 0.05 * FULL_SCALE
    assert max(abs(s) for s in samples[-ms:]) < 0.05 * FULL_SCALE
    assert max(abs(s) for s in samples) > 0.95 * FULL_SCALE


def test_earcon_volume_scales_level() -> None:
    loud = max(earcon_samples(Earcon.YOUR_TURN, volume=1.0))
    soft = max(earcon_samples(Earcon.YOUR_TURN, volume=0.25))
    assert soft == pytest.approx(loud / 4, rel=0.01)


@pytest.mark.parametrize("volume", [-0.1, 1.1])
def test_earcon_raises_setting_out_of_range_when_volume_outside_bounds(volume: float) -> None:
    with pytest.raises(SettingOutOfRange):
        earcon_samples(Earcon.SUCCESS, volume=volume)


def test_render_earcon_writes_wav_at_requested_rate(tmp_path: Path) -> None:
    render_earcon("your_turn", tmp_path / "beep.wav", sample_rate=16000, volume=0.5)
    rate, samples = read_wav(tmp_path / "beep.wav")
    assert rate == 16000
    assert samples == earcon_samples(Earcon.YOUR_TURN, sample_rate=16000, volume=0.5)
