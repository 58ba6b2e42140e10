"""Self-service pages: the overview, adding a code display or audio code reader, a security
key's registration form, the smartcard page, blocking, replacing and the password; each change
audited with the citizen as actor, refused without the form's CSRF token, and confined to the
citizen's own credentials. The browser signs in through the real login pages."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from devices.protocol import pskc
from devices.protocol.otp import totp
from firmware_sim.tokens import otp_token
from firmware_sim.tokens.otp_token import Model, OtpGenerator, OtpTokenState
from server.domain.model import CredentialState
from server.services.access import Role
from server.services.credentials import CredentialService
from server.services.errors import WrongPassword
from server.services.piv.enrolment import enrolment_code
from server.services.secretbox import SecretBox
from server.settings import Settings
from server.storage.tables import AuditEntry, Credential
from server.web.browser import COOKIE
from tests.unit.server.conftest import ORIGIN, make_key
from tests.unit.server.people import PERSON_STORED, SEED, seed_person_with_code_display
from tests.unit.server.test_piv_api import complete_with_code, enrol_card, keyless, new_card
from tests.unit.server.web.forms import (
    csrf_of,
    lang_of,
    login_of,
    self_service_login,
    text_of,
)

PASSWORD = "correct horse battery staple"  # noqa: S105 - a test person's password
OTHER_PERSON = "020290-2345"


class Person:
    """A citizen with a password and an active code display, and the app's API as an
    operator would use it to prepare devices."""

    def __init__(self, browser: TestClient, api: dict[str, str]) -> None:
        self.browser = browser
        self.api = api
        sessions = browser.app.state.services.sessions  # type: ignore[attr-defined]
        self.sessions = sessions
        kek = browser.app.state.settings.kek_file  # type: ignore[attr-defined]
        self.identity_id = seed_person_with_code_display(sessions, SecretBox.from_file(kek))
        answer = browser.put(
            f"/identities/{self.identity_id}/password", json={"password": PASSWORD}, headers=api
        )
        assert answer.status_code == 200, answer.text

    def credentials(self, identity_id: uuid.UUID | None = None) -> list[Credential]:
        with self.sessions() as session:
            rows = session.scalars(
                select(Credential).where(
                    Credential.identity_id == (identity_id or self.identity_id)
                )
            )
            return list(rows)

    def audit(self, event: str) -> list[AuditEntry]:
        with self.sessions() as session:
            return list(session.scalars(select(AuditEntry).where(AuditEntry.event == event)))

    def import_token(self, model: Model = Model.DISPLAY) -> OtpTokenState:
        token = otp_token.new_state(model)
        document = pskc.write_pskc([token.pskc_key()])
        answer = self.browser.post(
            "/token-batches",
            content=document,
            headers={**self.api, "content-type": "application/xml"},
        )
        assert answer.status_code == 201, answer.text
        return token


def sign_in(browser: TestClient, next_path: str = "/account") -> Any:
    """Sign in through the login pages with the password and the code display's code."""
    answer = self_service_login(browser, PERSON_STORED, f"?next={next_path}")
    assert answer.status_code == 200, answer.text
    base = f"/login/{login_of(answer)}"
    answer = browser.post(
        f"{base}/password",
        data={"csrf": csrf_of(answer), "password": PASSWORD},
        follow_redirects=True,
    )
    assert answer.status_code == 200, text_of(answer)
    answer = browser.post(
        f"{base}/code",
        data={"csrf": csrf_of(answer), "code": totp(SEED, time.time())},
        follow_redirects=True,
    )
    assert answer.status_code == 200, text_of(answer)
    assert str(answer.url).endswith(next_path), answer.url
    return answer


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The shared settings, with the PIV CA's files in the test's folder."""
    return settings.model_copy(
        update={
            "piv_ca_key_file": tmp_path / "piv" / "ca-key.pem",
            "piv_ca_cert_file": tmp_path / "piv" / "ca.pem",
        }
    )


@pytest.fixture
def api_key(settings: Settings) -> dict[str, str]:
    return make_key(settings, "operator", Role.SUPERVISOR)


@pytest.fixture
def person(browser: TestClient, api_key: dict[str, str]) -> Person:
    return Person(browser, api_key)


@pytest.fixture
def signed_in(browser: TestClient, person: Person) -> Person:
    sign_in(browser)
    return person


def grouped(card_id: str) -> str:
    """A card's id as the pages show it: in groups of four, to read out on the phone."""
    return " ".join(card_id[i : i + 4] for i in range(0, len(card_id), 4))


