"""One name and one identifier per credential: the same credential shows the same kind, the
same identifier and the same state on the citizen's /account and on the operator's page of the
person, in both languages, for every kind; the operator finds it by what the citizen reads
out."""

from __future__ import annotations

import html
import re
import uuid

import pytest
from fastapi.testclient import TestClient

from server.domain.model import CredentialKind, CredentialState
from server.services.access import Role
from server.settings import Settings
from server.storage.repositories import CredentialRepository
from server.storage.tables import Credential
from server.web.credential_display import identifier, matches
from tests.unit.server.conftest import make_key
from tests.unit.server.web import test_console as console
from tests.unit.server.web.forms import csrf_of, text_of
from tests.unit.server.web.test_account import Person, sign_in

K, S = CredentialKind, CredentialState
FIDO2_SERIAL = "fido2:4a011deb" + "5c" * 28  # "fido2:" and a SHA-256 in hex
CARD_ID = "00112233445566778899aabbccddeeff"  # the card's CHUID, as piv status prints it
CERTIFICATE_SERIAL = "piv:" + "7e" * 20  # the serial of the certificate on that card

# Every kind, as (kind, stored serial, state, public data); the person also has a password and
# the code display 1000000001 (``Person``).
ADDED = [
    (K.AUDIO_READER, "2000000002", S.ACTIVATION_PENDING, {}),
    (K.OTP_TOKEN, "cccccbtest01", S.ACTIVE, {}),
    (K.OTP_TOKEN, "cccccbtest02", S.SHIPPED, {}),
    (K.OTP_TOKEN, None, S.ORDERED, {}),
    (K.FIDO2, FIDO2_SERIAL, S.ACTIVE, {}),
    (K.PIV, CERTIFICATE_SERIAL, S.ACTIVE, {"card_id": CARD_ID}),
    (K.KEY_CARD, "KC0123456789", S.LOST, {}),
]
# What both pages must show: (kind, identifier, state) in each language, written out here
# rather than computed, so a change of any of them shows.
SHOWN = {
    "da": {
        ("Adgangskode", "Intet", "Aktiv"),
        ("Kodeviser", "1000000001", "Aktiv"),
        ("Kodeoplæser", "2000000002", "Venter på aktivering"),
        ("USB-kodenøgle", "cccccbtest01", "Aktiv"),
        ("USB-kodenøgle", "cccccbtest02", "Sendt"),
        ("USB-kodenøgle", "Intet", "Bestilt"),
        ("Sikkerhedsnøgle", "4a01 1deb", "Aktiv"),
        ("Chipkort", "0011 2233 4455 6677 8899 aabb ccdd eeff", "Aktiv"),
        ("Nøglekort", "KC0123456789", "Spærret som mistet"),
    },
    "en": {
        ("Password", "None", "Active"),
        ("Code display", "1000000001", "Active"),
        ("Audio code reader", "2000000002", "Waiting for activation"),
        ("USB code token", "cccccbtest01", "Active"),
        ("USB code token", "cccccbtest02", "Sent"),
        ("USB code token", "None", "Ordered"),
        ("Security key", "4a01 1deb", "Active"),
        ("Smartcard", "0011 2233 4455 6677 8899 aabb ccdd eeff", "Active"),
        ("Key card", "KC0123456789", "Blocked as lost"),
    },
}
# How the two sides named them before: none of it may come back.
NOT_SHOWN = ["fido2:", "4A011DEB", "7e7e7e7e", "USB-nøgle med engangskode", "one-time code token"]

