"""The sweep removes the OpenID Provider's rows once they expired (waiting requests, codes,
access tokens, assertion ids) and keeps the rest; an assertion id another client also used
stays while that client's is still valid."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.domain.model import Level
from server.storage.oidc_tables import OidcAssertionId, OidcCode, OidcRequest, OidcToken
from server.storage.repositories import IdentityRepository
from server.storage.sweep_repositories import SweepRepository
from server.storage.tables import Identity

pytestmark = pytest.mark.databases("sqlite", "postgresql")

NOW = dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC)


def _rows(identity: uuid.UUID, name: str, expires: dt.datetime) -> list[object]:
    return [
        OidcRequest(transaction_id=uuid.uuid4(), client_id="rp", params={}, expires_at=expires),
        OidcCode(
            code_digest=f"code-{name}",
            client_id="rp",
            transaction_id=uuid.uuid4(),
            identity_id=identity,
            redirect_uri="https://rp.example/cb",
            scope="openid",
            code_challenge="c" * 43,
            code_challenge_method="S256",
            acr="acr",
            amr=["pwd"],
            auth_time=NOW,
            sid="sid",
            claims={},
            expires_at=expires,
        ),
        OidcToken(
            token_digest=f"token-{name}",
            code_digest=f"code-{name}",
            client_id="rp",
            identity_id=identity,
            scope="openid",
            expires_at=expires,
        ),
        OidcAssertionId(client_id=f"rp-{name}", jti="same-jti", expires_at=expires),
    ]


def test_expired_rows_go_and_live_ones_stay(session: Session) -> None:
    person = IdentityRepository(session).add(
        Identity(person_number="0101901234", name="A", identity_assurance=Level.LOW)
    )
    session.add_all(_rows(person.id, "old", NOW - dt.timedelta(seconds=1)))
    session.add_all(_rows(person.id, "live", NOW + dt.timedelta(minutes=1)))
    session.flush()
    assert SweepRepository(session).oidc(NOW, limit=10) == 4
    for model in (OidcRequest, OidcCode, OidcToken, OidcAssertionId):
        assert session.scalar(select(func.count()).select_from(model)) == 1
    assert session.scalar(select(OidcAssertionId.client_id)) == "rp-live"
    assert SweepRepository(session).oidc(NOW, limit=10) == 0
