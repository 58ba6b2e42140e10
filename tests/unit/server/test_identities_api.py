"""The identity and credential API on SQLite (and PostgreSQL where it behaves differently):
enrolment, problem+json answers, PSKC import from the simulator, activation with the simulator's
codes, block and replace, and garbage bodies that must answer 4xx, never 500."""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from devices.protocol import pskc
from firmware_sim.tokens import otp_token
from firmware_sim.tokens.otp_token import Model, OtpGenerator, OtpTokenState
from tests.unit.server.conftest import BOTH_DATABASES, SQLITE_ONLY
from tests.unit.server.people import PROBLEM, assert_problem, second_operator_approves

pytestmark = SQLITE_ONLY  # and BOTH_DATABASES where marked (see the conftest)

_numbers = itertools.count(2000)


def enrolment(person_number: str | None = None, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "person_number": person_number or f"020385-{next(_numbers)}",
        "name": "Tove Ditlevsen",
        "proofing": {"channel": "self_service", "document_kind": "passport_chip"},
    }
    body.update(changes)
    return body


def enrol(client: TestClient, **changes: Any) -> dict[str, Any]:
    answer = client.post("/identities", json=enrolment(**changes))
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def import_tokens(client: TestClient, *tokens: OtpTokenState) -> list[dict[str, Any]]:
    document = pskc.write_pskc([token.pskc_key() for token in tokens])
    answer = client.post(
        "/token-batches", content=document, headers={"content-type": "application/xml"}
    )
    assert answer.status_code == 201, answer.text
    body: list[dict[str, Any]] = answer.json()["tokens"]
    return body


def code_of(token: OtpTokenState) -> str:
    return OtpGenerator(token, lambda _: None).next_code()


# --- identities -----------------------------------------------------------------------------


@BOTH_DATABASES
def test_enrol_answers_201_with_a_masked_person_number(client: TestClient) -> None:
    body = enrol(client, person_number="0203851234")
    assert body["person_number"] == "020385-****"
    assert body["identity_assurance"] == "substantial"
    assert body["status"] == "active"
    assert body["proofing"][0]["channel"] == "self_service"
    uuid.UUID(body["id"])
    got = client.get(f"/identities/{body['id']}", params={"provider": "sp.example"})
    assert got.status_code == 200
    assert got.json()["person_number"] == "020385-****"
    pseudonym = got.json()["pseudonym"]
    assert pseudonym["provider"] == "sp.example"
    assert pseudonym["pseudonym"] != body["id"]
    assert "1234" not in got.text


@BOTH_DATABASES
def test_second_enrolment_answers_409_without_the_person_number(client: TestClient) -> None:
    enrol(client, person_number="020385-4321")
    answer = client.post("/identities", json=enrolment("020385-4321"))
    assert_problem(answer, 409, "duplicate-person-number")
    assert "4321" not in answer.text
    assert "020385" not in answer.text


@pytest.mark.parametrize("number", ["310285-1234", "021385-1234", "02038-51234", "abc"])
def test_invalid_person_number_answers_a_problem(client: TestClient, number: str) -> None:
    answer = client.post("/identities", json=enrolment(number))
    assert_problem(answer, 400, "invalid-person-number")
    assert number not in answer.text


def test_high_assurance_in_person_with_two_operators(client: TestClient) -> None:
    proofing = {
        "channel": "service_centre",
        "document_kind": "passport",
        "operator_ids": ["staff-1"],
    }
    answer = client.post("/identities", json=enrolment(proofing=proofing, level="high"))
    assert_problem(answer, 422, "insufficient-proofing")
    proofing["operator_ids"] = ["staff-1", "staff-2"]
    # Two names typed by one key give no High: it waits for a second key's approval.
    body = enrol(client, proofing=proofing, level="high")
    assert body["identity_assurance"] == "substantial"
    assert second_operator_approves(client, body)["identity_assurance"] == "high"


def test_suspend_resume_close(client: TestClient) -> None:
    identity = enrol(client)["id"]
    assert client.post(f"/identities/{identity}/suspend").json()["status"] == "suspended"
    assert_problem(client.post(f"/identities/{identity}/suspend"), 409, "invalid-transition")
    assert client.post(f"/identities/{identity}/resume").json()["status"] == "active"
    assert client.post(f"/identities/{identity}/close").json()["status"] == "closed"
    assert_problem(client.post(f"/identities/{identity}/resume"), 409, "invalid-transition")
    assert_problem(client.get(f"/identities/{uuid.uuid4()}"), 404, "identity-not-found")


# --- tokens ---------------------------------------------------------------------------------


