"""The benchmarks' load generator: a process of its own that keeps ``in_flight`` journeys going
against one server over HTTP/1.1 keep-alive connections (asyncio on uvloop, requests written
and parsed by hand, so that the client spends a few tens of microseconds a request and is not
what limits the rate), and reports what it measured, its own CPU time included, as JSON.

    .venv/bin/python benchmarks/loadgen.py SPEC.json

The spec (written by ``bench_server.py``) names the journey, the server's address and headers,
how long to run and how many journeys to keep in flight, and one entry per virtual user (what
its journeys need: a person number, a token's secret and counter, a key). A journey is an
async function in ``JOURNEYS``: it makes its requests in order on one connection and says
whether it ended as it should. The users' counters are written back in the result, so the
next turn goes on where this one stopped.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from devices.protocol.otp import hotp
from server.services.piv.card import login_message


class Failed(Exception):
    """A journey's request answered something other than what the journey needs."""


class Connection:
    """One HTTP/1.1 keep-alive connection, reopened when the server closes it."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.fixed = f"Host: {host}:{port}\r\n{extra}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.requests = 0
        self.latencies: list[float] = []

    async def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        """Send one request and return its JSON answer (None if empty); another status than
        ``expect`` raises ``Failed``."""
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\n{self.fixed}"
            f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
        )
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        started = time.perf_counter()
        self.writer.write(head.encode() + data)
        status_line = await self.reader.readline()
        if not status_line:
            await self.close()
            raise Failed(f"{method} {path}: connection closed")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        payload = await self._chunked() if chunked else await self.reader.readexactly(length)
        self.latencies.append(time.perf_counter() - started)
        self.requests += 1
        if close:
            await self.close()
        if status != expect:
            raise Failed(f"{method} {path}: {status} {payload[:200]!r}")
        return json.loads(payload) if payload else None

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        while size := int((await self.reader.readline()).split(b";")[0], 16):
            parts.append(await self.reader.readexactly(size))
            await self.reader.readline()
        await self.reader.readline()
        return b"".join(parts)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


# --- the journeys -------------------------------------------------------------------------------

Journey = Callable[[Connection, dict[str, Any], dict[str, Any]], Awaitable[None]]
"""(connection, the spec, this user's entry) -> None, or raises ``Failed``."""


def _next_code(user: dict[str, Any]) -> str:
    code = hotp(bytes.fromhex(user["secret"]), user["counter"])
    user["counter"] += 1
    return code


async def _begin(http: Connection, spec: dict[str, Any], user: dict[str, Any], level: str) -> str:
    begun = await http.call("POST", "/authentications", {"min_level": level}, expect=201)
    transaction = str(begun["id"])
    await http.call(
        "POST", f"/authentications/{transaction}/identify", {"person_number": user["number"]}
    )
    return transaction


async def _complete(http: Connection, transaction: str, level: str) -> None:
    done = await http.call("POST", f"/authentications/{transaction}/complete")
    if done["level"] != level or not done["assertion"]:
        raise Failed(f"complete: {done}")


async def otp_step(http: Connection, spec: dict[str, Any], user: dict[str, Any]) -> None:
    """The OTP step alone, on a login begun and identified before the run."""
    path = f"/authentications/{user['transaction']}/otp"
    await http.call("POST", path, {"code": _next_code(user)})


async def otp_login(http: Connection, spec: dict[str, Any], user: dict[str, Any]) -> None:
    """A whole login with an OTP token: begin, identify, the code, complete (level low)."""
    transaction = await _begin(http, spec, user, "low")
    await http.call("POST", f"/authentications/{transaction}/otp", {"code": _next_code(user)})
    await _complete(http, transaction, "low")


async def password_login(http: Connection, spec: dict[str, Any], user: dict[str, Any]) -> None:
    """A whole login at substantial: begin, identify, the password, the code, complete."""
    transaction = await _begin(http, spec, user, "substantial")
    path = f"/authentications/{transaction}"
    await http.call("POST", f"{path}/password", {"password": user["password"]})
    await http.call("POST", f"{path}/otp", {"code": _next_code(user)})
    await _complete(http, transaction, "substantial")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(user: dict[str, Any]) -> ec.EllipticCurvePrivateKey:
    key = user.get("_key")
    if key is None:
        number = int.from_bytes(bytes.fromhex(user["private_key"]), "big")
        key = user["_key"] = ec.derive_private_key(number, ec.SECP256R1())
    return key


async def fido2_login(http: Connection, spec: dict[str, Any], user: dict[str, Any]) -> None:
    """A whole login with a security key (no PIN): begin, identify, ``fido2/begin``, the
    assertion, complete (level low). The key is the one registered through the API; here its
    private key signs as the key would (authenticator data with user presence and the next
    signature counter, over the client data the origin's browser would send)."""
    transaction = await _begin(http, spec, user, "low")
    path = f"/authentications/{transaction}/fido2"
    begun = await http.call("POST", f"{path}/begin", {"user_verification": "discouraged"})
    options = begun["options"]["publicKey"]
    client_data = json.dumps(
        {"type": "webauthn.get", "challenge": options["challenge"], "origin": spec["origin"]},
        separators=(",", ":"),
    ).encode()
    user["sign_count"] += 1
    authenticator_data = (
        hashlib.sha256(options["rpId"].encode()).digest()
        + b"\x01"
        + user["sign_count"].to_bytes(4, "big")
    )
    signature = _key(user).sign(
        authenticator_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
    )
    credential_id = user["credential_id"]
    response = {
        "id": credential_id,
        "rawId": credential_id,
        "type": "public-key",
        "response": {
            "clientDataJSON": _b64url(client_data),
            "authenticatorData": _b64url(authenticator_data),
            "signature": _b64url(signature),
        },
    }
    await http.call("POST", path, {"response": response})
    await _complete(http, transaction, "low")


async def piv_login(http: Connection, spec: dict[str, Any], user: dict[str, Any]) -> None:
    """A whole login with a smartcard: begin, identify, ``piv/begin``, the card's signature
    over the login message, complete (level substantial, the benchmark's people's identity
    assurance: the card alone reaches it)."""
    transaction = await _begin(http, spec, user, "substantial")
    path = f"/authentications/{transaction}/piv"
    begun = await http.call("POST", f"{path}/begin")
    message = _piv_message(transaction, base64.b64decode(begun["challenge"]), spec["origin"])
    signature = _key(user).sign(message, ec.ECDSA(hashes.SHA256()))
    await http.call(
        "POST",
        path,
        {
            "certificate": user["certificate"],
            "signature": base64.b64encode(signature).decode("ascii"),
            "origin": spec["origin"],
        },
    )
    await _complete(http, transaction, "substantial")


def _piv_message(transaction: str, challenge: bytes, origin: str) -> bytes:
    return login_message(uuid.UUID(transaction), challenge, origin)


async def baseline(http: Connection, spec: dict[str, Any], user: dict[str, Any]) -> None:
    """The baseline server's one request: an HMAC code check and a row update."""
    answer = await http.call("POST", "/check", {"client": user["client"], "code": _next_code(user)})
    if answer != {"ok": True}:
        raise Failed(f"baseline: {answer}")


JOURNEYS: dict[str, Journey] = {
    "otp_step": otp_step,
    "otp_login": otp_login,
    "password_login": password_login,
    "fido2_login": fido2_login,
    "piv_login": piv_login,
    "baseline": baseline,
}


# --- running ------------------------------------------------------------------------------------


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


async def _user(spec: dict[str, Any], user: dict[str, Any], stop: float, run: Run) -> Connection:
    address = urlsplit(spec["base"])
    http = Connection(address.hostname or "127.0.0.1", address.port or 80, spec["headers"])
    journey = JOURNEYS[spec["journey"]]
    done = 0
    while time.monotonic() < stop or done < spec.get("minimum", 1):
        started = time.perf_counter()
        try:
            await journey(http, spec, user)
        except Failed as failure:
            run.failures.append(str(failure))
        else:
            run.latencies.append(time.perf_counter() - started)
        done += 1
    await http.close()
    return http


def _percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else float("nan")


async def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Keep ``in_flight`` users going for ``seconds``; the figures of this turn."""
    users = spec["users"]
    in_flight = spec["in_flight"]
    run = Run()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    began = time.perf_counter()
    stop = time.monotonic() + spec["seconds"]
    connections = await asyncio.gather(
        *(_user(spec, users[i % len(users)], stop, run) for i in range(in_flight))
    )
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    ordered = sorted(run.latencies)
    request_latencies = sorted(t for c in connections for t in c.latencies)
    return {
        "journeys": len(ordered),
        "requests": sum(c.requests for c in connections),
        "failures": len(run.failures),
        "failure_examples": sorted(set(run.failures))[:3],
        "wall": wall,
        "client_cpu": (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime),
        "journey_latencies": ordered,
        "p50_request_ms": 1000 * statistics.median(request_latencies) if request_latencies else 0,
        "p99_request_ms": 1000 * _percentile(request_latencies, 0.99),
        "users": [{k: v for k, v in user.items() if not k.startswith("_")} for user in users],
    }


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as file:
        spec = json.load(file)
    if len(spec["users"]) < spec["in_flight"]:
        raise SystemExit("each journey in flight needs a user of its own")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with the project's dependencies
        result = asyncio.run(measure(spec))
    else:
        result = uvloop.run(measure(spec))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
