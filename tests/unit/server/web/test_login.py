"""The login pages without script: a provider's login from the person number to the return
URL, step-up, failures, more time, the binding of a login to the browser that opened it, and
the citizen's sign-in to self-service."""

from __future__ import annotations

import base64
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from devices.protocol.otp import totp
from firmware_sim.tokens.piv_attestation import PivManufacturer
from server.app import create_app
from server.services.access import Role
from server.services.authentication import MAX_EXTENSIONS
from server.services.piv.card import enrol_message, login_message
from server.services.secretbox import SecretBox
from server.settings import Settings
from server.storage.repositories import IdentityRepository
from server.storage.tables import AuthTransaction
from server.web.browser import COOKIE
from tests.unit.server.conftest import ORIGIN, make_key
from tests.unit.server.people import SEED, seed_person_with_code_display
from tests.unit.server.web.forms import (
    Page,
    csrf_of,
    lang_of,
    login_of,
    self_service_login,
    text_of,
)

PERSON = "010190-1234"
PASSWORD = "correct horse battery staple"  # noqa: S105 - a test password
PROVIDER = "https://sp.example"
RETURN = "https://sp.example/back?x=1"
WRONG = "not it"


@pytest.fixture
def app_and_key(settings: Settings) -> tuple[Any, dict[str, str]]:
    return create_app(settings), make_key(settings, PROVIDER, Role.SUPERVISOR, Role.PROVIDER)


@pytest.fixture
def browser(app_and_key: tuple[Any, dict[str, str]], settings: Settings) -> Iterator[TestClient]:
    """A browser without script, on an app holding one person with a code display and a
    password."""
    app, key = app_and_key
    with TestClient(app, base_url=ORIGIN, raise_server_exceptions=False) as client:
        identity = seed_person_with_code_display(
            app.state.services.sessions, SecretBox.from_file(settings.kek_file)
        )
        answer = client.put(
            f"/identities/{identity}/password", json={"password": PASSWORD}, headers=key
        )
        assert answer.status_code == 200, answer.text
        yield client


@pytest.fixture
def key(app_and_key: tuple[Any, dict[str, str]]) -> dict[str, str]:
    return app_and_key[1]


@pytest.fixture
def other_browser(app_and_key: tuple[Any, dict[str, str]]) -> Iterator[TestClient]:
    """Another browser (its own cookie jar) on the same service."""
    with TestClient(app_and_key[0], base_url=ORIGIN, raise_server_exceptions=False) as client:
        yield client


def begin(client: TestClient, key: dict[str, str], level: str = "low", **extra: Any) -> str:
    answer = client.post("/authentications", json={"min_level": level, **extra}, headers=key)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["login_url"] == f"/login/{body['id']}"
    return str(body["id"])


def post(client: TestClient, path: str, **data: str) -> httpx.Response:
    """Submit a form of the page at ``path`` (its CSRF token read from the page first)."""
    token = csrf_of(client.get(path))
    return client.post(path, data={"csrf": token, **data}, follow_redirects=False)


def identify(client: TestClient, transaction: str, person: str = PERSON) -> None:
    answer = post(client, f"/login/{transaction}", person_number=person)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == f"/login/{transaction}/choose"


def complete(client: TestClient, key: dict[str, str], transaction: str) -> httpx.Response:
    return client.post(f"/authentications/{transaction}/complete", headers=key)


# --- a whole login ---


