"""The pyttsx3 + espeak-ng engine (accessibility.speech), against the real espeak-ng."""

from __future__ import annotations

import subprocess
import sys
from array import array
from pathlib import Path
from typing import Any

import pytest

from accessibility.audio import duration, read_wav, segments
from accessibility.errors import (
    AudioDeviceUnavailable,
    AudioWriteFailed,
    SettingOutOfRange,
    SpeechFailed,
    SpeechUnavailable,
    UnknownLanguage,
)
from accessibility.speech import Language, Prosody, Pyttsx3Engine, clean_text

SENTENCE = {Language.DA: "Skriv din pinkode.", Language.EN: "Enter your PIN."}
NORMAL: dict[str, Any] = {"rate": 175, "volume": 1.0, "pitch": 50}


@pytest.fixture(scope="module")
def sentences(
    engine: Pyttsx3Engine, tmp_path_factory: pytest.TempPathFactory
) -> dict[Language, tuple[int, array[int]]]:
    folder = tmp_path_factory.mktemp("sentences")
    rendered: dict[Language, tuple[int, array[int]]] = {}
    for language, text in SENTENCE.items():
        engine.render(text, folder / f"{language}.wav", language=language, **NORMAL)
        rendered[language] = read_wav(folder / f"{language}.wav")
    return rendered


def test_render_writes_22050_hz_mono_speech(
    sentences: dict[Language, tuple[int, array[int]]],
) -> None:
    for rate, samples in sentences.values():
        assert rate == 22050
        assert duration(samples, rate) > 0.5
        assert segments(samples, rate)


def test_voice_differs_between_danish_and_english(engine: Pyttsx3Engine, tmp_path: Path) -> None:
    assert engine.voice_id(Language.DA) == "gmq/da"
    assert engine.voice_id(Language.EN) != engine.voice_id(Language.DA)
    # the same letters in each voice: different phonetics give different audio
    for language in Language:
        engine.render("fire", tmp_path / f"{language}.wav", language=language, **NORMAL)
    assert read_wav(tmp_path / "da.wav")[1] != read_wav(tmp_path / "en.wav")[1]


def test_rate_applies_on_every_render_when_changed_back_and_forth(
    engine: Pyttsx3Engine, tmp_path: Path
) -> None:
    # espeak-ng dropped parameters set through pyttsx3 after the first utterance; this is the
    # regression test for sending them with each utterance instead
    lengths = []
    for index, rate in enumerate((80, 300, 80, 300)):
        path = tmp_path / f"{index}.wav"
        engine.render("syv", path, language=Language.DA, rate=rate, volume=1.0, pitch=50)
        lengths.append(len(read_wav(path)[1]))
    slow, fast, slow_again, fast_again = lengths
    assert slow > 2 * fast
    assert slow_again == pytest.approx(slow, rel=0.05)
    assert fast_again == pytest.approx(fast, rel=0.05)


# A fresh process's first words: a new engine, several sentences (as the confirmation of a
# login before a card signs it), rendered and read back.
FIRST_UTTERANCE = """
import sys
from pathlib import Path
from accessibility.audio import duration, read_wav
from accessibility.speech import Pyttsx3Engine
path = Path(sys.argv[1])
Pyttsx3Engine().render(" ".join(["Enter your PIN."] * 10), path, language="en",
                       rate=175, volume=1.0, pitch=50)
rate, samples = read_wav(path)
print(round(duration(samples, rate)))
"""


