"""``akkreditiv demo``: give a running service demo people whose tokens are simulated (one of
every kind), and show how to log in with each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from akkreditiv.cli.common import fail

# Options the demo commands share.
DemoFolder = Annotated[Path, typer.Option(help="Where the demo's files go.")]
ServiceDatabase = Annotated[
    str | None,
    typer.Option(help="The service's database (default: AKKREDITIV_DATABASE_URL or var/)."),
]

demo_app = typer.Typer(help="Demo people with simulated tokens, for trying the service.")

DEMO_PERSON = "010180-1234"
# A code display and an audio code reader are never active at once for one person (the rule
# of the real system), so the audio reader belongs to a second demo person.
AUDIO_PERSON = "020275-1236"
DEMO_PASSWORD = "demo password for akkreditiv"  # noqa: S105 - printed for people to try it
DEMO_PROVIDER = "https://demo.example"
# The name people are shown for the demo provider on the login pages and by the smartcard's
# program (its key's display name).
DEMO_PROVIDER_NAME = "Demotjenesten"
DEMO_PIV_PIN = "123456"


@demo_app.command("seed")
def seed(
    url: Annotated[str, typer.Option(help="The running service.")] = "http://127.0.0.1:8000",
    folder: Annotated[Path, typer.Option(help="Where the simulated tokens' state goes.")] = Path(
        "var/demo"
    ),
    fido_state: Annotated[
        Path | None,
        typer.Option(help="A simulated FIDO2 key plugged into the simulated USB bus to register."),
    ] = None,
    piv_reader: Annotated[
        str | None,
        typer.Option(help="The reader holding a simulated PIV card (PIN 123456) to enrol."),
    ] = None,
) -> None:
    """Enrol the demo people (once) and print how to log in. The first holds a password, a
    code display, a USB OTP token, a key card and, when given, the FIDO2 key and the PIV card;
    the second a password and an audio code reader."""
    import httpx

    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "demo-person.json"
    supervisor = _key(folder / "supervisor.key", "demo-supervisor", "supervisor")
    _key(folder / "provider.key", DEMO_PROVIDER, "provider", DEMO_PROVIDER_NAME)
    if not record.exists():
        headers = {"Authorization": f"Bearer {supervisor}"}
        with httpx.Client(base_url=url, timeout=60, headers=headers) as http:
            details = _seed(http, url, folder, fido_state, piv_reader)
        record.write_text(json.dumps(details, indent=2) + "\n")
    _instructions(url, json.loads(record.read_text()), folder)


def _key(path: Path, name: str, role: str, display_name: str | None = None) -> str:
    """The demo's API key in ``path``, made (in the service's key file) on first use; a
    provider's with ``display_name`` (given to a key of an earlier demo that has none)."""
    from server.services.access import ApiKeys, Role
    from server.settings import Settings

    keys = ApiKeys(Settings().api_keys_file)
    if path.exists():
        key = path.read_text(encoding="ascii").strip()
        caller = keys.authenticate(key)
        if display_name is not None and caller is not None and keys.display_name(name) is None:
            keys.set_display_name(caller.key_id, display_name)
        return key
    _, key = keys.add(name, [Role(role)], display_name=display_name)
    path.touch(mode=0o600)
    path.write_text(key + "\n", encoding="ascii")
    return key


def _seed(
    http: Any, url: str, folder: Path, fido_state: Path | None, piv_reader: str | None
) -> dict[str, Any]:
    from firmware_sim.tokens import audio_reader, otp_token

    display = _token(folder / "display.json", otp_token.Model.DISPLAY, otp_token.Algorithm.TOTP)
    usb = _token(folder / "otp-usb-hotp.json", otp_token.Model.USB, otp_token.Algorithm.HOTP)
    reader_state = folder / "audio-reader.json"
    if not reader_state.exists():
        audio_reader.new_reader(
            reader_state, otp_token.new_state(otp_token.Model.AUDIO, otp_token.Algorithm.TOTP)
        )
    tokens = {display: None, usb: None, reader_state: otp_token.Model.AUDIO}
    _import(http, [otp_token.load_state(path, model) for path, model in tokens.items()])

    identity = _person(http, DEMO_PERSON, "Demo Person", IN_PERSON)
    _second_operator_approves(url, folder, identity)
    details: dict[str, Any] = {
        "identity": identity,
        "person_number": DEMO_PERSON,
        "display": str(display),
        "otp_usb": str(usb),
    }
    for path in (display, usb):
        _assign_and_activate(http, identity, path, None)
    details["key_card"] = str(_key_card(http, identity, folder / "key-card.txt"))
    if fido_state is not None:
        _fido(http, url, identity, fido_state)
        details["fido_state"] = str(fido_state)
    if piv_reader is not None:
        _piv(url, identity, piv_reader, folder / "supervisor.key")
        details["piv_reader"] = piv_reader

    audio_identity = _person(http, AUDIO_PERSON, "Demo Listener", SELF_SERVICE)
    _assign_and_activate(http, audio_identity, reader_state, otp_token.Model.AUDIO)
    details["audio_person_number"] = AUDIO_PERSON
    details["audio_reader"] = str(reader_state)
    return details


