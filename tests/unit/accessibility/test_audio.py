"""WAV helpers (accessibility.audio): atomic writes, silence, joining, energy segmentation."""

from __future__ import annotations

import math
import subprocess
import sys
import wave
from array import array
from pathlib import Path

import pytest

from accessibility.audio import (
    concatenate,
    duration,
    is_silent,
    read_wav,
    segments,
    silence,
    trim,
    write_wav,
)
from accessibility.errors import AudioFormatError, AudioWriteFailed

RATE = 22050


def sine(ms: float, amplitude: float = 10000.0, frequency: float = 440.0) -> array[int]:
    count = round(RATE * ms / 1000)
    return array(
        "h", (round(amplitude * math.sin(2 * math.pi * frequency * i / RATE)) for i in range(count))
    )


def test_write_then_read_roundtrips_samples_and_rate(tmp_path: Path) -> None:
    samples = sine(50)
    write_wav(tmp_path / "a.wav", 16000, samples)
    assert read_wav(tmp_path / "a.wav") == (16000, samples)
    with wave.open(str(tmp_path / "a.wav")) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)


def test_write_leaves_no_temporary_files_when_it_succeeds(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", RATE, sine(10))
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]


@pytest.mark.parametrize("layout", ["folder_missing", "folder_is_a_file"])
def test_write_raises_audio_write_failed_when_folder_unwritable(
    tmp_path: Path, layout: str
) -> None:
    if layout == "folder_missing":
        target = tmp_path / "missing" / "a.wav"
    else:
        (tmp_path / "file").write_bytes(b"")
        target = tmp_path / "file" / "a.wav"
    with pytest.raises(AudioWriteFailed) as caught:
        write_wav(target, RATE, sine(10))
    assert caught.value.path == target
    assert caught.value.hint
    assert sorted(p.name for p in tmp_path.rglob("*")) == (
        [] if layout == "folder_missing" else ["file"]
    )


# A write that fails half-way, as on a full disk: RLIMIT_FSIZE makes the kernel refuse (EFBIG)
# once the file passes 4 KiB. Run in a child process so the limit cannot touch pytest itself.
HALF_WRITTEN = """
import resource, signal, sys
from array import array
from accessibility.audio import write_wav
from accessibility.errors import AudioWriteFailed
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    write_wav(sys.argv[1], 22050, array("h", bytes(200_000)))
except AudioWriteFailed:
    sys.exit(3)
"""


def test_write_keeps_old_file_and_no_partial_file_when_write_fails_midway(
    tmp_path: Path,
) -> None:
    target = tmp_path / "prompt.wav"
    write_wav(target, RATE, sine(20))
    before = target.read_bytes()
    result = subprocess.run(
        [sys.executable, "-c", HALF_WRITTEN, str(target)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["prompt.wav"]


def test_read_raises_audio_format_error_when_stereo(tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "stereo.wav"), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(bytes(400))
    with pytest.raises(AudioFormatError):
        read_wav(tmp_path / "stereo.wav")


def test_read_raises_audio_format_error_when_not_wav(tmp_path: Path) -> None:
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(AudioFormatError):
        read_wav(tmp_path / "text.wav")


def test_silence_has_requested_length_and_is_silent() -> None:
    pause = silence(250, RATE)
    assert len(pause) == round(RATE * 0.25)
    assert is_silent(pause)
    assert duration(pause, RATE) == pytest.approx(0.25, abs=1 / RATE)


def test_concatenate_joins_in_order() -> None:
    assert concatenate([array("h", [1, 2]), [3], array("h")]) == array("h", [1, 2, 3])


def test_segments_finds_each_tone_when_gaps_are_long() -> None:
    samples = concatenate([silence(100, RATE), sine(200), silence(250, RATE), sine(150)])
    found = segments(samples, RATE)
    assert len(found) == 2
    (first_start, first_end), (second_start, _) = found
    assert abs(first_start - round(0.1 * RATE)) <= RATE // 100
    assert abs((second_start - first_end) / RATE - 0.25) <= 0.02


def test_segments_merges_tones_when_gap_is_shorter_than_min_gap() -> None:
    samples = concatenate([sine(200), silence(60, RATE), sine(200)])
    assert len(segments(samples, RATE, min_gap_ms=120)) == 1
    assert len(segments(samples, RATE, min_gap_ms=40)) == 2


def test_segments_threshold_is_relative_to_loudest_frame() -> None:
    loud = concatenate([sine(200, 20000), silence(300, RATE), sine(200, 20000)])
    quiet = concatenate([sine(200, 200), silence(300, RATE), sine(200, 200)])
    assert len(segments(loud, RATE)) == len(segments(quiet, RATE)) == 2


def test_segments_empty_when_silent() -> None:
    assert segments(silence(500, RATE), RATE) == []
    assert segments(array("h"), RATE) == []


def test_trim_removes_leading_and_trailing_silence() -> None:
    tone = sine(100)
    trimmed = trim(concatenate([silence(300, RATE), tone, silence(500, RATE)]), RATE)
    assert abs(len(trimmed) - len(tone)) <= RATE // 50
