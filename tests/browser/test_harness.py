"""The browser test harness itself, in the real Chromium: axe finds what is wrong and passes
what is right under a strict CSP, keyboard navigation reaches controls and catches a hidden
focus, the virtual authenticator registers and signs on localhost, and the service answers
the browser at http://localhost:PORT."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import pytest

from tests.integration.server_process import free_port

from .axe import AccessibilityViolations, assert_accessible, axe_violations
from .conftest import WebServer
from .keyboard import (
    FocusNotVisible,
    KeyboardError,
    NotReachable,
    activate,
    tab_to,
    type_into_focused,
)
from .webauthn import add_virtual_authenticator, credentials

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

pytestmark = pytest.mark.integration

# As strict as the service's own pages: nothing inline, nothing from elsewhere.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

GOOD_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Log in</title>
  <link rel="stylesheet" href="/style.css">
</head>
<body>
  <main>
    <h1>Log in</h1>
    <form action="/next" method="get">
      <label for="number">Person number</label>
      <input id="number" name="number" autocomplete="off">
      <button type="submit">Continue</button>
    </form>
    <p><a href="/help">Help with logging in</a></p>
  </main>
</body>
</html>"""

BAD_PAGE = """<!doctype html>
<html>
<head><meta charset="utf-8"></head>
<body>
  <img src="/logo.png">
  <input type="text" name="code">
  <script>document.title = "inline script ran";</script>
</body>
</html>"""

BASE_CSS = "body { font-family: sans-serif; color: #111; background: #fff; }\n"

# Look of the focused "Continue" button: those that show focus, and those that hide it.
VISIBLE_FOCUS = {
    "browser default": "",
    "outline": "button:focus-visible { outline: 3px solid #1a4fd6; outline-offset: 2px; }",
    "box shadow": "button:focus-visible { outline: none; box-shadow: 0 0 0 3px #1a4fd6; }",
}
HIDDEN_FOCUS = {
    "outline none": ":focus, :focus-visible { outline: none; }",
    "transparent outline": "button:focus-visible { outline: 3px solid transparent; }",
    "same outline unfocused": "button, button:focus-visible { outline: 2px solid #111; }",
}


@dataclass
class Site:
    """Pages served to one browser page from ``http://localhost:PORT`` by request
    interception, each with the strict CSP header; ``requested`` lists the paths asked for."""

    origin: str
    files: dict[str, tuple[str, str]]
    requested: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)

    def handle(self, route: Route) -> None:
        url = urlsplit(route.request.url)
        self.languages.append(route.request.headers.get("accept-language", ""))
        self.requested.append(url.path + (f"?{url.query}" if url.query else ""))
        content_type, body = self.files.get(url.path, ("text/plain", "not found"))
        route.fulfill(
            status=200 if url.path in self.files else 404,
            headers={"Content-Type": content_type, "Content-Security-Policy": CSP},
            body=body,
        )


Serve = Callable[..., Site]


@pytest.fixture
def serve(page: Page) -> Serve:
    """``serve(html, css=..., **more)``: open ``html`` at ``/`` of a localhost origin."""

    def _serve(html: str, *, css: str = BASE_CSS, **more: tuple[str, str]) -> Site:
        site = Site(
            f"http://localhost:{free_port()}",
            {
                "/": ("text/html; charset=utf-8", html),
                "/style.css": ("text/css", css),
                **{f"/{name.replace('_', '.')}": body for name, body in more.items()},
            },
        )
        page.route(f"{site.origin}/**", site.handle)
        response = page.goto(f"{site.origin}/")
        assert response is not None
        assert response.status == 200
        return site

    return _serve


def test_assert_accessible_names_the_violated_rules_on_a_bad_page(page: Page, serve: Serve) -> None:
    serve(BAD_PAGE)
    with pytest.raises(AccessibilityViolations) as caught:
        assert_accessible(page, "bad page")
    assert {"image-alt", "label", "html-has-lang"} <= caught.value.rule_ids
    message = str(caught.value)
    assert "on bad page (http://localhost:" in message
    assert re.search(
        r"^- image-alt \[critical\] Images must have alternative text: img$", message, re.M
    )
    assert re.search(r"^- label \[critical\] .*: input$", message, re.M)


def test_assert_accessible_passes_an_accessible_page(page: Page, serve: Serve) -> None:
    serve(GOOD_PAGE)
    assert_accessible(page, "good page")
    assert page.evaluate("axe.version") == "4.14.1"


def test_axe_runs_only_the_asked_tags(page: Page, serve: Serve) -> None:
    serve(BAD_PAGE)
    # html-has-lang is level A; best-practice rules such as "region" stay out of the WCAG run.
    wcag = {violation["id"] for violation in axe_violations(page)}
    practice = {violation["id"] for violation in axe_violations(page, tags=["best-practice"])}
    assert "html-has-lang" in wcag
    assert "region" not in wcag
    assert "region" in practice
    assert "html-has-lang" not in practice


def test_contexts_enforce_the_page_csp(page: Page, serve: Serve) -> None:
    external = ("text/javascript", "document.documentElement.dataset.ran = 'yes';")
    serve(BAD_PAGE.replace("<body>", '<body><script src="/app.js"></script>'), app_js=external)
    assert page.evaluate("document.documentElement.dataset.ran") == "yes"  # same-origin script
    assert page.title() != "inline script ran"  # inline script blocked


