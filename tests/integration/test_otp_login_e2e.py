"""End to end: every simulated OTP token, through its real driver path, into a real
``akkreditiv serve`` process and out as a signed assertion.

For each token the test does what an issuer, an operator, a person and a service provider
would: create the token (``akkreditiv sim new``, which prints its PSKC), import the PSKC,
enrol a person with a password, assign and activate the token with a code read from it, log
in (identify, password, code) and verify the ES256 assertion against the JWKS. Codes come
only from the tokens' own paths: the display's screen (``sim show``), the USB keyboard token
typing on the simulated bus (``devices otp read``), the NFC tag and the OATH card through
pcscd, and the audio reader's speech, recognised from its WAV file (never from its seed).

TOTP tokens are accepted once per 30 s window, so activation reads the code of now and the
login reads the token one window later (``--at``, or the host clock the OATH driver sends):
the service accepts a token clock up to three windows fast and learns that drift.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from accessibility.errors import SpeechUnavailable
from accessibility.listen import Listener
from accessibility.speech import Language, Pyttsx3Engine
from devices.tokens.oath import OathSession
from devices.transports.pcsc import PcscContext
from firmware_sim.attach import usb_bus
from firmware_sim.tokens import audio_reader
from tests.integration.conftest import AttachedCard, CliRunner, missing_component
from tests.integration.server_process import ServerProcess, start_server
from tests.unit.server.storage.databases import postgres_schema

pytestmark = pytest.mark.integration

PROVIDER = "https://sp.example"
PASSWORD = "correct horse battery staple, twice"  # noqa: S105 - a test person's password
STEP = 30.0  # seconds per TOTP window
_people = itertools.count(1)


# --- the service ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One service on a SQLite file for the whole module."""
    folder = tmp_path_factory.mktemp("service-sqlite")
    server = start_server(
        folder, f"sqlite+pysqlite:///{folder / 'akkreditiv.db'}", provider=PROVIDER
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def postgres_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The same service on PostgreSQL (a schema of its own); skipped on a developer machine
    without PostgreSQL, failed when CI=true."""
    folder = tmp_path_factory.mktemp("service-postgresql")
    with postgres_schema() as url:
        server = start_server(folder, url, provider=PROVIDER)
        try:
            yield server
        finally:
            server.stop()


class Portal:
    """The service's API as the issuer, the operator, the person and the provider use it."""

    def __init__(self, server: ServerProcess, http: httpx.Client) -> None:
        self.server = server
        self.http = http

    def _ok(self, answer: httpx.Response, status: int = 200) -> Any:
        assert answer.status_code == status, f"{answer.request.url}: {answer.text}"
        return answer.json()

    def enrol(self) -> tuple[str, str]:
        """A new person with a password: their person number and identity id."""
        number = next(_people)
        person = f"{number % 28 + 1:02d}0385-{4000 + number}"
        identity = self._ok(
            self.http.post(
                "/identities",
                json={
                    "person_number": person,
                    "name": f"Test Person {number}",
                    "proofing": {"channel": "self_service", "document_kind": "passport_chip"},
                },
            ),
            201,
        )
        self._ok(
            self.http.put(f"/identities/{identity['id']}/password", json={"password": PASSWORD})
        )
        return person, str(identity["id"])

    def import_and_assign(self, pskc: str, identity: str) -> str:
        """Import the token's PSKC as the issuer ships it; assign it; its credential id."""
        batch = self._ok(
            self.http.post(
                "/token-batches", content=pskc, headers={"content-type": "application/xml"}
            ),
            201,
        )
        assert batch["count"] == 1
        serial = batch["tokens"][0]["serial"]
        assigned = self._ok(
            self.http.post(f"/identities/{identity}/tokens", json={"serial": serial})
        )
        assert assigned["state"] == "activation_pending"
        return str(assigned["id"])

    def activate(self, credential: str, code: str) -> None:
        activated = self._ok(
            self.http.post(f"/credentials/{credential}/activate", json={"code": code})
        )
        assert activated["state"] == "active"

    def begin(self, person: str, *, level: str = "substantial") -> str:
        """A login for ``person`` at ``level``, identified and with the password given."""
        begun = self._ok(
            self.http.post("/authentications", json={"provider": PROVIDER, "min_level": level}), 201
        )
        transaction = str(begun["id"])
        self._ok(
            self.http.post(
                f"/authentications/{transaction}/identify", json={"person_number": person}
            )
        )
        self._ok(
            self.http.post(f"/authentications/{transaction}/password", json={"password": PASSWORD})
        )
        return transaction

    def otp(self, transaction: str, code: str) -> httpx.Response:
        return self.http.post(f"/authentications/{transaction}/otp", json={"code": code})

    def login(self, person: str, code: str) -> dict[str, Any]:
        """A whole login with password and ``code``; the verified assertion's claims."""
        transaction = self.begin(person)
        self._ok(self.otp(transaction, code))
        done = self._ok(self.http.post(f"/authentications/{transaction}/complete"))
        claims = self.verify(done["assertion"])
        assert claims["loa"] == done["level"]
        assert claims["txn"] == transaction
        return claims

    def verify(self, assertion: str) -> dict[str, Any]:
        """The assertion's claims, checked as a service provider checks them: ES256 under a
        key of the JWKS, this provider as audience, this service as issuer, not expired."""
        keys = self._ok(self.http.get("/.well-known/jwks.json"))["keys"]
        kid = jwt.get_unverified_header(assertion).get("kid")
        key = next((k for k in keys if k.get("kid") == kid), keys[0])
        claims: dict[str, Any] = jwt.decode(
            assertion,
            jwt.PyJWK(key),
            algorithms=["ES256"],
            audience=PROVIDER,
            issuer=self.server.url,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
        return claims


@pytest.fixture
def portal(service: ServerProcess) -> Iterator[Portal]:
    with service.client() as http:
        yield Portal(service, http)


def refused(answer: httpx.Response) -> None:
    """A factor refused the way the API refuses it: 401 problem+json that says nothing more."""
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["status"] == 401


# --- the tokens' own paths -----------------------------------------------------------------


def new_token(cli: CliRunner, kind: str, state: Path, *options: str) -> str:
    """``akkreditiv sim new KIND``: the PSKC document it prints."""
    made = cli("sim", "new", kind, "--state", str(state), *options)
    assert made.returncode == 0, made.stderr
    assert "<KeyContainer" in made.stdout
    return made.stdout


def shown(cli: CliRunner, state: Path, at: float) -> str:
    """Press the code display's button with its clock at ``at``: what the display shows."""
    result = cli("sim", "show", "--state", str(state), "--at", f"{at:.3f}")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def typed(cli: CliRunner, state: Path) -> str:
    """Touch the USB keyboard token while ``devices otp read`` listens: what it typed."""
    reader = subprocess.Popen(
        [sys.executable, "-m", "akkreditiv", "devices", "otp", "read", "--timeout", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reader.stderr is not None
    prompt = reader.stderr.readline()  # the driver is listening once it asks for the touch
    assert "Touch your OTP token now." in prompt, prompt
    usb_bus.touch(state)  # what `akkreditiv sim touch` does, without another process
    out, err = reader.communicate(timeout=30)
    assert reader.returncode == 0, err
    return out.strip()


def read_tag(cli: CliRunner, card: AttachedCard) -> str:
    """Hold the NFC tag to the reader: ``devices otp read`` reads its NDEF OTP."""
    result = cli("devices", "otp", "read", "--device", card.reader.name)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def spoken_code(
    cli: CliRunner, listener: Listener, state: Path, audio: Path, at: float, language: Language
) -> str:
    """Press the audio reader's red key with its clock at ``at`` and listen to what it says,
    at the settings a new reader has: the only way a blind person gets the code."""
    pressed = cli(
        "sim", "press", "red", "--state", str(state), "--audio-dir", str(audio), "--at", f"{at:.3f}"
    )
    assert pressed.returncode == 0, pressed.stderr
    wav = Path(pressed.stdout.strip())
    assert wav.suffix == ".wav"
    heard = listener.listen(
        wav,
        language=language,
        rate=audio_reader.DEFAULT_RATE,
        volume=audio_reader.DEFAULT_VOLUME,
    )
    assert heard.groups == (3, 3)
    return heard.digits


@pytest.fixture(scope="module")
def listener() -> Listener:
    engine = Pyttsx3Engine()
    try:
        engine.start()
    except SpeechUnavailable as exc:
        missing_component(f"speech (espeak-ng) is not available: {exc}")
    return Listener(engine)


# --- logins ----------------------------------------------------------------------------------


def test_code_display_logs_in_at_substantial_and_its_code_counts_once(
    portal: Portal, cli: CliRunner, tmp_path: Path
) -> None:
    state = tmp_path / "display.json"
    pskc = new_token(cli, "otp-display", state)
    person, identity = portal.enrol()
    credential = portal.import_and_assign(pskc, identity)
    portal.activate(credential, shown(cli, state, time.time()))

    code = shown(cli, state, time.time() + STEP)
    claims = portal.login(person, code)
    assert claims["loa"] == "substantial"
    assert claims["amr"] == ["code_display", "password"]

    refused(portal.otp(portal.begin(person), code))  # the same code again: a replay


@pytest.mark.parametrize("algorithm", ["yubico", "hotp"])
def test_usb_keyboard_token_logs_in_with_what_it_types(
    portal: Portal, cli: CliRunner, tmp_path: Path, usb_bus_dir: Path, algorithm: str
) -> None:
    state = tmp_path / "otp-usb.json"
    pskc = new_token(cli, "otp-usb", state, "--algorithm", algorithm)
    plugged = cli("sim", "plug", "otp-usb", "--state", str(state))
    assert plugged.returncode == 0, plugged.stderr
    try:
        person, identity = portal.enrol()
        credential = portal.import_and_assign(pskc, identity)
        portal.activate(credential, typed(cli, state))

        code = typed(cli, state)
        if algorithm == "yubico":
            assert len(code) == 44  # public id and the encrypted block, in modhex
        claims = portal.login(person, code)
        assert claims["loa"] == "substantial"
        assert claims["amr"] == ["otp_token", "password"]

        refused(portal.otp(portal.begin(person), code))
    finally:
        cli("sim", "unplug", "--state", str(state))


def test_nfc_tag_logs_in_with_its_ndef_otp(
    portal: Portal, cli: CliRunner, tmp_path: Path, attach: Callable[..., AttachedCard]
) -> None:
    state = tmp_path / "otp-nfc.json"
    pskc = new_token(cli, "otp-nfc", state)
    card = attach(state, "otp-nfc")
    person, identity = portal.enrol()
    credential = portal.import_and_assign(pskc, identity)
    portal.activate(credential, read_tag(cli, card))

    code = read_tag(cli, card)
    claims = portal.login(person, code)
    assert claims["loa"] == "substantial"
    assert claims["amr"] == ["otp_token", "password"]
    refused(portal.otp(portal.begin(person), code))


def test_oath_card_logs_in_with_its_totp(
    portal: Portal, cli: CliRunner, tmp_path: Path, attach: Callable[..., AttachedCard]
) -> None:
    state = tmp_path / "oath.json"
    pskc = new_token(cli, "oath", state)
    card = attach(state, "oath")
    person, identity = portal.enrol()
    credential = portal.import_and_assign(pskc, identity)
    listed = cli("devices", "otp", "oath", "--reader", card.reader.name)
    assert listed.returncode == 0, listed.stderr
    name, code = listed.stdout.strip().split(": ")
    assert name == "akkreditiv:demo"
    portal.activate(credential, code)

    # The card computes the code for the time the host sends; a host one window ahead.
    with PcscContext() as context, context.connect(card.reader.name) as connection:
        session = OathSession(connection)
        session.select()
        later = session.calculate_all(time.time() + STEP)[name]
    assert later is not None
    claims = portal.login(person, later)
    assert claims["loa"] == "substantial"
    assert claims["amr"] == ["otp_token", "password"]


def test_audio_reader_logs_in_with_the_code_it_speaks(
    portal: Portal, cli: CliRunner, listener: Listener, tmp_path: Path
) -> None:
    language = Language.DA  # the listener's own tests cover English as well
    state = tmp_path / "reader.json"
    pskc = new_token(cli, "audio-reader", state, "--language", language.value)
    person, identity = portal.enrol()
    credential = portal.import_and_assign(pskc, identity)
    audio = tmp_path / "headphones"
    portal.activate(credential, spoken_code(cli, listener, state, audio, time.time(), language))

    code = spoken_code(cli, listener, state, audio, time.time() + STEP, language)
    claims = portal.login(person, code)
    assert claims["loa"] == "substantial"
    assert claims["amr"] == ["audio_reader", "password"]
    refused(portal.otp(portal.begin(person), code))


def test_code_display_logs_in_on_postgresql(
    postgres_service: ServerProcess, cli: CliRunner, tmp_path: Path
) -> None:
    state = tmp_path / "display.json"
    pskc = new_token(cli, "otp-display", state)
    with postgres_service.client() as http:
        portal = Portal(postgres_service, http)
        assert http.get("/health").json()["database"] == "postgresql"
        person, identity = portal.enrol()
        credential = portal.import_and_assign(pskc, identity)
        portal.activate(credential, shown(cli, state, time.time()))
        code = shown(cli, state, time.time() + STEP)
        claims = portal.login(person, code)
        assert claims["loa"] == "substantial"
        assert claims["amr"] == ["code_display", "password"]
        refused(portal.otp(portal.begin(person), code))