def test_password_and_code_login_steps_up_and_returns_to_the_provider(
    browser: TestClient, key: dict[str, str]
) -> None:
    transaction = begin(browser, key, "substantial", return_url=RETURN)
    first = browser.get(f"/login/{transaction}")
    assert first.status_code == 200
    assert lang_of(first) == "da"
    text = text_of(first)
    assert "CPR-nummer" in text
    assert "https://sp.example beder dig logge på" in text
    assert "Tjenesten kræver sikringsniveau Betydelig." in text
    assert "Trin 1 af 3" in text or "1 af 3" in text
    identify(browser, transaction)

    choice = browser.get(f"/login/{transaction}/choose")
    assert "Adgangskode" in text_of(choice)
    assert "Nøglekort" in text_of(choice)
    chosen = post(browser, f"/login/{transaction}/choose", method="password")
    assert chosen.headers["location"] == f"/login/{transaction}/password"
    page = browser.get(f"/login/{transaction}/password")
    assert 'autocomplete="current-password"' in page.text
    done = post(browser, f"/login/{transaction}/password", password=PASSWORD)
    assert done.headers["location"] == f"/login/{transaction}/choose"

    # Level low so far: the page says so and offers the credentials not used yet.
    step_up = browser.get(f"/login/{transaction}/choose")
    text = text_of(step_up)
    assert "sikringsniveau Lav" in text
    assert "kræver niveau Betydelig" in text
    assert 'value="password"' not in step_up.text
    assert 'value="code"' in step_up.text
    assert complete(browser, key, transaction).status_code == 403  # not yet

    code_page = browser.get(f"/login/{transaction}/code")
    assert 'autocomplete="one-time-code"' in code_page.text
    assert "/speech/da/guide.audio_reader.wav" in code_page.text
    assert "kodeoplæser" in text_of(code_page).lower()
    answered = post(browser, f"/login/{transaction}/code", code=totp(SEED, time.time()))
    assert answered.headers["location"] == f"/login/{transaction}/choose"
    onwards = browser.get(f"/login/{transaction}/choose", follow_redirects=False)
    assert onwards.headers["location"] == f"/login/{transaction}/done"
    # Not a redirect: the code's form led here, and a form may go to this service only (the
    # CSP's form-action), so the page links back to the provider (and its script follows).
    back = browser.get(f"/login/{transaction}/done", follow_redirects=False)
    assert back.status_code == 200
    assert "form-action 'self'" in back.headers["content-security-policy"]
    link = f'href="https://sp.example/back?x=1&amp;transaction={transaction}" data-follow'
    assert link in back.text
    assert "Fortsæt til https://sp.example" in text_of(back)

    assertion = complete(browser, key, transaction)
    assert assertion.status_code == 200, assertion.text
    assert assertion.json()["level"] == "substantial"


def test_without_a_return_url_the_page_says_the_window_may_close(
    browser: TestClient, key: dict[str, str]
) -> None:
    browser.cookies.set("akk_lang", "en")
    transaction = begin(browser, key)
    identify(browser, transaction)
    post(browser, f"/login/{transaction}/password", password=PASSWORD)
    done = browser.get(f"/login/{transaction}/done")
    assert done.status_code == 200
    assert lang_of(done) == "en"
    assert "You may close this window" in text_of(done)


def test_the_same_list_of_credentials_whether_or_not_the_person_exists(
    browser: TestClient, other_browser: TestClient, key: dict[str, str]
) -> None:
    known, unknown = begin(browser, key), begin(other_browser, key)
    identify(browser, known)
    identify(other_browser, unknown, "020202-4321")
    mine = _choice_form(browser.get(f"/login/{known}/choose").text)
    theirs = _choice_form(other_browser.get(f"/login/{unknown}/choose").text)
    assert 'value="smartcard"' in mine
    assert mine == theirs


def _choice_form(html: str) -> str:
    """The list of credentials, without what differs between any two logins."""
    found = re.search(r'<form method="post" action="/login/[^/]+/choose".*?</form>', html, re.S)
    assert found is not None
    return re.sub(r'name="csrf" value="[^"]+"', "", found.group(0)).split("/choose", 1)[1]


# --- failures ---


def test_a_malformed_person_number_is_shown_at_the_field(
    browser: TestClient, key: dict[str, str]
) -> None:
    transaction = begin(browser, key)
    answer = post(browser, f"/login/{transaction}", person_number="12ab")
    assert answer.status_code == 400
    assert 'aria-invalid="true"' in answer.text
    assert 'href="#person_number"' in answer.text  # the error summary links to the field
    assert text_of(answer).startswith("Fejl:")  # the title says it first


