"""PIV smartcards over HTTP on SQLite (and PostgreSQL where it behaves differently), with the
simulated card driven in process through the real driver (``PivSession``): enrolment with an
on-card key, a login at level high, refused signatures (wrong, replayed, another CA's, another
person's card), cards taken out of use appearing on the CRL and refused at login, and 4xx (never
500) for malformed bodies."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID, NameOID
from fastapi.testclient import TestClient
from sqlalchemy import select

from devices.protocol.piv import DEFAULT_PIN, PinPolicy, Slot
from devices.tokens.piv import PivSession
from firmware_sim.attach.inprocess import InProcessConnection
from firmware_sim.tokens.piv import make_card, new_card_state
from server.domain.model import Level
from server.services.credentials.admission import AddedBy
from server.services.piv.card import enrol_message, login_message
from server.services.piv.enrolment import code_challenge, enrolment_code
from server.settings import Settings
from server.storage.engine import create_engine_for, session_factory
from server.storage.tables import AuditEntry, Throttle
from tests.unit.server.conftest import BOTH_DATABASES, ORIGIN, SQLITE_ONLY
from tests.unit.server.people import assert_problem, second_operator_approves

pytestmark = SQLITE_ONLY  # and BOTH_DATABASES where marked (see the conftest)

PROVIDER = "https://sp.example"
# What piv/begin tells the card's program to show the person besides the challenge.
LOGIN_CONTEXT = frozenset(
    {
        "service_provider",
        "service_provider_name",
        "level",
        "begun_at",
        "expires_at",
        "paired_with_browser",
    }
)
PERSON_NAME = "Inger Christensen"
_numbers = itertools.count(4000)


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
def card_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cards"
    folder.mkdir()
    return folder


_card_numbers = itertools.count()


def new_card(folder: Path, *, provision: bool = False) -> PivSession:
    """A fresh simulated card (default PIN and management key), selected."""
    applet = new_card_state(folder / f"card-{next(_card_numbers)}.json", provision=provision)
    session = PivSession(InProcessConnection(make_card(applet, strict=True)))
    session.select()
    return session


@pytest.fixture
def card(card_dir: Path) -> PivSession:
    return new_card(card_dir)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def person(client: TestClient) -> tuple[str, str]:
    """An identity proven in person by two operators (identity assurance high)."""
    number = f"150660-{next(_numbers)}"
    answer = client.post(
        "/identities",
        json={
            "person_number": number,
            "name": PERSON_NAME,
            "proofing": {
                "channel": "service_centre",
                "document_kind": "passport",
                "operator_ids": ["op-1", "op-2"],
            },
        },
    )
    assert answer.status_code == 201, answer.text
    assert second_operator_approves(client, answer.json())["identity_assurance"] == "high"
    return str(answer.json()["id"]), number


def card_answer(
    card: PivSession,
    state_id: uuid.UUID,
    challenge: bytes,
    *,
    pin_policy: PinPolicy = PinPolicy.DEFAULT,
) -> dict[str, Any]:
    """The card's part of an enrolment: a new key in slot 9A, its signature over the
    enrolment message, and the card's attestation of the key, as the completion's body."""
    card.authenticate()
    public_key = card.generate_key(Slot.AUTHENTICATION, pin_policy=pin_policy)
    card.verify_pin(DEFAULT_PIN)
    signature = card.sign(Slot.AUTHENTICATION, enrol_message(state_id, challenge))
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    attestation = card.attest(Slot.AUTHENTICATION)
    der = serialization.Encoding.DER
    return {
        "public_key": b64(spki),
        "signature": b64(signature),
        "card_id": card.chuid().serial,
        "attestation": b64(attestation.certificate.public_bytes(der)),
        "attestation_intermediate": b64(attestation.intermediate.public_bytes(der)),
        "card_serial": card.serial(),
    }


def enrol_card(client: TestClient, identity: str, card: PivSession) -> dict[str, Any]:
    """The client's part of an enrolment, as ``akkreditiv devices piv enrol`` does it."""
    begun = client.post(f"/identities/{identity}/piv/enrol/begin")
    assert begun.status_code == 201, begun.text
    state_id = uuid.UUID(begun.json()["state_id"])
    challenge = base64.b64decode(begun.json()["challenge"])
    answer = client.post(
        f"/piv/enrolments/{state_id}/complete", json=card_answer(card, state_id, challenge)
    )
    assert answer.status_code == 201, answer.text
    certificate = x509.load_der_x509_certificate(base64.b64decode(answer.json()["certificate"]))
    card.put_certificate(Slot.AUTHENTICATION, certificate)
    body: dict[str, Any] = answer.json()
    return body


