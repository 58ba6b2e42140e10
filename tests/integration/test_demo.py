"""The front door: a service started with ``akkreditiv serve`` (trusting the simulator's FIDO
attestation root, as ``scripts/start`` sets it up), ``akkreditiv demo seed`` with a simulated
FIDO2 key on the simulated USB bus and a simulated PIV card in pcscd's vpcd reader, and then a
login with every kind of token the demo people hold, each through its real path."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from firmware_sim.tokens import piv as sim_piv
from firmware_sim.tokens.attestation import Manufacturer

from .conftest import AttachedCard
from .fido_fixtures import PluggedKey
from .server_process import start_server

pytestmark = pytest.mark.integration

PERSON = "0101801234"
AUDIO_PERSON = "0202751236"
PASSWORD = "demo password for akkreditiv"  # noqa: S105 - the demo's published password


@dataclass
class Demo:
    url: str
    env: dict[str, str]
    folder: Path
    seed_output: str
    provider: dict[str, str]


@pytest.fixture
def demo(
    tmp_path: Path,
    sim_home: Path,
    usb_bus_dir: Path,
    plug_key: Callable[..., PluggedKey],
    attach: Callable[..., AttachedCard],
) -> Iterator[Demo]:
    root = tmp_path / "sim-root.pem"
    root.write_bytes(Manufacturer.load_or_create(sim_home).root_pem())
    key = plug_key()
    card_state = tmp_path / "piv.json"
    sim_piv.new_card_state(card_state)
    card = attach(card_state)
    server = start_server(
        tmp_path / "service",
        f"sqlite+pysqlite:///{tmp_path / 'demo.db'}",
        provider="https://sp.example",
        extra_env={"AKKREDITIV_FIDO_TRUSTED_ROOTS": str(root)},
    )
    url, env = server.url, server.env
    folder = tmp_path / "demo"
    try:
        seeded = akkreditiv(
            "demo", "seed", "--url", url, "--folder", str(folder), "--fido-state",
            str(key.state), "--piv-reader", card.reader.name, env=env,
        )  # fmt: skip
        assert seeded.returncode == 0, seeded.stderr
        provider = {"Authorization": f"Bearer {(folder / 'provider.key').read_text().strip()}"}
        yield Demo(url, env, folder, seeded.stdout, provider)
    finally:
        server.stop()


def akkreditiv(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "akkreditiv", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def begin(demo: Demo, http: httpx.Client, person: str, level: str) -> str:
    transaction = http.post(
        "/authentications", json={"min_level": level}, headers=demo.provider
    ).json()["id"]
    assert (
        http.post(
            f"/authentications/{transaction}/identify", json={"person_number": person}
        ).status_code
        == 200
    )
    return str(transaction)


def password(http: httpx.Client, transaction: str) -> None:
    answer = http.post(f"/authentications/{transaction}/password", json={"password": PASSWORD})
    assert answer.status_code == 200, answer.text


def complete(demo: Demo, http: httpx.Client, transaction: str) -> dict[str, object]:
    done = http.post(f"/authentications/{transaction}/complete", headers=demo.provider)
    assert done.status_code == 200, done.text
    body: dict[str, object] = done.json()
    return body


def test_demo_people_log_in_with_every_kind_of_token(demo: Demo) -> None:
    out = demo.seed_output
    assert "010180-1234" in out
    assert "020275-1236" in out
    again = akkreditiv(
        "demo", "seed", "--url", demo.url, "--folder", str(demo.folder), env=demo.env
    )
    assert again.returncode == 0, again.stderr  # seeding twice is harmless
    api_env = {**demo.env, "AKKREDITIV_API_KEY_FILE": str(demo.folder / "provider.key")}

    with httpx.Client(base_url=demo.url, timeout=60) as http:
        anonymous = http.post("/authentications", json={"min_level": "substantial"})
        assert anonymous.status_code == 401  # only a service provider begins a login

        # Password + code display. Activation spent the previous window's code, so read the
        # display as if its clock ran one step ahead: the service learns that drift.
        transaction = begin(demo, http, PERSON, "substantial")
        password(http, transaction)
        shown = akkreditiv(
            "sim", "show", "--state", str(demo.folder / "display.json"),
            "--at", str(time.time() + 30), env=demo.env,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        otp = http.post(f"/authentications/{transaction}/otp", json={"code": shown.stdout.strip()})
        assert otp.status_code == 200, otp.text
        assert complete(demo, http, transaction)["level"] == "substantial"

        # Password + key card: the code printed beside the key number the service shows.
        card = dict(
            line.split() for line in (demo.folder / "key-card.txt").read_text().splitlines()[1:]
        )
        transaction = begin(demo, http, PERSON, "substantial")
        password(http, transaction)
        index = http.post(f"/authentications/{transaction}/key-card/begin").json()["index"]
        coded = http.post(f"/authentications/{transaction}/key-card", json={"code": card[index]})
        assert coded.status_code == 200, coded.text
        assert complete(demo, http, transaction)["level"] == "substantial"

        # Password + FIDO2 key through the real driver (the test presses the button).
        transaction = begin(demo, http, PERSON, "substantial")
        password(http, transaction)
        fido = subprocess.Popen(
            [sys.executable, "-m", "akkreditiv", "devices", "fido", "login", "--url",
             demo.url, "--transaction", transaction],
            env=api_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        stdout, stderr = _touch_when_asked(fido, demo)
        assert fido.returncode == 0, stderr
        assert "fido2" in stdout
        assert complete(demo, http, transaction)["level"] == "substantial"

        # The PIV card alone reaches high (PIN on the card, key in the card).
        transaction = begin(demo, http, PERSON, "high")
        piv = akkreditiv(
            "devices", "piv", "login", "--url", demo.url, "--transaction", transaction,
            "--pin-stdin", "--yes", env=api_env, stdin="123456\n",
        )  # fmt: skip
        assert piv.returncode == 0, piv.stderr
        # The card's program names the demo provider as people know it, and by its id.
        shown = "You are logging in to Demotjenesten (https://demo.example) at level High."
        assert shown in piv.stdout
        assert complete(demo, http, transaction)["level"] == "high"


def _touch_when_asked(process: subprocess.Popen[str], demo: Demo) -> tuple[str, str]:
    """Press the simulated key's button when the command asks for a touch (its prompt on
    stderr is the signal, as it is for a person), then wait for the command to end."""
    import json

    state = json.loads((demo.folder / "demo-person.json").read_text())["fido_state"]
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "Touch your security key" in line:
            touched = akkreditiv("sim", "touch", "--state", state, env=demo.env)
            assert touched.returncode == 0, touched.stderr
            break
    stdout, rest = process.communicate(timeout=60)
    return stdout, "".join(seen) + rest
