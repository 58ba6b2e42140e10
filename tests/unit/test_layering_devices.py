"""The device side's layers import one way: the codecs (devices.protocol) stand alone, the
simulator reaches devices only through them, and devices never reaches the simulator or server."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Import:
    where: str  # path:line, for the failure message
    name: str  # dotted; "from M import a" gives "M.a", so "from devices import errors" is seen


def _imports(source_root: Path, package: str) -> Iterator[Import]:
    """Every import in the modules of ``package`` (a dotted name under ``source_root``),
    including imports inside functions and relative imports resolved to absolute names."""
    directory = source_root.joinpath(*package.split("."))
    for path in sorted(directory.rglob("*.py")):
        module_parts = list(path.relative_to(source_root).with_suffix("").parts)
        own_package = module_parts[:-1]  # "__init__" or the module's own name dropped
        tree = ast.parse(path.read_text("utf-8"), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(source_root)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(where, alias.name)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = own_package[: len(own_package) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    yield Import(where, f"{base}.{alias.name}")


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _top(name: str) -> str:
    return name.split(".")[0]


def _protocol_rule(name: str) -> bool:
    if _top(name) == "devices":
        return _within(name, "devices.protocol")
    return _top(name) not in {"server", "firmware_sim", "akkreditiv", "accessibility"}


def _simulator_rule(name: str) -> bool:
    if _top(name) == "devices":
        return _within(name, "devices.protocol")
    return _top(name) not in {"server", "akkreditiv"}


def _devices_rule(name: str) -> bool:
    return _top(name) not in {"firmware_sim", "server"}


LAYERS: list[tuple[Path, str, Callable[[str], bool]]] = [
    (ROOT, "devices.protocol", _protocol_rule),
    (ROOT / "firmware-sim", "firmware_sim", _simulator_rule),
    (ROOT, "devices", _devices_rule),
]


@pytest.mark.parametrize(
    ("source_root", "package", "allowed"), LAYERS, ids=[layer[1] for layer in LAYERS]
)
def test_imports_stay_in_their_layer(
    source_root: Path, package: str, allowed: Callable[[str], bool]
) -> None:
    found = list(_imports(source_root, package))
    assert found, f"no imports found in {package}: the test would pass on nothing"
    wrong = [f"{i.where} imports {i.name}" for i in found if not allowed(i.name)]
    assert not wrong, "\n".join(wrong)


def test_simulator_reaches_the_codecs_when_it_imports_devices() -> None:
    # Guards the rule above against a parser that silently sees no device imports at all.
    names = {i.name for i in _imports(ROOT / "firmware-sim", "firmware_sim")}
    assert any(_within(name, "devices.protocol") for name in names)


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("devices.protocol.tlv", True),
        ("devices.protocol", True),
        ("devices.errors.MalformedTlv", False),
        ("devices.transports.pcsc", False),
        ("devices.protocolx", False),
        ("server.settings", False),
        ("akkreditiv.cli", False),
        ("cryptography.x509", True),
    ],
)
def test_simulator_rule_allows_only_the_codecs_of_devices(name: str, allowed: bool) -> None:
    assert _simulator_rule(name) is allowed


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    package = tmp_path / "devices" / "protocol"
    package.mkdir(parents=True)
    (tmp_path / "devices" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("from . import tlv\n")
    (package / "tlv.py").write_text("from ..errors import X\nfrom .sw import SW\n")
    names = {i.name for i in _imports(tmp_path, "devices.protocol")}
    assert names == {"devices.protocol.tlv", "devices.errors.X", "devices.protocol.sw.SW"}
