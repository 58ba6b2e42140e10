"""Spoken one-time codes (accessibility.codes): the words, and what is audible in the WAV."""

from __future__ import annotations

import itertools
from array import array
from pathlib import Path

import pytest

from accessibility.audio import read_wav, segments
from accessibility.codes import (
    RenderedCode,
    WordCache,
    code_text,
    code_words,
    group_sizes,
    render_code,
)
from accessibility.speech import Language, Pyttsx3Engine

CODE = "471902"
RATES = (80, 175, 300)

Rendered = dict[tuple[Language, int], tuple[RenderedCode, int, "array[int]"]]


@pytest.fixture(scope="module")
def rendered(engine: Pyttsx3Engine, tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """The code in both languages at a slow, the normal and a fast rate (rendered once)."""
    folder = tmp_path_factory.mktemp("codes")
    cache = WordCache()
    out: Rendered = {}
    for language in Language:
        for rate in RATES:
            path = folder / f"{language}-{rate}.wav"
            code = render_code(engine, CODE, path, language=language, rate=rate, cache=cache)
            out[language, rate] = (code, *read_wav(code.path))
    return out


# --- words -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "text"),
    [(Language.DA, "fire syv en ... ni nul to"), (Language.EN, "four seven one ... nine zero two")],
)
def test_code_text_is_digit_words_grouped_when_six_digits(language: Language, text: str) -> None:
    assert code_text(CODE, language) == text


def test_code_text_never_reads_digits_as_a_number() -> None:
    for language in Language:
        text = code_text("100000", language)
        assert not any(char.isdigit() for char in text)
        for number_word in ("hundred", "thousand", "hundrede", "tusind", "million"):
            assert number_word not in text
    assert code_text("100000", Language.EN) == "one zero zero ... zero zero zero"


def test_code_words_has_all_ten_digits_when_danish() -> None:
    assert code_words("0123456789", "da") == [
        ["nul", "en", "to"],
        ["tre", "fire", "fem"],
        ["seks", "syv", "otte", "ni"],
    ]


def test_code_words_groups_by_four_when_eight_digits() -> None:
    assert code_words("12345678", Language.EN) == [
        ["one", "two", "three", "four"],
        ["five", "six", "seven", "eight"],
    ]
    assert code_text("12345678", Language.DA) == "en to tre fire ... fem seks syv otte"


@pytest.mark.parametrize(
    ("length", "sizes"), [(4, [4]), (6, [3, 3]), (7, [3, 4]), (8, [4, 4]), (9, [3, 3, 3])]
)
def test_group_sizes_never_leave_a_lone_digit(length: int, sizes: list[int]) -> None:
    assert group_sizes(length) == sizes


FULLWIDTH = "\uff14\uff17\uff11\uff19\uff10\uff12"  # str.isdigit() is true for these
ARABIC_INDIC = "\u0664\u0667\u0661\u0669\u0660\u0662"


@pytest.mark.parametrize("code", ["47190a", "471 902", "", "-47190", FULLWIDTH, ARABIC_INDIC])
def test_code_words_raises_value_error_when_not_ascii_digits(code: str) -> None:
    with pytest.raises(ValueError, match="digit") as caught:
        code_words(code, Language.DA)
    if code:
        assert code not in str(caught.value)  # a code is a secret: not repeated in errors


# --- rendered audio --------------------------------------------------------------------------


@pytest.mark.parametrize("language", list(Language))
def test_render_has_one_audible_segment_per_digit_when_six_digits(
    rendered: Rendered, language: Language
) -> None:
    for rate in RATES:
        _, sample_rate, samples = rendered[language, rate]
        assert len(segments(samples, sample_rate)) == 6, (language, rate)


@pytest.mark.parametrize("language", list(Language))
def test_render_pauses_longer_between_groups_than_between_digits(
    rendered: Rendered, language: Language
) -> None:
    _, sample_rate, samples = rendered[language, 175]
    found = segments(samples, sample_rate)
    gaps = [(b[0] - a[1]) / sample_rate for a, b in itertools.pairwise(found)]
    between_groups = gaps.pop(2)
    assert between_groups > max(gaps) + 0.3
    assert all(0.2 < gap < 0.35 for gap in gaps)


@pytest.mark.parametrize("language", list(Language))
def test_render_digit_offsets_match_audible_segments(
    rendered: Rendered, language: Language
) -> None:
    code, sample_rate, samples = rendered[language, 175]
    assert code.duration == pytest.approx(len(samples) / sample_rate)
    assert code.text == code_text(CODE, language)
    tolerance = sample_rate // 20  # 50 ms: quiet word edges fall below the counting threshold
    for (start, end), (seen_start, seen_end) in zip(
        code.digits, segments(samples, sample_rate), strict=True
    ):
        assert abs(start - seen_start) <= tolerance
        assert abs(end - seen_end) <= tolerance


@pytest.mark.parametrize("language", list(Language))
def test_render_is_longer_when_slower_and_shorter_when_faster(
    rendered: Rendered, language: Language
) -> None:
    slow, normal, fast = (rendered[language, rate][0].duration for rate in RATES)
    assert slow > normal + 0.5
    assert fast < normal - 0.3


def test_render_languages_differ_in_audio(rendered: Rendered) -> None:
    assert rendered[Language.DA, 175][2] != rendered[Language.EN, 175][2]


def test_render_groups_by_four_when_eight_digits(engine: Pyttsx3Engine, tmp_path: Path) -> None:
    code = render_code(engine, "12345678", tmp_path / "c.wav", language=Language.EN)
    sample_rate, samples = read_wav(code.path)
    found = segments(samples, sample_rate)
    assert len(found) == len(code.digits) == 8
    gaps = [b[0] - a[1] for a, b in itertools.pairwise(found)]
    assert gaps.index(max(gaps)) == 3


def test_render_reuses_cached_words_when_repeated(engine: Pyttsx3Engine, tmp_path: Path) -> None:
    cache = WordCache()
    first = render_code(engine, "112112", tmp_path / "1.wav", language="da", cache=cache)
    assert (cache.misses, cache.hits) == (2, 4)  # "en" and "to", each rendered once
    again = render_code(engine, "112112", tmp_path / "2.wav", language="da", cache=cache)
    assert (cache.misses, cache.hits) == (2, 10)
    assert read_wav(first.path) == read_wav(again.path)
    render_code(engine, "112112", tmp_path / "3.wav", language="da", rate=200, cache=cache)
    assert cache.misses == 4  # another rate is another rendering


def test_rendered_code_repr_hides_the_code(rendered: Rendered) -> None:
    code = rendered[Language.EN, 175][0]
    assert "four" not in repr(code)
