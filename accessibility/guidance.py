"""Spoken guidance: every device prompt as a Danish and an English sentence, offered as text and
as speech (numbered WAV files), with an earcon that says what kind of prompt it is."""

from __future__ import annotations

import re
import tempfile
from array import array
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path

from accessibility.audio import concatenate, read_wav, silence, trim, write_wav
from accessibility.codes import WordCache, code_words, render_code
from accessibility.earcons import Earcon, earcon_samples
from accessibility.errors import AudioWriteFailed, SpeechFailed
from accessibility.speech import Language, Prosody, SpeechEngine

EARCON_GAP_MS = 150.0
EARCON_LEVEL = 0.5  # earcons at half the speech volume: a cue, not a fright
CODE_INTRO_GAP_MS = 400.0


class Prompt(StrEnum):
    INSERT_CARD = "insert_card"
    ENTER_PIN = "enter_pin"
    WRONG_PIN = "wrong_pin"  # takes tries_left
    PIN_BLOCKED = "pin_blocked"
    CARD_BLOCKED = "card_blocked"
    TOUCH_KEY = "touch_key"
    KEY_REMOVED = "key_removed"
    CARD_REMOVED = "card_removed"
    READER_NOT_FOUND = "reader_not_found"
    TOKEN_NOT_FOUND = "token_not_found"  # noqa: S105 - a prompt name, not a secret
    TIMEOUT = "timeout"
    DONE = "done"
    CODE = "code"  # takes code
    ERROR = "error"
    CONFIRM_LOGIN = "confirm_login"  # takes provider, level, began, in_browser


PARAMETERS: Mapping[Prompt, frozenset[str]] = {
    Prompt.WRONG_PIN: frozenset({"tries_left"}),
    Prompt.CODE: frozenset({"code"}),
    Prompt.CONFIRM_LOGIN: frozenset({"provider", "level", "began", "in_browser"}),
}

MESSAGES: Mapping[Language, Mapping[Prompt, str]] = {
    Language.DA: {
        Prompt.INSERT_CARD: "Indsæt dit kort.",
        Prompt.ENTER_PIN: "Skriv din pinkode.",
        Prompt.WRONG_PIN: "Forkert pinkode. {tries}",
        Prompt.PIN_BLOCKED: "Din pinkode er spærret. Den skal låses op, før du kan fortsætte.",
        Prompt.CARD_BLOCKED: "Dit kort er spærret og kan ikke bruges.",
        Prompt.TOUCH_KEY: "Rør ved din sikkerhedsnøgle.",
        Prompt.KEY_REMOVED: "Sikkerhedsnøglen blev taget ud. Sæt den i igen.",
        Prompt.CARD_REMOVED: "Kortet blev taget ud. Indsæt det igen.",
        Prompt.READER_NOT_FOUND: "Der er ingen kortlæser. Tilslut din kortlæser.",
        Prompt.TOKEN_NOT_FOUND: "Din sikkerhedsnøgle blev ikke fundet. Sæt den i, og prøv igen.",
        Prompt.TIMEOUT: "Tiden løb ud. Prøv igen.",
        Prompt.DONE: "Færdig. Det lykkedes.",
        Prompt.CODE: "Din kode er: {code}.",
        Prompt.ERROR: "Der opstod en fejl. Prøv igen.",
        Prompt.CONFIRM_LOGIN: "Du logger på hos {provider} på sikringsniveau {level}. "
        "{opened} Fortsæt kun, hvis du selv har startet dette login.",
    },
    Language.EN: {
        Prompt.INSERT_CARD: "Insert your card.",
        Prompt.ENTER_PIN: "Enter your PIN.",
        Prompt.WRONG_PIN: "Wrong PIN. {tries}",
        Prompt.PIN_BLOCKED: "Your PIN is blocked. It must be unblocked before you can continue.",
        Prompt.CARD_BLOCKED: "Your card is blocked and cannot be used.",
        Prompt.TOUCH_KEY: "Touch your security key.",
        Prompt.KEY_REMOVED: "The security key was removed. Plug it in again.",
        Prompt.CARD_REMOVED: "The card was removed. Insert it again.",
        Prompt.READER_NOT_FOUND: "No card reader was found. Connect your card reader.",
        Prompt.TOKEN_NOT_FOUND: "Your security key was not found. Plug it in and try again.",
        Prompt.TIMEOUT: "Time ran out. Please try again.",
        Prompt.DONE: "Done. It worked.",
        Prompt.CODE: "Your code is: {code}.",
        Prompt.ERROR: "Something went wrong. Please try again.",
        Prompt.CONFIRM_LOGIN: "You are logging in to {provider} at level {level}. "
        "{opened} Go on only if you began this login yourself.",
    },
}

