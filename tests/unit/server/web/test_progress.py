"""The step a person is on, said once and truly: a smartcard ends the login in the step it is
used, and the progress bar beside the text is hidden from screen readers (which read the
text), on the login pages and in the migration wizard."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.testclient import TestClient

from server.services.access import Role
from server.settings import Settings
from tests.unit.server.conftest import make_key
from tests.unit.server.web.forms import csrf_of, text_of

PROVIDER = "https://sp.example"
PERSON = "010190-1234"


@pytest.fixture
def key(settings: Settings) -> dict[str, str]:
    return make_key(settings, PROVIDER, Role.PROVIDER)


def identified(browser: TestClient, key: dict[str, str], level: str) -> str:
    begun = browser.post("/authentications", json={"min_level": level}, headers=key)
    assert begun.status_code == 201, begun.text
    transaction = str(begun.json()["id"])
    path = f"/login/{transaction}"
    token = csrf_of(browser.get(path))
    answer = browser.post(
        path, data={"csrf": token, "person_number": PERSON}, follow_redirects=False
    )
    assert answer.status_code == 303
    return transaction


def progress_of(page: httpx.Response) -> str:
    found = re.search(r"<progress[^>]*>", page.text)
    assert found is not None
    return found.group(0)


@pytest.mark.parametrize("level", ["substantial", "high"])
def test_the_smartcard_step_is_the_last(
    browser: TestClient, key: dict[str, str], level: str
) -> None:
    transaction = identified(browser, key, level)
    card = browser.get(f"/login/{transaction}/smartcard")
    assert "Trin 2 af 2" in text_of(card)
    assert 'max="2" value="2"' in progress_of(card)
    # A password is one of two credentials: its step is 2 of 3.
    assert "Trin 2 af 3" in text_of(browser.get(f"/login/{transaction}/password"))


def test_the_progress_bar_is_not_read_besides_its_text(
    browser: TestClient, key: dict[str, str]
) -> None:
    transaction = identified(browser, key, "substantial")
    for page in (browser.get(f"/login/{transaction}/choose"), browser.get("/migrate")):
        bar = progress_of(page)
        assert 'aria-hidden="true"' in bar
        assert "aria-labelledby" not in bar
        assert len(re.findall(r"(Trin|Step) \d+ (af|of) \d+", text_of(page))) == 1
