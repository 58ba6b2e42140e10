"""A security key's assertion is verified while no one holds SQLite's write lock: python-fido2's
checks and the signature's run before the step's write transaction, and that verdict is used
in the transaction only for the same challenge and the same keys. The counter, which clone
detection needs, is still compared and moved in the transaction."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import CredentialRequestOptions

from server.services import fido as fido_service
from server.services.fido_login import AssertionCheck, AssertionRejected, AssertionVerdict
from server.settings import Settings
from tests.unit.server import test_fido_api as fido_api
from tests.unit.server.conftest import ORIGIN, SQLITE_ONLY
from tests.unit.server.lock_probe import LockProbe
from tests.unit.server.test_fido_api import (
    DISCOURAGED,
    as_json,
    enrol,
    fido_client,
    login,
    register,
)
from tests.unit.server.web.forms import csrf_of

pytestmark = [SQLITE_ONLY, pytest.mark.usefixtures("trust_simulator")]

# The FIDO2 API tests' fixtures: the simulator's home and root, a key.
sim_home = fido_api.sim_home
trust_simulator = fido_api.trust_simulator
key_file = fido_api.key_file


def _assertion(client: TestClient, transaction: str, key_file: Path) -> dict[str, Any]:
    begun = client.post(f"/authentications/{transaction}/fido2/begin", json=DISCOURAGED)
    assert begun.status_code == 200, begun.text
    options = CredentialRequestOptions.from_dict(begun.json()["options"])
    selection = fido_client(key_file).get_assertion(options.public_key)
    return {"response": as_json(selection.get_response(0))}


def _watch_verdicts(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> list[str]:
    """At each check of an assertion (the real one, called through), whether another
    connection could take SQLite's write lock at once then."""
    lock = LockProbe(settings)
    outcomes: list[str] = []
    real = fido_service.assertion_verdict

    def probe(*args: Any) -> AssertionVerdict:
        outcomes.append(lock.lock_state())
        return real(*args)

    monkeypatch.setattr(fido_service, "assertion_verdict", probe)
    return outcomes


@pytest.mark.parametrize("right", [True, False], ids=["right", "wrong"])
def test_the_assertion_is_verified_without_the_write_lock(
    client: TestClient,
    key_file: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    right: bool,
) -> None:
    identity, number = enrol(client)
    assert register(client, identity, key_file).status_code == 201
    transaction = login(client, number)
    body = _assertion(client, transaction, key_file)
    if not right:  # another challenge's client data: the signature does not cover this one
        data = json.loads(websafe_decode(body["response"]["response"]["clientDataJSON"]))
        data["challenge"] = websafe_encode(bytes(32))
        encoded = websafe_encode(json.dumps(data).encode())
        body["response"]["response"]["clientDataJSON"] = encoded
    outcomes = _watch_verdicts(monkeypatch, settings)
    answer = client.post(f"/authentications/{transaction}/fido2", json=body)
    assert answer.status_code == (200 if right else 401), answer.text
    assert outcomes == ["free"]  # verified once, and the lock was free meanwhile


def test_a_verdict_on_another_challenge_is_not_used(client: TestClient, key_file: Path) -> None:
    """An assertion found good beforehand, then the login's challenge replaced (a second
    ``fido2/begin``): the step checks again against the state it takes, and refuses."""
    identity, number = enrol(client)
    assert register(client, identity, key_file).status_code == 201
    transaction = login(client, number)
    body = _assertion(client, transaction, key_file)
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.read_sessions() as session:
        fido = services.fido(session)
        state = fido.pending_state(uuid.UUID(transaction))
        good = fido.verdict(state, uuid.UUID(identity), body)
    assert good.refused is None
    assert good.credential is not None
    _assertion(client, transaction, key_file)  # a new challenge replaces the one it was on
    with services.sessions.begin() as session:
        check = AssertionCheck(services.fido(session), uuid.UUID(transaction), good)
        with pytest.raises(AssertionRejected) as refused:
            check(session, uuid.UUID(identity), body)
    assert refused.value.reason != "no-challenge"  # checked again, and the signature failed


def test_the_page_verifies_the_assertion_without_the_write_lock(
    client: TestClient,
    key_file: Path,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The login page's security-key form, as ``webauthn.js`` fills it: the assertion over
    the page's own options, checked before the page's transaction begins."""
    identity, number = enrol(client)
    assert register(client, identity, key_file).status_code == 201
    begun = client.post("/authentications", json={"min_level": "low"})
    assert begun.status_code == 201, begun.text
    transaction = begun.json()["id"]
    with TestClient(client.app, base_url=ORIGIN, raise_server_exceptions=False) as browser:
        page = browser.get(f"/login/{transaction}")
        identified = browser.post(
            f"/login/{transaction}",
            data={"csrf": csrf_of(page), "person_number": number},
            follow_redirects=False,
        )
        assert identified.status_code == 303, identified.text
        page = browser.get(f"/login/{transaction}/security-key")
        found = re.search(r'class="webauthn-options">(.*?)</script>', page.text, re.S)
        assert found is not None
        options = json.loads(found.group(1))
        options["publicKey"]["userVerification"] = "discouraged"  # the key has no PIN
        request = CredentialRequestOptions.from_dict(options)
        selection = fido_client(key_file).get_assertion(request.public_key)
        outcomes = _watch_verdicts(monkeypatch, settings)
        answer = browser.post(
            f"/login/{transaction}/security-key",
            data={
                "csrf": csrf_of(page),
                "credential": json.dumps(as_json(selection.get_response(0))),
            },
            follow_redirects=False,
        )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == f"/login/{transaction}/choose"
    assert outcomes == ["free"]
