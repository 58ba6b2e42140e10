"""Whole logins over HTTP against the running service, and in the same run a bare FastAPI
endpoint doing one HMAC code check and one row update on the same database (the baseline): each
row's rate, latency and the CPU both sides used, with its rate as a ratio of the baseline's.

    .venv/bin/python benchmarks/bench_server.py [--database sqlite|postgresql] [--seconds 10]
        [--rows otp_login,password_login,otp_step,fido2_login,piv_login] [--workers 2]
        [--in-flight 16] [--rounds 5] [--json]

The load comes from ``loadgen.py``, a process of its own (asyncio on uvloop, HTTP/1.1 written by
hand) keeping ``--in-flight`` journeys going, each on its own keep-alive connection with a
person of its own; it reports its own CPU time, so that the table shows the servers' cores
busy and the loadgen's beside them: a loadgen using a fraction of what the baseline server
uses is not what limits the baseline. A row is a journey (``loadgen.JOURNEYS``) and the users'
extras it needs, prepared here through the API (``ROWS``). Both servers run at once, under the
same uvicorn settings and number of workers (``--workers``), measured in turns (``--rounds``
slices of ``--seconds``), so that a load that comes and goes falls on both alike.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fido2.client import DefaultClientDataCollector, Fido2Client
from fido2.webauthn import CredentialCreationOptions

from devices.protocol import pskc
from devices.protocol.otp import hotp
from firmware_sim.attach.inprocess_ctap import InProcessCtapDevice
from firmware_sim.tokens import otp_token
from firmware_sim.tokens.attestation import Manufacturer
from firmware_sim.tokens.ctap2 import AlwaysPresent, load_authenticator, new_fido_state
from firmware_sim.tokens.ctap_keys import open_credential
from firmware_sim.tokens.piv_attestation import PivManufacturer
from server.services.access import ApiKeys, Role
from server.services.piv.card import enrol_message

BENCH_DIR = Path(__file__).resolve().parent
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PROVIDER = "https://bench.example"  # the API key's name is the service provider's id
ORIGIN = "http://localhost:8000"
RP_ID = "localhost"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the server exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.1)  # waiting for another process to listen: poll, bounded
    raise SystemExit(f"{url} did not come up")


@contextlib.contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+pysqlite:///{folder / 'bench.db'}"
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(
        "host=127.0.0.1 port=5432 dbname=test user=postgres", autocommit=True
    ) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(
            "host=127.0.0.1 port=5432 dbname=test user=postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextlib.contextmanager
def serve(
    command: list[str], env: dict[str, str], health: str, workers: int
) -> Iterator[subprocess.Popen[str]]:
    """The server running, with every worker started (not just the first to answer)."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    tail: list[str] = []
    started = threading.Semaphore(0)

    def drain() -> None:  # read stderr to the end, so the server never blocks on a full pipe
        assert process.stderr is not None
        for line in process.stderr:
            tail[:] = [*tail[-20:], line]
            if "Application startup complete" in line:
                started.release()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        wait_healthy(health, process)
        for _ in range(workers):
            if not started.acquire(timeout=120):
                raise SystemExit(f"{health}: not every worker started:\n{''.join(tail)}")
        yield process
    finally:
        process.terminate()
        process.wait(timeout=15)
        reader.join(timeout=15)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` and its descendants (uvicorn's workers), or None
    where /proc is not there to ask."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name is in parentheses and may hold spaces: split after it.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            # utime, stime, and cutime, cstime: the time of children already reaped (a worker
            # that exited moves its time to its parent rather than out of the sum).
            times[int(entry.name)] = sum(int(field) for field in fields[11:15]) / ticks
    tree = {pid}
    grown = True
    while grown:
        children = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= children
        grown = bool(children)
    return sum(times.get(member, 0.0) for member in tree)


# --- the seeded service -------------------------------------------------------------------------

PASSWORD = "korrekt hest batteri klips 7"  # noqa: S105 - the benchmark's people's password


@dataclass(frozen=True)
class Seeded:
    """What every row starts from: the service's address and API key, and one person per
    journey in flight (an identity with a password and an active HOTP token)."""

    base: str
    headers: dict[str, str]
    folder: Path
    people: list[dict[str, Any]]  # number, identity_id, secret (hex), counter: the loadgen's

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers=self.headers, timeout=30)


def seed(base: str, headers: dict[str, str], folder: Path, count: int) -> Seeded:
    """``count`` identities, each with a password and an active HOTP token."""
    http = httpx.Client(base_url=base, headers=headers, timeout=30)
    tokens = [
        otp_token.new_state(otp_token.Model.USB, otp_token.Algorithm.HOTP) for _ in range(count)
    ]
    batch = http.post(
        "/token-batches",
        content=pskc.write_pskc([t.pskc_key() for t in tokens]),
        headers={"content-type": "application/xml"},
    )
    batch.raise_for_status()
    people = []
    for index, token in enumerate(tokens):
        number = f"0101{90 + index % 10:02d}{1000 + index:04d}"
        identity = http.post(
            "/identities",
            json={
                "person_number": number,
                "name": f"Bench Person {index}",
                "proofing": {"channel": "self_service", "document_kind": "passport_chip"},
            },
        )
        identity.raise_for_status()
        identity_id = str(identity.json()["id"])
        credential = http.post(f"/identities/{identity_id}/tokens", json={"serial": token.serial})
        if credential.status_code != 200:
            raise SystemExit(f"assigning token {token.serial}: {credential.text}")
        http.post(
            f"/credentials/{credential.json()['id']}/activate", json={"code": hotp(token.secret, 0)}
        ).raise_for_status()
        http.put(
            f"/identities/{identity_id}/password", json={"password": PASSWORD}
        ).raise_for_status()
        people.append(
            {
                "number": number,
                "identity_id": identity_id,
                "secret": token.secret.hex(),
                "counter": 1,
                "password": PASSWORD,
            }
        )
    http.close()
    return Seeded(base, headers, folder, people)


# --- the rows: what each journey's users carry besides the person -------------------------------

Extras = list[dict[str, Any]]


def login(http: httpx.Client, person: dict[str, Any]) -> str:
    """A login of ``person``, begun by the provider and identified: factors come next."""
    begun = http.post("/authentications", json={"provider": PROVIDER})
    begun.raise_for_status()
    transaction = str(begun.json()["id"])
    http.post(
        f"/authentications/{transaction}/identify", json={"person_number": person["number"]}
    ).raise_for_status()
    return transaction


def otp_step_extras(world: Seeded) -> Extras:
    """The OTP step alone: a login per user, begun and identified before the run."""
    with world.client() as http:
        return [{"transaction": login(http, person)} for person in world.people]


def no_extras(world: Seeded) -> Extras:
    return [{} for _ in world.people]


def _as_json(value: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json.dumps(dict(value)))
    return document


def _private_hex(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_numbers().private_value.to_bytes(32, "big").hex()


def fido2_extras(world: Seeded) -> Extras:
    """A security key per user, registered through the API by the simulated key (python-fido2's
    client, as a browser would, with its packed attestation chained to the simulator's root,
    which the service trusts). The loadgen then signs as that key: its private key is opened
    from the credential id the simulator sealed, and its signature counter goes on from the
    simulator's."""
    extras = []
    rp_hash = hashlib.sha256(RP_ID.encode()).digest()
    with world.client() as http:
        for index, person in enumerate(world.people):
            state = world.folder / f"fido-{index}.json"
            new_fido_state(state, manufacturer_home=world.folder / "sim-home")
            authenticator = load_authenticator(state, AlwaysPresent())
            device = InProcessCtapDevice(authenticator)
            key = Fido2Client(device, DefaultClientDataCollector(ORIGIN))
            begun = http.post(f"/identities/{person['identity_id']}/fido2/register/begin", json={})
            begun.raise_for_status()
            options = CredentialCreationOptions.from_dict(begun.json()["options"])
            made = key.make_credential(options.public_key)
            http.post(
                f"/fido2/registrations/{begun.json()['state_id']}/complete",
                json={"response": _as_json(made)},
            ).raise_for_status()
            credential_id = made.raw_id
            opened = open_credential(authenticator.state.master_key, rp_hash, credential_id)
            assert opened is not None
            assert isinstance(opened.private, ec.EllipticCurvePrivateKey)
            extras.append(
                {
                    "credential_id": base64.urlsafe_b64encode(credential_id).rstrip(b"=").decode(),
                    "private_key": _private_hex(opened.private),
                    "sign_count": authenticator.state.sign_count,
                }
            )
    return extras


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def attested(home: Path, public_key: ec.EllipticCurvePublicKey, serial: int) -> dict[str, str]:
    """The simulated card vendor's attestation of a key that signs in this process (the
    service trusts that vendor here), as the enrolment sends it."""
    leaf, intermediate = PivManufacturer.load_or_create(home).attest(public_key, serial=serial)
    return {
        "attestation": _b64(leaf.public_bytes(Encoding.DER)),
        "attestation_intermediate": _b64(intermediate.public_bytes(Encoding.DER)),
    }


def piv_extras(world: Seeded) -> Extras:
    """A smartcard per user, enrolled through the API (proof of possession, the card vendor's
    attestation, a certificate from the service's CA); the loadgen signs with its key as the
    card would. The service checks the origin, the chain to its CA and validity, the ECDSA
    signature over the login message, and that the certificate is an active credential."""
    extras = []
    with world.client() as http:
        for index, person in enumerate(world.people):
            key = ec.generate_private_key(ec.SECP256R1())
            begun = http.post(f"/identities/{person['identity_id']}/piv/enrol/begin")
            begun.raise_for_status()
            state_id = uuid.UUID(begun.json()["state_id"])
            challenge = base64.b64decode(begun.json()["challenge"])
            public = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            done = http.post(
                f"/piv/enrolments/{state_id}/complete",
                json={
                    "public_key": _b64(public),
                    "signature": _b64(
                        key.sign(enrol_message(state_id, challenge), ec.ECDSA(hashes.SHA256()))
                    ),
                    "card_id": f"{index + 1:032x}",
                    **attested(world.folder / "sim-home", key.public_key(), index + 1),
                },
            )
            done.raise_for_status()
            extras.append(
                {"certificate": str(done.json()["certificate"]), "private_key": _private_hex(key)}
            )
    return extras


ROWS: dict[str, tuple[str, Callable[[Seeded], Extras]]] = {
    "otp_login": ("whole OTP login (4 requests)", no_extras),
    "password_login": ("whole password + code login (5 req.)", no_extras),
    "otp_step": ("OTP step alone (1 request)", otp_step_extras),
    "fido2_login": ("whole FIDO2 login (5 requests)", fido2_extras),
    "piv_login": ("whole PIV login (5 requests)", piv_extras),
}
BASELINE_SECRET = b"12345678901234567890"


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Tally:
    """One side's journeys over all its turns."""

    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    failures: int = 0
    failure_examples: list[str] = field(default_factory=list)
    wall: float = 0.0
    server_cpu: float | None = 0.0
    client_cpu: float = 0.0
    request_p99s: list[float] = field(default_factory=list)

    def add(self, turn: dict[str, Any], server_cpu: float | None) -> None:
        self.latencies += turn["journey_latencies"]
        self.requests += turn["requests"]
        self.failures += turn["failures"]
        self.failure_examples = (self.failure_examples + turn["failure_examples"])[:3]
        self.wall += turn["wall"]
        self.client_cpu += turn["client_cpu"]
        self.request_p99s.append(turn["p99_request_ms"])
        if self.server_cpu is not None and server_cpu is not None:
            self.server_cpu += server_cpu
        else:
            self.server_cpu = None

    def figures(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        count = max(1, len(ordered))
        figures: dict[str, Any] = {
            "journeys": len(ordered),
            "requests": self.requests,
            "failures": self.failures,
            "per_s": round(len(ordered) / self.wall, 1),
            "requests_per_s": round(self.requests / self.wall, 1),
            "p50_ms": round(1000 * statistics.median(ordered), 2) if ordered else math.nan,
            "p99_ms": round(1000 * ordered[min(count - 1, int(count * 0.99))], 2)
            if ordered
            else math.nan,
            "request_p99_ms": round(max(self.request_p99s), 2),
            "client_cores": round(self.client_cpu / self.wall, 2),
            "client_cpu_us_per_request": round(1e6 * self.client_cpu / max(1, self.requests), 1),
        }
        if self.failure_examples:
            figures["failure_examples"] = self.failure_examples
        if self.server_cpu is not None:
            figures["server_cores"] = round(self.server_cpu / self.wall, 2)
            figures["server_cpu_ms_per_journey"] = round(1000 * self.server_cpu / count, 2)
        return figures


def turn(
    spec: dict[str, Any], people: list[dict[str, Any]], extras: Extras, pid: int, folder: Path
) -> tuple[dict[str, Any], float | None]:
    """One turn of the loadgen (its own process) against one server: its figures, and the
    server's CPU seconds over the turn. The people's counters come back advanced."""
    users = [{**person, **extra} for person, extra in zip(people, extras, strict=True)]
    path = folder / "loadgen-spec.json"
    path.write_text(json.dumps({**spec, "users": users}), encoding="utf-8")
    before = cpu_seconds(pid)
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / "loadgen.py"), str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )
    after = cpu_seconds(pid)
    if done.returncode != 0:
        raise SystemExit(f"the loadgen failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    for person, user in zip(people, result["users"], strict=True):
        for name in ("counter", "sign_count"):
            if name in user:
                person[name] = user[name]
    for extra, user in zip(extras, result["users"], strict=True):
        if "sign_count" in user:
            extra["sign_count"] = user["sign_count"]
    server = None if before is None or after is None else after - before
    return result, server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=10.0, help="per row, over all rounds")
    parser.add_argument("--in-flight", type=int, default=16, help="journeys kept in flight")
    parser.add_argument("--minimum", type=int, default=2, help="journeys per user at least")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"of {', '.join(ROWS)}")
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes of each server (as serve's)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="turns of service and baseline")
    parser.add_argument(
        "--sqlite-synchronous",
        choices=["full", "normal"],
        default="full",
        help="SQLite's synchronous, for both servers (AKKREDITIV_SQLITE_SYNCHRONOUS)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [name.strip() for name in args.rows.split(",") if name.strip()]
    if unknown := [name for name in rows if name not in ROWS]:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    rounds = max(1, args.rounds)

    with (
        tempfile.TemporaryDirectory() as folder_name,
        database(args.database, Path(folder_name)) as url,
    ):
        folder = Path(folder_name)
        workers = args.workers
        keys = ApiKeys(folder / "api-keys.json")
        api_key = keys.add(PROVIDER, [Role.SUPERVISOR, Role.PROVIDER])[1]
        root = folder / "sim-root.pem"
        root.write_bytes(Manufacturer.load_or_create(folder / "sim-home").root_pem())
        piv_root = folder / "sim-piv-root.pem"
        piv_root.write_bytes(PivManufacturer.load_or_create(folder / "sim-home").root_pem())
        env = {
            **os.environ,
            "AKKREDITIV_DATABASE_URL": url,
            "AKKREDITIV_KEK_FILE": str(folder / "kek.bin"),
            "AKKREDITIV_PSEUDONYM_KEY_FILE": str(folder / "pseudonym.key"),
            "AKKREDITIV_SIGNING_KEY_FILE": str(folder / "signing.pem"),
            "AKKREDITIV_API_KEYS_FILE": str(folder / "api-keys.json"),
            "AKKREDITIV_FIDO_TRUSTED_ROOTS": str(root),
            "AKKREDITIV_PIV_ATTESTATION_ROOTS": str(piv_root),
            "AKKREDITIV_RP_ID": RP_ID,
            "AKKREDITIV_RP_ORIGINS": json.dumps([ORIGIN]),
            "AKKREDITIV_SQLITE_SYNCHRONOUS": args.sqlite_synchronous,
        }
        headers = {"authorization": f"Bearer {api_key}"}
        port, base_port = free_port(), free_port()
        base, baseline_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{base_port}"
        service = [sys.executable, "-m", "akkreditiv", "serve", "--port", str(port)]
        # The baseline under the same uvicorn settings as ``akkreditiv serve`` (its logging,
        # no proxy headers) and the same number of workers: only the application differs.
        baseline = [
            *(sys.executable, "-m", "server.uvicorn_run", "baseline_app:app"),
            *("--port", str(base_port), "--app-dir", str(BENCH_DIR)),
        ]
        for command in (service, baseline):
            command += ["--workers", str(workers)]
        with (
            serve(service, env, f"{base}/health", workers) as service_process,
            serve(baseline, env, f"{baseline_base}/docs", workers) as baseline_process,
        ):
            world = seed(base, headers, folder, args.in_flight)
            extras = {name: ROWS[name][1](world) for name in rows}
            baseline_people = [
                {"client": i, "secret": BASELINE_SECRET.hex(), "counter": 0}
                for i in range(args.in_flight)
            ]
            sides: list[tuple[str, str, dict[str, str], list[dict[str, Any]], Extras, int]] = [
                *(
                    (name, base, headers, world.people, extras[name], service_process.pid)
                    for name in rows
                ),
                (
                    "baseline",
                    baseline_base,
                    {},
                    baseline_people,
                    [{}] * args.in_flight,
                    baseline_process.pid,
                ),
            ]
            tallies = {name: Tally() for name, *_ in sides}

            def spec(
                name: str, address: str, side_headers: dict[str, str], seconds: float, minimum: int
            ) -> dict[str, Any]:
                return {
                    "journey": name,
                    "base": address,
                    "headers": side_headers,
                    "in_flight": args.in_flight,
                    "seconds": seconds,
                    "minimum": minimum,
                    "origin": ORIGIN,
                }

            for name, address, side_headers, people, side_extras, pid in sides:  # warm-up
                turn(spec(name, address, side_headers, 0, 2), people, side_extras, pid, folder)
            per_turn = math.ceil(args.minimum / rounds)
            for _ in range(rounds):
                for name, address, side_headers, people, side_extras, pid in sides:
                    result, server_cpu = turn(
                        spec(name, address, side_headers, args.seconds / rounds, per_turn),
                        people,
                        side_extras,
                        pid,
                        folder,
                    )
                    tallies[name].add(result, server_cpu)

    figures = {name: tally.figures() for name, tally in tallies.items()}
    baseline_figures = figures.pop("baseline")
    ratios = {name: round(figures[name]["per_s"] / baseline_figures["per_s"], 3) for name in rows}
    results: dict[str, Any] = {
        "database": args.database,
        "sqlite_synchronous": args.sqlite_synchronous if args.database == "sqlite" else None,
        "in_flight": args.in_flight,
        "workers": workers,
        "rounds": rounds,
        "cores": os.cpu_count(),
        **{name: figures[name] for name in rows},
        "baseline_hmac_and_update": baseline_figures,
        "ratios": ratios,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    label = args.database
    if args.database == "sqlite":
        label += f" (synchronous={args.sqlite_synchronous})"
    print(
        f"{label}, {args.in_flight} journeys in flight, {workers} worker(s) per server, "
        f"{os.cpu_count()} cores; rates per second, CPU in cores busy (server | loadgen)"
    )
    for label, row, ratio in (
        *((ROWS[name][0], figures[name], ratios[name]) for name in rows),
        ("baseline: bare FastAPI HMAC + update", baseline_figures, None),
    ):
        print(
            f"{label:38} {row['per_s']:8.1f}/s  p50 {row['p50_ms']:7.2f} ms  p99 "
            f"{row['p99_ms']:7.2f} ms  CPU {row.get('server_cores', float('nan')):4.2f} | "
            f"{row['client_cores']:4.2f}  failures {row['failures']}"
            + (f"  ratio {ratio}" if ratio is not None else "")
        )
        for example in row.get("failure_examples", []):
            print(f"    {example}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
