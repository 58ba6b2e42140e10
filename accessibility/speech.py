"""Text to speech: the engine seam (``SpeechEngine``) and its pyttsx3 + espeak-ng implementation,
which writes 16-bit mono WAV files and never reports silence as speech."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import tempfile
import threading
import unicodedata
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from accessibility.audio import is_silent, read_wav, write_wav
from accessibility.errors import (
    AudioDeviceUnavailable,
    AudioFormatError,
    SettingOutOfRange,
    SpeechFailed,
    SpeechUnavailable,
    UnknownLanguage,
)

RATE_RANGE = (80, 400)  # words per minute; espeak-ng is hard to follow outside this
VOLUME_RANGE = (0.0, 1.0)
PITCH_RANGE = (0, 99)  # espeak-ng's pitch scale, 50 is the voice's normal pitch

INSTALL_ESPEAK = "apt-get install espeak-ng"
INSTALL_PYTTSX3 = "pip install pyttsx3"
DEFAULT_PLAYER = ("aplay", "-q")


class Language(StrEnum):
    """The languages every prompt is available in."""

    DA = "da"
    EN = "en"

    @classmethod
    def parse(cls, value: Language | str) -> Language:
        """``value`` as a Language, or ``UnknownLanguage``."""
        try:
            return cls(value)
        except ValueError:
            raise UnknownLanguage(value, [language.value for language in cls]) from None


@dataclass(frozen=True)
class Prosody:
    """How fast, loud and high to speak; constructing one checks the ranges."""

    rate: int = 175
    volume: float = 1.0
    pitch: int = 50

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("rate", self.rate, RATE_RANGE),
            ("volume", self.volume, VOLUME_RANGE),
            ("pitch", self.pitch, PITCH_RANGE),
        ):
            # `not low <= value <= high` also rejects NaN
            if isinstance(value, bool) or not allowed[0] <= value <= allowed[1]:
                raise SettingOutOfRange(name, value, allowed)


class SpeechEngine(Protocol):
    """Something that turns text into speech in a given language."""

    def render(
        self, text: str, path: Path, *, language: Language, rate: int, volume: float, pitch: int
    ) -> None:
        """Write ``text`` spoken as a 16-bit mono WAV file at ``path``."""
        ...

    def speak(self, text: str, *, language: Language, rate: int, volume: float, pitch: int) -> None:
        """Say ``text`` on the sound device; ``AudioDeviceUnavailable`` when there is none."""
        ...


# espeak-ng keeps one voice, one set of parameters and one output callback per process, and
# pyttsx3's espeak driver routes audio to whichever driver instance was constructed last: a
# second pyttsx3 engine silently steals the first one's output. So all renders share the one
# cached pyttsx3 engine per driver name, one at a time.
_ESPEAK_LOCK = threading.RLock()

DEFAULT_VOICES: Mapping[Language, str] = {Language.DA: "gmq/da", Language.EN: "gmw/en"}


def clean_text(text: str) -> str:
    """``text`` with control characters removed and whitespace collapsed: a control character
    (0x01) would start an espeak-ng embedded command."""
    kept = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    return " ".join(kept.split())


def play(path: Path, player: Sequence[str] = DEFAULT_PLAYER) -> None:
    """Play a WAV file with ``player`` (default ``aplay -q``)."""
    program = shutil.which(player[0])
    if program is None:
        raise AudioDeviceUnavailable(f"there is no audio player {player[0]!r}")
    try:
        result = subprocess.run(  # noqa: S603 - the program is resolved by which(), no shell
            [program, *player[1:], str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AudioDeviceUnavailable(f"{player[0]} could not play {path}: {exc}") from exc
    if result.returncode != 0:
        reason = result.stderr.strip() or f"exit status {result.returncode}"
        raise AudioDeviceUnavailable(f"{player[0]} could not play {path}: {reason}")


class Pyttsx3Engine:
    """pyttsx3 on espeak-ng, one voice per language.

    Rate, volume and pitch are sent as espeak-ng embedded commands at the start of each
    utterance, not through pyttsx3's ``setProperty``: with espeak-ng 1.51, once an utterance
    had been rendered after setting voice and rate, later ``setProperty("rate", ...)`` calls
    were silently ignored (the next files kept the old rate), while embedded commands applied
    every time.
    """

    def __init__(
        self,
        *,
        driver: str = "espeak",
        voices: Mapping[Language, str] | None = None,
        player: Sequence[str] = DEFAULT_PLAYER,
    ) -> None:
        self.driver = driver
        self.voices = dict(DEFAULT_VOICES if voices is None else voices)
        if len(set(self.voices.values())) != len(self.voices):
            raise ValueError("each language needs its own voice")
        self.player = tuple(player)
        self._engine: Any = None
        self._installed: frozenset[str] = frozenset()

    def start(self) -> None:
        """Start pyttsx3 and espeak-ng if not yet done; ``SpeechUnavailable`` says what to
        install when that is impossible."""
        with _ESPEAK_LOCK:
            if self._engine is None:
                self._engine = self._open_engine()
                # pyttsx3's driver starts "busy", so the first runAndWait queued its own
                # end-of-loop command and ran it as the loop began, before espeak-ng had
                # spoken: a first utterance longer than a sentence or two came back as no
                # file (and its late end cut the next one short). Idle from the start, every
                # render waits for espeak-ng's end of message, as renders after the first
                # did. (An engine pyttsx3 shares from an earlier start is idle already.)
                self._engine.proxy.setBusy(False)
                voices = self._engine.getProperty("voices")
                self._installed = frozenset(str(voice.id) for voice in voices)

    def _open_engine(self) -> Any:
        try:
            # imported here: a missing pyttsx3 (or espeak-ng library) is reported, not fatal
            import pyttsx3
        except ImportError as exc:
            raise SpeechUnavailable(
                f"pyttsx3 is not installed: {exc}", hint=INSTALL_PYTTSX3
            ) from exc
        try:
            return pyttsx3.init(self.driver)
        except ModuleNotFoundError as exc:
            if exc.name == f"pyttsx3.drivers.{self.driver}":
                raise SpeechUnavailable(
                    f"pyttsx3 has no {self.driver!r} driver",
                    hint=f"use the espeak driver: {INSTALL_ESPEAK}, and {INSTALL_PYTTSX3}",
                ) from exc
            raise SpeechUnavailable(f"pyttsx3 could not start: {exc}") from exc
        except (OSError, RuntimeError) as exc:  # the espeak driver's "no eSpeak library" errors
            raise SpeechUnavailable(
                f"espeak-ng could not start: {exc}", hint=INSTALL_ESPEAK
            ) from exc

    def voice_id(self, language: Language | str) -> str:
        """The espeak-ng voice used for ``language`` (checked to be installed)."""
        language = Language.parse(language)
        self.start()
        voice = self.voices.get(language)
        if voice is None:
            raise SpeechUnavailable(
                f"no voice is configured for {language.value!r}",
                hint=f"configure one of espeak-ng's voices, e.g. {DEFAULT_VOICES[language]!r}",
            )
        if voice not in self._installed:
            raise SpeechUnavailable(
                f"espeak-ng has no voice {voice!r} for {language.value!r}",
                hint=f"{INSTALL_ESPEAK} espeak-ng-data (it has the 'gmq/da' and 'gmw/en' "
                "voices), or configure an installed voice (espeak-ng --voices)",
            )
        return voice

    def render(
        self,
        text: str,
        path: Path,
        *,
        language: Language | str,
        rate: int,
        volume: float,
        pitch: int,
    ) -> None:
        language = Language.parse(language)
        prosody = Prosody(rate, volume, pitch)
        spoken = clean_text(text)
        if not spoken:
            raise ValueError("there is no text to speak")
        sample_rate, samples = self._synthesize(spoken, language, prosody)
        write_wav(path, sample_rate, samples)

    def speak(
        self, text: str, *, language: Language | str, rate: int, volume: float, pitch: int
    ) -> None:
        if shutil.which(self.player[0]) is None:
            raise AudioDeviceUnavailable(f"there is no audio player {self.player[0]!r}")
        with tempfile.TemporaryDirectory(prefix="speech-") as folder:
            wav = Path(folder) / "speech.wav"
            self.render(text, wav, language=language, rate=rate, volume=volume, pitch=pitch)
            play(wav, self.player)

    def _synthesize(
        self, text: str, language: Language, prosody: Prosody
    ) -> tuple[int, array[int]]:
        voice = self.voice_id(language)
        # S: words per minute, A: amplitude (100 is espeak-ng's normal), P: pitch
        commands = f"\x01{prosody.rate}S\x01{round(prosody.volume * 100)}A\x01{prosody.pitch}P"
        errors: list[object] = []

        def on_error(**event: object) -> None:
            errors.append(event.get("exception"))

        # pyttsx3 writes the file from espeak-ng's callback, where a failed write is only
        # printed; so it writes into a folder of ours and we copy atomically to the target.
        with _ESPEAK_LOCK, tempfile.TemporaryDirectory(prefix="speech-") as folder:
            scratch = Path(folder) / "utterance.wav"
            engine = self._engine
            token = engine.connect("error", on_error)
            try:
                engine.setProperty("voice", voice)
                engine.save_to_file(f"{commands} {text}", str(scratch))
                # the driver prints "Audio saved to ..." on stdout for every file
                with contextlib.redirect_stdout(io.StringIO()):
                    engine.runAndWait()
            finally:
                engine.disconnect(token)
            current = engine.getProperty("voice")
            if errors:
                raise SpeechFailed(f"espeak-ng failed: {errors[0]}")
            if current != voice:
                raise SpeechFailed(f"espeak-ng spoke with voice {current!r}, not {voice!r}")
            if not scratch.exists():
                raise SpeechFailed(
                    "espeak-ng produced no audio file",
                    hint="another pyttsx3 engine in this process may have taken espeak-ng's "
                    "output; use Pyttsx3Engine for all speech",
                )
            try:
                sample_rate, samples = read_wav(scratch)
            except AudioFormatError as exc:
                raise SpeechFailed(f"espeak-ng wrote an unreadable file: {exc}") from exc
        if is_silent(samples):
            what = "an empty" if not samples else "a silent"
            raise SpeechFailed(f"espeak-ng produced {what} recording")
        return sample_rate, samples
