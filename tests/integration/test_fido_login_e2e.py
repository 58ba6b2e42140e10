"""FIDO2 end to end: the service's registration and login routes (in process, on a SQLite file)
driven through our real drivers: a simulated key on the simulated USB bus (pyusb, CTAPHID) and
held to pcscd's vpcd reader (NFC), with python-fido2's ``Fido2Client`` inside ``FidoSession``.
Register, log in, get the ES256-signed assertion and its level; a cloned key is blocked and
audited; a key pulled out mid-assertion gives a clear error and a later login works; a key
with a PIN gives the user-verified factor."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from fido2.pcsc import CtapPcscDevice
from fido2.webauthn import CredentialCreationOptions, CredentialRequestOptions
from sqlalchemy import select

from devices.errors import DeviceRemoved, NoCredentials
from devices.tokens.fido import FidoSession
from firmware_sim.tokens import ctap2
from firmware_sim.tokens.attestation import Manufacturer
from server.app import create_app
from server.services.access import ApiKeys, Role
from server.settings import Settings
from server.storage.tables import AuditEntry

from .conftest import AttachedCard, CliRunner
from .fido_fixtures import PluggedKey

# The settings of the service's FIDO policy, as the environment gives them.
ROOTS_ENV = "AKKREDITIV_FIDO_TRUSTED_ROOTS"
AAGUIDS_ENV = "AKKREDITIV_FIDO_ALLOWED_AAGUIDS"
UNATTESTED_ENV = "AKKREDITIV_FIDO_ALLOW_UNATTESTED"

pytestmark = pytest.mark.integration

ORIGIN = "http://localhost:8000"
PROVIDER = "https://sp.example"
PIN = "4711"
_numbers = itertools.count(5000)

PlugKey = Callable[..., PluggedKey]


@pytest.fixture
def client(tmp_path: Path, sim_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The service in process on a SQLite file, trusting the simulator's attestation root."""
    root = tmp_path / "sim-root.pem"
    root.write_bytes(Manufacturer.load_or_create(sim_home).root_pem())
    monkeypatch.setenv(ROOTS_ENV, str(root))
    monkeypatch.delenv(AAGUIDS_ENV, raising=False)
    monkeypatch.delenv(UNATTESTED_ENV, raising=False)
    keys = tmp_path / "server"
    keys.mkdir()
    settings = Settings(
        database_url=f"sqlite+pysqlite:///{keys / 'akkreditiv.db'}",
        kek_file=keys / "kek.bin",
        pseudonym_key_file=keys / "pseudonym.key",
        signing_key_file=keys / "signing.pem",
        api_keys_file=keys / "api-keys.json",
        rp_id="localhost",
        rp_origins=[ORIGIN],
    )
    _, key = ApiKeys(settings.api_keys_file).add(PROVIDER, (Role.SUPERVISOR, Role.PROVIDER))
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(
        create_app(settings), raise_server_exceptions=False, headers=headers
    ) as test_client:
        yield test_client


@dataclass
class Person:
    identity: str
    number: str


def as_json(value: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(dict(value)))
    return result


def enrol(client: TestClient) -> Person:
    number = f"240291-{next(_numbers)}"
    answer = client.post(
        "/identities",
        json={
            "person_number": number,
            "name": "Inger Christensen",
            "proofing": {"channel": "self_service", "document_kind": "passport_chip"},
        },
    )
    assert answer.status_code == 201, answer.text
    return Person(str(answer.json()["id"]), number)


def uv(pin: str | None) -> dict[str, str]:
    return {"user_verification": "required" if pin else "discouraged"}


def register(
    client: TestClient, person: Person, session: FidoSession, pin: str | None = None
) -> dict[str, Any]:
    begun = client.post(f"/identities/{person.identity}/fido2/register/begin", json=uv(pin))
    assert begun.status_code == 201, begun.text
    options = CredentialCreationOptions.from_dict(begun.json()["options"])
    made = session.make_credential(options.public_key, origin=ORIGIN, pin=pin)
    done = client.post(
        f"/fido2/registrations/{begun.json()['state_id']}/complete",
        json={"response": as_json(made)},
    )
    assert done.status_code == 201, done.text
    credential: dict[str, Any] = done.json()
    return credential


