"""The credential tables show every column: a person holding a security key, a smartcard (its
card id 32 hex digits and more) and a credential of every other kind, in the operator
console's table and the citizen's own, at 1280 x 800 and at 320 CSS pixels wide, in both
languages, and at 640 px with text at 200 %. Every column's header (or, where the table is
laid out as one block per credential, every cell's label) and every action control lies inside
the table's box and the viewport, and neither the page nor the table scrolls sideways."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

from devices.protocol import pskc
from firmware_sim.tokens import otp_token
from firmware_sim.tokens.otp_token import Model
from server.domain.model import CredentialKind, CredentialState, Level
from server.services.access import ApiKeys, Role
from server.storage.repositories import CredentialRepository, IdentityRepository
from server.storage.tables import Credential

from .axe import assert_accessible
from .conftest import PageFactory, WebServer
from .test_account import add_person, sign_in
from .test_reflow import sideways_overflow
from .test_targets import ax_nodes
from .webauthn import TRUSTED_ROOTS_ENV, add_virtual_authenticator, trust_virtual_keys

if TYPE_CHECKING:
    from playwright.sync_api import Page, ViewportSize

pytestmark = pytest.mark.integration

WIDE: ViewportSize = {"width": 1280, "height": 800}
NARROW: ViewportSize = {"width": 320, "height": 640}
LARGE_TEXT: ViewportSize = {"width": 640, "height": 480}
# A smartcard as its enrolment leaves it, with the longest of each: the certificate's serial
# (20 bytes) and the card's FASC-N (25 bytes), both in hex.
CARD_SERIAL = "piv:" + "7f3a" * 10
CARD_ID = "d4e739da" * 6 + "c3"

# Where each column's header, each cell (with the label it shows when the table is laid out
# as one block per row) and each action control of a table lies, and how far the page and the
# table's box scroll sideways.
_MEASURE = """(wrap) => {
    const box = wrap.getBoundingClientRect();
    const span = (element) => {
        const rect = element.getBoundingClientRect();
        return {left: rect.left, right: rect.right, width: rect.width};
    };
    const text = (element) => element.textContent.replace(/\\s+/g, " ").trim();
    const table = wrap.querySelector("table");
    const headers = [...table.querySelectorAll("thead th")].map(
        (th) => ({text: text(th), ...span(th)}));
    const cells = [];
    for (const row of table.querySelectorAll("tbody tr")) {
        [...row.children].forEach((cell, column) => {
            const label = getComputedStyle(cell, "::before").content;
            cells.push({column, label, header: cell.tagName === "TH", ...span(cell)});
        });
    }
    const actions = [...table.querySelectorAll("tbody a, tbody button")].map(
        (control) => ({text: text(control), ...span(control)}));
    return {
        box: {left: box.left, right: box.right},
        viewport: document.documentElement.clientWidth,
        page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
        table: wrap.scrollWidth - wrap.clientWidth,
        headers, cells, actions,
    };
}"""


@pytest.fixture(scope="module")
def web_server_env(roots_file: Path) -> dict[str, str]:
    return {TRUSTED_ROOTS_ENV: str(roots_file)}


@pytest.fixture(scope="module")
def operator_key(web_server: WebServer) -> str:
    keys = ApiKeys(web_server.folder / "service" / "api-keys.json")
    return keys.add("centre-tables", [Role.OPERATOR_CENTRE], "centre-1")[1]


def _ok(answer: Any) -> dict[str, Any]:
    assert answer.is_success, answer.text
    body: dict[str, Any] = answer.json()
    return body


def identity_of(seeding: TestClient, number: str) -> uuid.UUID:
    services = seeding.app.state.services  # type: ignore[attr-defined]
    with services.sessions() as session:
        identity_id: uuid.UUID = IdentityRepository(session).by_person_number(number).id
        return identity_id


def give_every_other_kind(web_server: WebServer, seeding: TestClient, identity: uuid.UUID) -> None:
    """Beside the code display and password: a key card (shipped), a USB token awaiting
    activation, an audio code reader ordered, and an active smartcard."""
    token = otp_token.new_state(Model.USB)
    with web_server.process.client() as api:
        _ok(api.post(f"/identities/{identity}/key-cards"))
        _ok(
            api.post(
                "/token-batches",
                content=pskc.write_pskc([token.pskc_key()]),
                headers={"content-type": "application/xml"},
            )
        )
        _ok(api.post(f"/identities/{identity}/tokens", json={"serial": token.serial}))
        _ok(api.post(f"/identities/{identity}/credentials", json={"kind": "audio_reader"}))
    services = seeding.app.state.services  # type: ignore[attr-defined]
    with services.sessions() as session, session.begin():
        CredentialRepository(session).add(
            Credential(
                id=uuid.uuid4(),
                identity_id=identity,
                kind=CredentialKind.PIV,
                state=CredentialState.ACTIVE,
                serial=CARD_SERIAL,
                public_data={"card_id": CARD_ID, "admitted_level": "substantial"},
            )
        )


def register_security_key(page: Page, base: str, roots_file: Path) -> None:
    """Through the self-service page, with Chromium's virtual authenticator."""
    page.goto(f"{base}/account/add/security-key")
    add_virtual_authenticator(page)
    trust_virtual_keys(page, roots_file)
    with page.expect_navigation():
        page.locator("#register-key").click()
    assert page.url == f"{base}/account", page.url


