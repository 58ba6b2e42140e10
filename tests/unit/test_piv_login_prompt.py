"""``devices piv login`` names the provider as the service tells it (``piv/begin``'s
``service_provider_name``: a provider key's display name), with the id beside it, and says
the display name alone."""

from __future__ import annotations

from typing import Any

import pytest

from akkreditiv.cli.common import Listener
from akkreditiv.cli.piv import _login_confirmed, _LoginContext
from devices.events import DeviceEvent, Event


def begun(name: str, provider: str = "https://borger.example") -> dict[str, Any]:
    return {
        "service_provider_name": name,
        "service_provider": provider,
        "level": "high",
        "begun_at": "2025-05-01T09:05:00+00:00",
        "paired_with_browser": False,
    }


def test_the_prompt_names_the_provider_by_its_display_name_and_id(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    heard: list[Event] = []
    monkeypatch.setattr(Listener, "sink", heard.append)
    assert _login_confirmed(_LoginContext.of(begun("Borger.dk")), yes=True, pin_stdin=False)
    shown = capsys.readouterr().out
    assert "You are logging in to Borger.dk (https://borger.example) at level High." in shown
    (said,) = [event for event in heard if event.kind is DeviceEvent.CONFIRM_LOGIN]
    assert said.params["provider"] == "Borger.dk"  # spoken: the name alone


def test_a_provider_without_a_display_name_is_named_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    context = _LoginContext.of(begun("https://borger.example"))
    assert _login_confirmed(context, yes=True, pin_stdin=False)
    assert "You are logging in to https://borger.example at level High." in capsys.readouterr().out
