"""Spoken one-time codes: each digit rendered as its own word and joined with generated silence,
so a listener hears exactly one word per digit and a longer pause between groups."""

from __future__ import annotations

import tempfile
from array import array
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from accessibility.audio import concatenate, read_wav, silence, trim, write_wav
from accessibility.errors import AccessibilityError, SpeechFailed
from accessibility.speech import Language, Prosody, SpeechEngine

DIGIT_WORDS: Mapping[Language, tuple[str, ...]] = {
    Language.DA: ("nul", "en", "to", "tre", "fire", "fem", "seks", "syv", "otte", "ni"),
    Language.EN: ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
}
GROUP_SEPARATOR = " ... "
DIGITS = "0123456789"


class InvalidCode(AccessibilityError, ValueError):
    """A code that is empty or has a character other than 0-9 (the code is not repeated here:
    codes are secrets and messages end up in logs)."""

    hint = "a one-time code is digits only, e.g. 6 or 8 of them"


def group_sizes(length: int) -> list[int]:
    """How a code of ``length`` digits is grouped: threes, fours when that divides evenly and
    threes do not (8 -> 4 4), and never a lone digit at the end (7 -> 3 4)."""
    if length <= 0:
        raise InvalidCode("a code needs at least one digit")
    if length % 3 and length % 4 == 0:
        return [4] * (length // 4)
    sizes = [3] * (length // 3)
    rest = length % 3
    if rest == 1 and sizes:
        sizes[-1] += 1
    elif rest:
        sizes.append(rest)
    return sizes


def _digits(code: str) -> str:
    for position, char in enumerate(code, 1):
        if char not in DIGITS:
            raise InvalidCode(f"character {position} of the code is not a digit 0-9")
    group_sizes(len(code))  # rejects the empty code
    return code


def code_words(code: str, language: Language | str) -> list[list[str]]:
    """The digits of ``code`` as words, in groups: "471902" -> [[four, seven, one], [nine, ...]]."""
    words = DIGIT_WORDS[Language.parse(language)]
    digits = _digits(code)
    groups: list[list[str]] = []
    start = 0
    for size in group_sizes(len(digits)):
        groups.append([words[int(d)] for d in digits[start : start + size]])
        start += size
    return groups


def code_text(code: str, language: Language | str) -> str:
    """The code as it is spoken, for display: "fire syv en ... ni nul to"."""
    return GROUP_SEPARATOR.join(" ".join(group) for group in code_words(code, language))


@dataclass(frozen=True)
class RenderedCode:
    """A code rendered to ``path``; ``digits`` holds each spoken digit's ``(start, end)`` sample
    offsets (end exclusive)."""

    path: Path
    duration: float  # seconds
    text: str = field(repr=False)  # the code itself: keep it out of logs
    sample_rate: int
    digits: tuple[tuple[int, int], ...]


WordKey = tuple[SpeechEngine, str, Language, int, float, int]


class WordCache:
    """Rendered, trimmed digit words in memory, per (engine, word, language, rate, volume, pitch),
    so a repeated or a second code costs no synthesis. Oldest entries go first beyond
    ``max_entries``."""

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._words: OrderedDict[WordKey, tuple[int, array[int]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._words)

    def word(
        self, engine: SpeechEngine, word: str, language: Language, prosody: Prosody
    ) -> tuple[int, array[int]]:
        """The sample rate and trimmed samples of ``word`` spoken by ``engine``."""
        key = (engine, word, language, prosody.rate, prosody.volume, prosody.pitch)
        cached = self._words.get(key)
        if cached is not None:
            self.hits += 1
            self._words.move_to_end(key)
            return cached
        self.misses += 1
        with tempfile.TemporaryDirectory(prefix="digit-") as folder:
            wav = Path(folder) / "word.wav"
            engine.render(
                word,
                wav,
                language=language,
                rate=prosody.rate,
                volume=prosody.volume,
                pitch=prosody.pitch,
            )
            rate, samples = read_wav(wav)
        spoken = trim(samples, rate)
        if not spoken:
            raise SpeechFailed(f"the engine rendered the word {word!r} as silence")
        self._words[key] = (rate, spoken)
        while len(self._words) > self.max_entries:
            self._words.popitem(last=False)
        return rate, spoken


def render_code(
    engine: SpeechEngine,
    code: str,
    path: Path,
    *,
    language: Language | str,
    rate: int = 175,
    volume: float = 1.0,
    pitch: int = 50,
    digit_gap_ms: float = 250,
    group_gap_ms: float = 700,
    cache: WordCache | None = None,
) -> RenderedCode:
    """Speak ``code`` digit by digit into the WAV at ``path``.

    Each digit word is rendered on its own (or taken from ``cache``; without one, a cache for
    this call only) and trimmed, then joined with ``digit_gap_ms`` of silence inside a group
    and ``group_gap_ms`` between groups. To repeat the code, render it again; to say it slower
    or faster, change ``rate``.
    """
    language = Language.parse(language)
    prosody = Prosody(rate, volume, pitch)
    if not 0 <= digit_gap_ms <= group_gap_ms:
        raise ValueError("the pause between groups must be at least the pause between digits")
    groups = code_words(code, language)
    words = cache if cache is not None else WordCache()

    parts: list[array[int]] = []
    offsets: list[tuple[int, int]] = []
    position = 0
    sample_rate: int | None = None
    for group_index, group in enumerate(groups):
        for word_index, word in enumerate(group):
            rate_hz, spoken = words.word(engine, word, language, prosody)
            if sample_rate is None:
                sample_rate = rate_hz
            elif rate_hz != sample_rate:
                raise SpeechFailed(f"the engine changed sample rate ({sample_rate} -> {rate_hz})")
            if group_index or word_index:
                gap = silence(digit_gap_ms if word_index else group_gap_ms, sample_rate)
                parts.append(gap)
                position += len(gap)
            parts.append(spoken)
            offsets.append((position, position + len(spoken)))
            position += len(spoken)
    if sample_rate is None:  # unreachable: code_words returned at least one digit
        raise InvalidCode("a code needs at least one digit")
    samples = concatenate(parts)
    write_wav(path, sample_rate, samples)
    return RenderedCode(
        path=path,
        duration=len(samples) / sample_rate,
        text=GROUP_SEPARATOR.join(" ".join(group) for group in groups),
        sample_rate=sample_rate,
        digits=tuple(offsets),
    )