def test_a_new_engines_first_utterance_is_rendered_whole_when_it_is_long(
    tmp_path: Path,
) -> None:
    # pyttsx3's first run loop ended before espeak-ng had spoken a long text: no file, most
    # times. Each try is a new process (pyttsx3 keeps one engine per process).
    for attempt in range(4):
        path = tmp_path / f"{attempt}.wav"
        done = subprocess.run(
            [sys.executable, "-c", FIRST_UTTERANCE, str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert int(done.stdout.strip().splitlines()[-1]) >= 5  # ten sentences, seconds long


def test_render_raises_speech_unavailable_with_install_hint_when_driver_missing(
    tmp_path: Path,
) -> None:
    broken = Pyttsx3Engine(driver="no_such_driver")
    with pytest.raises(SpeechUnavailable) as caught:
        broken.render("hej", tmp_path / "x.wav", language=Language.DA, **NORMAL)
    assert "apt-get install espeak-ng" in caught.value.hint
    assert "pip install pyttsx3" in caught.value.hint
    assert not list(tmp_path.iterdir())


def test_render_raises_speech_unavailable_with_install_hint_when_voice_missing(
    engine: Pyttsx3Engine, tmp_path: Path
) -> None:
    no_danish = Pyttsx3Engine(voices={Language.DA: "gmq/no-such-voice", Language.EN: "gmw/en"})
    with pytest.raises(SpeechUnavailable) as caught:
        no_danish.render("hej", tmp_path / "x.wav", language=Language.DA, **NORMAL)
    assert "apt-get install espeak-ng" in caught.value.hint
    assert not list(tmp_path.iterdir())
    # the shared espeak-ng is unharmed: English on that engine and Danish on the other still work
    no_danish.render("hello", tmp_path / "en.wav", language=Language.EN, **NORMAL)
    engine.render("hej", tmp_path / "da.wav", language=Language.DA, **NORMAL)


def test_render_raises_speech_failed_when_volume_zero_gives_silence(
    engine: Pyttsx3Engine, tmp_path: Path
) -> None:
    with pytest.raises(SpeechFailed):
        engine.render("hej", tmp_path / "x.wav", language="da", rate=175, volume=0.0, pitch=50)
    assert not list(tmp_path.iterdir())


def test_render_raises_speech_failed_when_text_has_nothing_to_say(
    engine: Pyttsx3Engine, tmp_path: Path
) -> None:
    with pytest.raises(SpeechFailed):
        engine.render(" . ", tmp_path / "x.wav", language=Language.EN, **NORMAL)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("rate", {"rate": 79, "volume": 1.0, "pitch": 50}),
        ("rate", {"rate": 401, "volume": 1.0, "pitch": 50}),
        ("volume", {"rate": 175, "volume": -0.1, "pitch": 50}),
        ("volume", {"rate": 175, "volume": 1.5, "pitch": 50}),
        ("volume", {"rate": 175, "volume": float("nan"), "pitch": 50}),
        ("pitch", {"rate": 175, "volume": 1.0, "pitch": -1}),
        ("pitch", {"rate": 175, "volume": 1.0, "pitch": 100}),
    ],
)
def test_render_raises_setting_out_of_range_when_setting_outside_bounds(
    engine: Pyttsx3Engine, tmp_path: Path, name: str, settings: dict[str, float]
) -> None:
    with pytest.raises(SettingOutOfRange) as caught:
        engine.render("hej", tmp_path / "x.wav", language=Language.DA, **settings)  # type: ignore[arg-type]
    assert caught.value.name == name
    assert caught.value.allowed == {"rate": (80, 400), "volume": (0.0, 1.0), "pitch": (0, 99)}[name]
    assert not list(tmp_path.iterdir())


def test_prosody_accepts_bounds_inclusive() -> None:
    Prosody(80, 0.0, 0)
    Prosody(400, 1.0, 99)


@pytest.mark.parametrize("language", ["fr", "DA", "", "dansk"])
def test_render_raises_unknown_language_when_language_not_supported(
    engine: Pyttsx3Engine, tmp_path: Path, language: str
) -> None:
    with pytest.raises(UnknownLanguage) as caught:
        engine.render("hej", tmp_path / "x.wav", language=language, **NORMAL)
    assert "da" in caught.value.hint
    assert "en" in caught.value.hint


def test_render_raises_audio_write_failed_when_folder_unwritable(
    engine: Pyttsx3Engine, tmp_path: Path
) -> None:
    (tmp_path / "not-a-folder").write_bytes(b"")
    target = tmp_path / "not-a-folder" / "x.wav"
    with pytest.raises(AudioWriteFailed):
        engine.render("hej", target, language=Language.DA, **NORMAL)
    assert [p.name for p in tmp_path.rglob("*")] == ["not-a-folder"]


def test_speak_raises_audio_device_unavailable_when_no_player(engine: Pyttsx3Engine) -> None:
    silent = Pyttsx3Engine(player=("no-such-audio-player",))
    with pytest.raises(AudioDeviceUnavailable) as caught:
        silent.speak("hej", language=Language.DA, **NORMAL)
    assert "headphones" in caught.value.hint


def test_clean_text_drops_control_characters_when_they_could_inject_commands() -> None:
    assert clean_text("hej\x01200S  med\ndig\t") == "hej 200S med dig"


def test_engines_with_distinct_voices_required_when_configured() -> None:
    with pytest.raises(ValueError, match="own voice"):
        Pyttsx3Engine(voices={Language.DA: "gmw/en", Language.EN: "gmw/en"})