def identified_login(client: TestClient, number: str, min_level: str = "high") -> str:
    begun = client.post("/authentications", json={"provider": PROVIDER, "min_level": min_level})
    assert begun.status_code == 201, begun.text
    transaction = str(begun.json()["id"])
    identified = client.post(
        f"/authentications/{transaction}/identify", json={"person_number": number}
    )
    assert identified.status_code == 200, identified.text
    return transaction


def begin_piv(client: TestClient, transaction: str) -> bytes:
    begun = client.post(f"/authentications/{transaction}/piv/begin")
    assert begun.status_code == 200, begun.text
    assert set(begun.json()) == {"challenge", *LOGIN_CONTEXT}
    return base64.b64decode(begun.json()["challenge"])


def card_body(
    card: PivSession, transaction: str, challenge: bytes, origin: str = ORIGIN
) -> dict[str, str]:
    """What ``akkreditiv devices piv login`` sends: the 9A certificate, the signature and the
    origin signed for."""
    certificate = card.certificate(Slot.AUTHENTICATION)
    assert certificate is not None
    card.verify_pin(DEFAULT_PIN)
    message = login_message(uuid.UUID(transaction), challenge, origin)
    return {
        "certificate": b64(certificate.public_bytes(serialization.Encoding.DER)),
        "signature": b64(card.sign(Slot.AUTHENTICATION, message)),
        "origin": origin,
    }


def piv_login(client: TestClient, transaction: str, card: PivSession) -> Any:
    challenge = begin_piv(client, transaction)
    return client.post(
        f"/authentications/{transaction}/piv", json=card_body(card, transaction, challenge)
    )


def ca_certificate(client: TestClient) -> x509.Certificate:
    answer = client.get("/piv/ca.pem")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/x-pem-file")
    return x509.load_pem_x509_certificate(answer.content)


def current_crl(client: TestClient) -> x509.CertificateRevocationList:
    answer = client.get("/piv/crl")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(answer.content)
    ca = ca_certificate(client)
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(ca_key)
    assert crl.issuer == ca.subject
    return crl


def set_state(client: TestClient, credential: str, state: str) -> None:
    answer = client.post(f"/credentials/{credential}/state", json={"state": state})
    assert answer.status_code == 200, answer.text