def _token(path: Path, model: Any, algorithm: Any) -> Path:
    from firmware_sim.tokens import otp_token

    if not path.exists():
        otp_token.create(path, otp_token.new_state(model, algorithm))
    return path


def _import(http: Any, states: list[Any]) -> None:
    from devices.protocol import pskc

    _ok(
        http.post(
            "/token-batches",
            content=pskc.write_pskc([state.pskc_key() for state in states]),
            headers={"content-type": "application/xml"},
        ),
        "importing the demo tokens",
    )


SELF_SERVICE = {"channel": "self_service", "document_kind": "passport_chip"}
# In person at a citizen service centre; a second staff member approves it with their own key
# (``_second_operator_approves``): identity level high.
IN_PERSON = {
    "channel": "service_centre",
    "document_kind": "passport",
    "operator_ids": ["centre-operator-1", "centre-operator-2"],
}


def _person(http: Any, number: str, name: str, proofing: dict[str, Any]) -> str:
    identity = _ok(
        http.post(
            "/identities", json={"person_number": number, "name": name, "proofing": proofing}
        ),
        f"enrolling {name}",
    )
    identity_id = str(identity["id"])
    _ok(
        http.put(f"/identities/{identity_id}/password", json={"password": DEMO_PASSWORD}),
        f"setting {name}'s password",
    )
    return identity_id


def _second_operator_approves(url: str, folder: Path, identity: str) -> None:
    """Identity level high needs a second operator's own key: the demo's second supervisor
    approves the in-person proofing the first one recorded."""
    import httpx

    second = _key(folder / "supervisor-2.key", "demo-second-supervisor", "supervisor")
    headers = {"Authorization": f"Bearer {second}"}
    with httpx.Client(base_url=url, timeout=60, headers=headers) as http:
        waiting = http.get("/proofings", params={"identity_id": identity})
        if waiting.status_code >= 300:
            raise fail(f"finding the proofing to approve: {waiting.status_code} {waiting.text}", 2)
        for proofing in waiting.json():
            _ok(http.post(f"/proofings/{proofing['id']}/approve"), "approving the proofing")


def _assign_and_activate(http: Any, identity: str, path: Path, model: Any) -> None:
    from devices.protocol.otp import totp
    from firmware_sim.tokens import otp_token

    token = otp_token.load_state(path, model)
    credential = _ok(
        http.post(f"/identities/{identity}/tokens", json={"serial": token.serial}),
        f"assigning {path.name}",
    )
    if token.algorithm is otp_token.Algorithm.HOTP:
        code = otp_token.load_generator(path, model).next_code()
    else:
        # The code of the step before: the service accepts one step back, and the current
        # window stays unspent, so the person can log in with what the token shows now.
        code = totp(
            token.secret,
            time.time() - token.time_step,
            step=token.time_step,
            digits=token.digits,
            alg=token.hash_alg,
        )
    _ok(
        http.post(f"/credentials/{credential['id']}/activate", json={"code": code}),
        f"activating {path.name}",
    )


def _key_card(http: Any, identity: str, card_file: Path) -> Path:
    """Issue the key card, keep its printout (mode 0600) and activate it with the code for
    the key number the service asks for, as its holder would."""
    issued = _ok(http.post(f"/identities/{identity}/key-cards", json={}), "issuing a key card")
    pairs = {pair["index"]: pair["code"] for pair in issued["card"]["pairs"]}
    card_file.touch(mode=0o600)
    lines = [f"key card {issued['card']['serial']}: key number -> code"]
    lines += [f"{index} {code}" for index, code in pairs.items()]
    card_file.write_text("\n".join(lines) + "\n", encoding="ascii")
    credential = issued["credential"]["id"]
    index = _ok(
        http.post(f"/credentials/{credential}/key-card/activation/begin"),
        "beginning the key card's activation",
    )["index"]
    _ok(
        http.post(
            f"/credentials/{credential}/key-card/activation/complete",
            json={"code": pairs[index]},
        ),
        "activating the key card",
    )
    return card_file


