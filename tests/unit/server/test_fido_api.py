"""FIDO2 over HTTP on SQLite (and PostgreSQL where it behaves differently), driven by
python-fido2's client over the simulated security key: registration under an attestation policy, a
whole login with a key, signature counter regression (a cloned key) blocking the credential,
request options that do not tell who has an account or a key, and 4xx (never 500) for garbage."""

from __future__ import annotations

import itertools
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from fido2.client import DefaultClientDataCollector, Fido2Client
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import CredentialCreationOptions, CredentialRequestOptions

from firmware_sim.attach.inprocess_ctap import InProcessCtapDevice
from firmware_sim.tokens.attestation import Manufacturer
from firmware_sim.tokens.ctap2 import AlwaysPresent, load_authenticator, new_fido_state
from server.storage.tables import AuthTransaction
from tests.unit.server.conftest import BOTH_DATABASES, SQLITE_ONLY
from tests.unit.server.people import assert_problem, enrol_via_api

# The settings of the service's FIDO policy, as the environment gives them.
ROOTS_ENV = "AKKREDITIV_FIDO_TRUSTED_ROOTS"
AAGUIDS_ENV = "AKKREDITIV_FIDO_ALLOWED_AAGUIDS"
UNATTESTED_ENV = "AKKREDITIV_FIDO_ALLOW_UNATTESTED"

pytestmark = SQLITE_ONLY  # and BOTH_DATABASES where marked (see the conftest)

ORIGIN = "http://localhost:8000"
PROVIDER = "https://sp.example"
_numbers = itertools.count(3000)
# The simulated key has no PIN set: python-fido2's client refuses "preferred" for such a key.
DISCOURAGED = {"user_verification": "discouraged"}


@pytest.fixture(autouse=True)
def sim_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The simulator's manufacturer in a temporary home, and no FIDO policy from outside."""
    home = tmp_path / "sim"
    monkeypatch.setenv("AKKREDITIV_SIM_HOME", str(home))
    monkeypatch.delenv(ROOTS_ENV, raising=False)
    monkeypatch.delenv(AAGUIDS_ENV, raising=False)
    monkeypatch.delenv(UNATTESTED_ENV, raising=False)
    return home


