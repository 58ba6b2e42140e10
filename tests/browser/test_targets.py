"""What axe cannot see, measured in the real Chromium on the citizens' pages in both languages:
every button, field and link that stands alone is a target of at least 44 x 44 CSS pixels
(a link inside a sentence is exempt, WCAG 2.2 2.5.8; round and square option buttons are at
least 24), every audio player has an accessible name, the code step's guidance for the audio
code reader is open, the step is read once (the progress bar is hidden from the accessibility
tree), and arrow keys choose in a group of round option buttons, as the accessibility
statement says. axe runs on every page visited, and on the page that tells a suspended person
where to get help."""

from __future__ import annotations

import itertools
import re
import time
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

from devices.protocol.otp import totp
from server.services.secretbox import SecretBox
from tests.unit.server.people import SEED, seed_person_with_code_display

from .axe import assert_accessible
from .conftest import WebServer
from .keyboard import page_session, tab_to, type_into_focused

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"  # noqa: S105 - a test person's password
PHONE = "+45 70 00 00 00"
EMAIL = "hjaelp@eid.example"
STANDALONE_PX = 44
OPTION_PX = 24
_numbers = itertools.count(1)

# Every target on the page with its size and whether it stands alone: a link is inline when
# the element around it holds text of its own (it is part of a sentence).
_TARGETS = """() => {
    const seen = [];
    const query = "a[href], button, input:not([type=hidden]), select, textarea, summary, audio";
    for (const element of document.querySelectorAll(query)) {
        const box = element.getBoundingClientRect();
        const style = getComputedStyle(element);
        if (box.width === 0 || box.height === 0 || style.visibility === "hidden") continue;
        if (element.closest("[hidden], .visually-hidden, .skip-link")) continue;
        const text = (node) => (node.textContent || "").replace(/\\s+/g, " ").trim();
        const parent = element.parentElement;
        const inline = element.tagName === "A" && parent !== null
            && text(parent) !== text(element);
        const option = element.type === "radio" || element.type === "checkbox";
        seen.push({
            what: `${element.tagName.toLowerCase()} ${text(element) || element.id || element.name}`,
            width: Math.round(box.width * 10) / 10,
            height: Math.round(box.height * 10) / 10,
            inline,
            option,
        });
    }
    return seen;
}"""


@pytest.fixture(scope="module")
def web_server_env() -> dict[str, str]:
    return {"AKKREDITIV_SUPPORT_PHONE": PHONE, "AKKREDITIV_SUPPORT_EMAIL": EMAIL}


def add_person(web_server: WebServer, seeding: TestClient, *, suspended: bool = False) -> str:
    """A person with a code display (``SEED``) and ``PASSWORD``; their person number."""
    number = f"16{next(_numbers):02d}80-4321"
    services = seeding.app.state.services  # type: ignore[attr-defined]
    identity = seed_person_with_code_display(
        services.sessions, SecretBox.from_file(services.settings.kek_file), number
    )
    with web_server.process.client() as api:
        answer = api.put(f"/identities/{identity}/password", json={"password": PASSWORD})
        assert answer.status_code == 200, answer.text
        if suspended:
            answer = api.post(f"/identities/{identity}/suspend")
            assert answer.status_code == 200, answer.text
    return number


def small_targets(page: Page) -> list[str]:
    """The targets below their size, as "what (width x height)"."""
    small = []
    for target in page.evaluate(_TARGETS):
        if target["inline"]:
            continue
        least = OPTION_PX if target["option"] else STANDALONE_PX
        if target["width"] < least or target["height"] < least:
            small.append(f"{target['what']} ({target['width']} x {target['height']})")
    return small


def ax_nodes(page: Page) -> list[dict[str, Any]]:
    """The page's accessibility tree as Chromium gives it to screen readers."""
    nodes: list[dict[str, Any]] = page_session(page).send("Accessibility.getFullAXTree")["nodes"]
    return [node for node in nodes if not node.get("ignored")]


def role_names(page: Page, role: str) -> list[str]:
    return [
        str(node.get("name", {}).get("value", ""))
        for node in ax_nodes(page)
        if node.get("role", {}).get("value") == role
    ]


