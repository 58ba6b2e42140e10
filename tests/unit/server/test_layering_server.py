"""The server's layers import one way (DESIGN.md): ``api``, ``oidc`` and ``web`` -> ``wiring`` ->
``services`` -> ``domain``, ``storage``; ``storage`` -> ``domain``; ``domain`` -> nothing of the
server. Every import is read from the source (function-level ones too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parents[3] / "server"

# For each layer, the server modules it must never import (by prefix).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "domain": ("server.",),
    "storage": (
        "server.services",
        "server.api",
        "server.web",
        "server.wiring",
        "server.app",
        "server.settings",
    ),
    "services": ("server.api", "server.web", "server.wiring", "server.app", "server.settings"),
    "wiring.py": ("server.api", "server.web", "server.oidc", "server.app"),
    "api": ("server.web", "server.oidc"),
    # The OpenID Provider stands on the pages' browser sessions (its authorize endpoint hands
    # the browser to the login pages), never on the API's route modules.
    "oidc": ("server.app", "server.api.authentication", "server.api.identities"),
}
# What a layer may import although a prefix above forbids it (its own package).
OWN: dict[str, tuple[str, ...]] = {"domain": ("server.domain",)}


def imports_of(source: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _sources(layer: str) -> list[Path]:
    path = SERVER / layer
    return [path] if path.is_file() else sorted(path.rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    wrong = []
    for source in _sources(layer):
        for name in imports_of(source):
            if name.startswith(OWN.get(layer, ("-",))):
                continue
            if name.startswith(FORBIDDEN[layer]) or name in {
                p.rstrip(".") for p in FORBIDDEN[layer]
            }:
                wrong.append(f"{source.relative_to(SERVER)}: {name}")
    assert wrong == []


# SQL is written in storage alone: elsewhere no statement is built.
STATEMENTS = frozenset({"select", "insert", "update", "delete", "text", "func", "and_", "or_"})


def test_sql_is_written_in_storage_alone() -> None:
    wrong = []
    for source in sorted(SERVER.rglob("*.py")):
        if source.is_relative_to(SERVER / "storage"):
            continue
        for name in imports_of(source):
            module, _, member = name.rpartition(".")
            if module.startswith("sqlalchemy") and member in STATEMENTS:
                wrong.append(f"{source.relative_to(SERVER)}: {name}")
    assert wrong == []


def test_the_check_sees_an_import_against_the_grain(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from server.api.deps import in_transaction\n")
    assert "server.api.deps" in imports_of(module)