def test_pskc_import_assign_and_activate_with_the_simulator(client: TestClient) -> None:
    token = otp_token.new_state(Model.DISPLAY)
    (imported,) = import_tokens(client, token)
    assert imported["state"] == "shipped"
    assert imported["identity_id"] is None
    assert imported["kind"] == "code_display"
    assert token.secret.hex() not in str(imported)
    identity = enrol(client)["id"]
    assigned = client.post(f"/identities/{identity}/tokens", json={"serial": token.serial})
    assert assigned.status_code == 200, assigned.text
    credential = assigned.json()
    assert credential["state"] == "activation_pending"
    activated = client.post(
        f"/credentials/{credential['id']}/activate", json={"code": code_of(token)}
    )
    assert activated.status_code == 200, activated.text
    assert activated.json()["state"] == "active"
    listed = client.get(f"/identities/{identity}/credentials").json()
    assert [c["state"] for c in listed] == ["active"]


@BOTH_DATABASES
def test_pskc_import_with_a_pre_shared_key(client: TestClient) -> None:
    psk = os.urandom(16)
    token = otp_token.new_state(Model.USB)
    document = pskc.write_pskc([token.pskc_key()], psk=psk)
    refused = client.post("/token-batches", content=document)
    assert_problem(refused, 400, "invalid-token-batch")
    wrong = client.post("/token-batches", content=document, headers={"X-PSKC-Key": "zz"})
    assert_problem(wrong, 400, "invalid-token-batch")
    answer = client.post("/token-batches", content=document, headers={"X-PSKC-Key": psk.hex()})
    assert answer.status_code == 201, answer.text
    assert answer.json()["tokens"][0]["kind"] == "otp_token"
    assert "private_id" not in answer.json()["tokens"][0]["public_data"]
    assert token.private_id.hex() not in answer.text
    again = client.post("/token-batches", content=document, headers={"X-PSKC-Key": psk.hex()})
    assert_problem(again, 409, "duplicate-serial")


@BOTH_DATABASES
def test_wrong_activation_codes_count_and_block(client: TestClient) -> None:
    token = otp_token.new_state(Model.DISPLAY)
    import_tokens(client, token)
    identity = enrol(client)["id"]
    credential = client.post(f"/identities/{identity}/tokens", json={"serial": token.serial})
    path = f"/credentials/{credential.json()['id']}"
    right = code_of(token)
    wrong = f"{(int(right) + 500_000) % 1_000_000:06d}"
    for _ in range(3):
        assert_problem(
            client.post(f"{path}/activate", json={"code": wrong}), 400, "activation-code-rejected"
        )
    assert client.get(path).json()["state"] == "blocked"
    assert_problem(client.post(f"{path}/activate", json={"code": right}), 409, "invalid-transition")


@BOTH_DATABASES
def test_block_and_replace_a_code_display(client: TestClient) -> None:
    first, second = otp_token.new_state(Model.DISPLAY), otp_token.new_state(Model.DISPLAY)
    import_tokens(client, first, second)
    identity = enrol(client)["id"]
    old = client.post(f"/identities/{identity}/tokens", json={"serial": first.serial}).json()
    path = f"/credentials/{old['id']}"
    assert client.post(f"{path}/activate", json={"code": code_of(first)}).status_code == 200
    # The second display cannot join while the first one holds the identity's place.
    assert_problem(
        client.post(f"/identities/{identity}/tokens", json={"serial": second.serial}),
        409,
        "credential-limit-reached",
    )
    assert client.post(f"{path}/state", json={"state": "blocked"}).json()["state"] == "blocked"
    assert_problem(
        client.post(f"{path}/state", json={"state": "active"}), 409, "invalid-transition"
    )
    replaced = client.post(f"{path}/replace", json={"serial": second.serial})
    assert replaced.status_code == 201, replaced.text
    new = replaced.json()
    assert new["id"] != old["id"]
    assert new["state"] == "activation_pending"
    assert client.get(path).json()["state"] == "replaced"
    assert_problem(
        client.post(f"{path}/state", json={"state": "revoked"}), 409, "invalid-transition"
    )
    activated = client.post(f"/credentials/{new['id']}/activate", json={"code": code_of(second)})
    assert activated.json()["state"] == "active"


def test_audio_reader_cannot_be_active_with_a_code_display(client: TestClient) -> None:
    display, reader = otp_token.new_state(Model.DISPLAY), otp_token.new_state(Model.AUDIO)
    import_tokens(client, display, reader)
    identity = enrol(client)["id"]
    one = client.post(f"/identities/{identity}/tokens", json={"serial": display.serial}).json()
    client.post(f"/credentials/{one['id']}/activate", json={"code": code_of(display)})
    two = client.post(f"/identities/{identity}/tokens", json={"serial": reader.serial}).json()
    answer = client.post(f"/credentials/{two['id']}/activate", json={"code": code_of(reader)})
    assert_problem(answer, 409, "conflicting-credential")


