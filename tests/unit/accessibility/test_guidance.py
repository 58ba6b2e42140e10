"""Spoken guidance (accessibility.guidance): every prompt in both languages, as text and speech."""

from __future__ import annotations

from pathlib import Path

import pytest

from accessibility.audio import read_wav, segments
from accessibility.codes import WordCache, render_code
from accessibility.earcons import Earcon, earcon_samples
from accessibility.errors import SpeechUnavailable
from accessibility.guidance import EARCONS, MESSAGES, PARAMETERS, Guide, Prompt, message
from accessibility.speech import Language, Pyttsx3Engine

EXAMPLE_PARAMETERS: dict[Prompt, dict[str, object]] = {
    Prompt.WRONG_PIN: {"tries_left": 2},
    Prompt.CODE: {"code": "471902"},
    Prompt.CONFIRM_LOGIN: {
        "provider": "https://bank.example",
        "level": "high",
        "began": "14:02",
        "in_browser": True,
    },
}


# --- the catalogue ---------------------------------------------------------------------------


def test_catalogue_covers_every_prompt_in_every_language() -> None:
    for language in Language:
        assert set(MESSAGES[language]) == set(Prompt), language
    assert set(EXAMPLE_PARAMETERS) == set(PARAMETERS)


@pytest.mark.parametrize("prompt", list(Prompt))
def test_message_is_a_sentence_in_each_language(prompt: Prompt) -> None:
    params = EXAMPLE_PARAMETERS.get(prompt, {})
    danish = message(prompt, Language.DA, **params)
    english = message(prompt, Language.EN, **params)
    for text in (danish, english):
        assert text[0].isupper()
        assert text.endswith(".")
        assert "{" not in text
    assert danish != english


@pytest.mark.parametrize(
    ("prompt", "language", "text"),
    [
        (Prompt.INSERT_CARD, Language.DA, "Indsæt dit kort."),
        (Prompt.ENTER_PIN, Language.DA, "Skriv din pinkode."),
        (Prompt.INSERT_CARD, Language.EN, "Insert your card."),
        (Prompt.ENTER_PIN, Language.EN, "Enter your PIN."),
    ],
)
def test_message_reads_naturally_when_asking_for_card_and_pin(
    prompt: Prompt, language: Language, text: str
) -> None:
    assert message(prompt, language) == text


@pytest.mark.parametrize(
    ("language", "tries_left", "text"),
    [
        (Language.DA, 2, "Forkert pinkode. Du har 2 forsøg tilbage."),
        (Language.DA, 1, "Forkert pinkode. Du har 1 forsøg tilbage."),
        (Language.DA, 0, "Forkert pinkode. Du har ikke flere forsøg."),
        (Language.EN, 2, "Wrong PIN. You have 2 tries left."),
        (Language.EN, 1, "Wrong PIN. You have 1 try left."),
        (Language.EN, 0, "Wrong PIN. You have no tries left."),
    ],
)
def test_wrong_pin_uses_singular_or_plural_when_tries_left(
    language: Language, tries_left: int, text: str
) -> None:
    assert message(Prompt.WRONG_PIN, language, tries_left=tries_left) == text


def test_code_message_shows_digits_grouped() -> None:
    assert message(Prompt.CODE, "da", code="471902") == "Din kode er: 471 902."
    assert message(Prompt.CODE, "en", code="12345678") == "Your code is: 1234 5678."


@pytest.mark.parametrize(
    ("language", "in_browser", "text"),
    [
        (
            Language.DA,
            True,
            "Du logger på hos https://bank.example på sikringsniveau Betydelig. Login blev "
            "startet klokken 09:05 og er åbnet i en browser. Fortsæt kun, hvis du selv har "
            "startet dette login.",
        ),
        (
            Language.DA,
            False,
            "Du logger på hos https://bank.example på sikringsniveau Betydelig. Login blev "
            "startet klokken 09:05 og er ikke åbnet i nogen browser. Fortsæt kun, hvis du "
            "selv har startet dette login.",
        ),
        (
            Language.EN,
            True,
            "You are logging in to https://bank.example at level Substantial. The login "
            "began at 09:05 and was opened in a browser. Go on only if you began this login "
            "yourself.",
        ),
        (
            Language.EN,
            False,
            "You are logging in to https://bank.example at level Substantial. The login "
            "began at 09:05 and no browser has opened it. Go on only if you began this "
            "login yourself.",
        ),
    ],
)
def test_confirm_login_names_the_provider_the_level_and_how_it_was_opened(
    language: Language, in_browser: bool, text: str
) -> None:
    said = message(
        Prompt.CONFIRM_LOGIN,
        language,
        provider="https://bank.example",
        level="substantial",
        began="09:05",
        in_browser=in_browser,
    )
    assert said == text


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"level": "medium"}, "level"),
        ({"began": "9:05 pm"}, "began"),
        ({"began": "24:00"}, "began"),
        ({"in_browser": "yes"}, "in_browser"),
    ],
)
def test_confirm_login_raises_value_error_when_a_parameter_is_not_one(
    params: dict[str, object], field: str
) -> None:
    wanted = {**EXAMPLE_PARAMETERS[Prompt.CONFIRM_LOGIN], **params}
    with pytest.raises(ValueError, match=field):
        message(Prompt.CONFIRM_LOGIN, Language.EN, **wanted)


@pytest.mark.parametrize(
    ("prompt", "params"),
    [
        (Prompt.CONFIRM_LOGIN, {"provider": "x", "level": "high"}),
        (Prompt.WRONG_PIN, {}),
        (Prompt.CODE, {}),
        (Prompt.ENTER_PIN, {"tries_left": 3}),
        (Prompt.WRONG_PIN, {"tries_left": 2, "code": "123456"}),
    ],
)
def test_message_raises_type_error_when_parameters_wrong(
    prompt: Prompt, params: dict[str, object]
) -> None:
    with pytest.raises(TypeError):
        message(prompt, Language.EN, **params)