def code_of(token: OtpTokenState) -> str:
    return OtpGenerator(token, lambda _: None).next_code()


def credential(person: Person, credential_id: uuid.UUID) -> Credential:
    return next(c for c in person.credentials() if c.id == credential_id)


def code_display(person: Person) -> Credential:
    return next(c for c in person.credentials() if c.serial == "1000000001")


def error_at(answer: Any, field: str) -> str:
    """The error text shown at ``field`` (and linked from the error summary)."""
    assert f'href="#{field}"' in answer.text, "the error summary does not link to the field"
    found = re.search(rf'id="{field}-error">(.*?)</p>', answer.text, re.S)
    assert found is not None, f"no error at {field}"
    # The control (or its fieldset) is tied to the error, so a screen reader reads it there.
    tied = re.search(rf'aria-describedby="[^"]*\b{field}-error\b', answer.text)
    assert tied is not None, f"nothing is described by the error at {field}"
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


def other_persons_password(person: Person) -> uuid.UUID:
    """Another citizen, with an active password: a credential id that is not the signed-in
    citizen's."""
    enrolled = person.browser.post(
        "/identities",
        json={
            "person_number": OTHER_PERSON,
            "name": "Other Person",
            "proofing": {"channel": "self_service", "document_kind": "passport_chip"},
        },
        headers=person.api,
    )
    assert enrolled.status_code == 201, enrolled.text
    other = uuid.UUID(enrolled.json()["id"])
    answer = person.browser.put(
        f"/identities/{other}/password", json={"password": PASSWORD}, headers=person.api
    )
    assert answer.status_code == 200, answer.text
    return uuid.UUID(answer.json()["id"])


# --- the overview -------------------------------------------------------------------------------


