"""The listener (accessibility.listen): codes spoken by the real engine are heard back digit by
digit, other sounds are refused with typed errors, and noise within reason changes nothing.

Every recording here is rendered apart from the listener's own digit words (a fresh word
cache), as the reader in another process renders them: espeak-ng never renders a word twice
with the same samples, so this is the case that matters."""

from __future__ import annotations

import math
import random
from array import array
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accessibility.audio import read_wav, silence, write_wav
from accessibility.codes import WordCache, group_sizes, render_code
from accessibility.listen import (
    Listener,
    NoCodeHeard,
    SampleRateMismatch,
    UnrecognisedSegment,
    split_on_silence,
)
from accessibility.speech import Language, Pyttsx3Engine
from firmware_sim.tokens import audio_reader, otp_token
from firmware_sim.tokens.audio_reader import AudioReader, Key

ALL_DIGITS = "0123456789"
RFC6238_SEED = b"12345678901234567890"


@pytest.fixture(scope="module")
def listener(engine: Pyttsx3Engine) -> Listener:
    return Listener(engine)


def spoken(
    engine: Pyttsx3Engine,
    folder: Path,
    code: str,
    language: Language,
    *,
    rate: int = 175,
    volume: float = 1.0,
) -> tuple[int, array[int]]:
    """The samples of ``code`` rendered as the reader renders it."""
    rendered = render_code(
        engine,
        code,
        folder / "code.wav",
        language=language,
        rate=rate,
        volume=volume,
        cache=WordCache(),
    )
    return read_wav(rendered.path)


def with_noise(samples: array[int], snr_db: float, seed: int = 1) -> array[int]:
    """``samples`` plus white noise ``snr_db`` below the speech's RMS (over its audible part)."""
    audible = [s for s in samples if s]
    rms = math.sqrt(sum(s * s for s in audible) / len(audible))
    sigma = rms / 10 ** (snr_db / 20)
    noise = random.Random(seed)  # noqa: S311 - test noise, not a secret
    return array("h", (max(-32768, min(32767, round(s + noise.gauss(0, sigma)))) for s in samples))


# --- codes are heard -----------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [100, 300])  # the reader's slowest and fastest speed
@pytest.mark.parametrize("language", list(Language))
def test_listen_hears_every_digit_when_spoken_at_either_speed(
    engine: Pyttsx3Engine,
    listener: Listener,
    tmp_path: Path,
    language: Language,
    rate: int,
) -> None:
    for code in (ALL_DIGITS, ALL_DIGITS[::-1]):
        path = render_code(engine, code, tmp_path / "code.wav", language=language, rate=rate).path
        heard = listener.listen(path, language=language, rate=rate)
        assert heard.digits == code
        assert heard.groups == (3, 3, 4)
        assert min(heard.scores) >= listener.min_score


def test_listen_hears_the_reader_speak_the_rfc6238_code(
    engine: Pyttsx3Engine, listener: Listener, tmp_path: Path
) -> None:
    state = tmp_path / "reader.json"
    token = otp_token.new_state(otp_token.Model.AUDIO)
    token.secret = RFC6238_SEED
    audio_reader.new_reader(state, token, Language.EN)

    def reader() -> AudioReader:
        return AudioReader(state, engine, tmp_path / "audio", clock=lambda: 59.0)

    said = reader().press({Key.RED})
    heard = listener.listen(
        said.path,
        language=Language.EN,
        rate=audio_reader.DEFAULT_RATE,
        volume=audio_reader.DEFAULT_VOLUME,
    )
    assert heard.digits == "287082"  # RFC 6238 appendix B at T=59, last six digits
    # Faster twice, then again: what the listener needs to know is the reader's speed.
    for _ in range(2):
        reader().press({Key.RED, Key.RIGHT_TOP})
    faster = reader().press({Key.RED})
    rate = audio_reader.DEFAULT_RATE + 50
    with pytest.raises(UnrecognisedSegment):
        listener.listen(
            faster.path,
            language=Language.EN,
            rate=audio_reader.DEFAULT_RATE,
            volume=audio_reader.DEFAULT_VOLUME,
        )
    again = listener.listen(
        faster.path, language=Language.EN, rate=rate, volume=audio_reader.DEFAULT_VOLUME
    )
    assert again.digits == "287082"


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    code=st.text(alphabet=ALL_DIGITS, min_size=1, max_size=10),
    language=st.sampled_from(list(Language)),
    rate=st.sampled_from([150, 175]),
)
def test_listen_round_trips_any_rendered_code(
    engine: Pyttsx3Engine,
    listener: Listener,
    tmp_path_factory: pytest.TempPathFactory,
    code: str,
    language: Language,
    rate: int,
) -> None:
    folder = tmp_path_factory.mktemp("code")
    sample_rate, samples = spoken(engine, folder, code, language, rate=rate)
    heard = listener.listen_samples(samples, sample_rate, language=language, rate=rate)
    assert heard.digits == code
    assert list(heard.groups) == group_sizes(len(code))


