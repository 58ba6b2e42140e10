"""``in_transaction``, the transaction of a login step's route: what the work wrote is
committed when it returns (also when it committed itself) and rolled back when it raises, and
the answer comes after the commit. On both databases: rolling back is where they differ."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.api.deps import SessionDep, in_transaction
from server.app import create_app
from server.domain.errors import ConflictingState, FactorRejected
from server.settings import Settings
from server.storage.tables import RateLimit
from server.wiring import Services
from tests.unit.server.conftest import BOTH_DATABASES

pytestmark = BOTH_DATABASES


class StepRefused(ConflictingState):
    code = "conflict"  # a conflict: answered 409


def _write(session: Session, key: str) -> None:
    session.add(RateLimit(key=key, failures=1, window_start=dt.datetime.now(dt.UTC)))
    session.flush()


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    app = create_app(settings)

    @app.post("/test/write/{key}")
    async def write(key: str, request: Request) -> dict[str, str]:
        def work(session: Session, services: Services) -> str:
            _write(session, key)
            return key

        return {"written": await in_transaction(request, work)}

    @app.post("/test/write-then-commit/{key}")
    async def write_then_commit(key: str, request: Request) -> dict[str, bool]:
        def work(session: Session, services: Services) -> bool:
            _write(session, key)
            session.commit()
            return session.in_transaction()

        return {"in_transaction_after": await in_transaction(request, work)}

    @app.post("/test/write-then-refuse/{key}")
    async def write_then_refuse(key: str, request: Request) -> None:
        def work(session: Session, services: Services) -> None:
            _write(session, key)
            raise StepRefused("refused after writing", detail="nothing written stays")

        await in_transaction(request, work)

    @app.post("/test/write-then-reject/{key}")
    async def write_then_reject(key: str, request: Request) -> None:
        def work(session: Session, services: Services) -> None:
            _write(session, key)
            raise FactorRejected("wrong code")  # recorded: what it wrote is kept

        await in_transaction(request, work)

    @app.post("/test/page-write-then-reject/{key}")
    def page_write_then_reject(key: str, session: SessionDep) -> None:
        _write(session, key)
        raise StepRefused("refused", detail="kept").record(index="17")

    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _stored(app: FastAPI) -> set[str]:
    with app.state.sessions() as session:
        return set(session.scalars(select(RateLimit.key).where(RateLimit.key.like("test:%"))))


def test_what_the_work_wrote_is_committed_before_the_answer(
    app: FastAPI, client: TestClient
) -> None:
    answer = client.post("/test/write/test:one")

    assert answer.status_code == 200
    assert answer.json() == {"written": "test:one"}
    # A new session, in this thread, straight after the answer: the row is there.
    assert _stored(app) == {"test:one"}


def test_work_that_committed_itself_is_left_committed(app: FastAPI, client: TestClient) -> None:
    answer = client.post("/test/write-then-commit/test:two")

    assert answer.status_code == 200
    assert answer.json() == {"in_transaction_after": False}
    assert _stored(app) == {"test:two"}


def test_work_that_raises_writes_nothing_and_answers_its_problem(
    app: FastAPI, client: TestClient
) -> None:
    answer = client.post("/test/write-then-refuse/test:three")

    assert answer.status_code == 409
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["detail"] == "nothing written stays"
    assert _stored(app) == set()
    # The session was closed and its connection returned: the next request works.
    assert client.post("/test/write/test:four").status_code == 200
    assert _stored(app) == {"test:four"}


def test_a_recorded_failure_keeps_what_it_wrote_and_answers_its_problem(
    app: FastAPI, client: TestClient
) -> None:
    answer = client.post("/test/write-then-reject/test:five")

    assert answer.status_code == 401
    assert answer.json()["type"].endswith(":verification-failed")
    assert answer.json()["title"] == "Not accepted"
    assert _stored(app) == {"test:five"}


def test_a_recorded_failure_of_a_request_session_is_committed_with_its_members(
    app: FastAPI, client: TestClient
) -> None:
    answer = client.post("/test/page-write-then-reject/test:six")

    assert answer.status_code == 409
    assert answer.json()["index"] == "17"
    assert _stored(app) == {"test:six"}