_ROW = re.compile(r"<tr>(.*?)</tr>", re.DOTALL)
_CELL = re.compile(r"<t[hd][^>]*>(.*?)</t[hd]>", re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_HIDDEN = re.compile(r'<span class="visually-hidden">.*?</span>', re.DOTALL)


def rows(page: str) -> list[list[str]]:
    """Each table row of ``page`` as the texts of its cells (what is hidden from sight left
    out), whatever the order of the columns."""
    return [
        [
            " ".join(html.unescape(_TAG.sub(" ", _HIDDEN.sub("", cell))).split())
            for cell in _CELL.findall(row)
        ]
        for row in _ROW.findall(page)
    ]


def shown(page: str, kind: str, serial: str, state: str) -> bool:
    """Whether one row of the page has the kind, the identifier and the state, each a cell."""
    return any({kind, serial, state} <= set(cells) for cells in rows(page))


def unshown(page: str, lang: str) -> list[tuple[str, str, str]]:
    return sorted(entry for entry in SHOWN[lang] if not shown(page, *entry))


@pytest.fixture
def person(browser: TestClient, settings: Settings) -> Person:
    """A citizen with a credential of every kind, in the states whose names used to differ."""
    person = Person(browser, make_key(settings, "operator", Role.SUPERVISOR))
    with person.sessions() as session, session.begin():
        repository = CredentialRepository(session)
        for kind, serial, state, public_data in ADDED:
            repository.add(
                Credential(
                    identity_id=person.identity_id,
                    kind=kind,
                    state=state,
                    serial=serial,
                    public_data=public_data,
                )
            )
    return person


def pages(browser: TestClient, settings: Settings, person: Person) -> dict[str, dict[str, str]]:
    """The citizen's /account and the operator's page of the person, in each language."""
    sign_in(browser)
    citizen = {}
    for lang in ("da", "en"):
        browser.cookies.set("akk_lang", lang)
        citizen[lang] = browser.get("/account").text
    console.signed_in(browser, settings, "supervisor", Role.SUPERVISOR)
    operator = {}
    for lang in ("da", "en"):
        browser.cookies.set("akk_lang", lang)
        operator[lang] = browser.get(f"/console/people/{person.identity_id}").text
    return {"citizen": citizen, "operator": operator}


def test_every_kind_has_one_name_and_one_identifier_on_both_sides_in_both_languages(
    browser: TestClient, settings: Settings, person: Person
) -> None:
    seen = pages(browser, settings, person)
    for side, by_lang in seen.items():
        for lang, page in by_lang.items():
            assert f'lang="{lang}"' in page, (side, lang)
            assert unshown(page, lang) == [], f"{side} ({lang}) does not show these rows"
            text = " ".join(html.unescape(_TAG.sub(" ", page)).split())
            assert [old for old in NOT_SHOWN if old in text] == [], (side, lang)


def test_the_block_page_and_its_message_name_the_credential_as_the_table_does(
    browser: TestClient, settings: Settings, person: Person
) -> None:
    sign_in(browser)
    key = next(c for c in person.credentials() if c.kind is K.FIDO2)
    form = browser.get(f"/account/credentials/{key.id}/block")
    assert "Du er ved at spærre: Sikkerhedsnøgle 4a01 1deb." in text_of(form)
    done = browser.post(
        f"/account/credentials/{key.id}/block",
        data={"csrf": csrf_of(form), "reason": "lost"},
        follow_redirects=True,
    )
    assert "Sikkerhedsnøgle 4a01 1deb er spærret som mistet." in text_of(done)


# --- the operator finds what the citizen reads out ---------------------------------------------


def find(browser: TestClient, identity_id: uuid.UUID, sought: str) -> tuple[int, str]:
    answer = browser.get(f"/console/people/{identity_id}", params={"credential": sought})
    return answer.status_code, text_of(answer)


@pytest.mark.parametrize(
    ("sought", "found"),
    [
        ("4A01 1DEB", "Sikkerhedsnøgle 4a01 1deb (Aktiv)"),  # read out, typed in capitals
        ("4a011deb", "Sikkerhedsnøgle 4a01 1deb (Aktiv)"),  # without the space
        (FIDO2_SERIAL, "Sikkerhedsnøgle 4a01 1deb (Aktiv)"),  # the API's serial
        ("ccdd eeff", "Chipkort 0011 2233 4455 6677 8899 aabb ccdd eeff (Aktiv)"),  # a part
        ("KC 0123-456789", "Nøglekort KC0123456789 (Spærret som mistet)"),
        (
            "cccccbtest0",
            "USB-kodenøgle cccccbtest01 (Aktiv); USB-kodenøgle cccccbtest02 (Sendt)",
        ),
    ],
)
def test_the_operator_finds_the_credential_by_what_the_citizen_reads_out(
    browser: TestClient, settings: Settings, person: Person, sought: str, found: str
) -> None:
    console.signed_in(browser, settings, "supervisor", Role.SUPERVISOR)
    status, text = find(browser, person.identity_id, sought)
    assert status == 200
    assert f"Passer med: {found}." in text


def test_a_number_nobody_has_or_too_little_of_one_is_told(
    browser: TestClient, settings: Settings, person: Person
) -> None:
    console.signed_in(browser, settings, "supervisor", Role.SUPERVISOR)
    status, text = find(browser, person.identity_id, "9999 0000")
    assert status == 200
    assert "Ingen af personens loginmidler har et serienummer med »9999 0000«" in text
    status, text = find(browser, person.identity_id, "4a ")
    assert status == 422
    assert text.startswith("Fejl:")
    assert "Skriv mindst 4 bogstaver eller cifre af serienummeret." in text


# --- the identifier itself ----------------------------------------------------------------------


def credential(kind: CredentialKind, serial: str | None, **public_data: object) -> Credential:
    return Credential(kind=kind, state=S.ACTIVE, serial=serial, public_data=public_data)


def test_a_card_is_named_by_its_card_id_never_by_its_certificate() -> None:
    assert identifier(credential(K.PIV, CERTIFICATE_SERIAL, card_id=CARD_ID.upper())) == (
        "0011 2233 4455 6677 8899 aabb ccdd eeff"
    )
    # A card enrolled before card ids were kept has no identifier to read out.
    assert identifier(credential(K.PIV, CERTIFICATE_SERIAL)) is None


def test_devices_keep_the_serial_printed_on_them_and_passwords_have_none() -> None:
    assert identifier(credential(K.CODE_DISPLAY, "1000000001")) == "1000000001"
    assert identifier(credential(K.OTP_TOKEN, None)) is None
    assert identifier(credential(K.PASSWORD, "password")) is None
    assert identifier(credential(K.FIDO2, FIDO2_SERIAL)) == "4a01 1deb"


def test_finding_needs_four_letters_or_digits_and_ignores_case_and_spacing() -> None:
    key = credential(K.FIDO2, FIDO2_SERIAL)
    assert matches(key, "4A-01 1d")
    assert not matches(key, "4a0")  # too little to tell one credential from another
    assert not matches(key, "1deb 4a01")
    assert not matches(credential(K.PASSWORD, None), "pass")
