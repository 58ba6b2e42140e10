"""``akkreditiv demo legacy``: the demo's legacy eID user is imported once, its key card is
printed, and with those a person gets through the migration wizard's proof step in the pages."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .server_process import start_server

pytestmark = pytest.mark.integration

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_KEY_NUMBER = re.compile(r'<strong class="code-block">(\d{4})</strong>')


def akkreditiv(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "akkreditiv", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )


def test_demo_legacy_user_proves_with_the_printed_key_card(tmp_path: Path) -> None:
    database = f"sqlite+pysqlite:///{tmp_path / 'demo.db'}"
    server = start_server(tmp_path / "service", database, provider="https://sp.example")
    folder = tmp_path / "demo"
    try:
        args = ("demo", "legacy", "--url", server.url, "--folder", str(folder))
        made = akkreditiv(*args, "--database-url", database, env=server.env)
        assert made.returncode == 0, made.stderr
        assert "demo-legacy" in made.stdout
        card = dict(
            line.split() for line in (folder / "legacy-key-card.txt").read_text().splitlines()
        )
        assert len(card) == 148
        assert (folder / "legacy-key-card.txt").stat().st_mode & 0o077 == 0
        again = akkreditiv(*args, "--database-url", database, env=server.env)
        assert again.returncode == 0, again.stderr  # made once: the second run only prints

        with httpx.Client(base_url=server.url, headers={"origin": server.url}) as browser:
            start = browser.get("/migrate")
            token = _CSRF.search(start.text)
            assert token is not None
            begun = browser.post(
                "/migrate", data={"csrf": token.group(1), "user_id": "demo-legacy"}
            )
            while begun.status_code == 303:
                begun = browser.get(begun.headers["location"])
            key_number = _KEY_NUMBER.search(begun.text)
            assert key_number is not None, begun.text
            proof_csrf = _CSRF.search(begun.text)
            assert proof_csrf is not None
            action = re.search(r'action="(/migrate/[^"]+/prove)"', begun.text)
            assert action is not None
            proved = browser.post(
                action.group(1),
                data={
                    "csrf": proof_csrf.group(1),
                    "user_id": "demo-legacy",
                    "password": "old eid password",
                    "code": card[key_number.group(1)],
                },
            )
            assert proved.status_code == 303, proved.text
            confirm = browser.get(proved.headers["location"])
            assert "150565" in confirm.text or "Demo Legacy" in confirm.text
    finally:
        server.stop()