@pytest.mark.parametrize("locale", ["da-DK", "en-GB"])
def test_page_speaks_the_parametrized_locale(page: Page, serve: Serve, locale: str) -> None:
    site = serve(GOOD_PAGE)
    assert page.evaluate("navigator.language") == locale
    assert site.languages[0].startswith(locale)


@pytest.mark.parametrize("key", ["Enter", "Space"])
def test_keyboard_alone_fills_and_submits_a_form(
    page: Page, serve: Serve, key: Literal["Enter", "Space"]
) -> None:
    site = serve(GOOD_PAGE)
    field_ = tab_to(page, "Person number")
    assert (field_.role, field_.tag) == ("textbox", "input")
    type_into_focused(page, "0101801234")
    button = tab_to(page, "Continue")
    assert (button.role, button.tag) == ("button", "button")
    activate(page, key)
    page.wait_for_url(f"{site.origin}/next?number=0101801234")
    assert site.requested == ["/", "/style.css", "/next?number=0101801234"]


@pytest.mark.parametrize("css", VISIBLE_FOCUS.values(), ids=VISIBLE_FOCUS.keys())
def test_tab_to_accepts_a_visible_focus(page: Page, serve: Serve, css: str) -> None:
    serve(GOOD_PAGE, css=BASE_CSS + css)
    assert tab_to(page, "Continue").name == "Continue"


@pytest.mark.parametrize("css", HIDDEN_FOCUS.values(), ids=HIDDEN_FOCUS.keys())
def test_tab_to_fails_when_focus_is_not_visible(page: Page, serve: Serve, css: str) -> None:
    serve(GOOD_PAGE, css=BASE_CSS + css)
    with pytest.raises(FocusNotVisible, match="button 'Continue' has no visible focus"):
        tab_to(page, "Continue")


def test_tab_to_matches_patterns_predicates_and_goes_backwards(page: Page, serve: Serve) -> None:
    serve(GOOD_PAGE)
    assert tab_to(page, re.compile(r"^Help")).role == "link"
    assert tab_to(page, lambda now: now.role == "textbox", backwards=True).name == "Person number"


def test_tab_to_reports_where_focus_went_when_the_control_is_missing(
    page: Page, serve: Serve
) -> None:
    serve(GOOD_PAGE)
    with pytest.raises(NotReachable, match="focus went round the page") as caught:
        tab_to(page, "Log out")
    assert [item.name for item in caught.value.visited] == [
        "Person number",
        "Continue",
        "Help with logging in",
    ]
    with pytest.raises(NotReachable, match="not within 2 presses"):
        tab_to(page, "Log out", max_tabs=2)


def test_type_into_focused_refuses_a_button(page: Page, serve: Serve) -> None:
    serve(GOOD_PAGE)
    tab_to(page, "Continue")
    with pytest.raises(KeyboardError, match="does not take text input"):
        type_into_focused(page, "text")


CREATE = """async () => {
    const credential = await navigator.credentials.create({publicKey: {
        rp: {name: "akkreditiv test", id: "localhost"},
        user: {id: new Uint8Array([1, 2, 3, 4]), name: "anna", displayName: "Anna"},
        challenge: crypto.getRandomValues(new Uint8Array(32)),
        pubKeyCredParams: [{type: "public-key", alg: -7}],
        authenticatorSelection: {residentKey: "required", userVerification: "required"},
    }});
    return credential.toJSON();
}"""
GET = """async () => {
    const assertion = await navigator.credentials.get({publicKey: {
        rpId: "localhost",
        challenge: crypto.getRandomValues(new Uint8Array(32)),
        userVerification: "required",
    }});
    return assertion.toJSON();
}"""


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))


def test_virtual_authenticator_registers_and_signs_on_localhost(page: Page, serve: Serve) -> None:
    serve(GOOD_PAGE)
    cdp, authenticator = add_virtual_authenticator(page)
    assert credentials(cdp, authenticator) == []
    created: dict[str, Any] = page.evaluate(CREATE)
    [stored] = credentials(cdp, authenticator)
    assert _b64(stored["credentialId"]) == _b64(created["rawId"])
    assert stored["rpId"] == "localhost"
    assert stored["isResidentCredential"] is True
    assert _b64(stored["userHandle"]) == bytes([1, 2, 3, 4])
    count = stored["signCount"]
    asserted: dict[str, Any] = page.evaluate(GET)
    assert asserted["rawId"] == created["rawId"]
    assert _b64(asserted["response"]["userHandle"]) == bytes([1, 2, 3, 4])
    assert [item["signCount"] for item in credentials(cdp, authenticator)] == [count + 1]


def test_web_server_answers_the_browser_on_localhost(page: Page, web_server: WebServer) -> None:
    assert re.fullmatch(r"http://localhost:\d+", web_server.url)
    health = page.context.request.get(f"{web_server.url}/health")
    assert health.status == 200, web_server.output()
    navigated = page.goto(f"{web_server.url}/health")
    assert navigated is not None
    assert navigated.status == 200, web_server.output()