def test_a_wrong_password_is_announced_and_the_same_for_an_unknown_person(
    browser: TestClient, other_browser: TestClient, key: dict[str, str]
) -> None:
    known, unknown = begin(browser, key), begin(other_browser, key)
    identify(browser, known)
    identify(other_browser, unknown, "020202-4321")
    wrong = post(browser, f"/login/{known}/password", password=WRONG)
    nobody = post(other_browser, f"/login/{unknown}/password", password=WRONG)
    assert wrong.status_code == nobody.status_code == 401
    message = "Adgangskoden blev ikke godkendt"
    assert message in text_of(wrong)
    assert message in text_of(nobody)
    assert 'id="password-error"' in wrong.text
    assert "forsøg tilbage" not in text_of(wrong)  # the service does not tell tries left


def test_too_many_failures_from_one_place_say_so(browser: TestClient, key: dict[str, str]) -> None:
    transaction = begin(browser, key)
    identify(browser, transaction)
    statuses = [
        post(browser, f"/login/{transaction}/code", code="000000").status_code for _ in range(21)
    ]
    assert statuses[0] == 401
    assert statuses[-1] == 429
    last = post(browser, f"/login/{transaction}/code", code="000000")
    assert "For mange forsøg" in text_of(last)


def test_an_empty_field_is_an_error_without_using_a_try(
    browser: TestClient, key: dict[str, str]
) -> None:
    transaction = begin(browser, key)
    identify(browser, transaction)
    answer = post(browser, f"/login/{transaction}/code", code="")
    assert answer.status_code == 400
    assert "Skriv koden fra dit loginmiddel" in text_of(answer)


def pairing_of(answer: Page) -> str:
    """The pairing code a smartcard page shows on its own."""
    found = re.search(r'id="pairing-code"><strong>([A-Z2-7-]+)</strong>', answer.text)
    assert found is not None, answer.text
    return found.group(1)


def test_the_smartcard_page_shows_the_command_and_rechecks(
    browser: TestClient, other_browser: TestClient, key: dict[str, str]
) -> None:
    transaction = begin(browser, key, "high")
    identify(browser, transaction)
    shown = browser.get(f"/login/{transaction}/smartcard")
    code = pairing_of(shown)
    command = f"akkreditiv devices piv login --url {ORIGIN} --transaction {transaction}"
    assert f"{command} --pairing {code}" in text_of(shown)
    assert "Parringskoden" in text_of(shown)
    # The code is this browser's: the same on every page of it, another browser's differs.
    assert pairing_of(browser.get(f"/login/{transaction}/smartcard")) == code
    elsewhere = begin(other_browser, key, "high")
    identify(other_browser, elsewhere, "020202-4321")
    assert pairing_of(other_browser.get(f"/login/{elsewhere}/smartcard")) != code
    again = post(browser, f"/login/{transaction}/smartcard")
    assert again.status_code == 400
    assert "endnu ikke modtaget" in text_of(again)


def test_the_key_card_page_names_the_key_number(browser: TestClient, key: dict[str, str]) -> None:
    transaction = begin(browser, key)
    identify(browser, transaction)
    shown = text_of(browser.get(f"/login/{transaction}/key-card"))
    assert "Find nøglenummer" in shown
    assert "på dit nøglekort" in shown


def test_the_security_key_page_carries_request_options(
    browser: TestClient, key: dict[str, str]
) -> None:
    transaction = begin(browser, key)
    identify(browser, transaction)
    shown = browser.get(f"/login/{transaction}/security-key").text
    assert 'data-webauthn="get"' in shown
    assert '"challenge"' in shown
    assert "/static/webauthn.js" in shown
    refused = post(browser, f"/login/{transaction}/security-key", credential="{}")
    assert refused.status_code == 401


# --- more time and expiry ---


