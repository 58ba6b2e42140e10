"""The PIV login end to end through the real stacks: a service started with ``akkreditiv
serve``, a simulated card attached to pcscd's vpcd reader in its own process, and the
``akkreditiv devices piv enrol`` and ``devices piv login`` commands run as a person would run
them (PIN on standard input). The login completes with an ES256 assertion at level high; a
card pulled mid-login gives a clear error and leaves the service's state as it was."""

from __future__ import annotations

import base64
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from firmware_sim.state import load, save
from firmware_sim.tokens import piv as sim_piv
from firmware_sim.tokens.piv_state import KIND
from server.services.access import ApiKeys, Role
from server.services.piv.card import enrol_message
from server.storage.engine import create_engine_for, session_factory
from server.storage.tables import RateLimit
from tests.unit.server.people import PERSON_STORED, SEED

from .conftest import AttachedCard, CliRunner
from .pages import add_citizen, citizen_signs_in
from .server_process import start_server

pytestmark = pytest.mark.integration

PROVIDER = "https://sp.example"
PIN = "123456\n"
PASSWORD = "correct horse battery staple"  # noqa: S105 - a test person's password

Attach = Callable[[Path], AttachedCard]


@dataclass
class Service:
    url: str
    database_url: str
    headers: dict[str, str]
    cli_env: dict[str, str]
    keys_file: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, headers=self.headers)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """``akkreditiv serve`` on a free port, its keys, CA and database in the test's folder."""
    database_url = f"sqlite+pysqlite:///{tmp_path / 'piv.db'}"
    server = start_server(tmp_path / "service", database_url, provider=PROVIDER)
    key = server.headers["Authorization"].removeprefix("Bearer ")
    try:
        yield Service(
            server.url,
            database_url,
            server.headers,
            {"AKKREDITIV_API_KEY": key},
            tmp_path / "service" / "api-keys.json",
        )
    finally:
        server.stop()


@pytest.fixture
def card_state(tmp_path: Path) -> Path:
    """A fresh card: no keys yet, default PIN and management key."""
    path = tmp_path / "card.json"
    sim_piv.new_card_state(path)
    return path


def high_person(http: httpx.Client, keys_file: Path) -> tuple[str, str]:
    """A person proofed in person at a service centre, High once a second key approves."""
    number = "240372-1118"
    answer = http.post(
        "/identities",
        json={
            "person_number": number,
            "name": "Karen Blixen",
            "proofing": {
                "channel": "service_centre",
                "document_kind": "passport",
                "operator_ids": ["op-7", "op-9"],
            },
        },
    )
    assert answer.status_code == 201, answer.text
    identity = str(answer.json()["id"])
    waiting = http.get("/proofings", params={"identity_id": identity})
    assert waiting.status_code == 200, waiting.text
    _, second = ApiKeys(keys_file).add("second-supervisor", [Role.SUPERVISOR])
    approved = http.post(
        f"/proofings/{waiting.json()[-1]['id']}/approve",
        headers={"Authorization": f"Bearer {second}"},
    )
    assert approved.json()["identity_assurance"] == "high", approved.text
    return identity, number


def identified_login(http: httpx.Client, number: str) -> str:
    begun = http.post("/authentications", json={"provider": PROVIDER, "min_level": "high"})
    assert begun.status_code == 201, begun.text
    transaction = str(begun.json()["id"])
    identified = http.post(
        f"/authentications/{transaction}/identify", json={"person_number": number}
    )
    assert identified.status_code == 200, identified.text
    return transaction


def enrol(cli: CliRunner, service: Service, card: AttachedCard, identity: str) -> Any:
    result = cli(
        "devices",
        "piv",
        "enrol",
        "--url",
        service.url,
        "--identity",
        identity,
        "--reader",
        card.reader.name,
        "--pin-stdin",
        stdin=PIN,
        env=service.cli_env,
    )
    assert result.returncode == 0, result.stderr
    return result


