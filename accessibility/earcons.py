"""Earcons: short generated tones that say "it worked", "it failed" and "your turn" without
words (no audio files are shipped)."""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from accessibility.audio import FULL_SCALE, concatenate, silence, write_wav
from accessibility.errors import SettingOutOfRange
from accessibility.speech import VOLUME_RANGE

FADE_MS = 10.0  # a raised-cosine fade this long at each end of a tone avoids clicks
TONE_GAP_MS = 30.0


class Earcon(StrEnum):
    SUCCESS = "success"  # rising two-tone
    FAILURE = "failure"  # falling two-tone
    YOUR_TURN = "your_turn"  # one short beep


@dataclass(frozen=True)
class Tone:
    frequency: float  # Hz
    ms: float


TONES: Mapping[Earcon, tuple[Tone, ...]] = {
    Earcon.SUCCESS: (Tone(660.0, 150.0), Tone(990.0, 150.0)),
    Earcon.FAILURE: (Tone(440.0, 200.0), Tone(294.0, 200.0)),
    Earcon.YOUR_TURN: (Tone(880.0, 120.0),),
}


def tone(frequency: float, ms: float, rate: int, volume: float) -> array[int]:
    """A sine tone with a short fade in and out."""
    count = round(rate * ms / 1000)
    fade = min(round(rate * FADE_MS / 1000), count // 2)
    amplitude = volume * FULL_SCALE
    step = 2 * math.pi * frequency / rate
    samples = array("h", bytes(2 * count))
    for index in range(count):
        edge = min(index, count - 1 - index)
        gain = 0.5 - 0.5 * math.cos(math.pi * edge / fade) if edge < fade else 1.0
        samples[index] = round(amplitude * gain * math.sin(step * index))
    return samples


def earcon_samples(kind: Earcon | str, *, sample_rate: int = 22050, volume: float) -> array[int]:
    """The samples of earcon ``kind``."""
    if not VOLUME_RANGE[0] <= volume <= VOLUME_RANGE[1]:
        raise SettingOutOfRange("volume", volume, VOLUME_RANGE)
    parts: list[array[int]] = []
    for index, part in enumerate(TONES[Earcon(kind)]):
        if index:
            parts.append(silence(TONE_GAP_MS, sample_rate))
        parts.append(tone(part.frequency, part.ms, sample_rate, volume))
    return concatenate(parts)


def render_earcon(
    kind: Earcon | str, path: Path, *, sample_rate: int = 22050, volume: float
) -> None:
    """Write earcon ``kind`` as a 16-bit mono WAV at ``path`` (atomically)."""
    write_wav(path, sample_rate, earcon_samples(kind, sample_rate=sample_rate, volume=volume))
