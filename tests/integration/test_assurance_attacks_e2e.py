"""End to end against real ``akkreditiv serve`` processes: one operator key does not make an
identity High, and a rewritten or cut audit history fails ``akkreditiv audit verify`` with no
anchor given (the service signed its checkpoint when it stopped)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.services.access import ApiKeys, Role
from tests.integration.server_process import ServerProcess, start_server
from tests.unit.server.services.test_audit_attacks import cut_tail, rewrite_history

pytestmark = pytest.mark.integration

PROVIDER = "https://sp.example"
MADE_UP = ["opbank1", "nobody-at-all"]  # operator ids are text anyone can type


def _sqlite(folder: Path) -> str:
    return f"sqlite+pysqlite:///{folder / 'akkreditiv.db'}"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("assurance")
    server = start_server(folder, _sqlite(folder), provider=PROVIDER)
    try:
        yield server
    finally:
        server.stop()


def operator_key(server: ServerProcess, name: str, organisation: str) -> dict[str, str]:
    """A bank operator's key, added to the running service's key file (read again on change)."""
    keys = ApiKeys(Path(server.env["AKKREDITIV_API_KEYS_FILE"]))
    _, secret = keys.add(name, [Role.OPERATOR_BANK], organisation=organisation)
    return {"Authorization": f"Bearer {secret}"}


def _ok(answer: httpx.Response, status: int = 200) -> Any:
    assert answer.status_code == status, answer.text
    return answer.json()


def test_one_operator_key_cannot_make_an_identity_high(service: ServerProcess) -> None:
    first = operator_key(service, "opbank1", "bank-a")
    with httpx.Client(base_url=service.url, timeout=30) as http:
        person = _ok(
            http.post(
                "/identities",
                headers=first,
                json={
                    "person_number": "020385-1234",
                    "name": "Ada Jensen",
                    "proofing": {
                        "channel": "bank",
                        "document_kind": "passport",
                        "operator_ids": MADE_UP,
                    },
                },
            ),
            201,
        )
        assert person["identity_assurance"] == "substantial"
        waiting = _ok(http.get("/proofings", params={"identity_id": person["id"]}, headers=first))
        pending = waiting[-1]["id"]
        refused = http.post(f"/proofings/{pending}/approve", headers=first)
        assert refused.status_code == 403, refused.text  # not their own
        second = operator_key(service, "opbank2", "bank-a")
        approved = _ok(http.post(f"/proofings/{pending}/approve", headers=second))
        assert approved["identity_assurance"] == "high"
        assert approved["proofing"][-1]["operator_ids"] == ["opbank1", "opbank2"]


def _served_and_stopped(folder: Path) -> ServerProcess:
    """A service that logged something and stopped (signing its last checkpoint)."""
    server = start_server(folder, _sqlite(folder), provider=PROVIDER)
    try:
        with server.client() as http:
            for n in range(3):
                _ok(
                    http.post(
                        "/identities",
                        json={
                            "person_number": f"0{n + 1}0385-123{n}",
                            "name": f"Person {n}",
                            "proofing": {
                                "channel": "self_service",
                                "document_kind": "passport_chip",
                            },
                        },
                    ),
                    201,
                )
    finally:
        server.stop()
    return server


def _verify(server: ServerProcess) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "akkreditiv", "audit", "verify"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("attack", ["rewrite", "cut"])
def test_a_rewritten_or_cut_audit_history_fails_verify(tmp_path: Path, attack: str) -> None:
    server = _served_and_stopped(tmp_path)
    intact = _verify(server)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    if attack == "rewrite":
        rewrite_history(_sqlite(tmp_path), 0, 2)  # every later hash recomputed, the head moved
    else:
        cut_tail(_sqlite(tmp_path), 0, 2)  # the last entries gone, the head moved back
    found = _verify(server)
    assert found.returncode == 3, found.stdout + found.stderr
    assert ("altered" if attack == "rewrite" else "removed") in found.stdout + found.stderr
