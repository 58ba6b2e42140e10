"""``python -m accessibility.speak_file LANG OUT.wav < text``: speak text into a WAV file in
a process of its own.

A server renders speech this way, not in its request threads: pyttsx3's espeak-ng driver
keeps one engine per process and delivers audio through a callback that, driven from a worker
thread, could fire after ``runAndWait`` had returned (the file then went missing). The text is
spoken sentence by sentence and joined with a short pause: espeak-ng (1.51, through pyttsx3)
wrote no file at all for a paragraph of several sentences that it spoke one by one.
Exit codes: 0 written, 2 bad arguments, 3 speech unavailable or failed (reason on stderr).
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from accessibility.audio import concatenate, read_wav, silence, write_wav
from accessibility.errors import AccessibilityError
from accessibility.speech import Language, Prosody, Pyttsx3Engine

PAUSE_MS = 300
_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+")


def sentences(text: str) -> list[str]:
    return [part for part in (p.strip() for p in _SENTENCE_END.split(text)) if part]


def speak_to_file(engine: Pyttsx3Engine, text: str, target: Path, language: Language) -> None:
    """``text`` spoken into ``target``, one sentence at a time, pauses between."""
    prosody = Prosody()
    parts = sentences(text)
    if not parts:
        raise ValueError("there is no text to speak")
    rate = 0
    pieces: list[Sequence[int]] = []
    with tempfile.TemporaryDirectory(prefix="speak-") as scratch:
        for number, sentence in enumerate(parts):
            wav = Path(scratch) / f"{number:03d}.wav"
            engine.render(
                sentence,
                wav,
                language=language,
                rate=prosody.rate,
                volume=prosody.volume,
                pitch=prosody.pitch,
            )
            rate, samples = read_wav(wav)
            if pieces:
                pieces.append(silence(PAUSE_MS, rate))
            pieces.append(samples)
    write_wav(target, rate, concatenate(pieces))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m accessibility.speak_file LANG OUT.wav < text", file=sys.stderr)
        return 2
    try:
        language = Language.parse(argv[0])
    except AccessibilityError as exc:
        print(exc, file=sys.stderr)
        return 2
    text = sys.stdin.read()
    try:
        speak_to_file(Pyttsx3Engine(), text, Path(argv[1]), language)
    except (AccessibilityError, ValueError) as exc:
        print(f"speech failed: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
