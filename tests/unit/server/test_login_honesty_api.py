"""Attacks on a login's honesty over HTTP (issue 15): one security key used twice is one
authenticator; ``complete`` re-checks the identity and every credential used; ``auth_time`` is
when the last factor was proven; the device steps honour the login's browser binding; FIDO2
decoys look like the answers of people with several keys; a person without a password costs a
password's verification; the assertion names the person only for an entitled provider and
echoes the provider's nonce."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from fido2.utils import websafe_decode
from fido2.webauthn import CredentialCreationOptions, CredentialRequestOptions

from devices.protocol.otp import totp
from devices.tokens.fido import FidoSession
from firmware_sim.attach.inprocess_ctap import InProcessCtapDevice
from firmware_sim.tokens.attestation import Manufacturer
from firmware_sim.tokens.ctap2 import AlwaysPresent, load_authenticator, new_fido_state
from server.app import create_app
from server.services.access import Role
from server.services.passwords import Passwords
from server.services.secretbox import SecretBox
from server.settings import Settings
from server.storage.repositories import IdentityRepository
from tests.unit.server.conftest import ORIGIN, SQLITE_ONLY, TEST_PROVIDER, make_key
from tests.unit.server.people import (
    PERSON_STORED,
    SEED,
    assert_problem,
    high_person,
    seed_person_with_code_display,
)
from tests.unit.server.test_fido_api import as_json, enrol, login

pytestmark = SQLITE_ONLY

PIN = "4711"
PERSON = "0101901234"  # the seeded person with a code display


@pytest.fixture(autouse=True)
def sim_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "sim"
    monkeypatch.setenv("AKKREDITIV_SIM_HOME", str(home))
    root = tmp_path / "sim-root.pem"
    root.write_bytes(Manufacturer.load_or_create(home).root_pem())
    monkeypatch.setenv("AKKREDITIV_FIDO_TRUSTED_ROOTS", str(root))
    monkeypatch.delenv("AKKREDITIV_FIDO_ALLOWED_AAGUIDS", raising=False)
    monkeypatch.delenv("AKKREDITIV_FIDO_ALLOW_UNATTESTED", raising=False)
    return home


def _client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    headers = make_key(settings, TEST_PROVIDER, Role.SUPERVISOR, Role.PROVIDER)
    with TestClient(app, raise_server_exceptions=False, headers=headers) as test_client:
        seed_person_with_code_display(
            app.state.services.sessions, SecretBox.from_file(settings.kek_file)
        )
        yield test_client


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    yield from _client(settings)


def services_of(client: TestClient) -> Any:
    return client.app.state.services  # type: ignore[attr-defined]


def key_session(tmp_path: Path, sim_home: Path, name: str) -> FidoSession:
    path = tmp_path / f"{name}.json"
    new_fido_state(path, manufacturer_home=sim_home)
    return FidoSession(InProcessCtapDevice(load_authenticator(path, AlwaysPresent())))


def uv(pin: str | None) -> dict[str, str]:
    return {"user_verification": "required" if pin else "discouraged"}


def register(client: TestClient, identity: str, key: FidoSession, pin: str | None = None) -> str:
    begun = client.post(f"/identities/{identity}/fido2/register/begin", json=uv(pin))
    assert begun.status_code == 201, begun.text
    options = CredentialCreationOptions.from_dict(begun.json()["options"])
    made = key.make_credential(options.public_key, origin=ORIGIN, pin=pin)
    done = client.post(
        f"/fido2/registrations/{begun.json()['state_id']}/complete",
        json={"response": as_json(made)},
    )
    assert done.status_code == 201, done.text
    return str(done.json()["public_data"]["credential_id"])


def start(client: TestClient, number: str, **extra: Any) -> str:
    """A login at level Low for ``number`` (with ``extra`` fields sent when it begins)."""
    if not extra:
        return login(client, number)
    begun = client.post("/authentications", json={"provider": TEST_PROVIDER, **extra})
    assert begun.status_code == 201, begun.text
    transaction = str(begun.json()["id"])
    path = f"/authentications/{transaction}/identify"
    assert client.post(path, json={"person_number": number}).status_code == 200
    return transaction


def sign_in(client: TestClient, transaction: str, key: FidoSession, pin: str | None) -> Any:
    begun = client.post(f"/authentications/{transaction}/fido2/begin", json=uv(pin))
    assert begun.status_code == 200, begun.text
    options = CredentialRequestOptions.from_dict(begun.json()["options"]).public_key
    assertion = key.get_assertion(options, origin=ORIGIN, pin=pin)
    return client.post(
        f"/authentications/{transaction}/fido2", json={"response": as_json(assertion)}
    )


def claims_of(client: TestClient, transaction: str) -> dict[str, Any]:
    done = client.post(f"/authentications/{transaction}/complete")
    assert done.status_code == 200, done.text
    # The assertion key: ES256 (the JWKS also holds the RS256 key of ID tokens).
    [key] = [k for k in client.get("/.well-known/jwks.json").json()["keys"] if k["alg"] == "ES256"]
    claims: dict[str, Any] = jwt.decode(
        done.json()["assertion"], jwt.PyJWK(key), algorithms=["ES256"], audience=TEST_PROVIDER
    )
    return claims


def code_login(client: TestClient, **extra: Any) -> str:
    transaction = start(client, PERSON, **extra)
    answer = client.post(
        f"/authentications/{transaction}/otp",
        json={"code": totp(SEED, services_of(client).clock())},
    )
    assert answer.status_code == 200, answer.text
    return transaction


def person_id(client: TestClient) -> str:
    with services_of(client).sessions() as session:
        return str(IdentityRepository(session).by_person_number(PERSON_STORED).id)


# --- one key used twice -------------------------------------------------------------------------


def test_one_fido2_key_used_without_and_with_pin_is_one_authenticator(
    client: TestClient, tmp_path: Path, sim_home: Path
) -> None:
    key = key_session(tmp_path, sim_home, "key")
    key.set_pin(PIN)
    identity, number = enrol(client)
    register(client, identity, key, pin=PIN)
    transaction = start(client, number)
    assert sign_in(client, transaction, key, None).json() == {"factors": ["fido2"]}
    assert sign_in(client, transaction, key, PIN).json() == {"factors": ["fido2", "fido2_uv"]}
    claims = claims_of(client, transaction)
    # One key, PIN checked on it: possession and knowledge, Substantial; never High.
    assert claims["aal"] == "substantial"


def test_two_fido2_keys_one_with_pin_are_two_authenticators(
    client: TestClient, tmp_path: Path, sim_home: Path
) -> None:
    first, second = key_session(tmp_path, sim_home, "a"), key_session(tmp_path, sim_home, "b")
    first.set_pin(PIN)
    # Proofed High first: the keys an operator registers then are admitted at High.
    identity, number = high_person(client, "020385-4711", "Tove Ditlevsen")
    register(client, identity, first, pin=PIN)
    register(client, identity, second)
    transaction = start(client, number)
    assert sign_in(client, transaction, first, PIN).status_code == 200
    assert sign_in(client, transaction, second, None).status_code == 200
    assert claims_of(client, transaction)["aal"] == "high"


def test_two_keys_admitted_at_substantial_count_up_to_substantial(
    client: TestClient, tmp_path: Path, sim_home: Path
) -> None:
    """Keys registered while the identity was Substantial are admitted at Substantial: the
    assertion's ``aal`` says what they count toward, not what they could."""
    first, second = key_session(tmp_path, sim_home, "a"), key_session(tmp_path, sim_home, "b")
    first.set_pin(PIN)
    identity, number = enrol(client)
    register(client, identity, first, pin=PIN)
    register(client, identity, second)
    transaction = start(client, number)
    assert sign_in(client, transaction, first, PIN).status_code == 200
    assert sign_in(client, transaction, second, None).status_code == 200
    claims = claims_of(client, transaction)
    assert (claims["aal"], claims["ial"], claims["loa"]) == ("substantial",) * 3