def other_ca_certificate(public_key: ec.EllipticCurvePublicKey) -> x509.Certificate:
    """A certificate for the card's own key from a CA that imitates the service CA's name."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "akkreditiv"),
            x509.NameAttribute(NameOID.COMMON_NAME, "akkreditiv PIV CA"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "impostor")]))
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


# --- enrolment and login ----------------------------------------------------------------------


@BOTH_DATABASES
def test_enrolled_card_logs_in_at_level_high(client: TestClient, card: PivSession) -> None:
    identity, number = person(client)
    enrolled = enrol_card(client, identity, card)

    credential = enrolled["credential"]
    certificate = x509.load_der_x509_certificate(base64.b64decode(enrolled["certificate"]))
    assert credential["kind"] == "piv"
    assert credential["state"] == "active"
    assert credential["serial"] == f"piv:{certificate.serial_number:040x}"
    assert credential["public_data"]["certificate"] == enrolled["certificate"]
    assert credential["public_data"]["card_id"] == card.chuid().serial
    # The card holds the certificate now, for the login (and for middleware).
    on_card = card.certificate(Slot.AUTHENTICATION)
    assert on_card is not None
    assert on_card.serial_number == certificate.serial_number
    # It chains to the published CA and names the holder by a pseudonym only.
    certificate.verify_directly_issued_by(ca_certificate(client))
    subject = certificate.subject.rfc4514_string()
    assert PERSON_NAME not in subject
    assert number[:6] not in subject
    uuid.UUID(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)  # type: ignore[arg-type]
    crl_point = certificate.extensions.get_extension_for_oid(
        ExtensionOID.CRL_DISTRIBUTION_POINTS
    ).value
    assert crl_point[0].full_name[0].value.endswith("/piv/crl")  # type: ignore[index]

    transaction = identified_login(client, number)
    answer = piv_login(client, transaction, card)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"factors": ["piv"]}

    done = client.post(f"/authentications/{transaction}/complete")
    assert done.status_code == 200, done.text
    assert done.json()["level"] == "high"
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    claims = jwt.decode(
        done.json()["assertion"], jwt.PyJWK(keys[0]).key, algorithms=["ES256"], audience=PROVIDER
    )
    assert claims["loa"] == "high"
    assert claims["amr"] == ["piv"]


@BOTH_DATABASES
def test_wrong_signature_is_refused_and_counted(
    client: TestClient, card: PivSession, settings: Settings
) -> None:
    identity, number = person(client)
    enrol_card(client, identity, card)
    transaction = identified_login(client, number)
    challenge = begin_piv(client, transaction)
    body = card_body(card, transaction, bytes(len(challenge)))  # signed another challenge

    assert_problem(
        client.post(f"/authentications/{transaction}/piv", json=body), 401, "verification-failed"
    )

    engine = create_engine_for(settings.database_url)
    try:
        with session_factory(engine)() as session:
            # Counted on the person's throttles (from this network and from everywhere).
            everywhere = session.scalars(
                select(Throttle).where(Throttle.key.startswith("everywhere:"))
            ).all()
            assert [row.failures for row in everywhere] == [1]
    finally:
        engine.dispose()
    # The challenge went with that attempt: the right signature for it is refused now too.
    right = card_body(card, transaction, challenge)
    assert_problem(client.post(f"/authentications/{transaction}/piv", json=right), 401)


@BOTH_DATABASES
def test_replayed_signature_is_refused(client: TestClient, card: PivSession) -> None:
    identity, number = person(client)
    enrol_card(client, identity, card)
    transaction = identified_login(client, number, min_level="low")
    challenge = begin_piv(client, transaction)
    body = card_body(card, transaction, challenge)
    assert client.post(f"/authentications/{transaction}/piv", json=body).status_code == 200

    assert_problem(client.post(f"/authentications/{transaction}/piv", json=body), 401)
    begin_piv(client, transaction)  # a new challenge does not revive the old signature
    assert_problem(client.post(f"/authentications/{transaction}/piv", json=body), 401)
    # Nor does the signature count in another login.
    other = identified_login(client, number)
    begin_piv(client, other)
    assert_problem(client.post(f"/authentications/{other}/piv", json=body), 401)


def test_certificate_from_another_ca_is_refused(client: TestClient, card: PivSession) -> None:
    identity, number = person(client)
    enrol_card(client, identity, card)
    genuine = card.certificate(Slot.AUTHENTICATION)
    assert genuine is not None
    public_key = genuine.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    forged = other_ca_certificate(public_key)
    transaction = identified_login(client, number)
    challenge = begin_piv(client, transaction)
    body = card_body(card, transaction, challenge)
    body["certificate"] = b64(forged.public_bytes(serialization.Encoding.DER))

    assert_problem(client.post(f"/authentications/{transaction}/piv", json=body), 401)
    assert client.post(f"/authentications/{transaction}/complete").status_code == 403


def test_factory_self_signed_card_is_refused(client: TestClient, card_dir: Path) -> None:
    _, number = person(client)
    provisioned = new_card(card_dir, provision=True)  # a key and a self-signed certificate
    transaction = identified_login(client, number)

    assert_problem(piv_login(client, transaction, provisioned), 401, "verification-failed")


def test_another_persons_card_is_refused(client: TestClient, card: PivSession) -> None:
    owner, _ = person(client)
    enrol_card(client, owner, card)
    _, other_number = person(client)
    transaction = identified_login(client, other_number)

    assert_problem(piv_login(client, transaction, card), 401)


def test_unknown_person_gets_a_challenge_and_a_refusal(
    client: TestClient, card: PivSession
) -> None:
    identity, _ = person(client)
    enrol_card(client, identity, card)
    transaction = identified_login(client, "010101-0000")
    begun = client.post(f"/authentications/{transaction}/piv/begin")
    assert begun.status_code == 200
    assert set(begun.json()) == {"challenge", *LOGIN_CONTEXT}
    assert len(base64.b64decode(begun.json()["challenge"])) == 32

    assert_problem(piv_login(client, transaction, card), 401, "verification-failed")


def test_begin_needs_an_identified_login(client: TestClient) -> None:
    begun = client.post("/authentications", json={"provider": PROVIDER})
    transaction = begun.json()["id"]
    assert_problem(client.post(f"/authentications/{transaction}/piv/begin"), 409)
    assert_problem(client.post(f"/authentications/{uuid.uuid4()}/piv/begin"), 404)


# --- revocation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("lost", x509.ReasonFlags.key_compromise),
        ("revoked", x509.ReasonFlags.cessation_of_operation),
        ("blocked", x509.ReasonFlags.certificate_hold),
    ],
)
def test_card_out_of_use_is_on_the_crl_and_refused(
    client: TestClient, card: PivSession, state: str, reason: x509.ReasonFlags
) -> None:
    identity, number = person(client)
    enrolled = enrol_card(client, identity, card)
    serial = x509.load_der_x509_certificate(base64.b64decode(enrolled["certificate"])).serial_number
    before = current_crl(client)
    assert before.get_revoked_certificate_by_serial_number(serial) is None

    set_state(client, enrolled["credential"]["id"], state)

    crl = current_crl(client)
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is reason
    assert crl.next_update_utc is not None
    assert crl.last_update_utc < crl.next_update_utc
    number_before = before.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    number_after = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number_after > number_before
    assert_problem(piv_login(client, identified_login(client, number), card), 401)


@BOTH_DATABASES
def test_unblocked_card_leaves_the_crl_and_logs_in_again(
    client: TestClient, card: PivSession
) -> None:
    identity, number = person(client)
    enrolled = enrol_card(client, identity, card)
    credential = enrolled["credential"]["id"]
    set_state(client, credential, "blocked")
    assert len(list(current_crl(client))) == 1

    set_state(client, credential, "active")

    assert len(list(current_crl(client))) == 0
    assert piv_login(client, identified_login(client, number), card).status_code == 200


@BOTH_DATABASES
def test_replaced_card_is_superseded_and_the_new_card_enrols(
    client: TestClient, card: PivSession, card_dir: Path
) -> None:
    identity, number = person(client)
    first = enrol_card(client, identity, card)
    replaced = client.post(f"/credentials/{first['credential']['id']}/replace", json={})
    assert replaced.status_code == 201, replaced.text
    assert replaced.json()["state"] == "ordered"

    second_card = new_card(card_dir)
    second = enrol_card(client, identity, second_card)

    assert second["credential"]["public_data"]["replaces"] == first["credential"]["id"]
    entries = list(current_crl(client))
    assert [e.serial_number for e in entries] == [
        int(first["credential"]["serial"].removeprefix("piv:"), 16)
    ]
    assert entries[0].extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.superseded
    )
    assert_problem(piv_login(client, identified_login(client, number), card), 401)
    assert piv_login(client, identified_login(client, number), second_card).status_code == 200


@BOTH_DATABASES
def test_lost_card_presented_is_audited(
    client: TestClient, card: PivSession, settings: Settings
) -> None:
    identity, number = person(client)
    enrolled = enrol_card(client, identity, card)
    set_state(client, enrolled["credential"]["id"], "lost")

    assert_problem(piv_login(client, identified_login(client, number), card), 401)

    engine = create_engine_for(settings.database_url)
    try:
        with session_factory(engine)() as session:
            events = session.scalars(
                select(AuditEntry).where(AuditEntry.event == "piv.inactive_card_presented")
            ).all()
    finally:
        engine.dispose()
    assert len(events) == 1
    assert events[0].details["state"] == "lost"


# --- enrolment rules ----------------------------------------------------------------------------


def test_enrolment_with_a_wrong_signature_is_refused_and_closed(
    client: TestClient, card: PivSession
) -> None:
    identity, _ = person(client)
    begun = client.post(f"/identities/{identity}/piv/enrol/begin").json()
    card.authenticate()
    public_key = card.generate_key(Slot.AUTHENTICATION)
    card.verify_pin(DEFAULT_PIN)
    body = {
        "public_key": b64(
            public_key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ),
        "signature": b64(card.sign(Slot.AUTHENTICATION, b"not the enrolment message")),
        "card_id": card.chuid().serial,
    }
    url = f"/piv/enrolments/{begun['state_id']}/complete"

    assert_problem(client.post(url, json=body), 400, "enrolment-rejected")
    right = enrol_message(uuid.UUID(begun["state_id"]), base64.b64decode(begun["challenge"]))
    body["signature"] = b64(card.sign(Slot.AUTHENTICATION, right))
    assert_problem(client.post(url, json=body), 409)  # one answer per challenge
    assert client.get(f"/identities/{identity}/credentials").json() == []


def test_enrolment_of_a_key_that_is_not_the_signers_is_refused(
    client: TestClient, card: PivSession
) -> None:
    identity, _ = person(client)
    begun = client.post(f"/identities/{identity}/piv/enrol/begin").json()
    card.authenticate()
    card.generate_key(Slot.AUTHENTICATION)
    card.verify_pin(DEFAULT_PIN)
    message = enrol_message(uuid.UUID(begun["state_id"]), base64.b64decode(begun["challenge"]))
    someone_else = ec.generate_private_key(ec.SECP256R1()).public_key()
    body = {
        "public_key": b64(
            someone_else.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ),
        "signature": b64(card.sign(Slot.AUTHENTICATION, message)),
        "card_id": card.chuid().serial,
    }

    assert_problem(
        client.post(f"/piv/enrolments/{begun['state_id']}/complete", json=body),
        400,
        "enrolment-rejected",
    )


@BOTH_DATABASES
def test_enrolment_respects_the_card_limit(client: TestClient, card_dir: Path) -> None:
    identity, _ = person(client)
    enrol_card(client, identity, new_card(card_dir))
    enrol_card(client, identity, new_card(card_dir))

    assert_problem(
        client.post(f"/identities/{identity}/piv/enrol/begin"), 409, "credential-limit-reached"
    )


def test_enrolment_needs_an_active_identity(client: TestClient) -> None:
    identity, _ = person(client)
    assert client.post(f"/identities/{identity}/suspend", json={}).status_code == 200

    assert_problem(
        client.post(f"/identities/{identity}/piv/enrol/begin"), 409, "identity-not-active"
    )
    assert_problem(
        client.post(f"/identities/{uuid.uuid4()}/piv/enrol/begin"), 404, "identity-not-found"
    )


def test_unknown_enrolment_is_not_found(client: TestClient) -> None:
    body = {"public_key": "AAAA", "signature": "AAAA", "card_id": "00ff"}
    assert_problem(client.post(f"/piv/enrolments/{uuid.uuid4()}/complete", json=body), 404)


def test_a_login_transaction_is_not_an_enrolment(client: TestClient) -> None:
    transaction = client.post("/authentications", json={"provider": PROVIDER}).json()["id"]
    body = {"public_key": "AAAA", "signature": "AAAA", "card_id": "00ff"}
    assert_problem(client.post(f"/piv/enrolments/{transaction}/complete", json=body), 404)


@BOTH_DATABASES
def test_an_enrolment_is_not_a_login(client: TestClient) -> None:
    identity, _ = person(client)
    state_id = client.post(f"/identities/{identity}/piv/enrol/begin").json()["state_id"]
    assert_problem(client.post(f"/authentications/{state_id}/piv/begin"), 404)
    # Nor can a login step address it (this answered 500 once).
    identify = client.post(
        f"/authentications/{state_id}/identify", json={"person_number": "0101901234"}
    )
    assert_problem(identify, 404)


# --- malformed input ----------------------------------------------------------------------------

_RSA_SPKI = b64(
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .public_key()
    .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"public_key": "AAAA", "signature": "AAAA"}, 422),
        ({"public_key": "AAAA", "signature": "AAAA", "card_id": "00ff", "extra": 1}, 422),
        ({"public_key": "not base64!", "signature": "AAAA", "card_id": "00ff"}, 422),
        ({"public_key": "A" * 5000, "signature": "AAAA", "card_id": "00ff"}, 422),
        ({"public_key": 12, "signature": "AAAA", "card_id": "00ff"}, 422),
        ({"public_key": "AAAA", "signature": "AAAA", "card_id": "not hex"}, 422),
        ({"public_key": "AAAA", "signature": "AAAA", "card_id": "0" * 65}, 422),
        ({"public_key": "AAAA", "signature": "A" * 400, "card_id": "00ff"}, 422),
        ({"public_key": "AAAA", "signature": "AAAA", "card_id": "00ff"}, 400),  # not a key
        ({"public_key": _RSA_SPKI, "signature": "AAAA", "card_id": "00ff"}, 400),  # not EC
    ],
)
def test_malformed_enrolment_answers_are_4xx(
    client: TestClient, body: dict[str, Any], status: int
) -> None:
    identity, _ = person(client)
    state_id = client.post(f"/identities/{identity}/piv/enrol/begin").json()["state_id"]

    assert_problem(client.post(f"/piv/enrolments/{state_id}/complete", json=body), status)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"certificate": "AAAA"}, 422),
        ({"certificate": "AAAA", "signature": "AAAA", "origin": ORIGIN, "pin": "1"}, 422),
        ({"certificate": "AAAA", "signature": "AAAA"}, 422),  # no origin
        ({"certificate": "AAAA", "signature": "AAAA", "origin": "javascript:x"}, 422),
        ({"certificate": "%%%%", "signature": "AAAA", "origin": ORIGIN}, 422),
        ({"certificate": "A" * 6000, "signature": "AAAA", "origin": ORIGIN}, 422),
        ({"certificate": ["AAAA"], "signature": "AAAA", "origin": ORIGIN}, 422),
        ({"certificate": "AAAA", "signature": "", "origin": ORIGIN}, 422),
        ({"certificate": "AAAA", "signature": "AAAA", "origin": ORIGIN}, 401),  # no certificate
        ({"certificate": "MIIB", "signature": "AAAA", "origin": ORIGIN}, 401),  # DER header only
        ({"certificate": _RSA_SPKI, "signature": "AAAA", "origin": ORIGIN}, 401),  # a key
    ],
)
def test_malformed_login_answers_are_4xx(
    client: TestClient, body: dict[str, Any], status: int
) -> None:
    _, number = person(client)
    transaction = identified_login(client, number)
    begin_piv(client, transaction)

    assert_problem(client.post(f"/authentications/{transaction}/piv", json=body), status)


def test_a_signature_for_another_origin_is_refused(client: TestClient, card: PivSession) -> None:
    """A relaying site gets the card's signature for its own origin: the service refuses it,
    whether the relay passes its own origin on or claims the service's."""
    identity, number = person(client)
    enrol_card(client, identity, card)
    transaction = identified_login(client, number)
    relayed = card_body(card, transaction, begin_piv(client, transaction), "https://evil.example")
    assert_problem(client.post(f"/authentications/{transaction}/piv", json=relayed), 401)
    relayed = card_body(card, transaction, begin_piv(client, transaction), "https://evil.example")
    relayed["origin"] = ORIGIN
    assert_problem(client.post(f"/authentications/{transaction}/piv", json=relayed), 401)
    honest = card_body(card, transaction, begin_piv(client, transaction))
    assert client.post(f"/authentications/{transaction}/piv", json=honest).status_code == 200