def audio_names(page: Page) -> list[str]:
    """The accessible name of each audio player (Chromium's own computation)."""
    cdp = page_session(page)
    names = []
    for index in range(page.locator("audio").count()):
        found = cdp.send(
            "Runtime.evaluate",
            {"expression": f"document.querySelectorAll('audio')[{index}]", "objectGroup": "a"},
        )
        try:
            tree = cdp.send(
                "Accessibility.getPartialAXTree",
                {"objectId": found["result"]["objectId"], "fetchRelatives": False},
            )
        finally:
            cdp.send("Runtime.releaseObjectGroup", {"objectGroup": "a"})
        names.append(" ".join(str(tree["nodes"][0].get("name", {}).get("value", "")).split()))
    return names


def check(page: Page, where: str) -> None:
    """axe, the targets' sizes and the step said once, on the page as it is now."""
    assert_accessible(page, where)
    assert small_targets(page) == [], where
    assert role_names(page, "progressbar") == [], where  # the text says the step


def press_enter_and_wait(page: Page) -> None:
    with page.expect_navigation():
        page.keyboard.press("Enter")


@pytest.mark.parametrize("locale", ["da-DK", "en-GB"])
def test_targets_names_and_the_step_on_every_citizens_page(
    page: Page, web_server: WebServer, seeding: TestClient, locale: str
) -> None:
    lang = locale[:2]
    base = web_server.url
    for path in ("/", "/help", "/accessibility", "/docs", "/migrate", "/no-such-page"):
        page.goto(base + path)
        check(page, f"{path} ({lang})")
    page.goto(f"{base}/accessibility")
    assert audio_names(page) == [
        "Guidance for the audio code reader" if lang == "en" else "Vejledning til kodeoplæseren"
    ]

    number = add_person(web_server, seeding)
    page.goto(f"{base}/account")
    check(page, f"login, person number ({lang})")
    page.focus("#person_number")
    type_into_focused(page, number)
    press_enter_and_wait(page)
    check(page, f"login, choose ({lang})")
    # Arrow keys choose in the group of round option buttons, as the statement says.
    page.focus("#method-password")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.id") == "method-code"
    assert page.is_checked("#method-code")
    page.keyboard.press("ArrowUp")
    assert page.is_checked("#method-password")
    press_enter_and_wait(page)
    check(page, f"login, password ({lang})")
    page.focus("#password")
    type_into_focused(page, PASSWORD)
    press_enter_and_wait(page)
    page.focus("#method-code")
    press_enter_and_wait(page)
    check(page, f"login, code ({lang})")
    # The audio code reader's guidance is open from the start, and its player has a name.
    assert page.locator("details[open]").count() == 1
    assert audio_names(page) == [
        "You can also listen to this guidance:"
        if lang == "en"
        else "Du kan også lytte til vejledningen:"
    ]
    page.focus("#code")
    type_into_focused(page, totp(SEED, time.time()))
    press_enter_and_wait(page)
    assert page.url == f"{base}/account", page.url

    check(page, f"overview ({lang})")
    block = re.compile(r"^(Spær|Block) \((Kodeviser|Code display) 1000000001\)$")
    tab_to(page, block)
    press_enter_and_wait(page)
    check(page, f"block ({lang})")
    for path in ("/account/add", "/account/password", "/account/add/audio-reader"):
        page.goto(base + path)
        check(page, f"{path} ({lang})")
    assert audio_names(page) == [
        "Spoken guidance for the audio code reader"
        if lang == "en"
        else "Oplæst vejledning til kodeoplæseren"
    ]


@pytest.mark.parametrize("locale", ["da-DK", "en-GB"])
def test_a_suspended_person_is_shown_where_to_get_help(
    page: Page, web_server: WebServer, seeding: TestClient, locale: str
) -> None:
    lang = locale[:2]
    number = add_person(web_server, seeding, suspended=True)
    page.goto(f"{web_server.url}/account")
    page.focus("#person_number")
    type_into_focused(page, number)
    press_enter_and_wait(page)
    page.focus("#method-password")
    press_enter_and_wait(page)
    page.focus("#password")
    type_into_focused(page, PASSWORD)
    press_enter_and_wait(page)
    main = page.inner_text("main")
    assert ("Your eID is suspended" if lang == "en" else "Dit eID er suspenderet") in main
    assert PHONE in main
    assert EMAIL in main
    check(page, f"suspended ({lang})")