# --- complete re-checks -------------------------------------------------------------------------


def test_complete_refuses_an_identity_suspended_after_its_factor(client: TestClient) -> None:
    transaction = code_login(client)
    suspended = client.post(f"/identities/{person_id(client)}/suspend")
    assert suspended.status_code == 200, suspended.text
    assert_problem(client.post(f"/authentications/{transaction}/complete"), 401)


def test_complete_refuses_a_credential_blocked_after_its_factor(client: TestClient) -> None:
    transaction = code_login(client)
    [credential] = client.get(f"/identities/{person_id(client)}/credentials").json()
    blocked = client.post(f"/credentials/{credential['id']}/state", json={"state": "blocked"})
    assert blocked.status_code == 200, blocked.text
    assert_problem(client.post(f"/authentications/{transaction}/complete"), 401)


def test_auth_time_is_when_the_last_factor_was_proven(client: TestClient) -> None:
    services = services_of(client)
    real = services.clock
    services.clock = lambda: real() - 120  # the factor is proven two minutes ago
    transaction = code_login(client)
    services.clock = real
    claims = claims_of(client, transaction)
    assert claims["auth_time"] <= int(real()) - 100
    assert claims["iat"] >= int(real()) - 5


# --- browser binding ----------------------------------------------------------------------------


