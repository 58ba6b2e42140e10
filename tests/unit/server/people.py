"""Test people: an enrolled identity holding an active code display with a known seed."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server.domain.errors import DomainError
from server.domain.model import CredentialKind, CredentialState, IdentityStatus, Level
from server.services.secretbox import SecretBox
from server.storage.repositories import CredentialRepository, IdentityRepository
from server.storage.tables import Credential, Identity

SEED = b"12345678901234567890"  # RFC 6238's SHA-1 seed
PERSON_STORED = "010190-1234"  # as the identity service stores it


def seed_person_with_code_display(
    sessions: Any, box: SecretBox, person_number: str = PERSON_STORED
) -> uuid.UUID:
    """Add the person (identity assurance Substantial) and their code display; return the id."""
    with sessions() as session, session.begin():
        identity = IdentityRepository(session).add(
            Identity(
                person_number=person_number,
                name="Test Person",
                status=IdentityStatus.ACTIVE,
                identity_assurance=Level.SUBSTANTIAL,
            )
        )
        credential_id = uuid.uuid4()
        CredentialRepository(session).add(
            Credential(
                id=credential_id,
                identity_id=identity.id,
                kind=CredentialKind.CODE_DISPLAY,
                state=CredentialState.ACTIVE,
                serial="1000000001",
                secret_ciphertext=box.seal(SEED, context=f"credential:{credential_id}"),
                public_data={"algorithm": "totp", "digits": 6, "step": 30, "hash": "SHA1"},
            )
        )
        identity_id: uuid.UUID = identity.id
    return identity_id


PROBLEM = "application/problem+json"
SELF_SERVICE = {"channel": "self_service", "document_kind": "passport_chip"}


def second_operator_approves(client: Any, person: dict[str, Any]) -> dict[str, Any]:
    """Approve the High proofing ``person`` (an identity's JSON) waits for, with a second
    key of its own (a supervisor: of any organisation); the identity's JSON after."""
    from server.services.access import Role

    _, key = client.app.state.services.api_keys.add("second-supervisor", [Role.SUPERVISOR])
    waiting = client.get("/proofings", params={"identity_id": person["id"]})
    assert waiting.status_code == 200, waiting.text
    pending = waiting.json()[-1]["id"]
    answer = client.post(
        f"/proofings/{pending}/approve", headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text
    approved: dict[str, Any] = answer.json()
    return approved


def assert_problem(answer: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The answer is a problem+json with ``status`` (and, if given, the problem ``code``)."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body: dict[str, Any] = answer.json()
    if code is not None:
        assert body["type"] == f"urn:akkreditiv:problem:{code}"
    return body


def enrol_via_api(
    client: Any, number: str, name: str, proofing: dict[str, Any] | None = None
) -> tuple[str, str]:
    """Enrol ``number`` through the API; the identity's id and the number."""
    answer = client.post(
        "/identities",
        json={"person_number": number, "name": name, "proofing": proofing or SELF_SERVICE},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"]), number


IN_PERSON_HIGH = {
    "channel": "service_centre",
    "document_kind": "passport",
    "operator_ids": ["op-1", "op-2"],
}


def high_person(client: Any, number: str, name: str) -> tuple[str, str]:
    """Enrol ``number`` through the API, proofed in person by two operators (the second
    approving with a key of its own): identity assurance High. The id and the number."""
    identity, number = enrol_via_api(client, number, name, IN_PERSON_HIGH)
    assert second_operator_approves(client, {"id": identity})["identity_assurance"] == "high"
    return identity, number


def store_legacy_user(
    app: Any, user_id: str, person_number: str, secret: bytes, *, name: str, password: str
) -> None:
    """A legacy eID user with an active key card (card secret ``secret``, serial
    ``KC<user id's digits>``), put straight into the app's own database as the import does."""
    from server.services.migration.formats import hash_legacy_password
    from server.services.migration.store import LegacyStore

    services = app.state.services
    with services.sessions() as session, session.begin():
        store = LegacyStore(
            session,
            services.secrets,
            services.clock,
            decoy_key=services.keycard_secrets.derive("legacy-decoy"),
        )
        store.add_user(
            user_id, person_number, name, 1975, hash_legacy_password(password, iterations=1000)
        )
        store.issue_card(user_id, secret, serial="KC" + "".join(filter(str.isdigit, user_id)))


@dataclass(frozen=True)
class Attempt:
    """A login factor's outcome as a test looks at it: the factors so far, or the rejection."""

    factors: list[str]
    failure: DomainError | None = None


def attempt_factor(verify: Callable[[], list[str]]) -> Attempt:
    """Run ``verify`` (an ``AuthenticationService.verify_factor`` call) inside the caller's
    transaction, catching the rejection there as the unit of work does, so that what a failure
    recorded is committed with the transaction."""
    try:
        return Attempt(verify())
    except DomainError as exc:
        if not exc.recorded:
            raise
        return Attempt([], exc)