def test_url_safe_base64_without_padding_is_accepted(client: TestClient, card: PivSession) -> None:
    identity, number = person(client)
    enrol_card(client, identity, card)
    transaction = identified_login(client, number)
    body = card_body(card, transaction, begin_piv(client, transaction))
    url_safe = {
        name: base64.urlsafe_b64encode(base64.b64decode(value)).decode().rstrip("=")
        for name, value in body.items()
        if name != "origin"
    }
    url_safe["origin"] = body["origin"]

    assert client.post(f"/authentications/{transaction}/piv", json=url_safe).status_code == 200


# --- enrolments a citizen's account page began --------------------------------------------------


def page_enrolment(client: TestClient, identity: str, binding: str) -> tuple[uuid.UUID, str]:
    """An enrolment begun as the account page begins it (``PivService.enrol_begin`` with a
    browser's binding, through the app's composition root), for a browser signed in at High:
    its state id and code."""
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.sessions() as session, session.begin():
        begun = services.piv(session, f"citizen:{identity}").enrol_begin(
            uuid.UUID(identity), added_by=AddedBy.login(Level.HIGH), browser_binding=binding
        )
    assert begun.code is not None
    return begun.state_id, begun.code


def complete_with_code(
    client: TestClient,
    state_id: uuid.UUID,
    code: str,
    card: PivSession,
    *,
    sent_code: str | None = None,
) -> Any:
    """What ``akkreditiv devices piv enrol --enrolment S --code C`` sends: the card signs for
    the code's challenge, and the code (or ``sent_code``) goes with the answer."""
    answer = card_answer(card, state_id, code_challenge(code))
    answer["code"] = code if sent_code is None else sent_code
    return client.post(f"/piv/enrolments/{state_id}/complete", json=answer)


