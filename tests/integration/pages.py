"""The pages as an integration test's browser walks them: httpx without script, keeping the
cookies and following the redirects."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import httpx

from devices.protocol.otp import totp
from server.services.secretbox import SecretBox
from server.storage.engine import create_engine_for, session_factory
from tests.unit.server.people import seed_person_with_code_display


def add_citizen(database_url: str, kek_file: Path, api: httpx.Client, password: str) -> uuid.UUID:
    """The test person (``PERSON_STORED``, with the ``SEED`` code display) in a running
    service's database, given ``password`` through the API (``api`` holds a key)."""
    engine = create_engine_for(database_url)
    try:
        identity = seed_person_with_code_display(
            session_factory(engine), SecretBox.from_file(kek_file)
        )
    finally:
        engine.dispose()
    answer = api.put(f"/identities/{identity}/password", json={"password": password})
    assert answer.status_code == 200, answer.text
    return identity


def csrf(page: httpx.Response) -> str:
    """The CSRF token of the page's forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, page.text
    return found.group(1)


def citizen_signs_in(
    browser: httpx.Client,
    start: str,
    person_number: str,
    password: str,
    seed: bytes,
    *,
    finish_at: str = "",
) -> httpx.Response:
    """From ``start`` (a page that sends the browser to a login): the person number, the
    password, then the code display's code now (TOTP of ``seed``); the page it ends at. The
    password and the code go to ``finish_at`` (an origin; the client's own by default)."""
    page = browser.get(start)
    # The sign-in's first page asks for the number, and begins the login when it is sent.
    page = browser.post(page.url, data={"csrf": csrf(page), "person_number": person_number})
    login = re.search(r"/login/([0-9a-f-]{36})/choose", str(page.url))
    assert login is not None, page.url
    base = f"{finish_at}/login/{login.group(1)}"
    for path, field, value in (
        (f"{base}/password", "password", password),
        (f"{base}/code", "code", totp(seed, time.time())),
    ):
        page = browser.post(path, data={"csrf": csrf(page), field: value})
        assert page.status_code == 200, page.text
    return page
