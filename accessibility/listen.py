"""Hear a spoken one-time code, as a test rig listening at a reader's headphone socket would:
split the audio on its silences and match each spoken stretch against the digit words
rendered by the same engine, language, rate and volume (template matching, no speech
recognition).

What is matched is each word's loudness in seven frequency bands, every 5 ms, in decibels
below its loudest moment: not the raw samples. espeak-ng never renders a word the same way
twice in one process (its pitch "flutter" runs on from one utterance to the next), so the
samples of two renderings of "seven" drift apart within a few pitch periods, while their
band loudness over time stays the same. Each stretch, with the pauses around it, is compared
with each digit word laid into silence at every offset by normalised cross-correlation
(Pearson's r over all bands and frames); the best digit must score at least ``min_score``.

Measured on espeak-ng 1.51 (both languages, rates 100-300, 8-digit codes rendered apart from
the listener's own words): every digit right in clean audio and with white noise 25 dB below
the speech, correct digits scoring at least 0.94; the reader's other messages score at most
0.92. At 20 dB the Danish "fem" starts to be heard as "en" once its "f" drowns. It tells the
digits apart, not digits from every other word: one that sounds like a digit ("fyrre" like
"fire") is heard as that digit.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from accessibility.audio import read_wav
from accessibility.codes import DIGIT_WORDS, WordCache
from accessibility.errors import AccessibilityError
from accessibility.speech import Language, Prosody, SpeechEngine

FRAME_MS = 10.0  # frames for splitting on silence
MIN_GAP_MS = 150.0  # shorter pauses are inside a word (a stop consonant's closure)
MIN_SEGMENT_MS = 30.0  # shorter sounds are clicks
CONTEXT_MS = 200.0  # pause kept on each side of a stretch (at most half the pause)
HOP_MS = 5.0  # one feature frame every HOP_MS ...
WINDOW_MS = 20.0  # ... over WINDOW_MS of audio
# Band edges come from moving averages over these many samples (at 22,050 Hz: below about
# 340 Hz, 340-690, 690-1,400, 1,400-2,800, 2,800-5,500, 5,500-11,000 Hz, and the rest):
# octaves, wide enough that a slightly different pitch stays in its band.
AVERAGES = (64, 32, 16, 8, 4, 2)
FLOOR_DB = -60.0  # nothing counts quieter than this below the loudest moment
MAX_VOICES = 8  # prepared (language, prosody) sets of digit words kept per listener


class ListenError(AccessibilityError):
    """Base of the listener's errors: the audio did not yield a code."""


class NoCodeHeard(ListenError):
    """The audio holds nothing audible above its own noise floor."""

    hint = "check that the recording is of the reader speaking a code, not of silence"


class UnrecognisedSegment(ListenError):
    """A spoken stretch matched no digit word well enough (another message, a tone, another
    language or speed than the one listened for). ``position`` counts from 1; ``score`` is the
    best match found (1.0 is a perfect match)."""

    hint = "listen with the reader's language, rate and volume; is this a spoken code at all?"

    def __init__(self, position: int, start: float, end: float, score: float) -> None:
        self.position = position
        self.start = start
        self.end = end
        self.score = score
        super().__init__(
            f"the sound at {start:.2f}-{end:.2f} s (number {position}) is no digit word "
            f"(best match {score:.2f})"
        )


class SampleRateMismatch(ListenError):
    """The recording's sample rate differs from the engine's, so no word can match."""

    hint = "record at the speech engine's sample rate"


@dataclass(frozen=True)
class HeardCode:
    """A code recognised in audio. ``digits`` is the code (kept out of ``repr``: it is a
    secret); ``groups`` the group sizes by the longer pauses; ``scores`` each digit's match
    (1.0 perfect); ``spans`` each digit's audible ``(start, end)`` in samples."""

    digits: str = field(repr=False)
    groups: tuple[int, ...]
    scores: tuple[float, ...]
    spans: tuple[tuple[int, int], ...]
    sample_rate: int


@dataclass(frozen=True)
class Split:
    """Audio split on its silences: the audible ``spans`` (sample offsets, end exclusive),
    the frame length, the RMS level from which a frame counted as audible and the noise
    floor (RMS) the level was derived from."""

    spans: tuple[tuple[int, int], ...]
    frame: int
    threshold: float
    floor: float


