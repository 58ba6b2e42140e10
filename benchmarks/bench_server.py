"""Login factors over HTTP against the running service, from this (second) process on loopback:
requests per second and p50/p99 latency for each row (OTP verification, FIDO2 assertion, PIV
challenge and signature verification), and,
in the same run, a bare FastAPI endpoint doing one HMAC code check and one row update on the same
database (the baseline), with each row's throughput as a ratio of the baseline's.

    .venv/bin/python benchmarks/bench_server.py [--database sqlite|postgresql] [--seconds 5]
        [--rows otp,fido2,piv] [--workers N] [--rounds 5] [--json]

A row is a function in ``ROWS``: given the seeded service (one person per client, each with an
active HOTP token, and an API key), it prepares what its requests need and returns the request
one client makes over and over. Both servers run at once, under the same uvicorn settings and
number of workers (``--workers``, ``akkreditiv serve``'s option, 1 by default), measured in
turns (``--rounds`` slices of ``--seconds`` each), so that a load that comes and goes on a shared
machine falls on the service and the baseline alike. The servers' CPU time per request (all
their processes, from /proc) is reported beside the rates: it moves far less than they do.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
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
from fido2.webauthn import CredentialCreationOptions, CredentialRequestOptions

from devices.protocol import pskc
from devices.protocol.otp import hotp
from firmware_sim.attach.inprocess_ctap import InProcessCtapDevice
from firmware_sim.tokens import otp_token
from firmware_sim.tokens.attestation import Manufacturer
from firmware_sim.tokens.ctap2 import AlwaysPresent, load_authenticator, new_fido_state
from firmware_sim.tokens.piv_attestation import PivManufacturer
from server.services.access import ApiKeys, Role
from server.services.piv.card import enrol_message, login_message

BENCH_DIR = Path(__file__).resolve().parent
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PROVIDER = "https://bench.example"  # the API key's name is the service provider's id
ORIGIN = "http://localhost:8000"
RP_ID = "localhost"

Request = Callable[[httpx.Client, int, int], httpx.Response]
"""One measured request of a row: (HTTP client, client index, request number) -> answer."""


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


@dataclass(frozen=True)
class Person:
    number: str
    identity_id: str
    token: otp_token.OtpTokenState


@dataclass(frozen=True)
class Seeded:
    """What every row starts from: the service's address and API key, and one person per
    client (an identity with an active HOTP token)."""

    base: str
    headers: dict[str, str]
    folder: Path
    people: list[Person]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers=self.headers, timeout=30)

    def login(self, http: httpx.Client, person: Person) -> str:
        """A login of ``person``, begun by the provider and identified: factors come next."""
        begun = http.post("/authentications", json={"provider": PROVIDER})
        begun.raise_for_status()
        transaction = str(begun.json()["id"])
        http.post(
            f"/authentications/{transaction}/identify", json={"person_number": person.number}
        ).raise_for_status()
        return transaction


def seed(base: str, headers: dict[str, str], folder: Path, clients: int) -> Seeded:
    """An identity with an active HOTP token per client."""
    http = httpx.Client(base_url=base, headers=headers, timeout=30)
    tokens = [
        otp_token.new_state(otp_token.Model.USB, otp_token.Algorithm.HOTP) for _ in range(clients)
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
        people.append(Person(number, identity_id, token))
    http.close()
    return Seeded(base, headers, folder, people)


# --- the rows -----------------------------------------------------------------------------------


def otp_row(world: Seeded) -> Request:
    """POST /authentications/{id}/otp with the token's next HOTP code."""
    with world.client() as http:
        logins = [world.login(http, person) for person in world.people]
    counters = [1] * len(world.people)

    def request(http: httpx.Client, client: int, n: int) -> httpx.Response:
        code = hotp(world.people[client].token.secret, counters[client])
        counters[client] += 1
        return http.post(f"/authentications/{logins[client]}/otp", json={"code": code})

    return request


def _as_json(value: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json.dumps(dict(value)))
    return document


