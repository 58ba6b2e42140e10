"""The page's password step runs Argon2id while no one holds SQLite's write lock (as the
API's, see ``test_password_outside_lock``): for a right password, a wrong one and a person
who does not exist."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.settings import Settings
from tests.unit.server.lock_probe import install
from tests.unit.server.web.test_login import (
    PASSWORD,
    PERSON,
    WRONG,
    app_and_key,  # noqa: F401 - fixtures shared by name
    begin,
    browser,  # noqa: F401
    identify,
    key,  # noqa: F401
    post,
)


@pytest.mark.parametrize(
    ("person", "password", "status"),
    [(PERSON, PASSWORD, 303), (PERSON, WRONG, 401), ("020202-4321", PASSWORD, 401)],
    ids=["right", "wrong", "unknown-person"],
)
def test_the_page_hashes_a_password_without_the_write_lock(
    browser: TestClient,  # noqa: F811
    key: dict[str, str],  # noqa: F811
    app_and_key: tuple[Any, dict[str, str]],  # noqa: F811
    settings: Settings,
    person: str,
    password: str,
    status: int,
) -> None:
    transaction = begin(browser, key)
    identify(browser, transaction, person)
    probe = install(app_and_key[0], settings)
    answer = post(browser, f"/login/{transaction}/password", password=password)
    assert answer.status_code == status, answer.text
    assert probe.outcomes == ["free"]  # hashed once, and the lock was free meanwhile
