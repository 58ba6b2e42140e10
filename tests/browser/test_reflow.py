"""Reflow (WCAG 1.4.10), which axe does not check: at 320 CSS pixels wide, and with text at
200 %, no page scrolls sideways. Long things to copy (a command, a link) wrap instead."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import PageFactory, WebServer

pytestmark = pytest.mark.integration


def sideways_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than its viewport (0 when it reflows)."""
    width: int = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return width


def pages_to_visit(page: Page, base: str) -> list[str]:
    """The public pages, and the login's pages up to the smartcard's long command."""
    visited = []
    for path in ("/", "/help", "/accessibility", "/docs", "/migrate", "/console/login"):
        page.goto(base + path)
        visited.append(path)
        assert_reflows(page, path)
    page.goto(base + "/account/login")  # a self-service sign-in: the login's pages
    page.fill("#person_number", "3112991234")
    page.locator("main form button[type=submit]").first.click()
    page.wait_for_url(re.compile(r"/choose$"))
    login = page.url.rsplit("/", 1)[0]
    for method in ("choose", "password", "code", "key-card", "security-key", "smartcard"):
        page.goto(f"{login}/{method}")
        visited.append(method)
        assert_reflows(page, method)
    return visited


def assert_reflows(page: Page, where: str) -> None:
    assert sideways_overflow(page) <= 0, f"{where} scrolls sideways at {page.viewport_size}"


@pytest.mark.parametrize("locale", ["da-DK", "en-GB"])
def test_no_page_scrolls_sideways_at_320_pixels(
    new_page: PageFactory, web_server: WebServer, locale: str
) -> None:
    page = new_page(locale=locale, viewport={"width": 320, "height": 640})
    visited = pages_to_visit(page, web_server.url)
    assert len(visited) == 12


def test_no_page_scrolls_sideways_with_text_at_200_percent(
    new_page: PageFactory, web_server: WebServer
) -> None:
    # A 1280 px screen at 200 % zoom lays pages out in 640 CSS pixels with text twice as big.
    page = new_page(viewport={"width": 640, "height": 480}, device_scale_factor=2)
    page.add_init_script("document.documentElement.style.fontSize = '200%'")
    visited = pages_to_visit(page, web_server.url)
    assert len(visited) == 12
