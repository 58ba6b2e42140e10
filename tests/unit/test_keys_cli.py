"""``akkreditiv keys``: a key is shown once, works against the key file, lists without its
secret or hash, and is gone after ``remove``."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from akkreditiv.cli import app
from server.services.access import ApiKeys, Role
from server.services.errors import KeyMaterialRejected


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


def test_a_provider_key_carries_the_name_people_are_shown(tmp_path: Path) -> None:
    """``--display-name`` on a provider's key, listed with it and changed later with
    ``keys display-name``; the newest key of the provider that has one names it."""
    runner = CliRunner()
    file = str(tmp_path / "keys.json")
    made = runner.invoke(
        app,
        [
            "keys", "add", "--name", "https://borger.example", "--role", "provider",
            "--display-name", "Borger.dk", "--file", file,
        ],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    keys = ApiKeys(Path(file))
    assert keys.display_name("https://borger.example") == "Borger.dk"
    assert keys.display_name("https://other.example") is None
    (entry,) = json.loads(runner.invoke(app, ["keys", "list", "--file", file, "--json"]).output)
    assert entry["display_name"] == "Borger.dk"
    assert "Borger.dk" in runner.invoke(app, ["keys", "list", "--file", file]).output

    renamed = runner.invoke(
        app,
        ["keys", "display-name", entry["id"], "Borger.dk, Danmarks borgerportal", "--file", file],
    )
    assert renamed.exit_code == 0, renamed.output
    assert keys.display_name("https://borger.example") == "Borger.dk, Danmarks borgerportal"
    cleared = runner.invoke(app, ["keys", "display-name", entry["id"], "", "--file", file])
    assert cleared.exit_code == 0, cleared.output
    assert keys.display_name("https://borger.example") is None
    unknown = runner.invoke(app, ["keys", "display-name", "00000000", "X", "--file", file])
    assert unknown.exit_code == 1


@pytest.mark.parametrize("bad", ["", " padded", "\x1b[31mred", "a" * 101, "line\nbreak"])
def test_a_display_name_is_printable(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="display name"):
        ApiKeys(tmp_path / "keys.json").add(
            "https://shop.example", [Role.PROVIDER], display_name=bad
        )


def test_only_a_providers_key_has_a_display_name(tmp_path: Path) -> None:
    keys = ApiKeys(tmp_path / "keys.json")
    with pytest.raises(ValueError, match="service provider"):
        keys.add("operator-1", [Role.OPERATOR_CENTRE], display_name="Operator")


def test_the_newest_named_key_of_a_provider_names_it(tmp_path: Path) -> None:
    keys = ApiKeys(tmp_path / "keys.json")
    first, _ = keys.add("https://shop.example", [Role.PROVIDER], display_name="Old Shop")
    keys.add("https://shop.example", [Role.PROVIDER])  # a key without one changes nothing
    assert keys.display_name("https://shop.example") == "Old Shop"
    keys.add("https://shop.example", [Role.PROVIDER], display_name="New Shop")
    keys.remove(first.key_id)
    assert keys.display_name("https://shop.example") == "New Shop"


def test_a_key_file_with_a_control_character_in_a_display_name_is_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.json"
    ApiKeys(path).add("https://shop.example", [Role.PROVIDER], display_name="Shop")
    document = json.loads(path.read_text())
    document["keys"][0]["display_name"] = "bad\x07"
    path.write_text(json.dumps(document))
    with pytest.raises(KeyMaterialRejected, match="display name"):
        ApiKeys(path).entries()