def test_overview_needs_a_signed_in_citizen(browser: TestClient) -> None:
    answer = browser.get("/account", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/account/login?next=/account"


def test_overview_lists_the_citizens_credentials_in_both_languages(
    browser: TestClient, signed_in: Person
) -> None:
    answer = browser.get("/account")
    assert answer.status_code == 200
    assert lang_of(answer) == "da"
    text = text_of(answer)
    assert "<caption>De loginmidler, du logger på med</caption>" in answer.text
    assert "Test Person" in text
    assert "Din identitet er bekræftet på niveau Betydelig" in text
    assert "Kodeviser 1000000001 Aktiv" in text
    assert "Adgangskode Intet Aktiv" in text
    device = code_display(signed_in)
    assert f'href="/account/credentials/{device.id}/block"' in answer.text
    assert 'href="/account/password"' in answer.text
    switched = browser.post(
        "/lang",
        data={"csrf": csrf_of(answer), "lang": "en", "next": "/account"},
        follow_redirects=True,
    )
    assert lang_of(switched) == "en"
    text = text_of(switched)
    assert "<title>Your credentials \u2013 akkreditiv</title>" in switched.text
    assert "Code display 1000000001 Active" in text
    assert "Block (Code display 1000000001)" in text
    assert "Change password (Password)" in text


def test_the_add_page_offers_every_kind(browser: TestClient, signed_in: Person) -> None:
    answer = browser.get("/account/add")
    for path in ("code-display", "audio-reader", "security-key", "smartcard"):
        assert f'href="/account/add/{path}"' in answer.text
    # The person has a password already: the page does not offer another.
    assert 'href="/account/password"' not in answer.text


# --- code display and audio code reader ---------------------------------------------------------


def test_a_code_display_is_activated_with_its_serial_and_code(
    browser: TestClient, signed_in: Person
) -> None:
    token = signed_in.import_token()
    form = browser.get("/account/add/code-display")
    assert 'autocomplete="one-time-code"' in form.text
    assert 'inputmode="numeric"' in form.text
    data = {"csrf": csrf_of(form), "serial": token.serial, "code": code_of(token)}
    # One code display per person: a second one is refused, and nothing is assigned.
    refused = browser.post("/account/add/code-display", data=data)
    assert refused.status_code == 400
    assert "Du har allerede en kodeviser" in error_at(refused, "serial")
    assert all(c.serial != token.serial for c in signed_in.credentials())
    # Without the old one it works.
    device = code_display(signed_in)
    with signed_in.sessions() as session, session.begin():
        old = session.get(Credential, device.id)
        assert old is not None
        old.state = CredentialState.REVOKED  # as a service centre revoking it would leave it
    answer = browser.post("/account/add/code-display", data=data, follow_redirects=False)
    assert answer.status_code == 303, text_of(answer)
    assert answer.headers["location"] == "/account"
    shown = browser.get("/account")
    assert f"Din kodeviser {token.serial} er aktiv" in text_of(shown)
    new = next(c for c in signed_in.credentials() if c.serial == token.serial)
    assert new.state is CredentialState.ACTIVE
    actor = f"citizen:{signed_in.identity_id}"
    (activated,) = signed_in.audit("credential.activated")
    assert activated.actor == actor
    assert activated.details["credential_id"] == str(new.id)
    assigned = signed_in.audit("credential.assigned")
    assert [entry.actor for entry in assigned] == [actor]


def test_an_audio_reader_cannot_be_active_beside_a_code_display(
    browser: TestClient, signed_in: Person
) -> None:
    token = signed_in.import_token(Model.AUDIO)
    form = browser.get("/account/add/audio-reader")
    data = {"csrf": csrf_of(form), "serial": token.serial, "code": code_of(token)}
    refused = browser.post("/account/add/audio-reader", data=data)
    assert refused.status_code == 400
    assert "spær kodeviseren først" in error_at(refused, "serial")
    device = code_display(signed_in)
    browser.post(
        f"/account/credentials/{device.id}/block", data={"csrf": csrf_of(form), "reason": "lost"}
    )
    # The reader waits for the person (assigned): the same serial and a new code finish it.
    data["code"] = code_of(token)
    answer = browser.post("/account/add/audio-reader", data=data, follow_redirects=True)
    assert f"Din kodeoplæser {token.serial} er aktiv" in text_of(answer)


def test_wrong_and_missing_codes_are_shown_at_their_fields_and_counted(
    browser: TestClient, signed_in: Person
) -> None:
    token = signed_in.import_token(Model.AUDIO)
    form = browser.get("/account/add/audio-reader")
    device = code_display(signed_in)
    browser.post(
        f"/account/credentials/{device.id}/block", data={"csrf": csrf_of(form), "reason": "lost"}
    )
    empty = browser.post("/account/add/audio-reader", data={"csrf": csrf_of(form)})
    assert empty.status_code == 400
    assert "<title>Fejl: Aktivér en kodeoplæser" in empty.text
    assert error_at(empty, "serial") == "Fejl: Skriv kodeoplæserens serienummer."
    assert error_at(empty, "code") == "Fejl: Skriv den kode, kodeoplæseren læser op nu."
    letters = browser.post(
        "/account/add/audio-reader",
        data={"csrf": csrf_of(form), "serial": token.serial, "code": "12ab56"},
    )
    assert "kun indeholde cifre" in error_at(letters, "code")
    unknown = browser.post(
        "/account/add/audio-reader",
        data={"csrf": csrf_of(form), "serial": "no-such-serial", "code": "123456"},
    )
    assert "Vi kan ikke finde en kodeoplæser" in error_at(unknown, "serial")
    right = code_of(token)
    wrong = f"{(int(right) + 500_000) % 1_000_000:06d}"
    answer = browser.post(
        "/account/add/audio-reader",
        data={"csrf": csrf_of(form), "serial": token.serial, "code": wrong},
    )
    assert answer.status_code == 400
    assert "Koden blev ikke godkendt" in error_at(answer, "code")
    assert f'value="{token.serial}"' in answer.text  # what was typed is kept
    pending = next(c for c in signed_in.credentials() if c.serial == token.serial)
    assert pending.state is CredentialState.ACTIVATION_PENDING
    assert pending.failures == 1
    (failed,) = signed_in.audit("credential.activation_failed")
    assert failed.actor == f"citizen:{signed_in.identity_id}"
    # The overview offers to finish the activation.
    assert f"/account/add/audio-reader?serial={token.serial}" in browser.get("/account").text


def test_the_audio_reader_page_gives_its_guidance_as_text_and_speech(
    browser: TestClient, signed_in: Person
) -> None:
    answer = browser.get("/account/add/audio-reader")
    assert "Tryk på den store runde knap på din kodeoplæser" in text_of(answer)
    assert 'href="/speech/da/guide.audio_reader.wav"' in answer.text


# --- security key and smartcard -----------------------------------------------------------------


def test_the_security_key_form_follows_the_webauthn_contract(
    browser: TestClient, signed_in: Person
) -> None:
    answer = browser.get("/account/add/security-key")
    assert answer.status_code == 200
    assert 'data-webauthn="create"' in answer.text
    assert '<script src="/static/webauthn.js" defer></script>' in answer.text
    options = re.search(
        r'<script type="application/json" class="webauthn-options">(.*?)</script>', answer.text
    )
    assert options is not None
    public_key = json.loads(options.group(1))["publicKey"]
    assert public_key["rp"]["id"] == "localhost"
    assert "<noscript>" in answer.text
    (begun,) = signed_in.audit("fido2.registration_begun")
    assert begun.actor == f"citizen:{signed_in.identity_id}"


def test_a_security_key_form_without_the_keys_answer_is_refused(
    browser: TestClient, signed_in: Person
) -> None:
    form = browser.get("/account/add/security-key")
    for credential_json in ("", "not json", "[1]"):
        answer = browser.post(
            "/account/add/security-key",
            data={"csrf": csrf_of(form), "credential": credential_json},
        )
        assert answer.status_code == 400
        assert "Vi fik ikke svar fra din sikkerhedsnøgle" in error_at(answer, "register-key")
        form = answer
    assert all(c.kind.value != "fido2" for c in signed_in.credentials())


def test_a_registration_begun_in_another_session_cannot_be_completed_here(
    browser: TestClient, signed_in: Person, settings: Settings
) -> None:
    """The state id lives in the browser's own session, never in the form: a posted state id
    is ignored and the page asks for the key again."""
    form = browser.get("/account/add/security-key")
    answer = browser.post(
        "/account/add/security-key",
        data={"csrf": csrf_of(form), "credential": "{}", "state_id": str(uuid.uuid4())},
    )
    assert answer.status_code == 400
    refused = signed_in.audit("fido2.registration_refused")
    assert [entry.actor for entry in refused] == [f"citizen:{signed_in.identity_id}"]


def test_the_smartcard_page_shows_the_enrol_command_and_the_enrolled_card(
    browser: TestClient, signed_in: Person, tmp_path: Path
) -> None:
    answer = browser.get("/account/add/smartcard")
    command = f"akkreditiv devices piv enrol --url {ORIGIN} --enrolment "
    assert command in text_of(answer)
    assert "Der er ikke tilmeldt noget chipkort endnu." in text_of(answer)
    folder = tmp_path / "cards"
    folder.mkdir()
    card = new_card(folder)
    api = TestClient(browser.app, headers=signed_in.api)  # as the card reader program calls it
    enrolled = enrol_card(api, str(signed_in.identity_id), card)
    again = browser.get("/account/add/smartcard")
    card_id = enrolled["credential"]["public_data"]["card_id"]
    assert card_id == card.chuid().serial
    assert f"Kort {grouped(card_id)}: Aktiv" in text_of(again)


# --- block and replace --------------------------------------------------------------------------


def test_blocking_asks_why_and_says_what_happens_next(
    browser: TestClient, signed_in: Person
) -> None:
    device = code_display(signed_in)
    form = browser.get(f"/account/credentials/{device.id}/block")
    assert form.status_code == 200
    assert "<legend>Hvorfor vil du spærre det?</legend>" in form.text
    assert "Du kan bestille et nyt lige bagefter" in text_of(form)
    missing = browser.post(f"/account/credentials/{device.id}/block", data={"csrf": csrf_of(form)})
    assert missing.status_code == 400
    assert "Vælg, hvorfor du vil spærre" in error_at(missing, "reason-lost")
    assert credential(signed_in, device.id).state is CredentialState.ACTIVE
    answer = browser.post(
        f"/account/credentials/{device.id}/block",
        data={"csrf": csrf_of(form), "reason": "paused"},
        follow_redirects=True,
    )
    assert "1000000001 er spærret." in text_of(answer)
    assert credential(signed_in, device.id).state is CredentialState.BLOCKED
    (changed,) = signed_in.audit("credential.state_changed")
    assert changed.actor == f"citizen:{signed_in.identity_id}"
    assert changed.details["to"] == "blocked"
    # Blocked: the overview offers a replacement, and it cannot be blocked twice.
    assert f"/account/credentials/{device.id}/replace" in answer.text
    assert browser.get(f"/account/credentials/{device.id}/block").status_code == 409


def test_a_blocked_code_display_is_replaced_by_one_at_hand(
    browser: TestClient, signed_in: Person
) -> None:
    device = code_display(signed_in)
    token = signed_in.import_token()
    form = browser.get(f"/account/credentials/{device.id}/block")
    browser.post(
        f"/account/credentials/{device.id}/block", data={"csrf": csrf_of(form), "reason": "lost"}
    )
    form = browser.get(f"/account/credentials/{device.id}/replace")
    assert form.status_code == 200
    unknown = browser.post(
        f"/account/credentials/{device.id}/replace",
        data={"csrf": csrf_of(form), "serial": "no-such-serial"},
    )
    assert unknown.status_code == 400
    assert "Vi kan ikke finde en ny enhed" in error_at(unknown, "serial")
    assert credential(signed_in, device.id).state is CredentialState.LOST  # nothing half done
    answer = browser.post(
        f"/account/credentials/{device.id}/replace",
        data={"csrf": csrf_of(form), "serial": token.serial},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/account/add/code-display?serial={token.serial}"
    assert credential(signed_in, device.id).state is CredentialState.REPLACED
    (replaced,) = signed_in.audit("credential.replaced")
    assert replaced.actor == f"citizen:{signed_in.identity_id}"
    activate = browser.get(answer.headers["location"])
    assert f'value="{token.serial}"' in activate.text
    done = browser.post(
        "/account/add/code-display",
        data={"csrf": csrf_of(activate), "serial": token.serial, "code": code_of(token)},
        follow_redirects=False,
    )
    assert done.status_code == 303


def test_a_replacement_without_a_serial_is_ordered(browser: TestClient, signed_in: Person) -> None:
    device = code_display(signed_in)
    form = browser.get(f"/account/credentials/{device.id}/block")
    browser.post(
        f"/account/credentials/{device.id}/block", data={"csrf": csrf_of(form), "reason": "lost"}
    )
    answer = browser.post(
        f"/account/credentials/{device.id}/replace",
        data={"csrf": csrf_of(form), "serial": ""},
        follow_redirects=True,
    )
    assert "Et nyt er på vej til dig med posten." in text_of(answer)
    assert "Kodeviser Intet Bestilt" in text_of(answer)


def test_an_active_credential_cannot_be_replaced(browser: TestClient, signed_in: Person) -> None:
    device = code_display(signed_in)
    assert browser.get(f"/account/credentials/{device.id}/replace").status_code == 409


def test_another_persons_credential_is_not_found(browser: TestClient, signed_in: Person) -> None:
    theirs = other_persons_password(signed_in)
    form = browser.get("/account")
    token = csrf_of(form)
    for path, data in (
        (f"/account/credentials/{theirs}/block", {"csrf": token, "reason": "lost"}),
        (f"/account/credentials/{theirs}/replace", {"csrf": token}),
        (f"/account/credentials/{uuid.uuid4()}/block", {"csrf": token, "reason": "lost"}),
    ):
        assert browser.get(path).status_code == 404
        answer = browser.post(path, data=data)
        assert answer.status_code == 404
        assert "Vi kunne ikke finde siden" in text_of(answer)
    (other,) = signed_in.credentials(credential_id_owner(signed_in, theirs))
    assert other.state is CredentialState.ACTIVE
    assert signed_in.audit("credential.state_changed") == []


def credential_id_owner(person: Person, credential_id: uuid.UUID) -> uuid.UUID:
    with person.sessions() as session:
        row = session.get(Credential, credential_id)
        assert row is not None
        return row.identity_id


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/account/add/code-display", {"serial": "x", "code": "123456"}),
        ("/account/password", {"current_password": PASSWORD, "new_password": "a new long one!"}),
        ("block", {"reason": "lost"}),
        ("/account/add/security-key", {"credential": "{}"}),
    ],
)
def test_forms_without_the_sessions_csrf_token_are_refused(
    browser: TestClient, signed_in: Person, path: str, data: dict[str, str]
) -> None:
    device = code_display(signed_in)
    if path == "block":
        path = f"/account/credentials/{device.id}/block"
    for csrf in (None, "wrong"):
        sent = dict(data) if csrf is None else {**data, "csrf": csrf}
        answer = browser.post(path, data=sent)
        assert answer.status_code == 403
        assert "Formularen var udløbet" in text_of(answer)
    forged = browser.post(
        path,
        data={**data, "csrf": csrf_of(browser.get("/account"))},
        headers={"origin": "https://evil.example"},
    )
    assert forged.status_code == 403
    assert credential(signed_in, device.id).state is CredentialState.ACTIVE
    assert signed_in.audit("password.changed") == []
    assert signed_in.audit("credential.assigned") == []