def claimed(client: TestClient, number: str) -> str:
    """A login identified through the API, whose pages a browser then opened (claimed)."""
    transaction = start(client, number)
    browser = TestClient(client.app, raise_server_exceptions=False)
    assert browser.get(f"/login/{transaction}", follow_redirects=False).status_code in (200, 303)
    return transaction


def test_fido2_begin_refuses_another_browser_and_reveals_no_credential_id(
    client: TestClient, tmp_path: Path, sim_home: Path
) -> None:
    key = key_session(tmp_path, sim_home, "key")
    identity, number = enrol(client)
    credential_id = register(client, identity, key)
    transaction = claimed(client, number)
    answer = client.post(f"/authentications/{transaction}/fido2/begin", json=uv(None))
    assert credential_id not in answer.text
    assert_problem(answer, 409, "login-bound-elsewhere")


def test_key_card_begin_refuses_another_browser(client: TestClient) -> None:
    transaction = claimed(client, PERSON)
    answer = client.post(f"/authentications/{transaction}/key-card/begin")
    assert_problem(answer, 409, "login-bound-elsewhere")


# --- decoys -------------------------------------------------------------------------------------


def test_fido2_decoys_vary_in_count_and_length_like_people_with_several_keys(
    client: TestClient,
) -> None:
    counts, lengths = set(), set()
    for number in range(40):
        transaction = start(client, f"0101{number:02d}-4321")
        answer = client.post(f"/authentications/{transaction}/fido2/begin", json=uv(None))
        offered = answer.json()["options"]["publicKey"]["allowCredentials"]
        counts.add(len(offered))
        lengths.update(len(websafe_decode(item["id"])) for item in offered)
    assert 1 in counts
    assert 2 in counts
    assert len(lengths) > 1


# --- a person without a password ----------------------------------------------------------------


class CountingPasswords(Passwords):
    verified = 0

    def verify_password(self, password_hash: str, password: str) -> None:
        CountingPasswords.verified += 1
        super().verify_password(password_hash, password)


def test_a_person_without_a_password_costs_one_verification_as_others_do(
    client: TestClient,
) -> None:
    services = services_of(client)
    counting = CountingPasswords(services.passwords._parameters)
    services.passwords = counting
    for number in (PERSON, "0202024321"):  # no password; no such person
        CountingPasswords.verified = 0
        transaction = start(client, number)
        answer = client.post(
            f"/authentications/{transaction}/password", json={"password": "x" * 12}
        )
        assert answer.status_code == 401
        assert CountingPasswords.verified == 1, number


# --- what the assertion carries -----------------------------------------------------------------


def test_the_assertion_carries_no_name_by_default_and_echoes_the_nonce(
    client: TestClient,
) -> None:
    claims = claims_of(client, code_login(client, nonce="n-0S6_WzA2Mj"))
    assert "name" not in claims
    assert claims["nonce"] == "n-0S6_WzA2Mj"


def test_an_assertion_without_a_nonce_sent_has_none(client: TestClient) -> None:
    assert "nonce" not in claims_of(client, code_login(client))


def test_an_entitled_provider_gets_the_name(settings: Settings) -> None:
    entitled = settings.model_copy(update={"name_providers": [TEST_PROVIDER]})
    for client in _client(entitled):
        assert claims_of(client, code_login(client))["name"] == "Test Person"