def test_more_time_extends_the_login_ten_times(browser: TestClient, key: dict[str, str]) -> None:
    transaction = begin(browser, key)
    before = browser.get(f"/login/{transaction}")
    assert "Jeg har brug for mere tid" in text_of(before)
    for _ in range(MAX_EXTENSIONS):
        token = csrf_of(browser.get(f"/login/{transaction}"))
        answer = browser.post(
            f"/login/{transaction}/extend",
            data={"csrf": token, "next": f"/login/{transaction}"},
            follow_redirects=False,
        )
        assert answer.headers["location"] == f"/login/{transaction}"
        assert "fået mere tid" in text_of(browser.get(f"/login/{transaction}"))
    assert "Jeg har brug for mere tid" not in text_of(browser.get(f"/login/{transaction}"))
    with browser.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        row = session.scalars(
            select(AuthTransaction).where(AuthTransaction.id == uuid.UUID(transaction))
        ).one()
        assert (row.expires_at - row.created_at).total_seconds() == (1 + MAX_EXTENSIONS) * 600
    assert MAX_EXTENSIONS >= 10  # WCAG 2.2.1: a time limit can be extended at least ten times
    refused = browser.post(
        f"/login/{transaction}/extend",
        data={"csrf": csrf_of(browser.get("/")), "next": "/"},
        follow_redirects=False,
    )
    assert refused.status_code == 303
    assert "ikke få mere tid" in text_of(browser.get("/"))


def test_an_expired_login_gets_a_clear_page(browser: TestClient, key: dict[str, str]) -> None:
    transaction = begin(browser, key)
    sessions = browser.app.state.services.sessions  # type: ignore[attr-defined]
    with sessions() as session, session.begin():
        session.execute(
            update(AuthTransaction)
            .where(AuthTransaction.id == uuid.UUID(transaction))
            .values(expires_at=AuthTransaction.created_at)
        )
    answer = browser.get(f"/login/{transaction}")
    assert answer.status_code == 410
    text = text_of(answer)
    assert "Tiden til dit login hos https://sp.example er gået" in text
    # No return URL to go back to: the person is told to start again at the provider.
    assert "Gå tilbage til https://sp.example, og start et nyt login derfra" in text


# --- the binding to one browser ---


def test_a_second_browser_cannot_take_over_a_login(
    browser: TestClient, other_browser: TestClient, key: dict[str, str]
) -> None:
    transaction = begin(browser, key)
    identify(browser, transaction)
    elsewhere = other_browser.get(f"/login/{transaction}/password")
    assert elsewhere.status_code == 409
    assert "startet i en anden browser" in text_of(elsewhere)
    # Its forms are refused too (with its own valid CSRF token).
    token = csrf_of(other_browser.get("/"))
    tried = other_browser.post(
        f"/login/{transaction}/password",
        data={"csrf": token, "password": PASSWORD},
        follow_redirects=False,
    )
    assert tried.status_code == 409
    extended = other_browser.post(
        f"/login/{transaction}/extend", data={"csrf": token}, follow_redirects=False
    )
    assert extended.status_code == 409
    # So are the API's own factor endpoints: the login belongs to the browser.
    api = browser.post(f"/authentications/{transaction}/password", json={"password": PASSWORD})
    assert api.status_code == 409
    assert complete(browser, key, transaction).status_code == 403
    # The right browser finishes it; then the provider completes.
    post(browser, f"/login/{transaction}/password", password=PASSWORD)
    assert complete(browser, key, transaction).status_code == 200