def fido2_row(world: Seeded) -> Request:
    """``fido2/begin`` then the assertion (``fido2``) of a simulated security key held in this
    process (python-fido2's client, as a browser would use it), registered through the API with
    its packed attestation chained to the simulator's root, which the service trusts. One
    request of this row is the pair; its time includes the key's signature."""
    keys: list[Fido2Client] = []
    with world.client() as http:
        for index, person in enumerate(world.people):
            state = world.folder / f"fido-{index}.json"
            new_fido_state(state, manufacturer_home=world.folder / "sim-home")
            device = InProcessCtapDevice(load_authenticator(state, AlwaysPresent()))
            key = Fido2Client(device, DefaultClientDataCollector(ORIGIN))
            begun = http.post(f"/identities/{person.identity_id}/fido2/register/begin", json={})
            begun.raise_for_status()
            options = CredentialCreationOptions.from_dict(begun.json()["options"])
            made = key.make_credential(options.public_key)
            http.post(
                f"/fido2/registrations/{begun.json()['state_id']}/complete",
                json={"response": _as_json(made)},
            ).raise_for_status()
            keys.append(key)
        logins = [world.login(http, person) for person in world.people]

    def request(http: httpx.Client, client: int, n: int) -> httpx.Response:
        path = f"/authentications/{logins[client]}/fido2"
        # The simulated key has no PIN, so the client must not ask for user verification.
        begun = http.post(f"{path}/begin", json={"user_verification": "discouraged"})
        if begun.status_code != 200:
            return begun
        options = CredentialRequestOptions.from_dict(begun.json()["options"])
        selection = keys[client].get_assertion(options.public_key)
        return http.post(path, json={"response": _as_json(selection.get_response(0))})

    return request


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


def piv_row(world: Seeded) -> Request:
    """``piv/begin`` (a fresh challenge) then the card's signature over the login message
    (``piv``): the service checks the origin, the certificate's chain to its CA and validity,
    the ECDSA P-256 signature, and that the certificate is an active PIV credential of the
    person. Each card is enrolled through the API (proof of possession, certificate issued by
    the service CA); its key signs in this process, as the card would, so one request of this
    row is the pair and its time includes that signature."""
    cards: list[tuple[ec.EllipticCurvePrivateKey, str]] = []
    with world.client() as http:
        for index, person in enumerate(world.people):
            key = ec.generate_private_key(ec.SECP256R1())
            begun = http.post(f"/identities/{person.identity_id}/piv/enrol/begin")
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
            cards.append((key, str(done.json()["certificate"])))
        logins = [world.login(http, person) for person in world.people]

    def request(http: httpx.Client, client: int, n: int) -> httpx.Response:
        path = f"/authentications/{logins[client]}/piv"
        begun = http.post(f"{path}/begin")
        if begun.status_code != 200:
            return begun
        key, certificate = cards[client]
        message = login_message(
            uuid.UUID(logins[client]), base64.b64decode(begun.json()["challenge"]), ORIGIN
        )
        signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
        return http.post(
            path,
            json={"certificate": certificate, "signature": _b64(signature), "origin": ORIGIN},
        )

    return request


ROWS: dict[str, tuple[str, Callable[[Seeded], Request]]] = {
    "otp": ("service OTP verification", otp_row),
    "fido2": ("service FIDO2 begin + assertion", fido2_row),
    "piv": ("service PIV challenge + verification", piv_row),
}


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Tally:
    """One side's requests over all its turns."""

    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    wall: float = 0.0
    cpu: float | None = 0.0

    def figures(self) -> dict[str, float]:
        ordered = sorted(self.latencies)
        figures = {
            "requests": len(ordered),
            "failures": self.failures,
            "rps": round(len(ordered) / self.wall, 1),
            "p50_ms": round(1000 * statistics.median(ordered), 2),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        }
        if self.cpu is not None:
            figures["server_cpu_ms"] = round(1000 * self.cpu / len(ordered), 2)
        return figures


