"""Reading pages as a test browser: the CSRF token of a page's forms, texts without markup."""

from __future__ import annotations

import html
import re
from typing import Protocol


class Page(Protocol):
    """An HTTP answer with a text body (httpx's and the test client's responses)."""

    @property
    def text(self) -> str: ...


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_TAG = re.compile(r"<[^>]+>")


def csrf_of(response: Page) -> str:
    found = _CSRF.search(response.text)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


def text_of(response: Page) -> str:
    """The page's text, tags removed and whitespace collapsed."""
    return " ".join(html.unescape(_TAG.sub(" ", response.text)).split())


def lang_of(response: Page) -> str:
    found = re.search(r'<html lang="([a-z]{2})">', response.text)
    assert found is not None, "the page does not set its language"
    return found.group(1)