def enrol_software_card(
    client: TestClient, key: dict[str, str]
) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key in this process standing in for a card's: enrolled through the API (the
    proof of possession, the simulated card vendor's attestation, which the test service
    trusts, and the certificate the service CA issues), as the card program does."""
    with client.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        identity = IdentityRepository(session).by_person_number(PERSON).id
    card_key = ec.generate_private_key(ec.SECP256R1())
    begun = client.post(f"/identities/{identity}/piv/enrol/begin", headers=key)
    assert begun.status_code == 201, begun.text
    state = uuid.UUID(begun.json()["state_id"])
    message = enrol_message(state, base64.b64decode(begun.json()["challenge"]))
    public = card_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    done = client.post(
        f"/piv/enrolments/{state}/complete",
        headers=key,
        json={
            "public_key": _b64(public),
            "signature": _b64(card_key.sign(message, ec.ECDSA(hashes.SHA256()))),
            "card_id": "00112233445566778899aabbccddeeff",
            **_attested(card_key.public_key()),
        },
    )
    assert done.status_code == 201, done.text
    return card_key, str(done.json()["certificate"])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _attested(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    leaf, intermediate = PivManufacturer.load_or_create().attest(public_key, serial=1)
    return {
        "attestation": _b64(leaf.public_bytes(Encoding.DER)),
        "attestation_intermediate": _b64(intermediate.public_bytes(Encoding.DER)),
    }


def test_a_browser_login_goes_on_with_a_smartcard_paired_by_the_code(
    browser: TestClient, other_browser: TestClient, key: dict[str, str]
) -> None:
    """The card program is another client: a login this browser opened refuses its steps
    without the code the smartcard page shows, and takes them with it (PIV only)."""
    card_key, certificate = enrol_software_card(browser, key)
    transaction = begin(browser, key, "substantial", return_url=RETURN)
    identify(browser, transaction)
    code = pairing_of(browser.get(f"/login/{transaction}/smartcard"))
    program = other_browser  # its own cookies, none of this browser's
    piv = f"/authentications/{transaction}/piv"

    refused = program.post(f"{piv}/begin")
    assert refused.status_code == 409
    assert refused.json()["type"].endswith(":login-bound-elsewhere")
    assert program.post(f"{piv}/begin", json={"pairing": "AAAA-AAAA-AAAA"}).status_code == 409
    assert program.post(f"{piv}/begin", json={"pairing": "<script>x</script>"}).status_code == 422
    begun = program.post(f"{piv}/begin", json={"pairing": code.replace("-", "").lower()})
    assert begun.status_code == 200, begun.text
    # What the card's program shows before the card signs: this browser's login, paired.
    assert begun.json()["service_provider_name"] == PROVIDER
    assert begun.json()["level"] == "substantial"
    assert begun.json()["paired_with_browser"] is True
    message = login_message(
        uuid.UUID(transaction), base64.b64decode(begun.json()["challenge"]), ORIGIN
    )
    signed = {
        "certificate": certificate,
        "signature": _b64(card_key.sign(message, ec.ECDSA(hashes.SHA256()))),
        "origin": ORIGIN,
    }
    assert program.post(piv, json=signed).status_code == 409  # the signature, without the code
    assert program.post(piv, json={**signed, "pairing": "AAAA-AAAA-AAAA"}).status_code == 409
    # Only the device factor run outside the browser takes a code.
    with_code = {"password": PASSWORD, "pairing": code}
    assert program.post(f"/authentications/{transaction}/password", json=with_code).status_code == (
        422
    )
    assert complete(browser, key, transaction).status_code == 403

    accepted = program.post(piv, json={**signed, "pairing": code})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["factors"] == ["piv"]
    # The person presses "I have used my card": the level is reached, back to the provider.
    token = csrf_of(browser.get("/"))  # the smartcard page itself now leads on to the end
    onwards = browser.post(
        f"/login/{transaction}/smartcard", data={"csrf": token}, follow_redirects=False
    )
    assert onwards.headers["location"] == f"/login/{transaction}/done"
    back = browser.get(f"/login/{transaction}/done", follow_redirects=False)
    assert f'href="https://sp.example/back?x=1&amp;transaction={transaction}"' in back.text
    assertion = complete(browser, key, transaction)
    assert assertion.status_code == 200, assertion.text
    assert assertion.json()["level"] == "substantial"


def test_every_login_form_needs_the_csrf_token(browser: TestClient, key: dict[str, str]) -> None:
    transaction = begin(browser, key)
    browser.get(f"/login/{transaction}")
    answer = browser.post(
        f"/login/{transaction}", data={"person_number": PERSON}, follow_redirects=False
    )
    assert answer.status_code == 403


def test_return_url_must_be_https_or_local(browser: TestClient, key: dict[str, str]) -> None:
    for bad in ("http://sp.example/", "javascript:alert(1)", "/relative", "https://u@sp.example/"):
        answer = browser.post(
            "/authentications", json={"min_level": "low", "return_url": bad}, headers=key
        )
        assert answer.status_code == 422, bad
    assert begin(browser, key, return_url="http://localhost:9000/back")


# --- self-service ---


def test_citizen_signs_in_to_self_service_and_the_session_rotates(browser: TestClient) -> None:
    browser.get("/")
    before = browser.cookies.get(COOKIE)
    first = browser.get("/account/login?next=/account/security", follow_redirects=False)
    assert first.status_code == 200
    assert "akkreditivs selvbetjening" in text_of(first)
    assert "Trin 1 af 3" in text_of(first)
    chosen = self_service_login(browser, PERSON, "?next=/account/security")
    transaction = login_of(chosen)
    assert str(chosen.url).endswith(f"/login/{transaction}/choose")
    assert "Adgangskode" in text_of(chosen)
    post(browser, f"/login/{transaction}/password", password=PASSWORD)
    post(browser, f"/login/{transaction}/code", code=totp(SEED, time.time()))
    done = browser.get(f"/login/{transaction}/done", follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == "/account/security"
    after = browser.cookies.get(COOKIE)
    assert after is not None
    assert after != before  # session fixation: a new token after the sign-in
    again = browser.get("/account/login", follow_redirects=False)
    assert again.headers["location"] == "/account"  # signed in already


def test_a_smartcard_for_self_service_is_shown_the_self_services_name(
    browser: TestClient, other_browser: TestClient
) -> None:
    transaction = login_of(self_service_login(browser, PERSON))
    code = pairing_of(browser.get(f"/login/{transaction}/smartcard"))

    begun = other_browser.post(f"/authentications/{transaction}/piv/begin", json={"pairing": code})

    assert begun.status_code == 200, begun.text
    assert begun.json()["service_provider"] == "akkreditiv-self-service"
    assert begun.json()["service_provider_name"] == "akkreditiv self-service"
    assert begun.json()["level"] == "substantial"
    assert begun.json()["paired_with_browser"] is True


def test_self_service_next_must_be_local(browser: TestClient) -> None:
    transaction = login_of(self_service_login(browser, PERSON, "?next=https://evil.example/"))
    post(browser, f"/login/{transaction}/password", password=PASSWORD)
    post(browser, f"/login/{transaction}/code", code=totp(SEED, time.time()))
    done = browser.get(f"/login/{transaction}/done", follow_redirects=False)
    assert done.headers["location"] == "/account"


def test_self_service_next_with_control_characters_is_dropped(browser: TestClient) -> None:
    transaction = login_of(self_service_login(browser, PERSON, "?next=/account/%00x%0d%0a"))
    post(browser, f"/login/{transaction}/password", password=PASSWORD)
    post(browser, f"/login/{transaction}/code", code=totp(SEED, time.time()))
    done = browser.get(f"/login/{transaction}/done", follow_redirects=False)
    assert done.headers["location"] == "/account"


def test_english_pages(browser: TestClient, key: dict[str, str]) -> None:
    browser.cookies.set("akk_lang", "en")
    transaction = begin(browser, key)
    first = browser.get(f"/login/{transaction}")
    assert lang_of(first) == "en"
    assert "CPR number" in text_of(first)
    identify(browser, transaction)
    assert "Which credential do you want to use?" in text_of(
        browser.get(f"/login/{transaction}/choose")
    )
