"""Reading pages as a test browser: the CSRF token of a page's forms, texts without markup."""

from __future__ import annotations

import html
import re
from typing import Any, Protocol


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


def self_service_login(client: Any, person_number: str, query: str = "") -> Any:
    """Begin the self-service sign-in as a browser does: open ``/account/login`` (with
    ``query``, such as ``?level=high&next=/account``) and send the CPR-nummer; the answer is
    the page that leads to, the choice of credential (``/login/<id>/choose``)."""
    page = client.get(f"/account/login{query}")
    assert page.status_code == 200, page.text
    return client.post(
        f"/account/login{query}",
        data={"csrf": csrf_of(page), "person_number": person_number},
        follow_redirects=True,
    )


def login_of(answer: Any) -> str:
    """The id of the login whose page ``answer`` is."""
    found = re.search(r"/login/([0-9a-f-]{36})", str(answer.url))
    assert found is not None, answer.url
    return found.group(1)


def lang_of(response: Page) -> str:
    found = re.search(r'<html lang="([a-z]{2})">', response.text)
    assert found is not None, "the page does not set its language"
    return found.group(1)
