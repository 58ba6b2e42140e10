"""Support for the migration wizard's tests (no tests of its own): a legacy user with a password
and a key card in the app's own database, tokens in stock, and a browser that walks the steps."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import cast

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from devices.protocol import pskc
from firmware_sim.tokens import otp_token
from firmware_sim.tokens.otp_token import Model, OtpGenerator, OtpTokenState
from server.services.migration.formats import code_for, new_card_secret
from tests.unit.server.people import store_legacy_user
from tests.unit.server.web.forms import csrf_of

PASSWORD = "rabarbergrød med mælk"  # noqa: S105 - a test legacy password
NEW_PASSWORD = "Et nyt og langt kodeord 2026"  # noqa: S105 - a test password
NAME = "Tove Ditlevsen"
_serials = itertools.count(7000)
_KEY_NUMBER = re.compile(r'<strong class="code-block">(\d+)</strong>')


@dataclass
class Person:
    user_id: str
    person_number: str
    secret: bytes

    def code(self, index: str) -> str:
        return code_for(self.secret, index)


def add_person(client: TestClient) -> Person:
    """A legacy user with an active key card, in the app's own database."""
    serial = next(_serials)
    person = Person(f"nem{serial}", f"120375-{serial}", new_card_secret())
    store_legacy_user(
        cast(FastAPI, client.app),
        person.user_id,
        person.person_number,
        person.secret,
        name=NAME,
        password=PASSWORD,
    )
    return person


def stock_token(api: TestClient, model: Model = Model.DISPLAY) -> OtpTokenState:
    """A token in stock, imported as its issuer ships it (through the API, with a key)."""
    token = otp_token.new_state(model)
    kind = "audio_reader" if model is Model.AUDIO else "code_display"
    answer = api.post(
        f"/token-batches?kind={kind}",
        content=pskc.write_pskc([token.pskc_key()]),
        headers={"content-type": "application/xml"},
    )
    assert answer.status_code == 201, answer.text
    return token


def code_of(token: OtpTokenState) -> str:
    return OtpGenerator(token, lambda _: None).totp_now()


def key_number(page: httpx.Response) -> str:
    found = _KEY_NUMBER.search(page.text)
    assert found is not None, "the page shows no key number"
    return found.group(1)


class Wizard:
    """A browser walking the wizard: each step posts the form of the page it is on."""

    def __init__(self, browser: TestClient) -> None:
        self.browser = browser
        self.page: httpx.Response = browser.get("/migrate")
        self.flow = ""

    def post(self, path: str, data: dict[str, str | list[str]]) -> httpx.Response:
        answer = self.browser.post(
            path, data={"csrf": csrf_of(self.page), **data}, follow_redirects=False
        )
        if answer.status_code == 303:
            self.page = self.browser.get(answer.headers["location"])
        else:
            self.page = answer
        return answer

    def english(self) -> None:
        """Switch the pages to English, as the language link in the header does."""
        self.post("/lang", {"lang": "en", "next": "/migrate"})

    def start(self, person: Person) -> httpx.Response:
        answer = self.post("/migrate", {"user_id": person.user_id})
        assert answer.status_code == 303, answer.text
        self.flow = answer.headers["location"].rsplit("/", 1)[1]
        return answer

    def start_refused(self, person: Person) -> httpx.Response:
        return self.post("/migrate", {"user_id": person.user_id})

    def prove(
        self, person: Person, password: str = PASSWORD, code: str | None = None
    ) -> httpx.Response:
        index = key_number(self.page)
        return self.post(
            f"/migrate/{self.flow}/prove",
            {
                "user_id": person.user_id,
                "password": password,
                "code": code if code is not None else person.code(index),
            },
        )

    def confirm(self, person_number: str) -> httpx.Response:
        return self.post(
            f"/migrate/{self.flow}/confirm", {"person_number": person_number, "name": NAME}
        )

    def choose(self, *kinds: str) -> httpx.Response:
        return self.post(f"/migrate/{self.flow}/choose", {"kinds": list(kinds)})

    def activate(self, serial: str, code: str, password: str = NEW_PASSWORD) -> httpx.Response:
        return self.post(
            f"/migrate/{self.flow}/activate",
            {"serial": serial, "code": code, "password": password},
        )

    def complete(self) -> httpx.Response:
        return self.post(f"/migrate/{self.flow}/complete", {})
