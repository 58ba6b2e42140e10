"""Fixtures for the real-browser tests: one headless Debian Chromium per run driven by
Playwright, a fresh browser context per test (with the pages' CSP enforced), and the real
``akkreditiv serve`` process reached at ``http://localhost:PORT``, the origin WebAuthn needs."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings
from tests.browser.webauthn import unrelated_root
from tests.integration.server_process import ServerProcess, start_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM_ENV = "AKKREDITIV_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Playwright adds the headless and automation flags itself; these two keep Chromium off the GPU
# (there is none) and off QUIC (nothing here speaks it), which avoids slow fallbacks.
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic"]
# A page that does not answer fails its test within seconds, not Playwright's default 30 s.
ACTION_TIMEOUT_MS = 10_000
DEFAULT_LOCALE = "da-DK"

# Playwright's Python package never downloads a browser by itself; this keeps any tool it
# starts from trying (the tests use Debian's Chromium only).
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


def missing_component(message: str) -> NoReturn:
    """Fail in CI (a missing component there is a broken setup), skip on a developer machine.
    The same rule as tests/integration/conftest.py, copied so that these tests do not import
    the PC/SC fixtures."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: browser test components are required)", pytrace=False)
    pytest.skip(message)


def chromium_path() -> Path:
    """The Chromium binary to drive: ``$AKKREDITIV_CHROMIUM`` or Debian's ``/usr/bin/chromium``."""
    return Path(os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole run; tests isolate themselves with contexts."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        missing_component(f"playwright is not installed ({exc}); run scripts/setup")
    executable = chromium_path()
    if not (executable.is_file() and os.access(executable, os.X_OK)):
        missing_component(
            f"Chromium is not at {executable}; run scripts/setup or set {CHROMIUM_ENV}"
        )
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(
                executable_path=str(executable), headless=True, args=CHROMIUM_ARGS
            )
        except PlaywrightError as exc:
            pytest.fail(f"Chromium at {executable} does not start: {exc}", pytrace=False)
        try:
            yield chromium
        finally:
            chromium.close()


ContextFactory = Callable[..., "BrowserContext"]
PageFactory = Callable[..., "Page"]


@pytest.fixture
def context_factory(browser: Browser) -> Iterator[ContextFactory]:
    """``context_factory(locale="da-DK", **options)``: a fresh context (own cookies, storage and
    permissions), closed when the test ends. CSP is never bypassed: the pages' strict policy is
    part of what the tests check."""
    contexts: list[BrowserContext] = []

    def new_context(*, locale: str = DEFAULT_LOCALE, **options: Any) -> BrowserContext:
        if options.get("bypass_csp"):
            raise ValueError("browser tests must run under the pages' own Content-Security-Policy")
        context = browser.new_context(locale=locale, bypass_csp=False, **options)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        contexts.append(context)
        return context

    yield new_context
    for context in contexts:
        context.close()


@pytest.fixture
def new_page(context_factory: ContextFactory) -> PageFactory:
    """``new_page(locale="en-GB", **options)``: a page in its own fresh context."""

    def _new_page(*, locale: str = DEFAULT_LOCALE, **options: Any) -> Page:
        return context_factory(locale=locale, **options).new_page()

    return _new_page


@pytest.fixture
def locale() -> str:
    """The browser language of ``page``; parametrize ``locale`` to run a test per language."""
    return DEFAULT_LOCALE


@pytest.fixture
def page(new_page: PageFactory, locale: str) -> Page:
    return new_page(locale=locale)


@dataclass
class WebServer:
    """The running service as a browser must reach it: ``url`` is ``http://localhost:PORT``
    (WebAuthn refuses 127.0.0.1 as a relying party id); ``process`` has the environment, the
    provider API key headers and the server's log."""

    url: str
    process: ServerProcess
    folder: Path

    def output(self) -> str:
        return self.process.output()


@pytest.fixture(scope="module")
def web_server_env() -> dict[str, str]:
    """Extra environment for ``web_server``; override this fixture in a test module to start
    the service differently (e.g. with trusted FIDO roots)."""
    return {}


@pytest.fixture(scope="module")
def roots_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A module's trusted FIDO attestation roots (tests/browser/webauthn.py): at first only an
    unrelated root, so no key registers until the test trusts its virtual authenticator. A
    module that uses it passes it to the service in its ``web_server_env``."""
    path = tmp_path_factory.mktemp("fido-roots") / "roots.pem"
    path.write_bytes(unrelated_root())
    return path


@pytest.fixture(scope="module")
def web_server(
    tmp_path_factory: pytest.TempPathFactory, web_server_env: dict[str, str]
) -> Iterator[WebServer]:
    """``akkreditiv serve`` on a fresh SQLite database, one per test module."""
    folder = tmp_path_factory.mktemp("web-server")
    process = start_server(
        folder / "service",
        f"sqlite+pysqlite:///{folder / 'akkreditiv.db'}",
        provider="https://sp.example",
        extra_env=web_server_env,
    )
    port = process.url.rsplit(":", 1)[1]
    try:
        yield WebServer(f"http://localhost:{port}", process, folder)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def seeding(web_server: WebServer) -> Iterator[TestClient]:
    """The service's own database and keys, opened beside the running server to add people and
    the devices that come from the factory, not from a page (a code display with a known
    seed)."""
    env = web_server.process.env
    settings = Settings(
        database_url=env["AKKREDITIV_DATABASE_URL"],
        kek_file=Path(env["AKKREDITIV_KEK_FILE"]),
        pseudonym_key_file=Path(env["AKKREDITIV_PSEUDONYM_KEY_FILE"]),
        signing_key_file=Path(env["AKKREDITIV_SIGNING_KEY_FILE"]),
        api_keys_file=Path(env["AKKREDITIV_API_KEYS_FILE"]),
    )
    with TestClient(create_app(settings)) as client:
        yield client
