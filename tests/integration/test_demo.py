"""The front door: a service started with ``akkreditiv serve`` and the demo person from
``akkreditiv demo seed`` log in with a password and the simulated code display's code."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    port = _free_port()
    env = {
        **os.environ,
        "AKKREDITIV_DATABASE_URL": f"sqlite+pysqlite:///{tmp_path / 'demo.db'}",
        "AKKREDITIV_KEK_FILE": str(tmp_path / "kek.bin"),
        "AKKREDITIV_PSEUDONYM_KEY_FILE": str(tmp_path / "pseudonym.key"),
        "AKKREDITIV_SIGNING_KEY_FILE": str(tmp_path / "signing.pem"),
        "AKKREDITIV_API_KEYS_FILE": str(tmp_path / "api-keys.json"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "akkreditiv", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, "the service exited"
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the service did not come up"
        time.sleep(0.1)  # another process starting to listen: poll, bounded
    try:
        yield url, env
    finally:
        process.terminate()
        process.wait(timeout=15)
        assert process.stderr is not None
        process.stderr.close()


def akkreditiv(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "akkreditiv", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_demo_person_logs_in_at_substantial(
    service: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = service
    folder = tmp_path / "demo"
    seeded = akkreditiv("demo", "seed", "--url", url, "--folder", str(folder), env=env)
    assert seeded.returncode == 0, seeded.stderr
    assert "010180-1234" in seeded.stdout
    again = akkreditiv("demo", "seed", "--url", url, "--folder", str(folder), env=env)
    assert again.returncode == 0, again.stderr  # seeding twice is harmless

    provider = {"Authorization": f"Bearer {(folder / 'provider.key').read_text().strip()}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        anonymous = http.post("/authentications", json={"min_level": "substantial"})
        assert anonymous.status_code == 401  # only a service provider begins a login
        transaction = http.post(
            "/authentications", json={"min_level": "substantial"}, headers=provider
        ).json()["id"]
        assert (
            http.post(
                f"/authentications/{transaction}/identify", json={"person_number": "0101801234"}
            ).status_code
            == 200
        )
        password = http.post(
            f"/authentications/{transaction}/password",
            json={"password": "demo password for akkreditiv"},
        )
        assert password.status_code == 200, password.text
        # Activation spent this 30 s window's code (a TOTP is accepted once per window), so read
        # the display as if its clock ran one step ahead: the service learns that drift.
        at = str(time.time() + 30)
        shown = akkreditiv(
            "sim", "show", "--state", str(folder / "display.json"), "--at", at, env=env
        )
        assert shown.returncode == 0, shown.stderr
        otp = http.post(f"/authentications/{transaction}/otp", json={"code": shown.stdout.strip()})
        assert otp.status_code == 200, otp.text
        done = http.post(f"/authentications/{transaction}/complete", headers=provider)
        assert done.status_code == 200, done.text
        assert done.json()["level"] == "substantial"