def test_heard_code_repr_hides_the_digits(
    engine: Pyttsx3Engine, listener: Listener, tmp_path: Path
) -> None:
    sample_rate, samples = spoken(engine, tmp_path, "471902", Language.DA)
    heard = listener.listen_samples(samples, sample_rate, language=Language.DA)
    assert heard.digits == "471902"
    assert "471902" not in repr(heard)


# --- robustness ------------------------------------------------------------------------------


@pytest.mark.parametrize("language", list(Language))
def test_listen_hears_the_code_through_noise_25_db_below_the_speech(
    engine: Pyttsx3Engine, listener: Listener, tmp_path: Path, language: Language
) -> None:
    sample_rate, clean = spoken(engine, tmp_path, "58203719", language, rate=150)
    for seed in (1, 2):
        noisy = with_noise(clean, snr_db=25, seed=seed)
        assert noisy != clean
        heard = listener.listen_samples(noisy, sample_rate, language=language, rate=150)
        assert heard.digits == "58203719"
        assert heard.groups == (4, 4)


def test_listen_hears_the_code_at_another_gain(
    engine: Pyttsx3Engine, listener: Listener, tmp_path: Path
) -> None:
    sample_rate, samples = spoken(engine, tmp_path, "093461", Language.DA, volume=0.8)
    quieter = array("h", (round(s * 0.3) for s in samples))
    heard = listener.listen_samples(quieter, sample_rate, language=Language.DA, volume=0.8)
    assert heard.digits == "093461"


def test_split_on_silence_follows_the_noise_floor(engine: Pyttsx3Engine, tmp_path: Path) -> None:
    sample_rate, clean = spoken(engine, tmp_path, "471902", Language.EN)
    noisy = with_noise(clean, snr_db=20)
    assert len(split_on_silence(clean, sample_rate).spans) == 6
    split = split_on_silence(noisy, sample_rate)
    assert len(split.spans) == 6
    assert split.floor > 0


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "text"),
    [
        (Language.DA, audio_reader.WORDS[Language.DA][audio_reader.Message.SLOWER]),
        (Language.DA, audio_reader.WORDS[Language.DA][audio_reader.Message.LIMIT]),
        (Language.EN, audio_reader.WORDS[Language.EN][audio_reader.Message.FASTER]),
        (Language.EN, "four hundred and seventy one"),  # a number, not digits
    ],
)
def test_listen_refuses_a_message_that_is_not_a_code(
    engine: Pyttsx3Engine, listener: Listener, tmp_path: Path, language: Language, text: str
) -> None:
    path = tmp_path / "message.wav"
    engine.render(text, path, language=language, rate=175, volume=1.0, pitch=50)
    with pytest.raises(UnrecognisedSegment) as refused:
        listener.listen(path, language=language)
    assert refused.value.position == 1
    assert refused.value.score < listener.min_score


def test_listen_refuses_a_code_heard_in_the_wrong_language(
    engine: Pyttsx3Engine, listener: Listener, tmp_path: Path
) -> None:
    sample_rate, samples = spoken(engine, tmp_path, "471902", Language.DA)
    with pytest.raises(UnrecognisedSegment):
        listener.listen_samples(samples, sample_rate, language=Language.EN)


@pytest.mark.parametrize("kind", ["silence", "noise", "empty"])
def test_listen_raises_no_code_heard_when_nothing_stands_out(
    listener: Listener, tmp_path: Path, kind: str
) -> None:
    noise = random.Random(7)  # noqa: S311 - test noise, not a secret
    samples = {
        "silence": silence(1500, 22050),
        "noise": array("h", (round(noise.gauss(0, 400)) for _ in range(22050))),
        "empty": array("h"),
    }[kind]
    path = tmp_path / f"{kind}.wav"
    write_wav(path, 22050, samples)
    with pytest.raises(NoCodeHeard):
        listener.listen(path, language=Language.DA)


def test_listen_refuses_another_sample_rate(
    engine: Pyttsx3Engine, listener: Listener, tmp_path: Path
) -> None:
    sample_rate, samples = spoken(engine, tmp_path, "471902", Language.DA)
    with pytest.raises(SampleRateMismatch):
        listener.listen_samples(samples, sample_rate // 2, language=Language.DA)


@pytest.mark.parametrize("min_score", [0.0, 1.0, 1.5, -0.2])
def test_listener_rejects_a_threshold_out_of_range(engine: Pyttsx3Engine, min_score: float) -> None:
    with pytest.raises(ValueError, match="min_score"):
        Listener(engine, min_score=min_score)