# --- password -----------------------------------------------------------------------------------


def test_the_password_is_changed_with_the_current_one(
    browser: TestClient, signed_in: Person
) -> None:
    form = browser.get("/account/password")
    assert 'autocomplete="current-password"' in form.text
    assert 'autocomplete="new-password"' in form.text
    assert "Mindst 12 og højst 256 tegn" in text_of(form)
    assert re.search(r'id="new_password"[^>]*aria-describedby="new_password-hint"', form.text)
    wrong = browser.post(
        "/account/password",
        data={"csrf": csrf_of(form), "current_password": "not it", "new_password": "x" * 20},
    )
    assert wrong.status_code == 400
    assert "Den nuværende adgangskode er forkert" in error_at(wrong, "current_password")
    short = browser.post(
        "/account/password",
        data={"csrf": csrf_of(form), "current_password": PASSWORD, "new_password": "kort"},
    )
    assert "Brug mindst 12 tegn" in error_at(short, "new_password")
    repeated = browser.post(
        "/account/password",
        data={"csrf": csrf_of(form), "current_password": PASSWORD, "new_password": "a" * 20},
    )
    assert "det samme tegn gentaget" in error_at(repeated, "new_password")
    assert "a" * 20 not in repeated.text  # a typed password is never sent back
    new = "seven wobbly lanterns hum"
    answer = browser.post(
        "/account/password",
        data={"csrf": csrf_of(form), "current_password": PASSWORD, "new_password": new},
        follow_redirects=True,
    )
    assert "Din adgangskode er gemt." in text_of(answer)
    (changed,) = signed_in.audit("password.changed")
    assert changed.actor == f"citizen:{signed_in.identity_id}"
    services = browser.app.state.services  # type: ignore[attr-defined]
    with signed_in.sessions() as session:
        check = CredentialService(
            session, services.secrets, services.passwords, clock=services.clock
        )
        check.check_password(signed_in.identity_id, new)
        with pytest.raises(WrongPassword):
            check.check_password(signed_in.identity_id, PASSWORD)


