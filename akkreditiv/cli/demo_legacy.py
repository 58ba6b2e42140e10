"""``akkreditiv demo legacy``: a legacy eID user for the migration wizard's demo, made once.

The user (``demo-legacy``) is imported the way the legacy export arrives, through
``akkreditiv legacy import``; the key card's printout (key number and code, all 148) goes to
a file of mode 0600 beside the demo's other tokens, and a spare code display is put in stock
through the API so the wizard has one to activate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from akkreditiv.cli.common import fail
from akkreditiv.cli.demo import DemoFolder, ServiceDatabase, _import, _key, _ok, _token, demo_app

DEMO_LEGACY_USER = "demo-legacy"
DEMO_LEGACY_PERSON = "150565-1230"
DEMO_LEGACY_NAME = "Demo Legacy"
DEMO_LEGACY_PASSWORD = "old eid password"  # noqa: S105 - printed for people to try it


@demo_app.command("legacy")
def legacy(
    url: Annotated[str, typer.Option(help="The running service.")] = "http://127.0.0.1:8000",
    folder: DemoFolder = Path("var/demo"),
    database_url: ServiceDatabase = None,
) -> None:
    """Import a demo legacy eID user (once) and print how to move it to the new eID."""
    import httpx

    from firmware_sim.tokens import otp_token
    from server.services.migration.formats import (
        hash_legacy_password,
        new_card_secret,
        printed_card,
    )

    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "legacy-user.json"
    card_file = folder / "legacy-key-card.txt"
    spare = folder / "spare-display.json"
    if not record.exists():
        secret = new_card_secret()
        export = folder / "legacy-export.jsonl"
        row = {
            "user_id": DEMO_LEGACY_USER,
            "person_number": DEMO_LEGACY_PERSON,
            "name": DEMO_LEGACY_NAME,
            "bank": None,
            "password_hash": hash_legacy_password(DEMO_LEGACY_PASSWORD, iterations=100_000),
            "key_card": {"serial": "DEMO-KC-1", "secret": secret.hex(), "used": []},
        }
        export.touch(mode=0o600)
        export.write_text(json.dumps(row) + "\n", encoding="utf-8")
        command = [sys.executable, "-m", "akkreditiv", "legacy", "import", str(export), "-q"]
        if database_url is not None:
            command += ["--database-url", database_url]
        done = subprocess.run(  # noqa: S603 - our own command
            command, capture_output=True, text=True, timeout=300, check=False, env=os.environ
        )
        if done.returncode != 0:
            raise fail(f"importing the demo legacy user: {done.stderr.strip()}", 2)
        card_file.touch(mode=0o600)
        card_file.write_text(
            "".join(f"{index}  {code}\n" for index, code in printed_card(secret)),
            encoding="ascii",
        )
        _token(spare, otp_token.Model.DISPLAY, otp_token.Algorithm.TOTP)
        supervisor = _key(folder / "supervisor.key", "demo-supervisor", "supervisor")
        headers = {"Authorization": f"Bearer {supervisor}"}
        with httpx.Client(base_url=url, timeout=60, headers=headers) as http:
            _import(http, [otp_token.load_state(spare, None)])
            _ok(http.get("/health"), "reaching the service")
        record.write_text(
            json.dumps({"user_id": DEMO_LEGACY_USER, "spare_display": str(spare)}) + "\n",
            encoding="utf-8",
        )
    spare_serial = json.loads(spare.read_text(encoding="utf-8")).get("serial", "?")
    typer.echo(
        f"""
Legacy eID user {DEMO_LEGACY_USER} (CPR {DEMO_LEGACY_PERSON}, name "{DEMO_LEGACY_NAME}",
password "{DEMO_LEGACY_PASSWORD}"); the key card's codes are in {card_file}.
Move it to the new eID in a browser: {url.replace("127.0.0.1", "localhost")}/migrate
  a spare code display (serial {spare_serial}) is in stock to choose; its code:
  .venv/bin/akkreditiv sim show --state {spare}
"""
    )
