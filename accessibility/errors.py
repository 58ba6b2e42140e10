"""The error hierarchy of the speech layer: every failure a caller can act on has a type and a hint.

Each error carries a ``hint``: one sentence telling a person what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class AccessibilityError(Exception):
    """Base of every error raised by ``accessibility``."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message} ({self.hint})" if self.hint else message


class SettingOutOfRange(AccessibilityError, ValueError):
    """A speech setting outside what the engine takes; ``allowed`` is the inclusive range."""

    def __init__(self, name: str, value: float, allowed: tuple[float, float]) -> None:
        self.name = name
        self.value = value
        self.allowed = allowed
        low, high = allowed
        super().__init__(
            f"{name} {value!r} is outside {low}..{high}",
            hint=f"choose a {name} from {low} to {high}",
        )


class UnknownLanguage(AccessibilityError, ValueError):
    """A language the speech layer has no words for; ``language`` is what was asked for."""

    def __init__(self, language: object, known: Iterable[str] = ()) -> None:
        self.language = language
        self.known = tuple(known)
        choices = ", ".join(self.known) or "none"
        super().__init__(f"unknown language {language!r}", hint=f"use one of: {choices}")


class SpeechUnavailable(AccessibilityError):
    """No speech engine can start: pyttsx3 or espeak-ng is missing, or it has no voice for the
    language. The hint names what to install."""

    hint = "install the speech engine: apt-get install espeak-ng, and pip install pyttsx3"


class SpeechFailed(AccessibilityError):
    """The engine ran but produced no audible speech (an empty or silent file)."""

    hint = "check the volume setting and that the text has words in it, then render again"


class AudioError(AccessibilityError):
    """Audio data or an audio file that cannot be used."""


class AudioFormatError(AudioError, ValueError):
    """A WAV file that is not 16-bit PCM mono, or is not a WAV file at all."""

    hint = "use a 16-bit PCM mono WAV file"


class AudioWriteFailed(AudioError):
    """An audio file could not be written (missing or read-only folder, full disk); nothing was
    left at ``path``."""

    hint = "check that the folder exists, is writable and has free space"

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"could not write {path}: {reason}")


class AudioDeviceUnavailable(AudioError):
    """There is no sound device (or no player program) to speak through."""

    hint = (
        "connect headphones or a speaker and install a player (apt-get install alsa-utils); "
        "the spoken prompts are also written as WAV files"
    )
