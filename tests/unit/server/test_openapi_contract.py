"""The HTTP API's contract: the OpenAPI document may grow, but nothing a client relies on moves.
``contract/openapi-baseline.json`` is the document as published before the server's rebuild;
every path, operation, parameter and schema in it must still be there and mean the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from server.app import create_app
from server.settings import Settings
from tests.unit.server.conftest import CHEAP_PASSWORD_HASHING

BASELINE = Path(__file__).parent / "contract" / "openapi-baseline.json"


def _resolve(node: Any, components: dict[str, Any], seen: frozenset[str] = frozenset()) -> Any:
    """The schema with every ``$ref`` replaced by what it names, and titles dropped: a schema
    that moved between inline and a named component is the same schema to a client."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[1]
            if name in seen:
                return {"$recursive": name}
            return _resolve(components[name], components, seen | {name})
        return {
            key: _resolve(value, components, seen) for key, value in node.items() if key != "title"
        }
    if isinstance(node, list):
        return [_resolve(item, components, seen) for item in node]
    return node


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], Any]:
    components = document.get("components", {}).get("schemas", {})
    return {
        (path, method): _resolve(operation, components)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }


@pytest.fixture(scope="module")
def current(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Any]:
    folder = tmp_path_factory.mktemp("openapi")
    settings = Settings(
        database_url=f"sqlite+pysqlite:///{folder / 'akkreditiv.db'}",
        kek_file=folder / "kek.bin",
        pseudonym_key_file=folder / "pseudonym.key",
        signing_key_file=folder / "signing.pem",
        api_keys_file=folder / "api-keys.json",
        **CHEAP_PASSWORD_HASHING,
    )
    return _operations(create_app(settings).openapi())


BASELINE_OPERATIONS = _operations(json.loads(BASELINE.read_text()))


@pytest.mark.parametrize(
    "key", sorted(BASELINE_OPERATIONS), ids=lambda key: f"{key[1].upper()} {key[0]}"
)
def test_operation_unchanged_since_baseline(
    key: tuple[str, str], current: dict[tuple[str, str], Any]
) -> None:
    assert key in current, f"{key} disappeared from the API"
    assert current[key] == BASELINE_OPERATIONS[key]


def test_resolution_sees_a_changed_schema(current: dict[tuple[str, str], Any]) -> None:
    # The comparison must be able to fail: a changed enum in a referenced schema is a change.
    document = json.loads(BASELINE.read_text())
    schema = document["components"]["schemas"]["IdentityOut"]["properties"]
    schema["status"] = {"type": "string", "enum": ["gone"]}
    changed = _operations(document)
    assert any(changed[key] != BASELINE_OPERATIONS[key] for key in BASELINE_OPERATIONS)
