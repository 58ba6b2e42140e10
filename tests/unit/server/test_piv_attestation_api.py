"""A smartcard is a key generated on a card: enrolment over HTTP takes a key only with the card
vendor's attestation of it (Yubico's PIV attestation, simulated), so a phished session cannot
enrol a software key as a "smartcard" and log in with it alone at level High."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from devices.protocol.piv import DEFAULT_PIN, AttestedKey, PinPolicy, Slot
from firmware_sim.tokens.piv_attestation import PivManufacturer, attestation_certificate
from server.app import create_app
from server.services.piv.attestation import CardKeyNotAttested, verify_card_key
from server.services.piv.card import enrol_message
from server.services.piv.enrolment import code_challenge
from server.settings import Settings
from tests.unit.server.conftest import SQLITE_ONLY
from tests.unit.server.people import assert_problem
from tests.unit.server.test_piv_api import (
    audit_actors,
    b64,
    card_answer,
    enrol_card,
    identified_login,
    keyless,
    new_card,
    page_enrolment,
    person,
    piv_login,
)

pytestmark = SQLITE_ONLY

COMPLETE = "/piv/enrolments/{}/complete"


def spki(key: ec.EllipticCurvePublicKey) -> str:
    return b64(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def software_answer(
    key: ec.EllipticCurvePrivateKey, state_id: uuid.UUID, challenge: bytes
) -> dict[str, Any]:
    """What an attacker's program sends: a key made in software, signing the enrolment
    message correctly, with a made-up card id."""
    signature = key.sign(enrol_message(state_id, challenge), ec.ECDSA(hashes.SHA256()))
    return {"public_key": spki(key.public_key()), "signature": b64(signature), "card_id": "ab" * 16}


def credentials_of(client: TestClient, identity: str) -> list[Any]:
    answer = client.get(f"/identities/{identity}/credentials")
    assert answer.status_code == 200, answer.text
    found: list[Any] = answer.json()
    return found


def assert_not_a_card(answer: Any) -> None:
    problem = assert_problem(answer, 422, "not-generated-on-card")
    assert "not generated on a card" in problem["detail"]


# --- the attack --------------------------------------------------------------------------------


def test_a_page_enrolment_refuses_a_software_key(client: TestClient) -> None:
    """A phished Substantial session's page began the enrolment; the attacker completes it
    with a key of their own. Before attestation it became a "smartcard" that alone logged in
    at level High."""
    identity, _ = person(client)
    state_id, code = page_enrolment(client, identity, "f" * 64)
    key = ec.generate_private_key(ec.SECP256R1())
    body = software_answer(key, state_id, code_challenge(code)) | {"code": code}

    with keyless(client) as attacker:
        answer = attacker.post(COMPLETE.format(state_id), json=body)

    assert_not_a_card(answer)
    assert credentials_of(client, identity) == []
    refused = audit_actors(client, "piv.enrolment_refused")
    assert [details["reason"] for _, details in refused] == ["attestation:missing"]
    # The enrolment is spent: the same answer again is a conflict, not a second try.
    with keyless(client) as attacker:
        assert_problem(attacker.post(COMPLETE.format(state_id), json=body), 409)


def test_an_operators_enrolment_refuses_a_software_key(client: TestClient) -> None:
    identity, _ = person(client)
    begun = client.post(f"/identities/{identity}/piv/enrol/begin").json()
    state_id, challenge = uuid.UUID(begun["state_id"]), base64.b64decode(begun["challenge"])
    key = ec.generate_private_key(ec.SECP256R1())

    answer = client.post(COMPLETE.format(state_id), json=software_answer(key, state_id, challenge))

    assert_not_a_card(answer)
    assert credentials_of(client, identity) == []


# --- what an attestation must show -------------------------------------------------------------


def begin(client: TestClient, identity: str) -> tuple[uuid.UUID, bytes]:
    begun = client.post(f"/identities/{identity}/piv/enrol/begin").json()
    return uuid.UUID(begun["state_id"]), base64.b64decode(begun["challenge"])


def test_a_simulated_cards_attested_key_enrols_with_its_facts(
    client: TestClient, tmp_path: Path
) -> None:
    identity, number = person(client)
    card = new_card(tmp_path)

    enrolled = enrol_card(client, identity, card)

    facts = enrolled["credential"]["public_data"]["attestation"]
    assert facts == {
        "serial": card.serial(),
        "pin_policy": "once",
        "firmware": "5.2.7",
    }
    transaction = identified_login(client, number)
    assert piv_login(client, transaction, card).json() == {"factors": ["piv"]}


def test_an_attestation_of_another_key_is_refused(client: TestClient, tmp_path: Path) -> None:
    """The attacker's software key, sent with a real card's attestation of the card's own
    key."""
    identity, _ = person(client)
    card = new_card(tmp_path)
    card.authenticate()
    card.generate_key(Slot.AUTHENTICATION)
    attestation = card.attest(Slot.AUTHENTICATION)
    state_id, challenge = begin(client, identity)
    key = ec.generate_private_key(ec.SECP256R1())
    body = software_answer(key, state_id, challenge) | attestation_fields(attestation)

    assert_not_a_card(client.post(COMPLETE.format(state_id), json=body))
    assert credentials_of(client, identity) == []


def attestation_fields(attestation: Any) -> dict[str, str]:
    return {
        "attestation": b64(attestation.certificate.public_bytes(serialization.Encoding.DER)),
        "attestation_intermediate": b64(
            attestation.intermediate.public_bytes(serialization.Encoding.DER)
        ),
    }


def test_an_attestation_from_an_untrusted_vendor_is_refused(
    client: TestClient, tmp_path: Path
) -> None:
    """A whole chain made by the attacker: a "vendor" root of their own, an F9 key, and an
    attestation of their software key with the right extensions."""
    identity, _ = person(client)
    forger = PivManufacturer.load_or_create(tmp_path / "forger")
    f9_key, f9_certificate = forger.issue_attestation_key(12345678)
    key = ec.generate_private_key(ec.SECP256R1())
    facts = AttestedKey(
        firmware=(5, 2, 7), serial=12345678, pin_policy=PinPolicy.ONCE, touch_policy=1
    )
    forged = attestation_certificate(
        f9_key, f9_certificate, key.public_key(), Slot.AUTHENTICATION, facts
    )
    state_id, challenge = begin(client, identity)
    body = software_answer(key, state_id, challenge) | {
        "attestation": b64(forged.public_bytes(serialization.Encoding.DER)),
        "attestation_intermediate": b64(f9_certificate.public_bytes(serialization.Encoding.DER)),
    }

    assert_not_a_card(client.post(COMPLETE.format(state_id), json=body))
    assert credentials_of(client, identity) == []


def test_a_card_key_without_a_pin_is_refused(client: TestClient, tmp_path: Path) -> None:
    """A key the card uses without its PIN is one factor, not the two of level High."""
    identity, _ = person(client)
    card = new_card(tmp_path)
    state_id, challenge = begin(client, identity)
    body = card_answer(card, state_id, challenge, pin_policy=PinPolicy.NEVER)

    assert_not_a_card(client.post(COMPLETE.format(state_id), json=body))


def test_an_attestation_of_another_card_serial_is_refused(
    client: TestClient, tmp_path: Path
) -> None:
    identity, _ = person(client)
    card = new_card(tmp_path)
    state_id, challenge = begin(client, identity)
    body = card_answer(card, state_id, challenge)
    body["card_serial"] = (card.serial() or 0) + 1

    assert_not_a_card(client.post(COMPLETE.format(state_id), json=body))


def test_no_configured_vendor_root_refuses_every_card(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    """Secure by default: a service that trusts no card vendor enrols no card."""
    bare = settings.model_copy(update={"piv_attestation_roots": []})

    with TestClient(
        create_app(bare), raise_server_exceptions=False, headers=dict(client.headers)
    ) as service:
        identity, _ = person(service)
        card = new_card(tmp_path)
        state_id, challenge = begin(service, identity)
        answer = service.post(
            COMPLETE.format(state_id), json=card_answer(card, state_id, challenge)
        )

    assert_not_a_card(answer)


def test_an_expired_attestation_chain_is_refused_by_date() -> None:
    """The chain is checked at the enrolment's time: after the F9 certificate's end, no."""
    maker = PivManufacturer.load_or_create()
    f9_key, f9_certificate = maker.issue_attestation_key(1)
    key = ec.generate_private_key(ec.SECP256R1())
    facts = AttestedKey(firmware=(5, 2, 7), serial=1, pin_policy=PinPolicy.ALWAYS, touch_policy=1)
    leaf = attestation_certificate(
        f9_key, f9_certificate, key.public_key(), Slot.AUTHENTICATION, facts
    )
    der = serialization.Encoding.DER
    later = f9_certificate.not_valid_after_utc + dt.timedelta(days=1)

    accepted = verify_card_key(
        key.public_key(),
        leaf.public_bytes(der),
        f9_certificate.public_bytes(der),
        [maker.root_certificate],
        card_serial=1,
        now=f9_certificate.not_valid_before_utc + dt.timedelta(days=1),
    )
    assert accepted.pin_policy is PinPolicy.ALWAYS
    with pytest.raises(CardKeyNotAttested):
        verify_card_key(
            key.public_key(),
            leaf.public_bytes(der),
            f9_certificate.public_bytes(der),
            [maker.root_certificate],
            card_serial=None,
            now=later,
        )


def test_the_pin_checked_card_login_keeps_working(client: TestClient, tmp_path: Path) -> None:
    """The simulated card's default policy for 9A (PIN once) meets level High."""
    identity, number = person(client)
    card = new_card(tmp_path)
    enrol_card(client, identity, card)
    card.verify_pin(DEFAULT_PIN)
    transaction = identified_login(client, number)
    assert piv_login(client, transaction, card).json() == {"factors": ["piv"]}
    assert isinstance(card.attest(Slot.AUTHENTICATION).certificate, x509.Certificate)
