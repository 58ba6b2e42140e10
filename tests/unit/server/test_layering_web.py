"""The pages stand on services: no module of server/web imports a route module of server/api."""

from __future__ import annotations

import ast
from pathlib import Path

WEB = Path(__file__).resolve().parents[3] / "server" / "web"
# Not route modules: the composition of services and the problem and wire vocabularies.
ALLOWED = frozenset({"server.api.deps", "server.api.problems", "server.api.schemas"})


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
        for module, names in _api_imports(source):
            if module in ALLOWED:
                continue
            wrong.append(f"{source.name}: {module} {sorted(names)}")
    assert wrong == []


def test_every_page_module_is_checked() -> None:
    pages = {source.name for source in WEB.glob("*.py")}
    assert {"login.py", "account.py", "migrate.py", "console.py", "console_migration.py"} <= pages


def test_an_import_of_a_route_module_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.py"
    page.write_text("from server.api import identities\nfrom server.api.fido import x\n")
    assert {module for module, _ in _api_imports(page)} == {
        "server.api.identities",
        "server.api.fido",
    }
