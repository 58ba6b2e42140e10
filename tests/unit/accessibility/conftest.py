"""The real speech engine (pyttsx3 on espeak-ng), started once for the accessibility tests."""

from __future__ import annotations

import pytest

from accessibility.errors import SpeechUnavailable
from accessibility.speech import Pyttsx3Engine


@pytest.fixture(scope="session")
def engine() -> Pyttsx3Engine:
    speech = Pyttsx3Engine()
    try:
        speech.start()
    except SpeechUnavailable as exc:  # the tests are about real speech: say what to install
        pytest.fail(str(exc), pytrace=False)
    return speech