@BOTH_DATABASES
def test_password_set_and_change(client: TestClient) -> None:
    identity = enrol(client)["id"]
    path = f"/identities/{identity}/password"
    first = client.put(path, json={"password": "correct horse battery staple"})
    assert first.status_code == 200, first.text
    assert first.json()["kind"] == "password"
    assert "argon2" not in first.text.replace('"hash":"argon2id"', "")
    assert_problem(client.put(path, json={"password": "another passphrase"}), 401, "wrong-password")
    changed = client.put(
        path,
        json={"password": "another passphrase", "current_password": "correct horse battery staple"},
    )
    assert changed.status_code == 200
    assert changed.json()["id"] == first.json()["id"]
    assert_problem(client.put(path, json={"password": "x"}), 401, "wrong-password")


@BOTH_DATABASES
def test_credential_limits_answer_409(client: TestClient) -> None:
    identity = enrol(client)["id"]
    for _ in range(2):
        answer = client.post(f"/identities/{identity}/credentials", json={"kind": "piv"})
        assert answer.status_code == 201
        assert answer.json()["state"] == "ordered"
    assert_problem(
        client.post(f"/identities/{identity}/credentials", json={"kind": "piv"}),
        409,
        "credential-limit-reached",
    )


# --- garbage ----------------------------------------------------------------------------------

_ID = "00000000-0000-4000-8000-000000000001"
ENDPOINTS = [
    ("POST", "/identities"),
    ("POST", f"/identities/{_ID}/credentials"),
    ("PUT", f"/identities/{_ID}/password"),
    ("POST", f"/identities/{_ID}/tokens"),
    ("POST", "/token-batches"),
    ("POST", f"/credentials/{_ID}/activate"),
    ("POST", f"/credentials/{_ID}/state"),
    ("POST", f"/credentials/{_ID}/replace"),
]
GARBAGE: list[bytes] = [
    b"",
    b"{",
    b"null",
    b"[]",
    b"42",
    b'"text"',
    b'{"unexpected": true}',
    b"\x00\xff\xfe garbage",
    b'{"person_number": 123, "name": ["x"], "proofing": "self"}',
    b'{"person_number": "020385-1234", "name": "nul\\u0000name", '
    b'"proofing": {"channel": "bank", "document_kind": "passport", "operator_ids": ["\\u0000"]}}',
    b'{"kind": "teleporter", "serial": "\\u0000", "code": 1e999, "state": "exploded"}',
    b'{"password": null, "serial": "' + b"9" * 500 + b'", "code": "' + b"1" * 100 + b'"}',
    b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'a'>]><x>&a;</x>",
    b"<KeyContainer xmlns='urn:ietf:params:xml:ns:keyprov:pskc' Version='1.0'/>",
    b"[" * 5000 + b"]" * 5000,
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_garbage_bodies_answer_4xx_never_500(client: TestClient, method: str, path: str) -> None:
    for body in GARBAGE:
        for content_type in ("application/json", "application/xml"):
            answer = client.request(
                method, path, content=body, headers={"content-type": content_type}
            )
            assert 400 <= answer.status_code < 500, (body[:40], answer.status_code, answer.text)
            assert answer.headers["content-type"] == PROBLEM


@BOTH_DATABASES
def test_garbage_on_existing_records_answers_4xx(client: TestClient) -> None:
    token = otp_token.new_state(Model.DISPLAY)
    import_tokens(client, token)
    identity = enrol(client)["id"]
    credential = client.post(f"/identities/{identity}/tokens", json={"serial": token.serial})
    paths = [
        ("POST", f"/identities/{identity}/credentials"),
        ("PUT", f"/identities/{identity}/password"),
        ("POST", f"/identities/{identity}/tokens"),
        ("POST", f"/credentials/{credential.json()['id']}/activate"),
        ("POST", f"/credentials/{credential.json()['id']}/state"),
        ("POST", f"/credentials/{credential.json()['id']}/replace"),
    ]
    for (method, path), body in itertools.product(paths, GARBAGE):
        answer = client.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
        assert 400 <= answer.status_code < 500, (path, body[:40], answer.status_code, answer.text)
    weird = client.get(f"/identities/{identity}", params={"provider": "\x00" * 10})
    assert weird.status_code < 500
    assert client.get("/identities/not-a-uuid").status_code == 422
