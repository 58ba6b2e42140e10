"""The audio code reader ("kodeoplæser"): a TOTP token with a headphone socket and no display.

Keys: ``red`` (the big key with a raised dot) and four small keys, ``left-top``,
``left-bottom``, ``right-top``, ``right-bottom``. Alone, ``red`` speaks the current code.
Held with other keys it changes the reader (left keys turn a setting down, right keys up):

    red + left-top / right-top          slower / faster
    red + left-bottom / right-bottom    quieter / louder
    red + left-top + right-top          repeat the last message
    red + left-bottom + right-bottom    switch language (Danish <-> English)

Everything it says goes to a new numbered WAV file in the audio folder, listed in
``utterances.jsonl`` (file, what kind of message, when; never the words). Settings persist
in the state file, written atomically. A key pressed while the reader speaks cuts the
message off (the index records where) and the new message starts at once.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from accessibility.audio import concatenate, read_wav, silence, write_wav
from accessibility.codes import WordCache, render_code
from accessibility.earcons import Earcon, earcon_samples
from accessibility.errors import AudioWriteFailed
from accessibility.speech import Language, SpeechEngine
from firmware_sim import state as state_store
from firmware_sim.tokens.otp_token import Model, OtpGenerator, OtpTokenState

KIND = Model.AUDIO.value
RATES = tuple(range(100, 301, 25))  # words per minute
VOLUMES = (0.2, 0.4, 0.6, 0.8, 1.0)
DEFAULT_RATE = 150  # a little slower than speech engines' default: codes are not prose
DEFAULT_VOLUME = 0.8
INDEX = "utterances.jsonl"
_NUMBERED = re.compile(r"^(\d{4})-")


class Key(StrEnum):
    RED = "red"
    LEFT_TOP = "left-top"
    LEFT_BOTTOM = "left-bottom"
    RIGHT_TOP = "right-top"
    RIGHT_BOTTOM = "right-bottom"


class Message(StrEnum):
    CODE = "code"
    SLOWER = "slower"
    FASTER = "faster"
    QUIETER = "quieter"
    LOUDER = "louder"
    LANGUAGE = "language"
    LIMIT = "limit"


WORDS: dict[Language, dict[Message, str]] = {
    Language.DA: {
        Message.SLOWER: "Langsommere.",
        Message.FASTER: "Hurtigere.",
        Message.QUIETER: "Lavere.",
        Message.LOUDER: "Højere.",
        Message.LANGUAGE: "Dansk.",
        Message.LIMIT: "Grænsen er nået.",
    },
    Language.EN: {
        Message.SLOWER: "Slower.",
        Message.FASTER: "Faster.",
        Message.QUIETER: "Quieter.",
        Message.LOUDER: "Louder.",
        Message.LANGUAGE: "English.",
        Message.LIMIT: "That is the limit.",
    },
}

_COMBINATIONS: dict[frozenset[Key], Message] = {
    frozenset({Key.RED}): Message.CODE,
    frozenset({Key.RED, Key.LEFT_TOP}): Message.SLOWER,
    frozenset({Key.RED, Key.RIGHT_TOP}): Message.FASTER,
    frozenset({Key.RED, Key.LEFT_BOTTOM}): Message.QUIETER,
    frozenset({Key.RED, Key.RIGHT_BOTTOM}): Message.LOUDER,
    frozenset({Key.RED, Key.LEFT_BOTTOM, Key.RIGHT_BOTTOM}): Message.LANGUAGE,
}
REPEAT = frozenset({Key.RED, Key.LEFT_TOP, Key.RIGHT_TOP})


class UnknownCombination(ValueError):
    """Keys that do nothing together; the reader plays the failure tone."""


@dataclass
class ReaderSettings:
    rate: int = DEFAULT_RATE
    volume: float = DEFAULT_VOLUME
    language: Language = Language.DA
    last: str | None = None  # the last message kind, for repeat
    last_code: str | None = None
    speaking_until: float = 0.0

    def check(self) -> None:
        if self.rate not in RATES or self.volume not in VOLUMES:
            raise state_store.StateError(
                f"reader settings out of range: rate {self.rate}, volume {self.volume}"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "volume": self.volume,
            "language": self.language.value,
            "last": self.last,
            "last_code": self.last_code,
            "speaking_until": self.speaking_until,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReaderSettings:
        try:
            settings = cls(
                rate=int(data["rate"]),
                volume=float(data["volume"]),
                language=Language.parse(data["language"]),
                last=data.get("last"),
                last_code=data.get("last_code"),
                speaking_until=float(data.get("speaking_until", 0.0)),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise state_store.StateError(f"reader settings are damaged: {exc!r}") from exc
        settings.check()
        return settings


@dataclass(frozen=True)
class Utterance:
    """What one key press made the reader say. ``text`` is for test rigs only: the reader
    itself has no way to show it."""

    message: Message
    path: Path
    duration: float
    text: str
    interrupted_previous: bool


def save(path: Path, token: OtpTokenState, settings: ReaderSettings) -> None:
    state_store.save(path, KIND, {**token.to_json(), "settings": settings.to_json()})


def new_reader(path: Path, token: OtpTokenState, language: Language = Language.DA) -> None:
    if path.exists():
        raise state_store.StateError(f"{path} exists already; remove it to make a new reader")
    save(path, token, ReaderSettings(language=language))


class AudioReader:
    def __init__(
        self,
        path: Path,
        engine: SpeechEngine,
        audio_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        cache: WordCache | None = None,
    ) -> None:
        document = state_store.load(path, KIND)
        self.path = path
        self.token = OtpTokenState.from_json(document)
        self.settings = ReaderSettings.from_json(document.get("settings", {}))
        self.engine = engine
        self.audio_dir = Path(audio_dir)
        self.clock = clock
        self.cache = cache if cache is not None else WordCache()
        self.generator = OtpGenerator(self.token, self._persist_token, clock=clock)

    def _persist_token(self, token: OtpTokenState) -> None:
        save(self.path, token, self.settings)

    def _persist(self) -> None:
        save(self.path, self.token, self.settings)

    def press(self, keys: set[Key] | frozenset[Key]) -> Utterance:
        """Press ``keys`` together. Raises ``UnknownCombination`` (after playing the failure
        tone) for keys that do nothing together."""
        pressed = frozenset(keys)
        now = self.clock()
        interrupted = now < self.settings.speaking_until
        if pressed == REPEAT:
            message = Message(self.settings.last) if self.settings.last else Message.CODE
            return self._say(message, now, interrupted, repeat=True)
        message_kind = _COMBINATIONS.get(pressed)
        if message_kind is None:
            self._tone_only(Earcon.FAILURE, now, interrupted)
            raise UnknownCombination(
                "these keys do nothing together: " + " + ".join(sorted(k.value for k in pressed))
            )
        return self._say(message_kind, now, interrupted, repeat=False)

    def _adjust(self, message: Message) -> bool:
        """Apply a setting change; False when the setting is at its limit already."""
        s = self.settings
        if message in (Message.SLOWER, Message.FASTER):
            index = RATES.index(s.rate) + (1 if message is Message.FASTER else -1)
            if not 0 <= index < len(RATES):
                return False
            s.rate = RATES[index]
        elif message in (Message.QUIETER, Message.LOUDER):
            index = VOLUMES.index(s.volume) + (1 if message is Message.LOUDER else -1)
            if not 0 <= index < len(VOLUMES):
                return False
            s.volume = VOLUMES[index]
        elif message is Message.LANGUAGE:
            s.language = Language.EN if s.language is Language.DA else Language.DA
        return True

    def _next_path(self, message: Message) -> Path:
        try:
            self.audio_dir.mkdir(parents=True, exist_ok=True)
            numbers = [
                int(m.group(1)) for p in self.audio_dir.iterdir() if (m := _NUMBERED.match(p.name))
            ]
        except OSError as exc:
            raise AudioWriteFailed(self.audio_dir, exc.strerror or str(exc)) from exc
        return self.audio_dir / f"{max(numbers, default=0) + 1:04d}-{message.value}.wav"

    def _say(self, message: Message, now: float, interrupted: bool, *, repeat: bool) -> Utterance:
        s = self.settings
        target = self._next_path(message)
        at_limit = False
        if message is Message.CODE:
            code = s.last_code if repeat and s.last_code else self.generator.totp_now()
            rendered = render_code(
                self.engine,
                code,
                target,
                language=s.language,
                rate=s.rate,
                volume=s.volume,
                cache=self.cache,
            )
            s.last_code = code
            text, duration = rendered.text, rendered.duration
        else:
            if not repeat:
                at_limit = not self._adjust(message)
            text = WORDS[s.language][Message.LIMIT if at_limit else message]
            self.engine.render(
                text, target, language=s.language, rate=s.rate, volume=s.volume, pitch=50
            )
            if at_limit:
                rate, speech = read_wav(target)
                tone = earcon_samples(Earcon.FAILURE, sample_rate=rate, volume=s.volume / 2)
                write_wav(target, rate, concatenate([tone, silence(120, rate), speech]))
            rate, samples = read_wav(target)
            duration = len(samples) / rate
        s.last = message.value
        s.speaking_until = now + duration
        self._persist()
        self._index(target, message, now, duration, interrupted)
        return Utterance(message, target, duration, text, interrupted)

    def _tone_only(self, kind: Earcon, now: float, interrupted: bool) -> None:
        target = self._next_path(Message.LIMIT)
        samples = earcon_samples(kind, sample_rate=22050, volume=self.settings.volume / 2)
        write_wav(target, 22050, samples)
        self._index(target, Message.LIMIT, now, len(samples) / 22050, interrupted)

    def _index(
        self, target: Path, message: Message, now: float, duration: float, interrupted: bool
    ) -> None:
        entry = {
            "file": target.name,
            "message": message.value,
            "started": round(now, 3),
            "duration": round(duration, 3),
            "interrupts_previous": interrupted,
        }
        try:
            with open(self.audio_dir / INDEX, "a", encoding="utf-8") as index:
                index.write(json.dumps(entry) + "\n")
        except OSError as exc:
            raise AudioWriteFailed(self.audio_dir / INDEX, exc.strerror or str(exc)) from exc
