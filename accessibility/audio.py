"""16-bit mono WAV helpers (stdlib only): read, atomic write, silence, joining, and energy-based
segmentation used both to trim rendered speech and by tests to count what is audible."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import wave
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path

from accessibility.errors import AudioFormatError, AudioWriteFailed

SAMPLE_WIDTH = 2  # bytes: 16-bit signed PCM
FULL_SCALE = 32767
# A peak below this (about -54 dBFS) is silence for every purpose here: espeak-ng's quietest
# speech at volume 0.1 still peaks near 1,500.
SILENCE_PEAK = 64


def samples_of(values: Iterable[int]) -> array[int]:
    """``values`` as 16-bit samples (the type every helper here returns)."""
    if isinstance(values, array) and values.typecode == "h":
        return values
    return array("h", values)


def read_wav(path: Path | str) -> tuple[int, array[int]]:
    """The sample rate and samples of a 16-bit PCM mono WAV file."""
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getnchannels() != 1 or wav.getsampwidth() != SAMPLE_WIDTH:
                raise AudioFormatError(
                    f"{path} has {wav.getnchannels()} channel(s) of {8 * wav.getsampwidth()} bit"
                )
            rate = wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioFormatError(f"{path} is not a readable WAV file: {exc}") from exc
    samples = array("h")
    samples.frombytes(frames[: len(frames) - len(frames) % SAMPLE_WIDTH])
    if sys.byteorder == "big":  # WAV data is little-endian
        samples.byteswap()
    return rate, samples


def write_wav(path: Path | str, rate: int, samples: Iterable[int]) -> None:
    """Write a 16-bit PCM mono WAV atomically: a temporary file in the same folder is renamed
    over ``path``, so a failed write (full disk, read-only folder) leaves nothing at ``path``."""
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, not {rate}")
    target = Path(path)
    data = samples_of(samples)
    if sys.byteorder == "big":
        data = array("h", data)
        data.byteswap()
    temporary: str | None = None
    try:
        descriptor, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
        with os.fdopen(descriptor, "wb") as file, wave.open(file, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(SAMPLE_WIDTH)
            wav.setframerate(rate)
            wav.writeframes(data.tobytes())
        os.replace(temporary, target)
    except OSError as exc:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        raise AudioWriteFailed(target, exc.strerror or str(exc)) from exc


def silence(ms: float, rate: int) -> array[int]:
    """``ms`` milliseconds of digital silence."""
    if ms < 0:
        raise ValueError(f"a pause cannot be negative ({ms} ms)")
    return array("h", bytes(SAMPLE_WIDTH * round(rate * ms / 1000)))


def concatenate(parts: Iterable[Iterable[int]]) -> array[int]:
    """The parts one after another."""
    joined = array("h")
    for part in parts:
        joined.extend(samples_of(part))
    return joined


def duration(samples: Sequence[int], rate: int) -> float:
    """Length in seconds."""
    return len(samples) / rate


def peak(samples: Sequence[int]) -> int:
    """The largest absolute sample value (0 for no samples)."""
    return max((abs(s) for s in samples), default=0)


def is_silent(samples: Sequence[int]) -> bool:
    """True when nothing in ``samples`` would be heard (including when there are none)."""
    return peak(samples) < SILENCE_PEAK


def frame_rms(samples: Sequence[int], frame: int) -> list[float]:
    """Root-mean-square level of each ``frame``-sample frame (the last one may be shorter)."""
    levels = []
    for start in range(0, len(samples), frame):
        chunk = samples[start : start + frame]
        levels.append(math.sqrt(sum(s * s for s in chunk) / len(chunk)))
    return levels


def segments(
    samples: Sequence[int],
    rate: int,
    *,
    frame_ms: float = 10,
    threshold: float = 0.05,
    min_gap_ms: float = 120,
    min_segment_ms: float = 30,
) -> list[tuple[int, int]]:
    """The audible stretches of ``samples`` as ``(start, end)`` sample offsets (end exclusive).

    A frame is audible when its RMS level is at least ``threshold`` times that of the loudest
    frame (0.05 is -26 dB), so the result does not depend on the volume. Stretches closer than
    ``min_gap_ms`` are one segment (the closure of a stop consonant inside a word is shorter
    than that); stretches shorter than ``min_segment_ms`` are dropped as clicks.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold is a fraction of the loudest frame, not {threshold}")
    frame = max(1, round(rate * frame_ms / 1000))
    levels = frame_rms(samples, frame)
    loudest = max(levels, default=0.0)
    if loudest < SILENCE_PEAK / 2:
        return []
    floor = threshold * loudest
    runs: list[list[int]] = []  # [first frame, last frame + 1]
    for index, level in enumerate(levels):
        if level < floor:
            continue
        if runs and (index - runs[-1][1]) * frame_ms < min_gap_ms:
            runs[-1][1] = index + 1
        else:
            runs.append([index, index + 1])
    return [
        (first * frame, min(len(samples), end * frame))
        for first, end in runs
        if (end - first) * frame_ms >= min_segment_ms
    ]


def trim(samples: Sequence[int], rate: int, *, threshold: float = 0.01) -> array[int]:
    """``samples`` without the silence before the first and after the last audible frame.

    The low threshold (-40 dB) keeps quiet word edges such as a leading "f" or "s".
    """
    found = segments(samples, rate, threshold=threshold, min_gap_ms=1e9, min_segment_ms=0)
    if not found:
        return array("h")
    return samples_of(samples[found[0][0] : found[-1][1]])