def test_password_errors_in_english(browser: TestClient, signed_in: Person) -> None:
    form = browser.get("/account/password", headers={"accept-language": "en"})
    switched = browser.post(
        "/lang",
        data={"csrf": csrf_of(form), "lang": "en", "next": "/account/password"},
        follow_redirects=True,
    )
    answer = browser.post("/account/password", data={"csrf": csrf_of(switched)})
    assert lang_of(answer) == "en"
    assert "<title>Error: Change your password" in answer.text
    assert error_at(answer, "new_password") == "Error: Enter a new password."


# --- a smartcard enrolled by the citizen ----------------------------------------------------------

_COMMAND = re.compile(
    r"akkreditiv devices piv enrol --url (\S+) --enrolment ([0-9a-f-]{36}) "
    r"--code ([A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4})"
)


def shown_enrolment(answer: Any) -> tuple[uuid.UUID, str]:
    """The enrolment and code the smartcard page shows: in the command and, the code, on its
    own line."""
    assert answer.status_code == 200, text_of(answer)
    found = _COMMAND.search(answer.text)
    assert found is not None, text_of(answer)
    assert found.group(1) == ORIGIN
    code = found.group(3)
    assert re.search(rf'id="enrolment-code">[^<]*<strong>{code}</strong>', answer.text)
    return uuid.UUID(found.group(2)), code


