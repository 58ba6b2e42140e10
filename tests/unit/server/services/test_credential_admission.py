"""Who may add a credential (``credentials.admission``): the level each kind needs, worked out
from the NSIS rules, and the FIDO2 and PIV services refusing a login below it (audited, the
refusal committed with its answer) while an operator with the person present is admitted."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from devices.protocol.otp import totp
from server.api.problems import answer_of
from server.domain.model import CredentialKind, CredentialState, IdentityStatus, Level
from server.services.assurance import credential_reach
from server.services.credentials.admission import (
    IN_PERSON,
    AddedBy,
    LevelTooLowForCredential,
    admitted_level,
    level_to_add,
    recorded_level,
    refusal,
)
from server.services.factors import PasswordCheck, otp_check
from server.services.login.errors import StepUpRequired
from server.settings import Settings
from server.storage.repositories import IdentityRepository
from server.storage.tables import AuditEntry, AuthTransaction, Credential, Identity
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


# --- the level a credential is admitted at -------------------------------------------------------


@pytest.mark.parametrize(
    ("by", "identity_assurance", "admitted"),
    [
        (AddedBy.login(Level.SUBSTANTIAL), Level.SUBSTANTIAL, Level.SUBSTANTIAL),
        (AddedBy.login(Level.SUBSTANTIAL), Level.HIGH, Level.SUBSTANTIAL),  # the login's
        (AddedBy.login(Level.HIGH), Level.HIGH, Level.HIGH),
        (AddedBy.login(Level.HIGH), Level.SUBSTANTIAL, Level.SUBSTANTIAL),  # the identity's
        (IN_PERSON, Level.SUBSTANTIAL, Level.SUBSTANTIAL),
        (IN_PERSON, Level.HIGH, Level.HIGH),
    ],
)
def test_a_credential_is_admitted_at_the_login_capped_at_the_identity(
    by: AddedBy, identity_assurance: Level, admitted: Level
) -> None:
    identity = Identity(id=uuid.uuid4(), identity_assurance=identity_assurance)
    assert admitted_level(identity, by) is admitted


@pytest.mark.parametrize("kind", [K.FIDO2, K.PIV])
def test_the_ceremony_keeps_the_admitted_level_from_its_beginning(
    services: Services, kind: CredentialKind
) -> None:
    identity_id = person(services, Level.HIGH)

    begin(services, kind, identity_id, AddedBy.login(Level.HIGH))

    with services.sessions() as session:
        (row,) = session.scalars(select(AuthTransaction))
        assert recorded_level(row.ceremony_state) is Level.HIGH


def test_a_login_counts_each_credential_only_up_to_its_admitted_level(
    services: Services,
) -> None:
    """A password a Low login set (the identity was Low then, raised to Substantial since)
    and a code display admitted at Substantial: together they reach Substantial by the NSIS
    rules, but only the code display counts at Substantial, so the login is Low, both where
    the pages ask how far it got and at ``complete``; admitted in person, it is Substantial."""
    identity_id = person(services, Level.SUBSTANTIAL)
    token_seed = b"12345678901234567890"
    with services.sessions() as session, session.begin():
        credentials = services.credentials(session)
        password = credentials.set_password(
            identity_id, "an entirely ordinary passphrase", added_by=AddedBy.login(Level.LOW)
        )
        assert recorded_level(password.public_data) is Level.LOW
        display_id = uuid.uuid4()
        credentials.add(
            Credential(
                id=display_id,
                identity_id=identity_id,
                kind=K.CODE_DISPLAY,
                state=CredentialState.ACTIVE,
                serial="1000000001",
                secret_ciphertext=services.secrets.seal(
                    token_seed, context=f"credential:{display_id}"
                ),
                public_data={
                    "algorithm": "totp",
                    "digits": 6,
                    "step": 30,
                    "hash": "SHA1",
                    "admitted_level": "substantial",
                },
            )
        )
        password_id = password.id

    def login() -> uuid.UUID:
        with services.sessions() as session, session.begin():
            auth = services.authentication(session)
            transaction = auth.begin("https://sp.example", Level.SUBSTANTIAL)
            auth.identify(transaction.id, identity_id)
            check = PasswordCheck(
                services.secrets,
                services.passwords,
                services.clock,
                decoy_hash=services.password_decoy,
            )
            auth.verify_factor(
                transaction.id,
                check,
                {"password": "an entirely ordinary passphrase"},
                source="10.0.0.1",
            )
            code = totp(token_seed, services.clock())
            auth.verify_factor(
                transaction.id,
                otp_check(services.secrets, services.clock),
                {"code": code},
                source="10.0.0.1",
            )
            transaction_id: uuid.UUID = transaction.id
            return transaction_id

    transaction_id = login()
    with services.sessions() as session, session.begin():
        auth = services.authentication(session)
        assert auth.standing(transaction_id).achieved is Level.LOW
        with pytest.raises(StepUpRequired) as refused:
            auth.complete(transaction_id)
        assert (refused.value.achieved, refused.value.required) == (Level.LOW, Level.SUBSTANTIAL)
        services.credentials(session).admit_in_person(password_id)
        assert auth.standing(transaction_id).achieved is Level.SUBSTANTIAL
        assert auth.complete(transaction_id).level is Level.SUBSTANTIAL