@pytest.fixture
def trust_simulator(sim_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "sim-root.pem"
    root.write_bytes(Manufacturer.load_or_create(sim_home).root_pem())
    monkeypatch.setenv(ROOTS_ENV, str(root))
    return root


@pytest.fixture
def key_file(tmp_path: Path, sim_home: Path) -> Path:
    path = tmp_path / "key.json"
    new_fido_state(path, manufacturer_home=sim_home)
    return path


def fido_client(key_file: Path) -> Fido2Client:
    device = InProcessCtapDevice(load_authenticator(key_file, AlwaysPresent()))
    return Fido2Client(device, DefaultClientDataCollector(ORIGIN))


def as_json(value: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(dict(value)))
    return result


def enrol(client: TestClient) -> tuple[str, str]:
    return enrol_via_api(client, f"020385-{next(_numbers)}", "Tove Ditlevsen")


def register(client: TestClient, identity: str, key_file: Path) -> Any:
    begun = client.post(f"/identities/{identity}/fido2/register/begin", json={})
    assert begun.status_code == 201, begun.text
    options = CredentialCreationOptions.from_dict(begun.json()["options"])
    response = fido_client(key_file).make_credential(options.public_key)
    return client.post(
        f"/fido2/registrations/{begun.json()['state_id']}/complete",
        json={"response": as_json(response)},
    )


def login(client: TestClient, number: str) -> str:
    begun = client.post("/authentications", json={"provider": PROVIDER, "min_level": "low"})
    assert begun.status_code == 201, begun.text
    transaction = str(begun.json()["id"])
    identified = client.post(
        f"/authentications/{transaction}/identify", json={"person_number": number}
    )
    assert identified.status_code == 200, identified.text
    return transaction


def assert_with_key(client: TestClient, transaction: str, key_file: Path) -> Any:
    begun = client.post(f"/authentications/{transaction}/fido2/begin", json=DISCOURAGED)
    assert begun.status_code == 200, begun.text
    options = CredentialRequestOptions.from_dict(begun.json()["options"])
    selection = fido_client(key_file).get_assertion(options.public_key)
    return client.post(
        f"/authentications/{transaction}/fido2",
        json={"response": as_json(selection.get_response(0))},
    )


def sign_with(
    client: TestClient,
    transaction: str,
    key_file: Path,
    credential_id: bytes,
    begun: dict[str, Any],
) -> Any:
    """Sign the challenge of ``begun`` with the key's credential ``credential_id``, whatever the
    server offered, and submit the assertion: what an attacker holding some key can do."""
    chosen = {"type": "public-key", "id": websafe_encode(credential_id)}
    public = {**begun["options"]["publicKey"], "allowCredentials": [chosen]}
    options = CredentialRequestOptions.from_dict({"publicKey": public})
    selection = fido_client(key_file).get_assertion(options.public_key)
    return client.post(
        f"/authentications/{transaction}/fido2",
        json={"response": as_json(selection.get_response(0))},
    )


# --- registration -----------------------------------------------------------------------------


@BOTH_DATABASES
@pytest.mark.usefixtures("trust_simulator")
def test_register_with_the_simulator_root_trusted(client: TestClient, key_file: Path) -> None:
    identity, _ = enrol(client)
    answer = register(client, identity, key_file)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["kind"] == "fido2"
    assert body["state"] == "active"
    assert body["public_data"]["fmt"] == "packed"
    assert body["public_data"]["attestation"] == "basic"
    assert body["public_data"]["credential_data"]


def test_register_refused_when_no_root_is_trusted(client: TestClient, key_file: Path) -> None:
    identity, _ = enrol(client)
    assert_problem(register(client, identity, key_file), 400, "attestation-rejected")
    assert client.get(f"/identities/{identity}/credentials").json() == []


@pytest.fixture
def another_model_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service accepts only another model of key than the simulator's."""
    monkeypatch.setenv(AAGUIDS_ENV, "00000000-0000-0000-0000-000000000001")


@pytest.mark.usefixtures("trust_simulator", "another_model_only")
def test_register_refused_for_an_aaguid_not_allowed(client: TestClient, key_file: Path) -> None:
    identity, _ = enrol(client)
    assert_problem(register(client, identity, key_file), 400, "attestation-rejected")


@BOTH_DATABASES
@pytest.mark.usefixtures("trust_simulator")
def test_a_registration_state_is_used_once(client: TestClient, key_file: Path) -> None:
    identity, _ = enrol(client)
    begun = client.post(f"/identities/{identity}/fido2/register/begin").json()
    options = CredentialCreationOptions.from_dict(begun["options"])
    response = {"response": as_json(fido_client(key_file).make_credential(options.public_key))}
    path = f"/fido2/registrations/{begun['state_id']}/complete"
    assert client.post(path, json=response).status_code == 201
    assert_problem(client.post(path, json=response), 409, "conflict")


# --- login ------------------------------------------------------------------------------------


@BOTH_DATABASES
@pytest.mark.usefixtures("trust_simulator")
def test_login_with_a_security_key(client: TestClient, key_file: Path) -> None:
    identity, number = enrol(client)
    assert register(client, identity, key_file).status_code == 201
    transaction = login(client, number)
    answer = assert_with_key(client, transaction, key_file)
    assert answer.status_code == 200, answer.text
    assert answer.json()["factors"] == ["fido2"]
    done = client.post(f"/authentications/{transaction}/complete")
    assert done.status_code == 200, done.text
    claims = jwt.decode(done.json()["assertion"], options={"verify_signature": False})
    assert claims["amr"] == ["fido2"]


@BOTH_DATABASES
@pytest.mark.usefixtures("trust_simulator")
def test_a_cloned_key_is_blocked(client: TestClient, key_file: Path, tmp_path: Path) -> None:
    identity, number = enrol(client)
    assert register(client, identity, key_file).status_code == 201
    clone = tmp_path / "clone.json"
    shutil.copy(key_file, clone)  # a copy with the counter as it was after registration
    first = assert_with_key(client, login(client, number), key_file)
    assert first.status_code == 200, first.text
    assert_problem(
        assert_with_key(client, login(client, number), clone), 401, "verification-failed"
    )
    [credential] = client.get(f"/identities/{identity}/credentials").json()
    assert credential["state"] == "blocked"
    # The original key no longer logs in either: a blocked credential is not offered (decoys
    # stand in for it, as for anyone without an active key).
    transaction = login(client, number)
    begun = client.post(f"/authentications/{transaction}/fido2/begin", json=DISCOURAGED)
    offered = [d["id"] for d in begun.json()["options"]["publicKey"]["allowCredentials"]]
    assert credential["public_data"]["credential_id"] not in offered
    real_id = websafe_decode(credential["public_data"]["credential_id"])
    answer = sign_with(client, transaction, key_file, real_id, begun.json())
    assert_problem(answer, 401, "verification-failed")


@BOTH_DATABASES
@pytest.mark.usefixtures("trust_simulator")
def test_an_assertion_cannot_be_replayed(client: TestClient, key_file: Path) -> None:
    identity, number = enrol(client)
    assert register(client, identity, key_file).status_code == 201
    transaction = login(client, number)
    begun = client.post(f"/authentications/{transaction}/fido2/begin", json=DISCOURAGED).json()
    options = CredentialRequestOptions.from_dict(begun["options"])
    selection = fido_client(key_file).get_assertion(options.public_key)
    body = {"response": as_json(selection.get_response(0))}
    assert client.post(f"/authentications/{transaction}/fido2", json=body).status_code == 200
    assert_problem(
        client.post(f"/authentications/{transaction}/fido2", json=body),
        401,
        "verification-failed",
    )


# --- garbage ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("trust_simulator")
@pytest.mark.parametrize(
    "body",
    [
        {"response": {}},
        {"response": {"id": "x", "rawId": "!!", "response": {}, "type": "public-key"}},
        {"response": {"response": {"clientDataJSON": "AAAA", "attestationObject": "AAAA"}}},
        {"response": "nope"},
        {"other": 1},
        [],
    ],
)
def test_malformed_bodies_answer_4xx(client: TestClient, key_file: Path, body: Any) -> None:
    identity, number = enrol(client)
    begun = client.post(f"/identities/{identity}/fido2/register/begin").json()
    answer = client.post(f"/fido2/registrations/{begun['state_id']}/complete", json=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert register(client, identity, key_file).status_code == 201
    transaction = login(client, number)
    assert (
        client.post(f"/authentications/{transaction}/fido2/begin", json=DISCOURAGED).status_code
        == 200
    )
    answer = client.post(f"/authentications/{transaction}/fido2", json=body)
    assert 400 <= answer.status_code < 500, answer.text


@pytest.mark.parametrize(
    "path",
    [
        "/identities/not-a-uuid/fido2/register/begin",
        "/identities/00000000-0000-0000-0000-000000000009/fido2/register/begin",
        "/fido2/registrations/00000000-0000-0000-0000-000000000009/complete",
        "/authentications/00000000-0000-0000-0000-000000000009/fido2/begin",
        "/authentications/00000000-0000-0000-0000-000000000009/fido2",
    ],
)
def test_unknown_ids_answer_4xx(client: TestClient, path: str) -> None:
    answer = client.post(path, content=b"{not json", headers={"content-type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text
    answer = client.post(path, json={"response": {}})
    assert 400 <= answer.status_code < 500, answer.text


def test_a_registration_state_is_not_a_login(client: TestClient) -> None:
    identity, _ = enrol(client)
    state_id = client.post(f"/identities/{identity}/fido2/register/begin").json()["state_id"]
    assert_problem(client.post(f"/authentications/{state_id}/fido2/begin"), 404)
    assert client.post(f"/authentications/{state_id}/complete").status_code in {403, 404, 409}


# --- no account enumeration -------------------------------------------------------------------


def begin_options(client: TestClient, number: str) -> tuple[str, dict[str, Any]]:
    transaction = login(client, number)
    begun = client.post(f"/authentications/{transaction}/fido2/begin", json=DISCOURAGED)
    assert begun.status_code == 200, begun.text
    body: dict[str, Any] = begun.json()
    return transaction, body


def shape(body: dict[str, Any]) -> dict[str, Any]:
    """Everything an observer can compare across answers, with the random values replaced by
    their form: the keys, the challenge's length, and every other value as it is; the offered
    credentials are compared by ``real_key_shaped`` (their count varies, as people's keys do)."""
    public = dict(body["options"]["publicKey"])
    public["challenge"] = len(websafe_decode(public["challenge"]))
    public["allowCredentials"] = sorted({d["type"] for d in public["allowCredentials"]})
    return {"keys": sorted(body), "options": sorted(body["options"]), "publicKey": public}


def real_key_shaped(body: dict[str, Any]) -> bool:
    """Each offered credential id has the length and format byte of a real key's: this
    service's model (63 bytes, format 01) or the 64-byte key handle of most others."""
    ids = [websafe_decode(d["id"]) for d in body["options"]["publicKey"]["allowCredentials"]]
    return 1 <= len(ids) <= 3 and all((len(i), i[0]) == (63, 1) or len(i) == 64 for i in ids)


def offered_ids(body: dict[str, Any]) -> list[str]:
    return [d["id"] for d in body["options"]["publicKey"]["allowCredentials"]]


@pytest.mark.usefixtures("trust_simulator")
def test_begin_looks_the_same_for_a_key_holder_a_person_without_and_nobody(
    client: TestClient, key_file: Path
) -> None:
    holder, holder_number = enrol(client)
    assert register(client, holder, key_file).status_code == 201
    _, keyless_number = enrol(client)

    _, real = begin_options(client, holder_number)
    _, keyless = begin_options(client, keyless_number)
    _, unknown = begin_options(client, "311299-9999")
    _, malformed = begin_options(client, "not a person number")

    assert len(offered_ids(real)) == 1
    assert shape(real) == shape(keyless) == shape(unknown) == shape(malformed)
    assert all(real_key_shaped(body) for body in (real, keyless, unknown, malformed))
    assert len({offered_ids(b)[0] for b in (real, keyless, unknown, malformed)}) == 4


@pytest.mark.usefixtures("trust_simulator")
def test_decoys_are_the_same_for_a_person_in_every_login_and_differ_between_people(
    client: TestClient, key_file: Path
) -> None:
    holder, holder_number = enrol(client)
    assert register(client, holder, key_file).status_code == 201
    _, first_number = enrol(client)
    _, second_number = enrol(client)

    # A key holder is offered the same id in every login; so must a person without a key be.
    assert offered_ids(begin_options(client, holder_number)[1]) == offered_ids(
        begin_options(client, holder_number)[1]
    )
    first = offered_ids(begin_options(client, first_number)[1])
    assert first == offered_ids(begin_options(client, first_number)[1])
    assert first != offered_ids(begin_options(client, second_number)[1])
    # So must a person number that matches nobody, typed in any accepted form.
    unknown = offered_ids(begin_options(client, "311299-9999")[1])
    assert unknown == offered_ids(begin_options(client, "3112999999")[1])
    assert unknown != offered_ids(begin_options(client, "301299-9999")[1])


@pytest.mark.usefixtures("trust_simulator")
def test_an_assertion_without_a_key_fails_like_a_wrong_one(
    client: TestClient, key_file: Path, tmp_path: Path
) -> None:
    holder, holder_number = enrol(client)
    assert register(client, holder, key_file).status_code == 201
    [credential] = client.get(f"/identities/{holder}/credentials").json()
    real_id = websafe_decode(credential["public_data"]["credential_id"])
    # Another key's valid assertion: a wrong one for the holder.
    stranger_key = tmp_path / "stranger.json"
    new_fido_state(stranger_key, manufacturer_home=tmp_path / "sim")
    stranger, _ = enrol(client)
    assert register(client, stranger, stranger_key).status_code == 201
    [other] = client.get(f"/identities/{stranger}/credentials").json()
    stranger_id = websafe_decode(other["public_data"]["credential_id"])
    _, keyless_number = enrol(client)

    answers = []
    for number, key, credential_id in [
        (holder_number, stranger_key, stranger_id),  # a real account, the wrong key
        (keyless_number, key_file, real_id),  # an account without a key
        ("311299-9999", key_file, real_id),  # nobody
    ]:
        transaction, begun = begin_options(client, number)
        answer = sign_with(client, transaction, key, credential_id, begun)
        answers.append(assert_problem(answer, 401, "verification-failed"))
        with client.app.state.services.sessions() as session:  # type: ignore[attr-defined]
            row = session.get(AuthTransaction, uuid.UUID(transaction))
            assert row is not None
            assert row.challenge is None  # consumed by the try, for nobody too
    assert answers[0] == answers[1] == answers[2]