def login(
    cli: CliRunner,
    service: Service,
    card: AttachedCard,
    transaction: str,
    *extra: str,
    stdin: str = PIN,
    yes: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``devices piv login`` as a rig runs it: PIN on standard input, and ``--yes`` (the rig
    began the login itself: nobody to ask) unless ``yes`` is False."""
    return cli(
        "devices",
        "piv",
        "login",
        "--url",
        service.url,
        "--transaction",
        transaction,
        "--reader",
        card.reader.name,
        "--pin-stdin",
        *(("--yes",) if yes else ()),
        *extra,
        stdin=stdin,
        env=service.cli_env,
    )


def assert_high_assertion(http: httpx.Client, transaction: str) -> dict[str, Any]:
    done = http.post(f"/authentications/{transaction}/complete")
    assert done.status_code == 200, done.text
    assert done.json()["level"] == "high"
    keys = http.get("/.well-known/jwks.json").json()["keys"]
    token = done.json()["assertion"]
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    claims: dict[str, Any] = jwt.decode(
        token, jwt.PyJWK(keys[0]).key, algorithms=["ES256"], audience=PROVIDER
    )
    assert claims["loa"] == "high"
    assert claims["amr"] == ["piv"]
    return claims


def test_enrol_and_log_in_at_level_high_through_pcscd(
    service: Service, attach: Attach, card_state: Path, cli: CliRunner
) -> None:
    card = attach(card_state)
    with service.client() as http:
        identity, number = high_person(http, service.keys_file)

        enrolled = enrol(cli, service, card, identity)

        credentials = http.get(f"/identities/{identity}/credentials").json()
        assert [(c["kind"], c["state"]) for c in credentials] == [("piv", "active")]
        issued = x509.load_der_x509_certificate(
            base64.b64decode(credentials[0]["public_data"]["certificate"])
        )
        assert f"certificate serial: {issued.serial_number:040x}" in enrolled.stdout
        assert credentials[0]["public_data"]["card_id"] == (
            sim_piv.load_applet(card_state).serial_text()
        )
        ca = x509.load_pem_x509_certificate(http.get("/piv/ca.pem").content)
        issued.verify_directly_issued_by(ca)
        status = cli("devices", "piv", "status", "--reader", card.reader.name)
        assert status.returncode == 0, status.stderr
        assert f"slot 9a: {issued.subject.rfc4514_string()}" in status.stdout

        transaction = identified_login(http, number)
        result = login(cli, service, card, transaction)

        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith("factors: piv")
        assert "123456" not in result.stdout + result.stderr
        assert_high_assertion(http, transaction)


def test_card_pulled_mid_login_is_a_clear_error_and_the_login_goes_on(
    service: Service, attach: Attach, card_state: Path, cli: CliRunner
) -> None:
    card = attach(card_state)
    with service.client() as http:
        identity, number = high_person(http, service.keys_file)
        enrol(cli, service, card, identity)
        transaction = identified_login(http, number)
        armed = cli("sim", "fault", "pull", "--state", str(card_state), "--ins", "87")
        assert armed.returncode == 0, armed.stderr

        pulled = login(cli, service, card, transaction)

        assert pulled.returncode == 2, pulled.stdout + pulled.stderr
        assert "error:" in pulled.stderr
        assert "removed" in pulled.stderr.lower()
        assert "Traceback" not in pulled.stderr
        assert card.wait_gone() == 0
        # Nothing reached the service's factor check: no factor, no failure counted.
        step_up = http.post(f"/authentications/{transaction}/complete")
        assert step_up.status_code == 403, step_up.text
        engine = create_engine_for(service.database_url)
        try:
            with session_factory(engine)() as session:
                assert session.scalars(select(RateLimit)).all() == []
        finally:
            engine.dispose()

        again = attach(card_state)  # the card back in the reader
        result = login(cli, service, again, transaction)

        assert result.returncode == 0, result.stderr
        assert_high_assertion(http, transaction)


def test_lost_card_is_published_and_refused(
    service: Service, attach: Attach, card_state: Path, cli: CliRunner
) -> None:
    card = attach(card_state)
    with service.client() as http:
        identity, number = high_person(http, service.keys_file)
        enrol(cli, service, card, identity)
        credential = http.get(f"/identities/{identity}/credentials").json()[0]
        lost = http.post(f"/credentials/{credential['id']}/state", json={"state": "lost"})
        assert lost.status_code == 200, lost.text

        crl = x509.load_der_x509_crl(http.get("/piv/crl").content)
        serial = int(credential["serial"].removeprefix("piv:"), 16)
        entry = crl.get_revoked_certificate_by_serial_number(serial)
        assert entry is not None
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        assert reason is x509.ReasonFlags.key_compromise

        transaction = identified_login(http, number)
        refused = login(cli, service, card, transaction)

        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "401" in refused.stderr
        assert "Traceback" not in refused.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["enrol", "--identity", "not-an-id"], "--identity is not an id"),
        (
            [
                "enrol",
                "--identity",
                "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                "--management-key",
                "zz",
            ],
            "--management-key takes hex",
        ),
        (
            [
                "enrol",
                "--identity",
                "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                "--management-key",
                "00",
            ],
            "management key is 24 bytes",
        ),
        (["login", "--transaction", "42"], "--transaction is not an id"),
    ],
)
def test_bad_arguments_are_refused_before_the_card_is_touched(
    cli: CliRunner, args: list[str], message: str
) -> None:
    result = cli("devices", "piv", *args, "--url", "http://127.0.0.1:9")

    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr


def test_a_login_a_browser_opened_takes_the_card_with_the_pages_pairing_code(
    service: Service, attach: Attach, card_state: Path, cli: CliRunner
) -> None:
    card = attach(card_state)
    with service.client() as http:
        identity, number = high_person(http, service.keys_file)
        enrol(cli, service, card, identity)
        begun = http.post("/authentications", json={"provider": PROVIDER, "min_level": "high"})
        transaction = str(begun.json()["id"])
    # The person's browser opens the login's pages (claiming the login) and says who it is.
    with httpx.Client(base_url=service.url, headers={"origin": service.url}) as browser:
        first = browser.get(f"/login/{transaction}")
        csrf = re.search(r'name="csrf" value="([^"]+)"', first.text)
        assert csrf is not None
        said = browser.post(
            f"/login/{transaction}", data={"csrf": csrf.group(1), "person_number": number}
        )
        assert said.status_code == 303, said.text
        page = browser.get(f"/login/{transaction}/smartcard")
        shown = re.search(r'id="pairing-code"><strong>([A-Z0-9-]+)</strong>', page.text)
        assert shown is not None, page.text
        pairing = shown.group(1)
        assert f"--pairing {pairing}" in page.text

        # Without the code the card program is refused before the PIN is asked; with it,
        # the card's signature counts for the browser's login.
        refused = login(cli, service, card, transaction)
        assert refused.returncode == 3, refused.stderr
        assert "another browser" in refused.stderr or "bound" in refused.stderr
        paired = login(cli, service, card, transaction, "--pairing", pairing.lower())
        assert paired.returncode == 0, paired.stderr
        assert "The login began at" in paired.stdout
        assert "was opened in a browser, which this program is paired with" in paired.stdout
        assert paired.stdout.strip().endswith("factors: piv")
    with service.client() as http:
        assert_high_assertion(http, transaction)


def test_a_citizen_enrols_a_card_from_the_account_page_without_an_api_key(
    service: Service, attach: Attach, card_state: Path, cli: CliRunner, tmp_path: Path
) -> None:
    card = attach(card_state)
    with service.client() as http:
        kek_file = tmp_path / "service" / "kek.bin"
        identity = add_citizen(service.database_url, kek_file, http, PASSWORD)
    no_key = {"AKKREDITIV_API_KEY": "", "AKKREDITIV_API_KEY_FILE": ""}

    def enrol_with(enrolment: str, code: str) -> subprocess.CompletedProcess[str]:
        return cli(
            "devices", "piv", "enrol", "--url", service.url, "--enrolment", enrolment,
            "--code", code, "--reader", card.reader.name, "--pin-stdin",
            stdin=PIN, env=no_key,
        )  # fmt: skip

    with httpx.Client(
        base_url=service.url, headers={"origin": service.url}, follow_redirects=True, timeout=30
    ) as browser:
        # The citizen signs in through the pages: password, then the code display's code.
        start = "/account/login?next=/account/add/smartcard"
        page = citizen_signs_in(browser, start, PERSON_STORED, PASSWORD, SEED)
        assert str(page.url).endswith("/account/add/smartcard"), page.url
        enrolment, code = shown_command(page, service.url)

        # A wrong code is refused (and spends that enrolment: the page then shows a new one).
        wrong = "ABCD-EFGH-JKLM" if code != "ABCD-EFGH-JKLM" else "MLKJ-HGFE-DCBA"
        refused = enrol_with(enrolment, wrong)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "401" in refused.stderr
        assert "enrolment code is not right" in refused.stderr
        assert "Traceback" not in refused.stderr
        page = browser.get("/account/add/smartcard")
        enrolment, code = shown_command(page, service.url)

        enrolled = enrol_with(enrolment, code)

        assert enrolled.returncode == 0, enrolled.stderr
        assert "The certificate is in slot 9a." in enrolled.stdout
        with service.client() as http:
            credentials = http.get(f"/identities/{identity}/credentials").json()
        cards = [c for c in credentials if c["kind"] == "piv"]
        assert [c["state"] for c in cards] == ["active"]
        card_id = cards[0]["public_data"]["card_id"]
        assert card_id == sim_piv.load_applet(card_state).serial_text()
        listed = browser.get("/account/add/smartcard")
        # The page names the card by that id, in groups of four (as the console does).
        shown = " ".join(card_id.lower()[i : i + 4] for i in range(0, len(card_id), 4))
        assert f"Kort {shown}: Aktiv" in listed.text


def shown_command(page: httpx.Response, url: str) -> tuple[str, str]:
    """The enrolment and code of the command the smartcard page shows."""
    assert page.status_code == 200, page.text
    found = re.search(
        r"akkreditiv devices piv enrol --url (\S+) --enrolment ([0-9a-f-]{36}) "
        r"--code ([A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4})",
        page.text,
    )
    assert found is not None, page.text
    assert found.group(1) == url
    assert f"<strong>{found.group(3)}</strong>" in page.text
    return found.group(2), found.group(3)


# --- only keys generated on a card are enrolled --------------------------------------------------


def test_a_software_key_is_not_enrolled_as_a_smartcard(service: Service) -> None:
    """The attack against the running service: a key made in software, signing the enrolment
    message correctly, is refused as not generated on a card, and no credential is made."""
    with service.client() as http:
        identity, _ = high_person(http, service.keys_file)
        begun = http.post(f"/identities/{identity}/piv/enrol/begin").json()
        state_id = begun["state_id"]
        message = enrol_message(uuid.UUID(state_id), base64.b64decode(begun["challenge"]))
        key = ec.generate_private_key(ec.SECP256R1())
        signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        answer = http.post(
            f"/piv/enrolments/{state_id}/complete",
            json={
                "public_key": base64.b64encode(public).decode(),
                "signature": base64.b64encode(signature).decode(),
                "card_id": "ab" * 16,
            },
        )
        assert answer.status_code == 422, answer.text
        assert "not generated on a card" in answer.json()["detail"]
        assert http.get(f"/identities/{identity}/credentials").json() == []


def test_a_card_that_cannot_attest_is_not_enrolled(
    service: Service, card_state: Path, attach: Attach, cli: CliRunner
) -> None:
    """A card made before attestation (no F9 key) gives none: the command says why."""
    document = load(card_state, KIND)
    del document["attestation_key"]
    document["objects"].pop("5fff01")
    save(card_state, KIND, document)
    card = attach(card_state)
    with service.client() as http:
        identity, _ = high_person(http, service.keys_file)
        result = cli(
            "devices", "piv", "enrol", "--url", service.url, "--identity", identity,
            "--reader", card.reader.name, "--pin-stdin", stdin=PIN, env=service.cli_env,
        )  # fmt: skip
        assert result.returncode != 0
        assert "not generated on a card" in result.stderr
        assert http.get(f"/identities/{identity}/credentials").json() == []