def keyless(client: TestClient) -> TestClient:
    """The same app, called without an API key (as a citizen's card program calls it)."""
    return TestClient(client.app, raise_server_exceptions=False)


def audit_actors(client: TestClient, event: str) -> list[tuple[str, dict[str, Any]]]:
    sessions = client.app.state.services.sessions  # type: ignore[attr-defined]
    with sessions() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.event == event))
        return [(row.actor, dict(row.details)) for row in rows]


def test_enrolment_code_is_grouped_and_bound_to_the_enrolment_and_the_browser() -> None:
    state_id, other_state = uuid.uuid4(), uuid.uuid4()
    code = enrolment_code(state_id, "a" * 64)

    assert len(code) == 14
    assert code.count("-") == 2
    assert set(code.replace("-", "")) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    assert enrolment_code(state_id, "b" * 64) != code
    assert enrolment_code(other_state, "a" * 64) != code
    # Typed in any case, with or without dashes, it is the same challenge.
    assert code_challenge(code.lower().replace("-", " ")) == code_challenge(code)
    assert code_challenge(enrolment_code(other_state, "a" * 64)) != code_challenge(code)


@BOTH_DATABASES
def test_a_page_enrolment_completes_with_its_code_and_no_api_key(
    client: TestClient, card: PivSession
) -> None:
    identity, number = person(client)
    state_id, code = page_enrolment(client, identity, "f" * 64)

    with keyless(client) as citizen:
        answer = complete_with_code(citizen, state_id, code, card)

    assert answer.status_code == 201, answer.text
    assert answer.json()["credential"]["state"] == "active"
    certificate = x509.load_der_x509_certificate(base64.b64decode(answer.json()["certificate"]))
    card.put_certificate(Slot.AUTHENTICATION, certificate)
    issued = audit_actors(client, "piv.certificate_issued")
    assert [actor for actor, _ in issued] == [f"citizen:{identity}"]
    begun = audit_actors(client, "piv.enrolment_begun")
    assert [actor for actor, _ in begun] == [f"citizen:{identity}"]
    # The card is in use: it logs in at level high.
    transaction = identified_login(client, number)
    assert piv_login(client, transaction, card).json() == {"factors": ["piv"]}


