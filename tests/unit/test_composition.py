"""The composition root joins packages that must not import each other; these tests keep the
places where they meet in step."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from accessibility.guidance import MESSAGES, Prompt
from accessibility.speech import Language
from devices.events import DeviceEvent

ROOT = Path(__file__).resolve().parents[2]


def test_every_device_event_has_a_spoken_prompt_in_both_languages() -> None:
    for event in DeviceEvent:
        prompt = Prompt(event.value)
        for language in Language:
            assert prompt in MESSAGES[language]


def _imports(package: Path) -> set[str]:
    found: set[str] = set()
    for source in package.rglob("*.py"):
        tree = ast.parse(source.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("devices", {"firmware_sim", "server", "accessibility", "akkreditiv"}),
        ("accessibility", {"devices", "firmware_sim", "server", "akkreditiv"}),
        ("firmware-sim/firmware_sim", {"server", "akkreditiv"}),
        ("server", {"firmware_sim", "akkreditiv"}),
    ],
)
def test_imports_point_one_way(package: str, forbidden: set[str]) -> None:
    assert not _imports(ROOT / package) & forbidden