def with_large_text(page: Page) -> None:
    """The page at 640 CSS px with text at 200 %: a 1280 px screen zoomed to 200 %, as
    tests/browser/test_reflow.py lays it out (until the page is loaded again)."""
    page.set_viewport_size(LARGE_TEXT)
    page.evaluate("document.documentElement.style.fontSize = '200%'")


def assert_every_column_shown(page: Page, where: str) -> None:
    measured = page.evaluate(_MEASURE, page.locator(".table-wrap").last.element_handle())
    box: dict[str, float] = measured["box"]
    viewport: float = measured["viewport"]
    size = page.viewport_size

    def inside(item: dict[str, Any]) -> bool:
        left: float = item["left"]
        right: float = item["right"]
        return left >= max(box["left"], 0) - 0.5 and right <= min(box["right"], viewport) + 0.5

    assert measured["page"] <= 0, f"{where}: the page scrolls sideways at {size}"
    assert measured["table"] <= 0, f"{where}: the table scrolls sideways at {size}"
    headers = measured["headers"]
    stacked = all(header["width"] <= 1 for header in headers)
    if stacked:
        # One block per credential, its kind (the row's header) first: every other cell
        # shows its column's header as its label.
        for cell in (cell for cell in measured["cells"] if not cell["header"]):
            wanted = headers[cell["column"]]["text"]
            assert wanted in cell["label"], f"{where}: a cell has no label {wanted!r} at {size}"
        # Screen readers keep the table: its column headers, and cells without the labels.
        roles = [
            (node["role"]["value"], node.get("name", {}).get("value", ""))
            for node in ax_nodes(page)
        ]
        shown = [name for role, name in roles if role == "columnheader"]
        assert shown == [header["text"] for header in headers], f"{where}: headers lost"
        labelled = [
            name for role, name in roles if role == "cell" and name.startswith(tuple(shown))
        ]
        assert labelled == [], f"{where}: cells read with their labels"
    else:
        outside = [header["text"] for header in headers if not inside(header)]
        assert outside == [], f"{where}: headers outside the table at {size}"
    cells = [cell for cell in measured["cells"] if not inside(cell)]
    assert cells == [], f"{where}: cells outside the table at {size}"
    actions = [action["text"] for action in measured["actions"] if not inside(action)]
    assert measured["actions"], f"{where}: no action controls"
    assert actions == [], f"{where}: actions outside the table at {size}"


@pytest.mark.parametrize("locale", ["da-DK", "en-GB"])
def test_both_credential_tables_show_every_column_at_1280_and_320_pixels(
    new_page: PageFactory,
    web_server: WebServer,
    seeding: TestClient,
    roots_file: Path,
    operator_key: str,
    locale: str,
) -> None:
    lang = locale[:2]
    number = add_person(web_server, seeding)
    identity = identity_of(seeding, number)
    give_every_other_kind(web_server, seeding, identity)
    citizen = new_page(locale=locale, viewport=WIDE)
    sign_in(citizen, web_server.url, number)
    register_security_key(citizen, web_server.url, roots_file)
    services = seeding.app.state.services  # type: ignore[attr-defined]
    with services.sessions() as session, session.begin():
        # Proofed High since: the key counts up to Substantial, and the console offers to
        # admit it in person beside blocking and replacing it (the widest set of actions).
        IdentityRepository(session).raise_assurance(identity, Level.HIGH)

    citizen.goto(f"{web_server.url}/account")
    assert citizen.locator("tbody tr").count() == 7
    citizen_serials = sorted(citizen.locator("tbody td.long-value").all_inner_texts())
    for viewport in (WIDE, NARROW):
        citizen.set_viewport_size(viewport)
        assert_every_column_shown(citizen, f"account, {lang}")
    with_large_text(citizen)
    assert_every_column_shown(citizen, f"account, {lang}, text at 200 %")
    assert_accessible(citizen, f"account overview at 320 px, {lang}")

    operator = new_page(locale=locale, viewport=WIDE)
    operator.goto(f"{web_server.url}/console/login")
    operator.locator("#api_key").fill(operator_key)
    with operator.expect_navigation():
        operator.locator("form[action='/console/login'] button[type=submit]").click()
    operator.goto(f"{web_server.url}/console/people/{identity}")
    table = operator.locator(".table-wrap").last
    # The same serial numbers as the citizen's page (credential_display), the longest the
    # smartcard's card id, whole, not cut short.
    serials = table.locator("tbody td.long-value").all_inner_texts()
    assert sorted(serials) == citizen_serials
    assert max(len("".join(serial.split())) for serial in serials) >= 32
    for viewport in (WIDE, NARROW):
        operator.set_viewport_size(viewport)
        assert_every_column_shown(operator, f"console, {lang}")
    with_large_text(operator)
    assert_every_column_shown(operator, f"console, {lang}, text at 200 %")
    operator.set_viewport_size(NARROW)
    assert_accessible(operator, f"console person at 320 px, {lang}")

    # The key's block confirmation shows its serial as the table does, and reflows.
    row = table.locator("tbody tr").last
    serial = row.locator("td.long-value").inner_text()
    with operator.expect_navigation():
        row.locator("a[href$='/block']").click()
    assert serial in operator.locator("dl").inner_text()
    assert sideways_overflow(operator) <= 0
    assert_accessible(operator, f"console block confirmation at 320 px, {lang}")