def test_a_wrong_code_is_refused_and_spends_the_enrolment(
    client: TestClient, card_dir: Path
) -> None:
    identity, _ = person(client)
    state_id, code = page_enrolment(client, identity, "f" * 64)
    wrong = enrolment_code(state_id, "e" * 64)  # the code another browser's page would show

    with keyless(client) as citizen:
        refused = complete_with_code(citizen, state_id, code, new_card(card_dir), sent_code=wrong)
        assert_problem(refused, 401, "verification-failed")
        again = complete_with_code(citizen, state_id, code, new_card(card_dir))
        assert_problem(again, 409, "conflict")  # one answer per enrolment, right code or not

    assert client.get(f"/identities/{identity}/credentials").json() == []
    refusals = audit_actors(client, "piv.enrolment_refused")
    assert [(actor, details["reason"]) for actor, details in refusals] == [
        (f"citizen:{identity}", "code")
    ]


def test_completing_needs_an_api_key_or_a_code(client: TestClient, card: PivSession) -> None:
    identity, _ = person(client)
    begun = client.post(f"/identities/{identity}/piv/enrol/begin").json()
    state_id = uuid.UUID(begun["state_id"])
    body = {"public_key": "AAAA", "signature": "AAAA", "card_id": "00ff"}

    with keyless(client) as anyone:
        assert_problem(
            anyone.post(f"/piv/enrolments/{state_id}/complete", json=body), 401, "unauthenticated"
        )
        # Nor does the API begin an enrolment without a key.
        assert_problem(anyone.post(f"/identities/{identity}/piv/enrol/begin"), 401)
        # A key that is sent must be valid, code or not.
        bad_key = {"Authorization": "Bearer akk_nope_nope"}
        with_code = {**body, "code": "ABCD-EFGH-JKLM"}
        assert_problem(
            anyone.post(f"/piv/enrolments/{state_id}/complete", json=with_code, headers=bad_key),
            401,
            "unauthenticated",
        )
    # None of that touched the enrolment: the operator's card program completes it.
    challenge = base64.b64decode(begun["challenge"])
    done = client.post(
        f"/piv/enrolments/{state_id}/complete", json=card_answer(card, state_id, challenge)
    )
    assert done.status_code == 201, done.text


def test_an_operators_enrolment_takes_no_code(client: TestClient, card: PivSession) -> None:
    identity, _ = person(client)
    begun = client.post(f"/identities/{identity}/piv/enrol/begin").json()
    state_id = uuid.UUID(begun["state_id"])
    code = enrolment_code(state_id, "f" * 64)

    with keyless(client) as citizen:
        refused = complete_with_code(citizen, state_id, code, card)

    assert_problem(refused, 401, "verification-failed")
    assert client.get(f"/identities/{identity}/credentials").json() == []


def test_a_code_for_an_unknown_enrolment_is_not_found(client: TestClient) -> None:
    body = {"public_key": "AAAA", "signature": "AAAA", "card_id": "00ff", "code": "ABCDEFGHJKLM"}
    with keyless(client) as citizen:
        answer = citizen.post(f"/piv/enrolments/{uuid.uuid4()}/complete", json=body)
    assert_problem(answer, 404)