def load(
    tally: Tally | None,
    https: list[httpx.Client],
    seconds: float,
    request: Request,
    minimum: int = 1,
    server: int | None = None,
) -> None:
    """One turn: a thread per client (``https``, kept across turns with their connections)
    making requests for ``seconds`` and at least ``minimum`` each, counted into ``tally``
    (None: a warm-up, not counted)."""
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run(client: int) -> None:
        nonlocal failures
        http = https[client]
        n = 0
        while time.monotonic() < stop or n < minimum:
            started = time.perf_counter()
            answer = request(http, client, n)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if answer.status_code != 200:
                    failures += 1
            n += 1

    threads = [threading.Thread(target=run, args=(c,)) for c in range(len(https))]
    cpu_before = cpu_seconds(server) if server is not None else None
    begun = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - begun
    cpu_after = cpu_seconds(server) if server is not None else None
    if tally is None:
        return
    tally.latencies += latencies
    tally.failures += failures
    tally.wall += wall
    if tally.cpu is not None and cpu_before is not None and cpu_after is not None:
        tally.cpu += cpu_after - cpu_before
    else:
        tally.cpu = None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=5.0, help="per row, over all rounds")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--minimum", type=int, default=20, help="requests per client at least")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"of {', '.join(ROWS)}")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes of each server (as serve's)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="turns of service and baseline")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [name.strip() for name in args.rows.split(",") if name.strip()]
    if unknown := [name for name in rows if name not in ROWS]:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    rounds = max(1, args.rounds)
    turn = args.seconds / rounds
    per_turn = math.ceil(args.minimum / rounds)

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
            world = seed(base, headers, folder, args.clients)
            requests = {name: ROWS[name][1](world) for name in rows}
            base_counters = [0] * args.clients
            secret = b"12345678901234567890"

            def baseline_request(http: httpx.Client, client: int, n: int) -> httpx.Response:
                code = hotp(secret, base_counters[client])
                base_counters[client] += 1
                return http.post("/check", json={"client": client, "code": code})

            def clients(address: str, side_headers: dict[str, str]) -> list[httpx.Client]:
                return [
                    httpx.Client(base_url=address, headers=side_headers, timeout=30)
                    for _ in range(args.clients)
                ]

            sides: list[tuple[str, Request, list[httpx.Client], int]] = [
                *(
                    (name, requests[name], clients(base, headers), service_process.pid)
                    for name in rows
                ),
                ("baseline", baseline_request, clients(baseline_base, {}), baseline_process.pid),
            ]
            tallies = {name: Tally() for name, *_ in sides}
            for _name, request, https, pid in sides:  # warm-up, not counted
                load(None, https, 0, request, 5, pid)
            for _ in range(rounds):
                for name, request, https, pid in sides:
                    load(tallies[name], https, turn, request, per_turn, pid)
            for _name, _request, https, _pid in sides:
                for http in https:
                    http.close()

    figures = {name: tally.figures() for name, tally in tallies.items()}
    baseline_figures = figures.pop("baseline")
    ratios = {name: round(figures[name]["rps"] / baseline_figures["rps"], 3) for name in rows}
    results: dict[str, Any] = {
        "database": args.database,
        "clients": args.clients,
        "workers": workers,
        "rounds": rounds,
        **{f"service_{name}": figures[name] for name in rows},
        "baseline_hmac_and_update": baseline_figures,
        "ratios": ratios,
    }
    if "otp" in ratios:
        results["throughput_ratio"] = ratios["otp"]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{args.database}, {args.clients} clients, {workers} worker(s) per server")
        for label, row_figures, ratio in (
            *((ROWS[name][0], figures[name], ratios[name]) for name in rows),
            ("bare FastAPI HMAC + update", baseline_figures, None),
        ):
            print(
                f"{label:34} {row_figures['rps']:8.1f} req/s  p50 {row_figures['p50_ms']:7.2f} ms"
                f"  p99 {row_figures['p99_ms']:7.2f} ms  server CPU "
                f"{row_figures.get('server_cpu_ms', float('nan')):5.2f} ms/req  failures "
                f"{row_figures['failures']}" + (f"  ratio {ratio}" if ratio is not None else "")
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
