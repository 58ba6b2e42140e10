"""A card's signature is verified while no one holds SQLite's write lock: the certificate's
parsing and the two ECDSA verifications run before the step's write transaction, on the
challenge the login held then, and that verdict is used in the transaction only for that same
challenge (a verdict on another one is worth nothing)."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any, cast

import pytest
from cryptography import x509
from fastapi.testclient import TestClient

from devices.tokens.piv import PivSession
from server.services.piv.ca import ServiceCa
from server.services.piv.login import (
    PivLogin,
    PivLoginCheck,
    PivLoginRejected,
    SignatureVerdict,
)
from server.settings import Settings
from tests.unit.server import test_piv_api as piv
from tests.unit.server.conftest import SQLITE_ONLY
from tests.unit.server.lock_probe import LockProbe
from tests.unit.server.test_piv_api import (
    begin_piv,
    card_body,
    enrol_card,
    identified_login,
    person,
)

pytestmark = SQLITE_ONLY

# The PIV API tests' fixtures: their settings (the card vendor's root trusted), a card.
settings = piv.settings
card_dir = piv.card_dir
card = piv.card


class CaProbe:
    """The service's real CA, which notes at each certificate check whether another
    connection could take SQLite's write lock at once then."""

    def __init__(self, ca: ServiceCa, settings: Settings) -> None:
        self._ca = ca
        self._lock = LockProbe(settings)
        self.outcomes: list[str] = []

    def verify(self, certificate: x509.Certificate, now: dt.datetime) -> Any:
        self.outcomes.append(self._lock.lock_state())
        return self._ca.verify(certificate, now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ca, name)


def _probe(client: TestClient, settings: Settings) -> CaProbe:
    services = client.app.state.services  # type: ignore[attr-defined]
    probe = CaProbe(services.piv_ca, settings)
    services.piv_ca = cast(ServiceCa, probe)
    return probe


@pytest.mark.parametrize("right", [True, False], ids=["right", "wrong"])
def test_the_card_signature_is_verified_without_the_write_lock(
    client: TestClient, card: PivSession, settings: Settings, right: bool
) -> None:
    identity, number = person(client)
    enrol_card(client, identity, card)
    transaction = identified_login(client, number, min_level="low")
    challenge = begin_piv(client, transaction)
    signed = challenge if right else bytes(len(challenge))
    probe = _probe(client, settings)
    answer = client.post(
        f"/authentications/{transaction}/piv", json=card_body(card, transaction, signed)
    )
    assert answer.status_code == (200 if right else 401), answer.text
    assert probe.outcomes == ["free"]  # verified once, and the lock was free meanwhile


def test_a_verdict_on_another_challenge_is_not_used(client: TestClient, card: PivSession) -> None:
    """A signature found good beforehand, then the login's challenge replaced (a second
    ``piv/begin`` in between): the step verifies again against the challenge it takes, and
    the old signature is refused, although its verdict said it was good."""
    identity, number = person(client)
    enrol_card(client, identity, card)
    transaction = identified_login(client, number, min_level="low")
    first = begin_piv(client, transaction)
    body = card_body(card, transaction, first)
    certificate = base64.b64decode(body["certificate"])
    submitted: dict[str, Any] = {
        "certificate": certificate,
        "signature": base64.b64decode(body["signature"]),
        "origin": body["origin"],
    }
    good = SignatureVerdict(first, x509.load_der_x509_certificate(certificate))
    begin_piv(client, transaction)  # a new challenge replaces the one the verdict was on
    services = client.app.state.services  # type: ignore[attr-defined]
    with services.sessions.begin() as session:
        service = PivLogin(session, ca=services.piv_ca, clock=services.clock)
        check = PivLoginCheck(service, uuid.UUID(transaction), [body["origin"]], verdict=good)
        with pytest.raises(PivLoginRejected) as refused:
            check(session, uuid.UUID(identity), submitted)
    assert refused.value.reason == "bad-signature"
