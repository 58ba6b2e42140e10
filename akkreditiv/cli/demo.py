"""``akkreditiv demo``: give a running service a demo person whose tokens are simulated, and
show how to log in with them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from akkreditiv.cli.common import fail

demo_app = typer.Typer(help="A demo person with simulated tokens, for trying the service.")

DEMO_PERSON = "010180-1234"
DEMO_PASSWORD = "demo password for akkreditiv"  # noqa: S105 - printed for people to try it
DEMO_PROVIDER = "https://demo.example"


@demo_app.command("seed")
def seed(
    url: Annotated[str, typer.Option(help="The running service.")] = "http://127.0.0.1:8000",
    folder: Annotated[Path, typer.Option(help="Where the simulated tokens' state goes.")] = Path(
        "var/demo"
    ),
) -> None:
    """Enrol the demo person (once), with a password, a simulated code display and a
    simulated USB OTP token, and print how to log in."""
    import httpx

    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "demo-person.json"
    supervisor = _key(folder / "supervisor.key", "demo-supervisor", "supervisor")
    headers = {"Authorization": f"Bearer {supervisor}"}
    _key(folder / "provider.key", DEMO_PROVIDER, "provider")
    with httpx.Client(base_url=url, timeout=30, headers=headers) as http:
        _seed(http, url, folder, record)


def _key(path: Path, name: str, role: str) -> str:
    """The demo's API key in ``path``, made (in the service's key file) on first use."""
    from server.services.access import ApiKeys, Role
    from server.settings import Settings

    if path.exists():
        return path.read_text(encoding="ascii").strip()
    _, key = ApiKeys(Settings().api_keys_file).add(name, [Role(role)])
    path.touch(mode=0o600)
    path.write_text(key + "\n", encoding="ascii")
    return key


def _seed(http: Any, url: str, folder: Path, record: Path) -> None:
    from devices.protocol import pskc
    from devices.protocol.otp import totp
    from firmware_sim.tokens import otp_token

    if record.exists():
        _instructions(url, json.loads(record.read_text()), folder)
        return
    display_state = folder / "display.json"
    usb_state = folder / "otp-usb-hotp.json"
    tokens: dict[Path, otp_token.OtpTokenState] = {}
    for path, model, algorithm in (
        (display_state, otp_token.Model.DISPLAY, otp_token.Algorithm.TOTP),
        (usb_state, otp_token.Model.USB, otp_token.Algorithm.HOTP),
    ):
        if not path.exists():
            otp_token.create(path, otp_token.new_state(model, algorithm))
        tokens[path] = otp_token.load_state(path)
    _ok(
        http.post(
            "/token-batches",
            content=pskc.write_pskc([token.pskc_key() for token in tokens.values()]),
            headers={"content-type": "application/xml"},
        ),
        "importing the demo tokens",
    )
    identity = _ok(
        http.post(
            "/identities",
            json={
                "person_number": DEMO_PERSON,
                "name": "Demo Person",
                "proofing": {"channel": "self_service", "document_kind": "passport_chip"},
            },
        ),
        "enrolling the demo person",
    )
    identity_id = identity["id"]
    _ok(
        http.put(f"/identities/{identity_id}/password", json={"password": DEMO_PASSWORD}),
        "setting the demo password",
    )
    for path, token in tokens.items():
        credential = _ok(
            http.post(f"/identities/{identity_id}/tokens", json={"serial": token.serial}),
            f"assigning {path.name}",
        )
        if token.algorithm is otp_token.Algorithm.HOTP:
            code = otp_token.load_generator(path).next_code()
        else:
            # The code of the step before: the service accepts one step back, and the current
            # window stays unspent, so the person can log in with what the display shows now.
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
    details: dict[str, Any] = {
        "identity": identity_id,
        "person_number": DEMO_PERSON,
        "display": str(display_state),
        "otp_usb": str(usb_state),
    }
    record.write_text(json.dumps(details, indent=2) + "\n")
    _instructions(url, details, folder)


def _ok(answer: Any, doing: str) -> dict[str, Any]:
    if answer.status_code >= 300:
        raise fail(f"{doing}: {answer.status_code} {answer.text}", 2)
    body: dict[str, Any] = answer.json()
    return body


def _instructions(url: str, details: dict[str, Any], folder: Path) -> None:
    provider = f'-H "Authorization: Bearer $(cat {folder / "provider.key"})"'
    typer.echo(
        f"""
Demo person {details["person_number"]} (password "{DEMO_PASSWORD}"), with a code display
({details["display"]}) and a USB OTP token ({details["otp_usb"]}). To log in at level
substantial (password + code display), as the demo service provider {DEMO_PROVIDER}:
  curl -s -X POST {url}/authentications {provider} \\
       -H 'content-type: application/json' -d '{{"min_level": "substantial"}}'  # -> id
  curl -s -X POST {url}/authentications/ID/identify -H 'content-type: application/json' \\
       -d '{{"person_number": "{details["person_number"]}"}}'
  curl -s -X POST {url}/authentications/ID/password -H 'content-type: application/json' \\
       -d '{{"password": "{DEMO_PASSWORD}"}}'
  .venv/bin/akkreditiv sim show --state {details["display"]}                    # the code
  curl -s -X POST {url}/authentications/ID/otp -H 'content-type: application/json' \\
       -d '{{"code": "CODE"}}'
  curl -s -X POST {url}/authentications/ID/complete {provider}      # the JWT
"""
    )
