"""Who may add a credential (``credentials.admission``): the level each kind needs, worked out
from the NSIS rules, and the FIDO2 and PIV services refusing a login below it (audited, the
refusal committed with its answer) while an operator with the person present is admitted."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from server.api.problems import answer_of
from server.domain.model import CredentialKind, IdentityStatus, Level
from server.services.assurance import credential_reach
from server.services.credentials.admission import (
    IN_PERSON,
    AddedBy,
    LevelTooLowForCredential,
    level_to_add,
    refusal,
)
from server.settings import Settings
from server.storage.repositories import IdentityRepository
from server.storage.tables import AuditEntry, AuthTransaction, Identity
from server.wiring import Services, build_services

K = CredentialKind


@pytest.mark.parametrize(
    ("kind", "reach"),
    [
        (K.PIV, Level.HIGH),  # alone: the PIN is verified on the card
        (K.FIDO2, Level.HIGH),  # with its PIN, and a second key
        (K.PASSWORD, Level.SUBSTANTIAL),  # with any factor of the other category
        (K.CODE_DISPLAY, Level.SUBSTANTIAL),  # manually typed codes never reach High
        (K.AUDIO_READER, Level.SUBSTANTIAL),
        (K.OTP_TOKEN, Level.SUBSTANTIAL),  # its key is shared with the server
        (K.KEY_CARD, Level.SUBSTANTIAL),
    ],
)
def test_what_each_credential_can_lift_a_login_to(kind: CredentialKind, reach: Level) -> None:
    assert credential_reach(kind) == reach


def test_adding_needs_the_credentials_reach_within_the_identitys_own_level() -> None:
    assert level_to_add(K.PIV, Level.HIGH) is Level.HIGH
    assert level_to_add(K.FIDO2, Level.HIGH) is Level.HIGH
    assert level_to_add(K.CODE_DISPLAY, Level.HIGH) is Level.SUBSTANTIAL
    assert level_to_add(K.PASSWORD, Level.HIGH) is Level.SUBSTANTIAL
    # No login of a Substantial identity reaches High, and no credential gives it more.
    assert level_to_add(K.PIV, Level.SUBSTANTIAL) is Level.SUBSTANTIAL
    assert level_to_add(K.PASSWORD, Level.LOW) is Level.LOW


def test_the_refusal_is_a_403_that_says_what_is_needed() -> None:
    answer = answer_of(LevelTooLowForCredential(K.PIV, Level.HIGH, Level.SUBSTANTIAL))

    assert answer.status_code == 403
    body = answer.body.decode()
    assert '"type":"urn:akkreditiv:problem:level-too-low-for-credential"' in body
    assert '"required":"high"' in body
    assert '"achieved":"substantial"' in body
    assert "log in at that level first" in body


# --- the services ------------------------------------------------------------------------------


@pytest.fixture
def services(settings: Settings, engine: Engine, tmp_path: Path) -> Services:
    return build_services(
        settings.model_copy(
            update={
                "piv_ca_key_file": tmp_path / "piv" / "ca-key.pem",
                "piv_ca_cert_file": tmp_path / "piv" / "ca.pem",
            }
        ),
        engine,
    )


def person(services: Services, assurance: Level) -> uuid.UUID:
    with services.sessions() as session, session.begin():
        identity = IdentityRepository(session).add(
            Identity(
                person_number="010190-1234",
                name="Test Person",
                status=IdentityStatus.ACTIVE,
                identity_assurance=assurance,
            )
        )
        identity_id: uuid.UUID = identity.id
    return identity_id


def begin(services: Services, kind: CredentialKind, identity_id: uuid.UUID, by: AddedBy) -> Any:
    """Begin adding ``kind`` as a page or route does; a refusal is committed as the unit of
    work commits a recorded failure, and returned."""
    with services.sessions() as session:
        try:
            if kind is K.FIDO2:
                begun: Any = services.fido(session, "citizen").register_begin(
                    identity_id, added_by=by
                )
            else:
                begun = services.piv(session, "citizen").enrol_begin(identity_id, added_by=by)
        except LevelTooLowForCredential as refused:
            if refused.recorded:
                session.commit()
            return refused
        session.commit()
        return begun


def events(services: Services, event: str) -> list[dict[str, Any]]:
    with services.sessions() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.event == event))
        return [dict(row.details) for row in rows]


def ceremonies(services: Services) -> int:
    with services.sessions() as session:
        return len(list(session.scalars(select(AuthTransaction))))


@pytest.mark.parametrize("kind", [K.FIDO2, K.PIV])
def test_a_substantial_login_begins_nothing_for_a_high_identity(
    services: Services, kind: CredentialKind
) -> None:
    identity_id = person(services, Level.HIGH)

    refused = begin(services, kind, identity_id, AddedBy.login(Level.SUBSTANTIAL))

    assert isinstance(refused, LevelTooLowForCredential)
    assert refused.recorded  # committed with the answer, audit entry and all
    assert refused.required is Level.HIGH
    assert ceremonies(services) == 0
    assert events(services, "credential.addition_refused") == [
        {
            "identity_id": str(identity_id),
            "kind": kind.value,
            "required_level": "high",
            "login_level": "substantial",
        }
    ]


@pytest.mark.parametrize("kind", [K.FIDO2, K.PIV])
def test_a_high_login_or_an_operator_in_person_begins_it(
    services: Services, kind: CredentialKind
) -> None:
    identity_id = person(services, Level.HIGH)

    for by in (AddedBy.login(Level.HIGH), IN_PERSON):
        assert not isinstance(begin(services, kind, identity_id, by), LevelTooLowForCredential)

    assert ceremonies(services) == 2
    begun = "fido2.registration_begun" if kind is K.FIDO2 else "piv.enrolment_begun"
    assert [e["added_by"] for e in events(services, begun)] == ["login:high", "in_person"]
    assert not events(services, "credential.addition_refused")


@pytest.mark.parametrize("kind", [K.FIDO2, K.PIV])
def test_a_substantial_login_adds_one_for_a_substantial_identity(
    services: Services, kind: CredentialKind
) -> None:
    """The key gives that person no more than Substantial: their identity caps every login."""
    identity_id = person(services, Level.SUBSTANTIAL)

    begun = begin(services, kind, identity_id, AddedBy.login(Level.SUBSTANTIAL))

    assert not isinstance(begun, LevelTooLowForCredential)


def test_a_session_of_unknown_level_adds_nothing() -> None:
    identity = Identity(id=uuid.uuid4(), identity_assurance=Level.LOW)
    refused = refusal(K.PASSWORD, identity, AddedBy.login(None))
    assert refused is not None
    assert refused.required is Level.LOW
    assert refusal(K.PASSWORD, identity, IN_PERSON) is None