def test_the_citizen_enrols_a_card_with_the_pages_code_and_no_api_key(
    browser: TestClient, signed_in: Person, tmp_path: Path
) -> None:
    state_id, code = shown_enrolment(browser.get("/account/add/smartcard"))
    begun = signed_in.audit("piv.enrolment_begun")
    assert [(e.actor, e.details["state_id"]) for e in begun] == [
        (f"citizen:{signed_in.identity_id}", str(state_id))
    ]
    # Opened again while it can still be used, the page shows the same command.
    assert shown_enrolment(browser.get("/account/add/smartcard")) == (state_id, code)
    folder = tmp_path / "cards"
    folder.mkdir()
    card = new_card(folder)

    with keyless(browser) as program:
        done = complete_with_code(program, state_id, code.lower().replace("-", ""), card)

    assert done.status_code == 201, done.text
    again = browser.get("/account/add/smartcard")
    assert f"Kort {grouped(card.chuid().serial)}: Aktiv" in text_of(again)
    # That enrolment is spent: the page begins a fresh one for another card.
    fresh, fresh_code = shown_enrolment(again)
    assert fresh != state_id
    assert fresh_code != code
    issued = signed_in.audit("piv.certificate_issued")
    assert [e.actor for e in issued] == [f"citizen:{signed_in.identity_id}"]