# The login's levels by their names, as the pages write them (docs/glossary.md): a name, so
# "sikringsniveau Betydelig", not an adjective.
LEVELS: Mapping[Language, Mapping[str, str]] = {
    Language.DA: {"low": "Lav", "substantial": "Betydelig", "high": "Høj"},
    Language.EN: {"low": "Low", "substantial": "Substantial", "high": "High"},
}
# How a login was opened: in a browser the program is paired with, or by a program alone.
OPENED: Mapping[Language, Mapping[bool, str]] = {
    Language.DA: {
        True: "Login blev startet klokken {began} og er åbnet i en browser.",
        False: "Login blev startet klokken {began} og er ikke åbnet i nogen browser.",
    },
    Language.EN: {
        True: "The login began at {began} and was opened in a browser.",
        False: "The login began at {began} and no browser has opened it.",
    },
}
_CLOCK_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")

CODE_INTRO: Mapping[Language, str] = {Language.DA: "Din kode er", Language.EN: "Your code is"}

# What the listener hears before the words: is it their turn, did it fail, did it work.
EARCONS: Mapping[Prompt, Earcon] = {
    Prompt.INSERT_CARD: Earcon.YOUR_TURN,
    Prompt.ENTER_PIN: Earcon.YOUR_TURN,
    Prompt.TOUCH_KEY: Earcon.YOUR_TURN,
    Prompt.WRONG_PIN: Earcon.FAILURE,
    Prompt.PIN_BLOCKED: Earcon.FAILURE,
    Prompt.CARD_BLOCKED: Earcon.FAILURE,
    Prompt.KEY_REMOVED: Earcon.FAILURE,
    Prompt.CARD_REMOVED: Earcon.FAILURE,
    Prompt.READER_NOT_FOUND: Earcon.FAILURE,
    Prompt.TOKEN_NOT_FOUND: Earcon.FAILURE,
    Prompt.TIMEOUT: Earcon.FAILURE,
    Prompt.ERROR: Earcon.FAILURE,
    Prompt.DONE: Earcon.SUCCESS,
    Prompt.CONFIRM_LOGIN: Earcon.YOUR_TURN,
}


def tries_left_text(tries_left: int, language: Language) -> str:
    """ "Du har 2 forsøg tilbage." / "You have 1 try left." (Danish "forsøg" has no plural -s)."""
    if isinstance(tries_left, bool) or not isinstance(tries_left, int) or tries_left < 0:
        raise ValueError(f"tries_left must be a whole number from 0, not {tries_left!r}")
    if language is Language.DA:
        if tries_left == 0:
            return "Du har ikke flere forsøg."
        return f"Du har {tries_left} forsøg tilbage."
    if tries_left == 0:
        return "You have no tries left."
    return f"You have {tries_left} {'try' if tries_left == 1 else 'tries'} left."


def _check_parameters(prompt: Prompt, params: Mapping[str, object]) -> None:
    wanted = PARAMETERS.get(prompt, frozenset())
    if missing := wanted - params.keys():
        raise TypeError(f"prompt {prompt.value} needs {', '.join(sorted(missing))}")
    if unexpected := params.keys() - wanted:
        raise TypeError(f"prompt {prompt.value} takes no {', '.join(sorted(unexpected))}")


def message(prompt: Prompt | str, language: Language | str, **params: object) -> str:
    """The sentence for ``prompt`` in ``language``, e.g. ``message(Prompt.WRONG_PIN, "en",
    tries_left=1)`` -> "Wrong PIN. You have 1 try left."."""
    prompt = Prompt(prompt)
    language = Language.parse(language)
    _check_parameters(prompt, params)
    template = MESSAGES[language][prompt]
    if prompt is Prompt.WRONG_PIN:
        tries_left = params["tries_left"]
        if not isinstance(tries_left, int):
            raise ValueError(f"tries_left must be a whole number, not {tries_left!r}")
        return template.format(tries=tries_left_text(tries_left, language))
    if prompt is Prompt.CODE:
        code = str(params["code"])
        groups = code_words(code, language)  # validates the code
        sizes = [len(group) for group in groups]
        shown = " ".join(code[sum(sizes[:i]) : sum(sizes[: i + 1])] for i in range(len(sizes)))
        return template.format(code=shown)
    if prompt is Prompt.CONFIRM_LOGIN:
        return _confirm_login(template, language, params)
    return template