def login(client: TestClient, person: Person) -> str:
    begun = client.post("/authentications", json={"provider": PROVIDER, "min_level": "low"})
    assert begun.status_code == 201, begun.text
    transaction = str(begun.json()["id"])
    identified = client.post(
        f"/authentications/{transaction}/identify", json={"person_number": person.number}
    )
    assert identified.status_code == 200, identified.text
    return transaction


def request_options(client: TestClient, transaction: str, pin: str | None) -> Any:
    begun = client.post(f"/authentications/{transaction}/fido2/begin", json=uv(pin))
    assert begun.status_code == 200, begun.text
    return CredentialRequestOptions.from_dict(begun.json()["options"]).public_key


def sign_in(
    client: TestClient, transaction: str, session: FidoSession, pin: str | None = None
) -> Any:
    """One FIDO2 factor: request options, the key's assertion, the server's answer."""
    options = request_options(client, transaction, pin)
    assertion = session.get_assertion(options, origin=ORIGIN, pin=pin)
    return client.post(
        f"/authentications/{transaction}/fido2", json={"response": as_json(assertion)}
    )


def complete(client: TestClient, transaction: str) -> dict[str, Any]:
    """The assertion for the provider, verified with the service's JWKS as ES256."""
    done = client.post(f"/authentications/{transaction}/complete")
    assert done.status_code == 200, done.text
    token = done.json()["assertion"]
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    # The JWKS holds the ES256 key of assertions, and the RS256 key of OpenID ID tokens.
    [key] = [k for k in client.get("/.well-known/jwks.json").json()["keys"] if k["alg"] == "ES256"]
    claims: dict[str, Any] = jwt.decode(
        token, jwt.PyJWK(key), algorithms=["ES256"], audience=PROVIDER
    )
    assert claims["loa"] == done.json()["level"]
    return claims


def credential_state(client: TestClient, person: Person) -> str:
    [credential] = client.get(f"/identities/{person.identity}/credentials").json()
    state: str = credential["state"]
    return state


def audit(client: TestClient, event: str) -> list[dict[str, Any]]:
    with client.app.state.services.sessions() as session:  # type: ignore[attr-defined]
        entries = session.scalars(select(AuditEntry).where(AuditEntry.event == event))
        return [dict(entry.details) for entry in entries]


# --- USB ----------------------------------------------------------------------------------------


def test_usb_key_registers_and_logs_in(client: TestClient, plug_key: PlugKey) -> None:
    key = plug_key()
    person = enrol(client)
    session = key.session()
    try:
        credential = register(client, person, session)
        assert credential["public_data"]["attestation"] == "basic"
        transaction = login(client, person)
        answer = sign_in(client, transaction, session)
    finally:
        session.close()
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"factors": ["fido2"]}
    claims = complete(client, transaction)
    # A security key alone is one factor: Low, whatever the identity's proofing.
    assert claims["loa"] == "low"
    assert claims["amr"] == ["fido2"]


def test_usb_key_with_pin_gives_the_user_verified_factor(
    client: TestClient, plug_key: PlugKey
) -> None:
    key = plug_key()
    person = enrol(client)
    session = key.session()
    try:
        session.set_pin(PIN)
        register(client, person, session, pin=PIN)
        transaction = login(client, person)
        answer = sign_in(client, transaction, session, pin=PIN)
    finally:
        session.close()
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"factors": ["fido2_uv"]}
    claims = complete(client, transaction)
    # Possession and the PIN checked on the key: two categories, Substantial.
    assert claims["loa"] == "substantial"
    assert claims["amr"] == ["fido2_uv"]