def _fido(http: Any, url: str, identity: str, state: Path) -> None:
    """Register the simulated key on the simulated USB bus; the demo presses its button when
    the key asks for a touch."""
    from akkreditiv.cli.fido import enrol_with_service, service_origin
    from devices.tokens.fido import FidoSession
    from devices.transports.usb import find_fido_interfaces, open_ctap_device
    from firmware_sim.attach import usb_bus
    from firmware_sim.attach.usb_backend import SimulatedBusBackend

    bus = usb_bus.bus_dir()
    info = usb_bus.find_device(state, bus)
    for interface in find_fido_interfaces([SimulatedBusBackend(bus)]):
        if interface.serial_number == info.serial:
            break
    else:
        raise fail(f"the FIDO2 key {state} is not on the simulated USB bus", 2)

    def press() -> None:
        usb_bus.touch(state, bus)

    session = FidoSession(open_ctap_device(interface), on_touch=press)
    try:
        enrol_with_service(http, session, identity, service_origin(url, None), None)
    finally:
        session.close()


def _piv(url: str, identity: str, reader: str, key_file: Path) -> None:
    """Enrol the PIV card with ``devices piv enrol``, as an operator would at the desk."""
    enrolled = subprocess.run(  # noqa: S603 - our own command, fixed arguments
        [
            sys.executable,
            "-m",
            "akkreditiv",
            "devices",
            "piv",
            "enrol",
            "--url",
            url,
            "--identity",
            identity,
            "--reader",
            reader,
            "--pin-stdin",
        ],
        input=DEMO_PIV_PIN + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "AKKREDITIV_API_KEY_FILE": str(key_file)},
    )
    if enrolled.returncode != 0:
        raise fail(f"enrolling the PIV card: {enrolled.stderr.strip()}", 2)


def _ok(answer: Any, doing: str) -> dict[str, Any]:
    if answer.status_code >= 300:
        raise fail(f"{doing}: {answer.status_code} {answer.text}", 2)
    body: dict[str, Any] = answer.json()
    return body


def _instructions(url: str, details: dict[str, Any], folder: Path) -> None:
    akk = ".venv/bin/akkreditiv"
    provider = f'-H "Authorization: Bearer $(cat {folder / "provider.key"})"'
    post = f"curl -s -X POST {url}/authentications"
    json_body = "-H 'content-type: application/json' -d"
    person = details["person_number"]
    text = f"""
Demo person {person} (password "{DEMO_PASSWORD}"; proofed in person, identity level high)
holds a code display, a USB OTP token (HOTP), a key card ({details["key_card"]})"""
    if "fido_state" in details:
        text += ", a FIDO2 key on the simulated USB bus"
    if "piv_reader" in details:
        text += f', a PIV card in "{details["piv_reader"]}" (PIN {DEMO_PIV_PIN})'
    text += f""".
Demo person {details["audio_person_number"]} (same password) holds an audio code reader.

Log in as the demo service provider {DEMO_PROVIDER} (people are shown "{DEMO_PROVIDER_NAME}"):
  {post} {provider} \\
       {json_body} '{{"min_level": "substantial"}}'                   # -> "id": ID
  {post}/ID/identify {json_body} '{{"person_number": "{person}"}}'
  {post}/ID/password {json_body} '{{"password": "{DEMO_PASSWORD}"}}'
then one more factor:
  code display:  {akk} sim show --state {details["display"]}
                 {post}/ID/otp {json_body} '{{"code": "CODE"}}'
  key card:      {post}/ID/key-card/begin        # -> the key number; its code is in the card
                 {post}/ID/key-card {json_body} '{{"code": "CODE"}}'"""
    if "fido_state" in details:
        text += f"""
  FIDO2 key:     {akk} devices fido login --url {url} --transaction ID
                 (touch it: {akk} sim touch --state {details["fido_state"]})"""
    if "piv_reader" in details:
        text += f"""
  PIV card:      {akk} devices piv login --url {url} --transaction ID   (level high)"""
    text += f"""
  audio reader:  (as {details["audio_person_number"]}) {akk} sim press red \\
                 --state {details["audio_reader"]} --audio-dir var/demo/audio  # speaks it
finally the signed assertion:
  {post}/ID/complete {provider}
"""
    typer.echo(text)
