"""The pages stand on services: no module of server/web imports a route module of server/api."""

from __future__ import annotations

import ast
from pathlib import Path

WEB = Path(__file__).resolve().parents[3] / "server" / "web"
# Not route modules: the composition of services and the problem and wire vocabularies.
ALLOWED = frozenset({"server.api.deps", "server.api.problems", "server.api.schemas"})
# Being moved: these pages still call route modules' helpers.
BEING_MOVED = frozenset({"login.py", "account.py", "migrate.py", "migrate_render.py"})
# Composition that still lives in a route module; moves to server/wiring.py with the migration
# pages' own use of it. Only this name, only here.
COMPOSITION = {("console_migration.py", "server.api.migration"): {"migration_flows"}}


def _api_imports(source: Path) -> list[tuple[str, set[str]]]:
    """Each import of a ``server.api`` module in ``source``, with the names it takes."""
    found: list[tuple[str, set[str]]] = []
    for node in ast.walk(ast.parse(source.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, set()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = {alias.name for alias in node.names}
            if node.module == "server.api":
                found.extend((f"server.api.{name}", set()) for name in names)
            else:
                found.append((node.module, names))
    return [(module, names) for module, names in found if module.startswith("server.api.")]


def test_pages_import_no_route_module() -> None:
    wrong = []
    for source in sorted(WEB.glob("*.py")):
        if source.name in BEING_MOVED:
            continue
        for module, names in _api_imports(source):
            if module in ALLOWED:
                continue
            if names and names <= COMPOSITION.get((source.name, module), set()):
                continue
            wrong.append(f"{source.name}: {module} {sorted(names)}")
    assert wrong == []


def test_the_console_modules_are_checked() -> None:
    console = {source.name for source in WEB.glob("console*.py")}
    assert {"console.py", "console_access.py", "console_migration.py"} <= console
    assert not console & BEING_MOVED
