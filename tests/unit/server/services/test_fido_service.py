"""FidoService on SQLite and PostgreSQL with the simulated key: the clone audit event, the
counter stored, and registration states that expire and are not accepted twice."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fido2.client import DefaultClientDataCollector, Fido2Client
from fido2.webauthn import CredentialCreationOptions, CredentialRequestOptions
from sqlalchemy.orm import Session, sessionmaker

from firmware_sim.attach.inprocess_ctap import InProcessCtapDevice
from firmware_sim.tokens.attestation import Manufacturer
from firmware_sim.tokens.ctap2 import AlwaysPresent, load_authenticator, new_fido_state
from server.domain.model import AuthenticatorKind, CredentialState, IdentityStatus, Level
from server.services.authentication import AuthenticationService
from server.services.credentials.admission import IN_PERSON
from server.services.fido import AssertionRejected, FidoService, RegistrationExpired
from server.services.pseudonyms import Pseudonyms
from server.services.tokens_jwt import SigningKey
from server.storage.repositories import IdentityRepository
from server.storage.tables import Credential, Identity

ORIGIN = "http://localhost:8000"
DECOY_KEY = b"decoy-key-for-tests-only-32-bytes"


class World:
    def __init__(self, sessions: sessionmaker[Session], tmp_path: Path) -> None:
        self.sessions = sessions
        self.tmp_path = tmp_path
        self.now = time.time()
        self.events: list[tuple[str, dict[str, Any]]] = []
        home = tmp_path / "sim"
        self.root = Manufacturer.load_or_create(home).root_certificate
        self.key = tmp_path / "key.json"
        new_fido_state(self.key, manufacturer_home=home)
        with sessions() as session, session.begin():
            identity = IdentityRepository(session).add(
                Identity(
                    person_number="010190-1234",
                    name="Test Person",
                    status=IdentityStatus.ACTIVE,
                    identity_assurance=Level.SUBSTANTIAL,
                )
            )
            self.identity_id = identity.id

    def fido(self, session: Session) -> FidoService:
        return FidoService(
            session,
            rp_id="localhost",
            origins=[ORIGIN],
            trusted_roots=[self.root],
            decoy_key=DECOY_KEY,
            allowed_aaguids=None,
            audit=lambda event, details: self.events.append((event, details)),
            clock=lambda: self.now,
        )

    def auth(self, session: Session) -> AuthenticationService:
        return AuthenticationService(
            session,
            signer=SigningKey.from_file(self.tmp_path / "signing.pem", create=True).signer(),
            pseudonyms=Pseudonyms.from_file(self.tmp_path / "pseudonym.key", create=True),
            issuer="https://idp.example",
            clock=lambda: dt.datetime.fromtimestamp(self.now, dt.UTC),
        )

    def client(self, key: Path | None = None) -> Fido2Client:
        device = InProcessCtapDevice(load_authenticator(key or self.key, AlwaysPresent()))
        return Fido2Client(device, DefaultClientDataCollector(ORIGIN))

    def begin_registration(self) -> tuple[dict[str, Any], uuid.UUID]:
        with self.sessions() as session, session.begin():
            return self.fido(session).register_begin(self.identity_id, added_by=IN_PERSON)

    def register(self) -> uuid.UUID:
        options, state_id = self.begin_registration()
        made = self.client().make_credential(
            CredentialCreationOptions.from_dict(options).public_key
        )
        with self.sessions() as session, session.begin():
            credential = self.fido(session).register_complete(state_id, as_json(made))
            return credential.id

    def login(self, key: Path) -> list[str] | AssertionRejected:
        with self.sessions() as session, session.begin():
            auth = self.auth(session)
            transaction = auth.begin("https://sp.example", Level.LOW)
            auth.identify(transaction.id, self.identity_id)
            fido = self.fido(session)
            options = fido.fido_begin(transaction.id)
        request = CredentialRequestOptions.from_dict(options).public_key
        request = CredentialRequestOptions.from_dict(
            {"publicKey": {**dict(request), "userVerification": "discouraged"}}
        ).public_key
        assertion = self.client(key).get_assertion(request).get_response(0)
        with self.sessions() as session, session.begin():
            check = self.fido(session).fido_check(transaction.id)
            try:
                kind = check(session, self.identity_id, {"response": as_json(assertion)})
            except AssertionRejected as exc:
                return exc
            return [kind.kind.value]


def as_json(value: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(dict(value)))
    return result


@pytest.fixture
def world(sessions: sessionmaker[Session], tmp_path: Path) -> World:
    return World(sessions, tmp_path)


def test_counter_regression_blocks_and_audits(world: World) -> None:
    credential_id = world.register()
    clone = world.tmp_path / "clone.json"
    shutil.copy(world.key, clone)
    assert world.login(world.key) == [AuthenticatorKind.FIDO2.value]
    with world.sessions() as session:
        stored = session.get(Credential, credential_id)
        assert stored is not None
        counter = stored.counter
        assert counter > 0
    refused = world.login(clone)
    assert isinstance(refused, AssertionRejected)
    assert refused.code == "verification-failed"
    assert refused.reason == "counter-regression"
    with world.sessions() as session:
        blocked = session.get(Credential, credential_id)
        assert blocked is not None
        assert blocked.state is CredentialState.BLOCKED
        assert blocked.counter == counter
    [(_event, details)] = [e for e in world.events if e[0] == "credential.clone_suspected"]
    assert details["credential_id"] == str(credential_id)
    assert details["received_counter"] <= details["stored_counter"]


def test_a_registration_state_expires(world: World) -> None:
    options, state_id = world.begin_registration()
    made = world.client().make_credential(CredentialCreationOptions.from_dict(options).public_key)
    world.now += 3600
    with world.sessions() as session, session.begin(), pytest.raises(RegistrationExpired):
        world.fido(session).register_complete(state_id, as_json(made))
