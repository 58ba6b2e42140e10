"""``akkreditiv keys``: a key is shown once, works against the key file, lists without its
secret or hash, and is gone after ``remove``."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from typer.testing import CliRunner

from akkreditiv.cli import app
from server.services.access import ApiKeys, Role


def test_add_list_remove(tmp_path: Path) -> None:
    runner = CliRunner()
    file = str(tmp_path / "keys.json")
    made = runner.invoke(
        app,
        [
            "keys",
            "add",
            "--name",
            "centre-1",
            "--role",
            "operator_centre",
            "--role",
            "supervisor",
            "--file",
            file,
        ],
    )
    assert made.exit_code == 0, made.output
    key = made.output.strip()
    caller = ApiKeys(Path(file)).authenticate(key)
    assert caller is not None
    assert caller.roles == {Role.OPERATOR_CENTRE, Role.SUPERVISOR}

    listed = runner.invoke(app, ["keys", "list", "--file", file, "--json"])
    assert listed.exit_code == 0, listed.output
    (entry,) = json.loads(listed.output)
    assert entry["name"] == "centre-1"
    assert "sha256" not in entry
    assert key not in listed.output

    removed = runner.invoke(app, ["keys", "remove", entry["id"], "--file", file])
    assert removed.exit_code == 0, removed.output
    assert ApiKeys(Path(file)).authenticate(key) is None
    again = runner.invoke(app, ["keys", "remove", entry["id"], "--file", file])
    assert again.exit_code == 1


def test_out_file_is_private_and_unknown_roles_are_refused(tmp_path: Path) -> None:
    runner = CliRunner()
    file, out = str(tmp_path / "keys.json"), tmp_path / "provider.key"
    made = runner.invoke(
        app,
        [
            "keys",
            "add",
            "--name",
            "https://shop.example",
            "--role",
            "provider",
            "--file",
            file,
            "--out",
            str(out),
        ],
    )
    assert made.exit_code == 0, made.output
    assert out.read_text().strip() not in made.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert ApiKeys(Path(file)).authenticate(out.read_text().strip()) is not None
    refused = runner.invoke(app, ["keys", "add", "--name", "x", "--role", "king", "--file", file])
    assert refused.exit_code == 1
    assert "unknown role" in refused.output