def _running(values: Iterable[float]) -> list[float]:
    """``running[i]`` is the sum of the first ``i`` values."""
    return [0.0, *itertools.accumulate(values)]


def split_on_silence(
    samples: Sequence[int],
    sample_rate: int,
    *,
    frame_ms: float = FRAME_MS,
    min_gap_ms: float = MIN_GAP_MS,
    min_segment_ms: float = MIN_SEGMENT_MS,
) -> Split:
    """The audible stretches of ``samples``.

    Unlike ``accessibility.audio.segments``, the level that counts as silence follows the
    recording's own noise floor (its quietest tenth of frames, +6 dB) as well as its loudest
    frame (-34 dB), so a recording with hiss on it splits where the speaker paused, as a
    listener hears it.
    """
    frame = max(1, round(sample_rate * frame_ms / 1000))
    values = [float(v) for v in samples]
    energy = _running(map(operator.mul, values, values))
    ends = range(frame, len(values) + 1, frame)
    levels = [math.sqrt((energy[end] - energy[end - frame]) / frame) for end in ends]
    if not levels:
        return Split((), frame, math.inf, 0.0)
    ordered = sorted(levels)
    floor = ordered[len(ordered) // 10]
    threshold = max(2.0 * floor, 0.02 * ordered[-1], 32.0)
    runs: list[list[int]] = []  # [first frame, last frame + 1]
    for index, level in enumerate(levels):
        if level < threshold:
            continue
        if runs and (index - runs[-1][1]) * frame_ms < min_gap_ms:
            runs[-1][1] = index + 1
        else:
            runs.append([index, index + 1])
    spans = tuple(
        (first * frame, min(len(samples), end * frame))
        for first, end in runs
        if (end - first) * frame_ms >= min_segment_ms
    )
    return Split(spans, frame, threshold, floor)


# --- band loudness ---------------------------------------------------------------------------


def _moving_average(values: Sequence[float], size: int) -> list[float]:
    """``values`` averaged over ``size`` samples centred on each one (zeros past the ends)."""
    running = _running(values)
    sums = map(operator.sub, running[size:], running[:-size])
    means = map(operator.mul, sums, itertools.repeat(1.0 / size))
    before = size // 2
    return [0.0] * before + list(means) + [0.0] * (size - 1 - before)


def band_energies(samples: Sequence[int], sample_rate: int) -> list[list[float]]:
    """The energy in each of the bands (see ``AVERAGES``) of each feature frame of
    ``samples``: one list per band, frame ``k`` centred on sample ``k * hop``."""
    values = [float(v) for v in samples]
    hop = max(1, round(sample_rate * HOP_MS / 1000))
    half = max(1, round(sample_rate * WINDOW_MS / 2000))
    averages = [values, *(_moving_average(values, size) for size in AVERAGES)]
    # Each band is what one average keeps and the next, longer one removes; the last band is
    # the longest average itself.
    signals = [list(map(operator.sub, a, b)) for a, b in itertools.pairwise(averages)]
    signals.append(averages[-1])
    count = len(values)
    starts = [max(0, k * hop - half) for k in range(count // hop + 1)]
    ends = [min(count, k * hop + half) for k in range(count // hop + 1)]
    bands = []
    for signal in signals:
        energy = _running(map(operator.mul, signal, signal))
        at = energy.__getitem__
        bands.append(list(map(operator.sub, map(at, ends), map(at, starts))))
    return bands


def _decibels(bands: Sequence[Sequence[float]], reference: float) -> list[list[float]]:
    """Each band's energies in dB relative to ``reference`` (a 1e-12 share at the least)."""
    tiny = reference * 1e-12 or 1e-12
    scale = itertools.repeat(1.0 / reference)
    return [
        [
            10.0 * level
            for level in map(
                math.log10, map(operator.mul, map(max, band, itertools.repeat(tiny)), scale)
            )
        ]
        for band in bands
    ]


def _floored(bands: Sequence[Sequence[float]], floors: Sequence[float]) -> list[list[float]]:
    """Each band (in dB) never below its floor."""
    return [
        list(map(max, band, itertools.repeat(floor)))
        for band, floor in zip(bands, floors, strict=True)
    ]


def _loudest(bands: Sequence[Sequence[float]], first: int = 0, end: int | None = None) -> float:
    """The largest total energy (all bands) of a frame from ``first`` to ``end``."""
    totals = [sum(frame) for frame in zip(*(band[first:end] for band in bands), strict=True)]
    return max(totals, default=0.0) or 1.0


@dataclass(frozen=True)
class _Template:
    """One digit word's band energies, ready to be put into decibels against a recording's
    floors."""

    digit: str
    decibels: list[list[float]]  # relative to the word's loudest frame, not yet floored


class _Heard:
    """One spoken stretch with the pauses around it (bands x frames, in dB), with the sums a
    Pearson correlation needs, computed once for every digit word it is compared with."""

    def __init__(self, bands: Sequence[Sequence[float]], floors: Sequence[float]) -> None:
        self.bands = bands
        self.floors = floors
        self.length = len(bands[0])
        self.count = len(bands) * self.length
        self.sums = [_running(band) for band in bands]
        self.total = sum(sums[-1] for sums in self.sums)
        squares = sum(sum(map(operator.mul, band, band)) for band in bands)
        self.spread = self.count * squares - self.total**2

    def correlation(self, word: Sequence[Sequence[float]], offset: int) -> float:
        """Pearson's r of the stretch with ``word`` (in dB, on the same floors) laid into
        silence (each band at its floor) from frame ``offset``; -1 without any overlap."""
        frames = len(word[0])
        first = max(0, offset)
        last = min(self.length, offset + frames)
        if last <= first or self.spread <= 0:
            return -1.0
        outside = self.length - (last - first)
        word_first, word_last = first - offset, last - offset
        total = squares = product = 0.0
        for band, heard, sums, floor in zip(word, self.bands, self.sums, self.floors, strict=True):
            part = band[word_first:word_last]
            total += sum(part) + floor * outside
            squares += sum(map(operator.mul, part, part)) + floor * floor * outside
            product += sum(map(operator.mul, part, heard[first:last])) + floor * (
                sums[-1] - sums[last] + sums[first]
            )
        spread = self.count * squares - total**2
        if spread <= 0:
            return -1.0
        return (self.count * product - total * self.total) / math.sqrt(spread * self.spread)

    def best(self, word: Sequence[Sequence[float]], step: int = 3) -> float:
        """The highest correlation with ``word`` at any offset where it lies within the
        stretch (at the start, if it is longer): every ``step`` frames, then around the best
        of those."""
        offsets = range(max(0, self.length - len(word[0])) + 1)
        coarse = max(offsets[::step], key=lambda offset: self.correlation(word, offset))
        return max(
            self.correlation(word, offset)
            for offset in range(coarse - step + 1, coarse + step)
            if offset in offsets
        )


class Listener:
    """Recognises codes spoken by ``engine`` (see the module docstring). Digit words are
    rendered once per language and prosody, through ``cache`` (shared with ``render_code``
    when given). A stretch is the digit whose word matches it best, if that match scores at
    least ``min_score``."""

    def __init__(
        self, engine: SpeechEngine, *, cache: WordCache | None = None, min_score: float = 0.93
    ) -> None:
        if not 0 < min_score < 1:
            raise ValueError(f"min_score is between 0 and 1, not {min_score}")
        self.engine = engine
        self.cache = cache if cache is not None else WordCache()
        self.min_score = min_score
        self._voices: OrderedDict[tuple[Language, Prosody], tuple[int, list[_Template]]] = (
            OrderedDict()
        )

    def _digit_words(self, language: Language, prosody: Prosody) -> tuple[int, list[_Template]]:
        """The sample rate and the ten prepared digit words for this voice and prosody."""
        key = (language, prosody)
        prepared = self._voices.get(key)
        if prepared is not None:
            self._voices.move_to_end(key)
            return prepared
        rendered = [
            self.cache.word(self.engine, word, language, prosody) for word in DIGIT_WORDS[language]
        ]
        rates = {rate for rate, _ in rendered}
        if len(rates) != 1:
            raise SampleRateMismatch("the engine rendered the digit words at several rates")
        rate = rates.pop()
        words = []
        for digit, (_, samples) in enumerate(rendered):
            bands = band_energies(samples, rate)
            words.append(_Template(str(digit), _decibels(bands, _loudest(bands))))
        prepared = (rate, words)
        self._voices[key] = prepared
        while len(self._voices) > MAX_VOICES:
            self._voices.popitem(last=False)
        return prepared

    def listen(
        self,
        path: Path | str,
        *,
        language: Language | str,
        rate: int = 175,
        volume: float = 1.0,
        pitch: int = 50,
    ) -> HeardCode:
        """The code spoken in the WAV file at ``path``."""
        sample_rate, samples = read_wav(path)
        return self.listen_samples(
            samples, sample_rate, language=language, rate=rate, volume=volume, pitch=pitch
        )

    def listen_samples(
        self,
        samples: Sequence[int],
        sample_rate: int,
        *,
        language: Language | str,
        rate: int = 175,
        volume: float = 1.0,
        pitch: int = 50,
    ) -> HeardCode:
        """The code spoken in ``samples`` (16-bit mono at ``sample_rate``)."""
        spans, rankings = self.rank(
            samples, sample_rate, language=language, rate=rate, volume=volume, pitch=pitch
        )
        digits: list[str] = []
        scores: list[float] = []
        for index, ((start, end), ranked) in enumerate(zip(spans, rankings, strict=True)):
            score, digit = ranked[0]
            if score < self.min_score:
                raise UnrecognisedSegment(
                    index + 1, start / sample_rate, end / sample_rate, round(score, 3)
                )
            digits.append(digit)
            scores.append(score)
        return HeardCode(
            digits="".join(digits),
            groups=_groups(spans),
            scores=tuple(scores),
            spans=spans,
            sample_rate=sample_rate,
        )

    def rank(
        self,
        samples: Sequence[int],
        sample_rate: int,
        *,
        language: Language | str,
        rate: int = 175,
        volume: float = 1.0,
        pitch: int = 50,
    ) -> tuple[tuple[tuple[int, int], ...], list[list[tuple[float, str]]]]:
        """The spoken stretches of ``samples`` and, for each, every digit with its score,
        best first (what ``listen_samples`` decides on; for tuning and diagnosis)."""
        language = Language.parse(language)
        word_rate, words = self._digit_words(language, Prosody(rate, volume, pitch))
        if word_rate != sample_rate:
            raise SampleRateMismatch(
                f"the recording is at {sample_rate} Hz, the engine speaks at {word_rate} Hz"
            )
        spans = split_on_silence(samples, sample_rate).spans
        if not spans:
            raise NoCodeHeard("no sound above the noise floor")
        bands = band_energies(samples, sample_rate)
        # Each band's noise floor: its quietest tenth of frames (the pauses between digits).
        quiet = [sorted(band)[len(band) // 10] for band in bands]
        hop = max(1, round(sample_rate * HOP_MS / 1000))
        context = round(sample_rate * CONTEXT_MS / 1000)
        rankings = []
        for index, (start, end) in enumerate(spans):
            lo = max(0, start - context)
            hi = min(len(samples), end + context)
            if index:
                lo = max(lo, (spans[index - 1][1] + start) // 2)
            if index + 1 < len(spans):
                hi = min(hi, (end + spans[index + 1][0]) // 2)
            loudest = _loudest(bands, start // hop, end // hop + 1)
            # Silence is the noise floor (3 dB up, so hiss does not count as shape), and the
            # same floor, relative to the loudest moment, goes under each word.
            floors = [
                max(FLOOR_DB, 10.0 * math.log10(max(energy, 1e-12) / loudest) + 3.0)
                for energy in quiet
            ]
            around = _decibels([band[lo // hop : hi // hop + 1] for band in bands], loudest)
            heard = _Heard(_floored(around, floors), floors)
            ranked = [(heard.best(_floored(word.decibels, floors)), word.digit) for word in words]
            rankings.append(sorted(ranked, reverse=True))
        return spans, rankings


def _groups(spans: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    """Group sizes: a pause clearly longer than the shortest one ends a group."""
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    if not gaps or max(gaps) < 1.6 * min(gaps):
        return (len(spans),)
    threshold = (max(gaps) + min(gaps)) / 2
    sizes = [1]
    for gap in gaps:
        if gap > threshold:
            sizes.append(1)
        else:
            sizes[-1] += 1
    return tuple(sizes)