def test_a_cloned_key_is_blocked_and_audited(
    client: TestClient, plug_key: PlugKey, tmp_path: Path, cli: CliRunner
) -> None:
    key = plug_key()
    person = enrol(client)
    session = key.session()
    try:
        credential = register(client, person, session)
        clone_state = tmp_path / "clone.json"
        shutil.copy(key.state, clone_state)  # the key's memory as it was after registration
        assert sign_in(client, login(client, person), session).status_code == 200
    finally:
        session.close()
    key.unplug()

    clone = plug_key(clone_state)
    session = clone.session()
    try:
        answer = sign_in(client, login(client, person), session)
    finally:
        session.close()
    assert answer.status_code == 401, answer.text
    assert answer.json()["type"] == "urn:akkreditiv:problem:verification-failed"
    assert credential_state(client, person) == "blocked"
    [event] = audit(client, "credential.clone_suspected")
    assert event["credential_id"] == credential["id"]
    assert event["received_counter"] <= event["stored_counter"]

    # The original no longer logs in: its credential is not offered, and the key says so.
    clone.unplug()
    original = plug_key(key.state)
    session = original.session()
    try:
        with pytest.raises(NoCredentials):
            sign_in(client, login(client, person), session)
    finally:
        session.close()
    database = client.app.state.settings.database_url  # type: ignore[attr-defined]
    verified = cli("audit", "verify", "--database-url", database)
    assert verified.returncode == 0, verified.stderr


def test_a_key_pulled_mid_assertion_gives_a_clear_error_and_a_later_login_works(
    client: TestClient, plug_key: PlugKey, cli: CliRunner
) -> None:
    key = plug_key()
    person = enrol(client)
    session = key.session()
    try:
        register(client, person, session)
        transaction = login(client, person)
        options = request_options(client, transaction, None)
        # Pulled after the key signed (its counter moved on) but before the answer left it.
        armed = cli(
            "sim", "fault", "pull", "--state", str(key.state), "--ins", "02", "--when", "after"
        )
        assert armed.returncode == 0, armed.stderr
        with pytest.raises(DeviceRemoved) as pulled:
            session.get_assertion(options, origin=ORIGIN)
    finally:
        session.close()
    assert "unplugged" in str(pulled.value)
    assert "try again" in str(pulled.value)  # what to do, with the error
    assert credential_state(client, person) == "active"

    key = plug_key(key.state)
    session = key.session()
    try:
        # The same login goes on: a new challenge, and the key's grown counter is accepted.
        answer = sign_in(client, transaction, session)
    finally:
        session.close()
    assert answer.status_code == 200, answer.text
    assert complete(client, transaction)["amr"] == ["fido2"]
    assert credential_state(client, person) == "active"
    assert audit(client, "credential.clone_suspected") == []


# --- NFC ----------------------------------------------------------------------------------------


@pytest.fixture
def nfc_key(sim_home: Path, tmp_path: Path, attach: Callable[..., AttachedCard]) -> AttachedCard:
    state = tmp_path / "fido-nfc.json"
    ctap2.new_fido_state(state, manufacturer_home=sim_home)
    return attach(state, "fido")


@pytest.fixture
def nfc_session(nfc_key: AttachedCard) -> Iterator[FidoSession]:
    [device] = list(CtapPcscDevice.list_devices(nfc_key.reader.name))
    session = FidoSession(device)
    yield session
    session.close()


def test_nfc_key_registers_logs_in_and_with_a_pin_verifies_the_user(
    client: TestClient, nfc_session: FidoSession
) -> None:
    person = enrol(client)
    register(client, person, nfc_session)
    transaction = login(client, person)
    answer = sign_in(client, transaction, nfc_session)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"factors": ["fido2"]}
    assert complete(client, transaction)["loa"] == "low"

    # A PIN set afterwards: the same credential now signs with the user verified.
    nfc_session.set_pin(PIN)
    transaction = login(client, person)
    answer = sign_in(client, transaction, nfc_session, pin=PIN)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"factors": ["fido2_uv"]}
    claims = complete(client, transaction)
    assert claims["loa"] == "substantial"
    assert claims["amr"] == ["fido2_uv"]
