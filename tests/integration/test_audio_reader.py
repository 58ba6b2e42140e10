"""The simulated audio code reader and spoken guidance, with real espeak-ng: what is said is
checked in the audio itself, not only that a file exists."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accessibility.audio import read_wav, segments
from accessibility.codes import code_text, render_code
from accessibility.errors import AudioWriteFailed
from accessibility.speech import Language, Pyttsx3Engine
from devices.protocol import otp, pskc
from firmware_sim.tokens import audio_reader, otp_token
from firmware_sim.tokens.audio_reader import RATES, AudioReader, Key, Message

from .conftest import AttachedCard, CliRunner

pytestmark = pytest.mark.integration

RFC6238_SEED = b"12345678901234567890"


@pytest.fixture(scope="module")
def engine() -> Pyttsx3Engine:
    if shutil.which("espeak-ng") is None:
        from .conftest import missing_component

        missing_component("espeak-ng is not installed (apt-get install espeak-ng)")
    return Pyttsx3Engine()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_reader(
    tmp_path: Path, seed: bytes | None = None, language: Language = Language.DA
) -> Path:
    path = tmp_path / "reader.json"
    token = otp_token.new_state(otp_token.Model.AUDIO)
    if seed is not None:
        token.secret = seed
    audio_reader.new_reader(path, token, language)
    return path


@pytest.fixture
def reader(tmp_path: Path, engine: Pyttsx3Engine) -> Callable[..., AudioReader]:
    def _reader(path: Path, clock: Clock) -> AudioReader:
        return AudioReader(path, engine, tmp_path / "audio", clock=clock)

    return _reader


def test_red_key_speaks_the_rfc6238_code_for_the_time(
    tmp_path: Path, engine: Pyttsx3Engine, reader: Callable[..., AudioReader]
) -> None:
    path = make_reader(tmp_path, RFC6238_SEED)
    clock = Clock(59.0)
    said = reader(path, clock).press({Key.RED})
    expected = otp.totp(RFC6238_SEED, 59.0)  # RFC 6238 appendix B: 94287082 -> 6 digits
    assert expected == "287082"
    assert said.message is Message.CODE
    assert said.text == code_text(expected, Language.DA) == "to otte syv ... nul otte to"
    rate, samples = read_wav(said.path)
    assert len(segments(samples, rate)) == 6
    # The same digits rendered on their own, at the reader's settings, last as long.
    reference = render_code(
        engine,
        expected,
        tmp_path / "reference.wav",
        language=Language.DA,
        rate=audio_reader.DEFAULT_RATE,
        volume=audio_reader.DEFAULT_VOLUME,
    )
    assert abs(said.duration - reference.duration) < 0.05 * reference.duration


def test_code_has_a_longer_pause_between_the_groups(
    tmp_path: Path, reader: Callable[..., AudioReader]
) -> None:
    said = reader(make_reader(tmp_path), Clock(1_700_000_000.0)).press({Key.RED})
    rate, samples = read_wav(said.path)
    spans = segments(samples, rate)
    gaps = [spans[i + 1][0] - spans[i][1] for i in range(len(spans) - 1)]
    assert len(gaps) == 5
    assert gaps[2] > 1.5 * max(gaps[:2] + gaps[3:])


def test_faster_setting_persists_and_makes_the_code_shorter(
    tmp_path: Path, reader: Callable[..., AudioReader]
) -> None:
    path = make_reader(tmp_path)
    clock = Clock(1_699_999_980.0)  # the start of a 30 s window: all presses share one code
    before = reader(path, clock).press({Key.RED})
    for _ in range(3):
        clock.now += 1
        assert reader(path, clock).press({Key.RED, Key.RIGHT_TOP}).message is Message.FASTER
    saved = json.loads(path.read_text())["settings"]
    assert saved["rate"] == RATES[RATES.index(audio_reader.DEFAULT_RATE) + 3]
    clock.now += 1
    after = reader(path, clock).press({Key.RED})
    assert after.text == before.text
    assert after.duration < 0.9 * before.duration


def test_repeat_says_the_last_message_again(
    tmp_path: Path, reader: Callable[..., AudioReader]
) -> None:
    path = make_reader(tmp_path)
    clock = Clock(1_699_999_980.0)
    code = reader(path, clock).press({Key.RED})
    clock.now += 45  # the code on the reader's clock has changed since
    again = reader(path, clock).press({Key.RED, Key.LEFT_TOP, Key.RIGHT_TOP})
    assert again.message is Message.CODE
    assert again.text == code.text
    reader(path, clock).press({Key.RED, Key.LEFT_TOP})
    assert reader(path, clock).press({Key.RED, Key.LEFT_TOP, Key.RIGHT_TOP}).text == "Langsommere."


def test_language_switch_speaks_english_with_another_voice(
    tmp_path: Path, engine: Pyttsx3Engine, reader: Callable[..., AudioReader]
) -> None:
    path = make_reader(tmp_path)
    clock = Clock(1_700_000_000.0)
    danish = reader(path, clock).press({Key.RED})
    switched = reader(path, clock).press({Key.RED, Key.LEFT_BOTTOM, Key.RIGHT_BOTTOM})
    assert switched.text == "English."
    english = reader(path, clock).press({Key.RED})
    code = otp.totp(
        otp_token.OtpTokenState.from_json(json.loads(path.read_text())).secret, clock.now
    )
    assert danish.text == code_text(code, Language.DA)
    assert english.text == code_text(code, Language.EN)
    assert engine.voice_id(Language.DA) != engine.voice_id(Language.EN)


def test_volume_has_limits_that_the_reader_says(
    tmp_path: Path, reader: Callable[..., AudioReader]
) -> None:
    path = make_reader(tmp_path)
    clock = Clock(1_700_000_000.0)
    said = [reader(path, clock).press({Key.RED, Key.RIGHT_BOTTOM}) for _ in range(3)]
    assert [s.text for s in said] == ["Højere.", "Grænsen er nået.", "Grænsen er nået."]
    assert json.loads(path.read_text())["settings"]["volume"] == 1.0


def test_key_pressed_while_speaking_interrupts_and_is_recorded(
    tmp_path: Path, reader: Callable[..., AudioReader]
) -> None:
    path = make_reader(tmp_path)
    clock = Clock(1_700_000_000.0)
    first = reader(path, clock).press({Key.RED})
    clock.now += first.duration / 2  # halfway through the code
    second = reader(path, clock).press({Key.RED, Key.RIGHT_TOP})
    assert second.interrupted_previous
    clock.now += 60
    third = reader(path, clock).press({Key.RED})
    assert not third.interrupted_previous
    index = [
        json.loads(line)
        for line in (tmp_path / "audio" / "utterances.jsonl").read_text().splitlines()
    ]
    assert [entry["interrupts_previous"] for entry in index] == [False, True, False]
    assert all("text" not in entry for entry in index)  # the reader never writes the words


def test_unknown_combination_plays_failure_tone_and_changes_nothing(
    tmp_path: Path, reader: Callable[..., AudioReader]
) -> None:
    path = make_reader(tmp_path)
    before = path.read_bytes()
    with pytest.raises(audio_reader.UnknownCombination):
        reader(path, Clock(1.0)).press({Key.LEFT_TOP, Key.RIGHT_BOTTOM})
    assert path.read_bytes() == before
    assert len(list((tmp_path / "audio").glob("*.wav"))) == 1


def test_unwritable_audio_folder_fails_clearly_and_keeps_settings(
    tmp_path: Path, engine: Pyttsx3Engine
) -> None:
    path = make_reader(tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the audio folder should be")
    before = path.read_bytes()
    reader = AudioReader(path, engine, blocker, clock=Clock(1.0))
    with pytest.raises(AudioWriteFailed):
        reader.press({Key.RED, Key.RIGHT_TOP})
    assert path.read_bytes() == before


keys = st.frozensets(st.sampled_from(list(Key)), min_size=1, max_size=3)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(presses=st.lists(keys, min_size=1, max_size=6))
def test_any_key_presses_leave_a_loadable_reader(
    tmp_path_factory: pytest.TempPathFactory, engine: Pyttsx3Engine, presses: list[frozenset[Key]]
) -> None:
    folder = tmp_path_factory.mktemp("reader")
    path = make_reader(folder)
    clock = Clock(1_700_000_000.0)
    for pressed in presses:
        clock.now += 1
        try:
            AudioReader(path, engine, folder / "audio", clock=clock).press(pressed)
        except audio_reader.UnknownCombination:
            pass
    settings_now = json.loads(path.read_text())["settings"]
    audio_reader.ReaderSettings.from_json(settings_now)  # in range, whole
    otp_token.OtpTokenState.from_json(json.loads(path.read_text()))


def test_cli_new_audio_reader_prints_pskc_and_press_prints_only_a_wav(
    cli: CliRunner, tmp_path: Path, engine: Pyttsx3Engine
) -> None:
    state = tmp_path / "reader.json"
    created = cli("sim", "new", "audio-reader", "--state", str(state), "--language", "en")
    assert created.returncode == 0, created.stderr
    key = pskc.parse_pskc(created.stdout.encode())[0]
    assert key.algorithm == pskc.ALG_TOTP
    pressed = cli(
        "sim",
        "press",
        "red",
        "--state",
        str(state),
        "--audio-dir",
        str(tmp_path / "out"),
        "--at",
        "59",
    )
    assert pressed.returncode == 0, pressed.stderr
    wav = Path(pressed.stdout.strip())
    assert wav.exists()
    code = otp.totp(key.secret, 59.0)
    for word in code_text(code, Language.EN).split():
        assert word not in pressed.stdout.replace(str(wav), "")
    assert code not in pressed.stdout
    rate, samples = read_wav(wav)
    assert len(segments(samples, rate)) == 6


def test_cli_unknown_language_is_refused(cli: CliRunner, tmp_path: Path) -> None:
    result = cli(
        "sim", "new", "audio-reader", "--state", str(tmp_path / "r.json"), "--language", "tlh"
    )
    assert result.returncode != 0
    assert "tlh" in result.stderr
    assert not (tmp_path / "r.json").exists()


def test_speak_says_wrong_pin_and_tries_left(
    attach: Callable[..., AttachedCard], tmp_path: Path, cli: CliRunner, engine: Pyttsx3Engine
) -> None:
    from firmware_sim.tokens import piv

    state = tmp_path / "piv.json"
    piv.new_card_state(state, provision=True)
    card = attach(state)
    audio = tmp_path / "speech"
    result = cli(
        "devices",
        "--speak",
        "--audio-dir",
        str(audio),
        "piv",
        "verify-pin",
        "--reader",
        card.reader.name,
        "--pin-stdin",
        stdin="000000\n",
    )
    assert result.returncode == 2
    assert "Forkert pinkode. Du har 2 forsøg tilbage." in result.stderr
    files = sorted(p.name for p in audio.glob("*.wav"))
    assert files == ["0001-enter_pin.wav", "0002-wrong_pin.wav"]
    rate, samples = read_wav(audio / files[1])
    assert segments(samples, rate)  # audible, not silence
