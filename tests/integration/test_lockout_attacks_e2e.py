"""End to end against a real ``akkreditiv serve``: the attacks of someone who knows a person
number and has a few addresses (127.0.0.x, each its own source), and what the person can
still do from their own address afterwards.

Every request goes over a real socket from the address it names, so the service sees the
sources an attacker would have; nothing is reset between the attack and the person's login.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.services.throttles import SUBJECT_RATE, TOKEN_BLOCK
from tests.integration.conftest import CliRunner
from tests.integration.server_process import ServerProcess, start_server
from tests.integration.test_otp_login_e2e import (
    PROVIDER,
    STEP,
    Portal,
    new_token,
    shown,
)

pytestmark = pytest.mark.integration

OWN = "127.0.0.1"  # the person's own address


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("attacks")
    server = start_server(
        folder, f"sqlite+pysqlite:///{folder / 'akkreditiv.db'}", provider=PROVIDER
    )
    try:
        yield server
    finally:
        server.stop()


def client_from(server: ServerProcess, address: str) -> httpx.Client:
    """A client whose connections leave from ``address`` (any 127.0.0.x is this machine)."""
    return httpx.Client(
        base_url=server.url,
        headers=server.headers,
        timeout=30,
        transport=httpx.HTTPTransport(local_address=address),
    )


class Attacker:
    """Begins logins and names the victim: no password, no token, only the number."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def identified(self, person: str) -> str:
        begun = self.http.post("/authentications", json={"provider": PROVIDER})
        assert begun.status_code == 201, begun.text
        transaction = str(begun.json()["id"])
        answer = self.http.post(
            f"/authentications/{transaction}/identify", json={"person_number": person}
        )
        assert answer.status_code == 200, answer.text
        return transaction

    def code(self, person: str, code: str) -> httpx.Response:
        transaction = self.identified(person)
        return self.http.post(f"/authentications/{transaction}/otp", json={"code": code})

    def password(self, person: str, password: str) -> httpx.Response:
        transaction = self.identified(person)
        return self.http.post(
            f"/authentications/{transaction}/password", json={"password": password}
        )


@pytest.fixture
def victim(service: ServerProcess, cli: CliRunner, tmp_path: Path) -> tuple[str, str, Path]:
    """A person with a password and an active code display: their number, identity id and
    the display's state."""
    state = tmp_path / "display.json"
    with client_from(service, OWN) as http:
        portal = Portal(service, http)
        person, identity = portal.enrol()
        credential = portal.import_and_assign(new_token(cli, "otp-display", state), identity)
        portal.activate(credential, shown(cli, state, time.time()))
    return person, identity, state


def test_three_anonymous_wrong_codes_leave_the_persons_token_working(
    service: ServerProcess, cli: CliRunner, victim: tuple[str, str, Path]
) -> None:
    person, _identity, state = victim
    with client_from(service, "127.0.0.2") as http:
        attacker = Attacker(http)
        for guess in ("000000", "111111", "222222"):
            assert attacker.code(person, guess).status_code == 401
    with client_from(service, OWN) as http:
        claims = Portal(service, http).login(person, shown(cli, state, time.time() + STEP))
    assert claims["loa"] == "substantial"


def test_a_hundred_wrong_passwords_from_six_addresses_lock_no_one_out(
    service: ServerProcess, cli: CliRunner, victim: tuple[str, str, Path]
) -> None:
    person, _identity, state = victim
    with client_from(service, OWN) as http:  # the person has logged in from home before
        Portal(service, http).login(person, shown(cli, state, time.time() + STEP))
    addresses = [f"127.0.0.{n}" for n in range(10, 16)]
    clients = [client_from(service, address) for address in addresses]
    statuses: list[int] = []
    try:
        attackers = [Attacker(http) for http in clients]
        for n in range(100):
            answer = attackers[n % 6].password(person, f"guess number {n}")
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                assert int(answer.headers["retry-after"]) >= 1
                assert answer.json()["type"].endswith(":rate-limited")
    finally:
        for http in clients:
            http.close()
    assert set(statuses) == {401, 429}
    # Each address had its few tries at this person; the rest were not even checked.
    assert statuses.count(401) <= 6 * SUBJECT_RATE.burst
    # The person, from their own address, at once: password and code.
    with client_from(service, OWN) as http:
        later = shown(cli, state, time.time() + 2 * STEP)
        claims = Portal(service, http).login(person, later)
    assert claims["amr"] == ["code_display", "password"]


def test_wrong_codes_after_the_password_block_the_token_for_minutes_not_for_good(
    service: ServerProcess, cli: CliRunner, victim: tuple[str, str, Path]
) -> None:
    person, identity, _state = victim
    with client_from(service, "127.0.0.3") as http:
        portal = Portal(service, http)
        transaction = portal.begin(person)  # someone who knows the password
        for _ in range(2):
            assert portal.otp(transaction, "000000").status_code == 401
        blocked = portal.otp(transaction, "000000")
        assert blocked.status_code == 429, blocked.text
        assert blocked.json()["type"].endswith(":credential-temporarily-blocked")
        assert blocked.headers["retry-after"] == str(int(TOKEN_BLOCK.total_seconds()))
        credentials = http.get(f"/identities/{identity}/credentials")
        assert credentials.status_code == 200, credentials.text
        states = {c["kind"]: c["state"] for c in credentials.json()}
        assert states["code_display"] == "active"  # blocked for a while, never for good
        # While it lasts, the login cannot reach Substantial with it.
        still = portal.otp(transaction, "123456")
        assert still.status_code == 429, still.text
        done = http.post(f"/authentications/{transaction}/complete")
        assert done.status_code == 403, done.text
