"""The demo's service provider (``akkreditiv demo rp``, which ``scripts/start`` runs): a
newcomer opens its page, follows "Log ind med akkreditiv" by keyboard, logs in through the
pages, and sees the ID token's claims (checked against the JWKS by the demo) and userinfo."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.conftest import WebServer
from tests.browser.keyboard import activate, tab_to
from tests.browser.test_login_provider import enrol, log_in_by_keyboard
from tests.integration.server_process import follow_stderr, free_port

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.integration

READY = "demo service provider:"


@pytest.fixture(scope="module")
def demo_rp(web_server: WebServer) -> Iterator[str]:
    """The demo provider, run as ``scripts/start`` runs it; its origin."""
    port = free_port()
    env = web_server.process.env
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "akkreditiv",
            "demo",
            "rp",
            "--url",
            web_server.process.url,
            "--port",
            str(port),
            "--folder",
            str(web_server.folder / "demo"),
            "--database-url",
            env["AKKREDITIV_DATABASE_URL"],
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log: list[str] = []
    reader, ready = follow_stderr(process, READY, log, "demo-rp")
    try:
        assert ready.wait(60), "".join(log)
        assert process.poll() is None, "".join(log)
        yield f"http://localhost:{port}"
    finally:
        process.terminate()
        process.wait(timeout=15)
        reader.join(timeout=15)
        if process.stderr is not None:
            process.stderr.close()


def test_a_newcomer_logs_in_at_the_demo_provider_and_sees_the_claims(
    page: Page, web_server: WebServer, demo_rp: str
) -> None:
    with web_server.process.client() as api:
        _, secret = enrol(api, "0606901234", "Nora Newcomer")
    page.goto(demo_rp)
    tab_to(page, "Log ind med akkreditiv / Log in with akkreditiv")
    with page.expect_navigation():
        activate(page)
    page.wait_for_url(re.compile(r"/login/[0-9a-f-]{36}$"))
    assert "Demo-tjenesten (OpenID Connect) beder dig logge på" in page.locator("main").inner_text()
    log_in_by_keyboard(page, "060690-1234", secret)
    page.wait_for_url(re.compile(re.escape(demo_rp) + r"/callback\?"))
    assert page.locator("h1").inner_text() == "Du er logget på / You are logged in"
    shown = page.locator("main").inner_text()
    assert "https://data.gov.dk/concept/core/nsis/loa/Substantial" in shown
    assert "https://data.gov.dk/model/core/eid/cprNumber" in shown
    assert '"Nora Newcomer"' in shown