def _confirm_login(template: str, language: Language, params: Mapping[str, object]) -> str:
    level, began, in_browser = params["level"], params["began"], params["in_browser"]
    if level not in LEVELS[language]:
        raise ValueError(f"level must be low, substantial or high, not {level!r}")
    if not isinstance(began, str) or not _CLOCK_TIME.fullmatch(began):
        raise ValueError(f"began must be a time of day as HH:MM, not {began!r}")
    if not isinstance(in_browser, bool):
        raise ValueError(f"in_browser must be True or False, not {in_browser!r}")
    opened = OPENED[language][in_browser].format(began=began)
    return template.format(
        provider=str(params["provider"]), level=LEVELS[language][str(level)], opened=opened
    )


_NUMBERED = re.compile(r"^(\d{4,})-")


class Guide:
    """Says prompts in one language: the text goes to ``text_sink`` first (so a screen or
    braille display has it at once, even if speech fails), then the speech is written to the
    next numbered WAV in ``folder`` (``0001-enter_pin.wav``, ...), earcon first."""

    def __init__(
        self,
        engine: SpeechEngine,
        folder: Path,
        *,
        language: Language | str = Language.DA,
        rate: int = 175,
        volume: float = 1.0,
        pitch: int = 50,
        text_sink: Callable[[str], object] = print,
        earcons: bool = True,
        cache: WordCache | None = None,
    ) -> None:
        self.engine = engine
        self.folder = Path(folder)
        self.language = Language.parse(language)
        self.prosody = Prosody(rate, volume, pitch)
        self.text_sink = text_sink
        self.earcons = earcons
        self.cache = cache if cache is not None else WordCache()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AudioWriteFailed(self.folder, exc.strerror or str(exc)) from exc
        self._count = max(
            (int(m.group(1)) for p in self.folder.iterdir() if (m := _NUMBERED.match(p.name))),
            default=0,
        )
        self._last: tuple[Prompt, dict[str, object]] | None = None

    def adjust(
        self, *, rate: int | None = None, volume: float | None = None, pitch: int | None = None
    ) -> None:
        """Speak slower or faster, softer or louder, lower or higher from the next prompt on."""
        self.prosody = Prosody(
            self.prosody.rate if rate is None else rate,
            self.prosody.volume if volume is None else volume,
            self.prosody.pitch if pitch is None else pitch,
        )

    def say(self, prompt: Prompt | str, **params: object) -> Path:
        """Offer ``prompt`` as text and as speech; returns the WAV file."""
        prompt = Prompt(prompt)
        text = message(prompt, self.language, **params)
        self.text_sink(text)
        self._last = (prompt, dict(params))
        target = self.folder / f"{self._count + 1:04d}-{prompt.value}.wav"
        with tempfile.TemporaryDirectory(prefix="guide-") as scratch:
            rate, speech = self._speech(prompt, text, params, Path(scratch))
        parts = [speech]
        earcon = EARCONS.get(prompt) if self.earcons else None
        if earcon is not None:
            volume = self.prosody.volume * EARCON_LEVEL
            parts[:0] = [
                earcon_samples(earcon, sample_rate=rate, volume=volume),
                silence(EARCON_GAP_MS, rate),
            ]
        write_wav(target, rate, concatenate(parts))
        self._count += 1  # only now: a failed prompt leaves no gap in the numbering
        return target

    def repeat(self) -> Path:
        """Say the last prompt again (to a new numbered file)."""
        if self._last is None:
            raise LookupError("nothing has been said yet")
        prompt, params = self._last
        return self.say(prompt, **params)

    def _speech(
        self, prompt: Prompt, text: str, params: Mapping[str, object], scratch: Path
    ) -> tuple[int, array[int]]:
        language, prosody = self.language, self.prosody
        if prompt is not Prompt.CODE:
            spoken = scratch / "speech.wav"
            self.engine.render(
                text,
                spoken,
                language=language,
                rate=prosody.rate,
                volume=prosody.volume,
                pitch=prosody.pitch,
            )
            return read_wav(spoken)
        # the intro as a sentence, then the digits one by one (never "four hundred and ...")
        intro = scratch / "intro.wav"
        self.engine.render(
            CODE_INTRO[language],
            intro,
            language=language,
            rate=prosody.rate,
            volume=prosody.volume,
            pitch=prosody.pitch,
        )
        rendered = render_code(
            self.engine,
            str(params["code"]),
            scratch / "code.wav",
            language=language,
            rate=prosody.rate,
            volume=prosody.volume,
            pitch=prosody.pitch,
            cache=self.cache,
        )
        rate, intro_samples = read_wav(intro)
        code_rate, code_samples = read_wav(rendered.path)
        if code_rate != rate:
            raise SpeechFailed(f"the engine changed sample rate ({rate} -> {code_rate})")
        return rate, concatenate(
            [trim(intro_samples, rate), silence(CODE_INTRO_GAP_MS, rate), code_samples]
        )