def test_another_browsers_code_does_not_complete_this_pages_enrolment(
    browser: TestClient, signed_in: Person, tmp_path: Path
) -> None:
    state_id, code = shown_enrolment(browser.get("/account/add/smartcard"))
    token = browser.cookies.get(COOKIE)
    assert token is not None
    # The code is this browser's: derived from its session's binding, not from the id alone.
    binding = hashlib.sha256(b"akkreditiv-login-binding\x00" + token.encode()).hexdigest()
    assert code == enrolment_code(state_id, binding)
    other_code = enrolment_code(state_id, hashlib.sha256(b"another browser").hexdigest())
    folder = tmp_path / "cards"
    folder.mkdir()

    with keyless(browser) as program:
        refused = complete_with_code(
            program, state_id, code, new_card(folder), sent_code=other_code
        )

    assert refused.status_code == 401, refused.text
    assert not [c for c in signed_in.credentials() if c.kind.value == "piv"]
    # The refused enrolment is spent; the page shows a new command.
    assert shown_enrolment(browser.get("/account/add/smartcard"))[0] != state_id


def test_an_expired_enrolment_is_begun_afresh(browser: TestClient, signed_in: Person) -> None:
    from server.storage.tables import AuthTransaction

    state_id, _ = shown_enrolment(browser.get("/account/add/smartcard"))
    with signed_in.sessions() as session, session.begin():
        row = session.get(AuthTransaction, state_id)
        assert row is not None
        row.expires_at = row.created_at  # its five minutes are over

    fresh, _ = shown_enrolment(browser.get("/account/add/smartcard"))

    assert fresh != state_id


def test_the_smartcard_page_says_when_no_more_cards_fit_in_english(
    browser: TestClient, signed_in: Person, tmp_path: Path
) -> None:
    folder = tmp_path / "cards"
    folder.mkdir()
    api = TestClient(browser.app, headers=signed_in.api)
    enrol_card(api, str(signed_in.identity_id), new_card(folder))
    enrol_card(api, str(signed_in.identity_id), new_card(folder))
    switched = browser.post(
        "/lang",
        data={"csrf": csrf_of(browser.get("/account")), "lang": "en", "next": "/account"},
        follow_redirects=True,
    )
    assert lang_of(switched) == "en"

    answer = browser.get("/account/add/smartcard")

    assert answer.status_code == 200
    assert lang_of(answer) == "en"
    assert "You already have as many smartcards as you can have." in text_of(answer)
    assert "piv enrol" not in answer.text
    assert text_of(answer).count(": Active, added") == 2