@pytest.mark.parametrize("tries_left", [-1, "2", 1.5, True])
def test_wrong_pin_raises_value_error_when_tries_left_not_a_count(tries_left: object) -> None:
    with pytest.raises(ValueError, match="tries_left"):
        message(Prompt.WRONG_PIN, Language.EN, tries_left=tries_left)


def test_every_error_prompt_has_failure_earcon_and_turns_have_your_turn() -> None:
    assert EARCONS[Prompt.ENTER_PIN] is EARCONS[Prompt.TOUCH_KEY] is Earcon.YOUR_TURN
    assert EARCONS[Prompt.CONFIRM_LOGIN] is Earcon.YOUR_TURN
    assert EARCONS[Prompt.DONE] is Earcon.SUCCESS
    for prompt in (Prompt.WRONG_PIN, Prompt.PIN_BLOCKED, Prompt.TIMEOUT, Prompt.ERROR):
        assert EARCONS[prompt] is Earcon.FAILURE
    assert Prompt.CODE not in EARCONS


# --- the guide -------------------------------------------------------------------------------


def test_guide_writes_numbered_wavs_and_sends_same_text(
    engine: Pyttsx3Engine, tmp_path: Path
) -> None:
    shown: list[str] = []
    guide = Guide(engine, tmp_path / "out", language=Language.DA, text_sink=shown.append)
    first = guide.say(Prompt.INSERT_CARD)
    second = guide.say(Prompt.WRONG_PIN, tries_left=1)
    assert [first.name, second.name] == ["0001-insert_card.wav", "0002-wrong_pin.wav"]
    assert shown == [
        message(Prompt.INSERT_CARD, Language.DA),
        message(Prompt.WRONG_PIN, Language.DA, tries_left=1),
    ]
    for path in (first, second):
        rate, samples = read_wav(path)
        assert segments(samples, rate)


def test_guide_continues_numbering_when_folder_has_prompts(
    engine: Pyttsx3Engine, tmp_path: Path
) -> None:
    Guide(engine, tmp_path, text_sink=lambda _: None).say(Prompt.DONE)
    again = Guide(engine, tmp_path, text_sink=lambda _: None).say(Prompt.DONE)
    assert again.name == "0002-done.wav"


@pytest.mark.parametrize(
    ("prompt", "earcon"),
    [
        (Prompt.ENTER_PIN, Earcon.YOUR_TURN),
        (Prompt.ERROR, Earcon.FAILURE),
        (Prompt.DONE, Earcon.SUCCESS),
    ],
)
def test_guide_plays_earcon_before_speech_when_prompt_has_one(
    engine: Pyttsx3Engine, tmp_path: Path, prompt: Prompt, earcon: Earcon
) -> None:
    guide = Guide(engine, tmp_path, language=Language.EN, text_sink=lambda _: None)
    rate, samples = read_wav(guide.say(prompt))
    expected = earcon_samples(earcon, sample_rate=rate, volume=0.5)
    assert samples[: len(expected)] == expected
    quiet = Guide(engine, tmp_path, language=Language.EN, text_sink=lambda _: None, earcons=False)
    assert len(read_wav(quiet.say(prompt))[1]) < len(samples)


@pytest.mark.parametrize("language", list(Language))
def test_guide_speaks_code_digit_by_digit_when_prompt_is_code(
    engine: Pyttsx3Engine, tmp_path: Path, language: Language
) -> None:
    shown: list[str] = []
    guide = Guide(engine, tmp_path / "guide", language=language, text_sink=shown.append)
    rate, samples = read_wav(guide.say(Prompt.CODE, code="471902"))
    assert shown == [message(Prompt.CODE, language, code="471902")]
    alone = render_code(engine, "471902", tmp_path / "alone.wav", language=language)
    _, digits = read_wav(alone.path)
    # the intro, then the digits exactly as render_code lays them out (espeak-ng's output
    # depends slightly on the utterance before, so compare what is audible, not samples)
    intro, tail = samples[: -len(digits)], samples[-len(digits) :]
    assert segments(intro, rate)
    found = segments(tail, rate)
    assert len(found) == 6
    for (start, end), (seen_start, seen_end) in zip(alone.digits, found, strict=True):
        assert abs(start - seen_start) <= rate // 20
        assert abs(end - seen_end) <= rate // 20


def test_guide_offers_text_when_speech_unavailable(tmp_path: Path) -> None:
    shown: list[str] = []
    mute = Pyttsx3Engine(voices={Language.DA: "gmq/no-such-voice", Language.EN: "gmw/en"})
    guide = Guide(mute, tmp_path, language=Language.DA, text_sink=shown.append)
    with pytest.raises(SpeechUnavailable):
        guide.say(Prompt.ENTER_PIN)
    assert shown == ["Skriv din pinkode."]
    assert not list(tmp_path.iterdir())


def test_guide_repeat_and_adjust_rate_when_listener_asks(
    engine: Pyttsx3Engine, tmp_path: Path
) -> None:
    shown: list[str] = []
    guide = Guide(engine, tmp_path, language=Language.EN, text_sink=shown.append, cache=WordCache())
    normal = guide.say(Prompt.TOUCH_KEY)
    guide.adjust(rate=90)
    slower = guide.repeat()
    assert slower.name == "0002-touch_key.wav"
    assert shown[0] == shown[1]
    assert len(read_wav(slower)[1]) > 1.5 * len(read_wav(normal)[1])
