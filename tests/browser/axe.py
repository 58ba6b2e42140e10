"""axe-core in the real page: load the npm package's ``axe.min.js`` through the DevTools
protocol and report WCAG violations in a form a failing test can show."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from playwright.sync_api import Page

AXE_SCRIPT = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
WCAG21_AA = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")
# How many violations and element selectors a failure message lists before it summarises.
SHOWN_TARGETS = 3

_RUN = """async (tags) => {
    const result = await axe.run(document, {runOnly: {type: "tag", values: tags}});
    return result.violations;
}"""


class AxeNotInstalled(RuntimeError):
    """tests/browser/node_modules lacks axe-core: scripts/setup runs ``npm ci`` there."""


class AccessibilityViolations(AssertionError):
    """axe found violations; ``violations`` holds axe's own records, ``rule_ids`` their ids."""

    def __init__(self, where: str, url: str, violations: list[dict[str, Any]]) -> None:
        self.where = where
        self.url = url
        self.violations = violations
        super().__init__(summarise(where, url, violations))

    @property
    def rule_ids(self) -> set[str]:
        return {str(violation["id"]) for violation in self.violations}


@functools.cache
def axe_source() -> str:
    if not AXE_SCRIPT.is_file():
        raise AxeNotInstalled(f"{AXE_SCRIPT} is missing; run scripts/setup")
    return AXE_SCRIPT.read_text(encoding="utf-8")


def axe_violations(page: Page, *, tags: Sequence[str] = WCAG21_AA) -> list[dict[str, Any]]:
    """Run axe on the page as it is now, limited to rules with these tags. The script goes in
    by ``page.evaluate`` (DevTools evaluation, which the page's CSP does not govern), never as
    a ``<script>`` element, so a strict policy stays in force for the page itself."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source())
    return cast("list[dict[str, Any]]", page.evaluate(_RUN, list(tags)))


def summarise(where: str, url: str, violations: list[dict[str, Any]]) -> str:
    """One line per violated rule: id, impact, axe's help text and the first element
    selectors, which is enough to find the fault without axe's full report."""
    lines = [f"axe found {len(violations)} violated rule(s) on {where} ({url}):"]
    for violation in violations:
        nodes = violation.get("nodes", [])
        targets = [" ".join(map(str, node.get("target", []))) for node in nodes[:SHOWN_TARGETS]]
        more = f" (+{len(nodes) - SHOWN_TARGETS} more)" if len(nodes) > SHOWN_TARGETS else ""
        lines.append(
            f"- {violation['id']} [{violation.get('impact') or 'n/a'}] {violation.get('help', '')}:"
            f" {', '.join(targets)}{more}"
        )
    return "\n".join(lines)


def assert_accessible(page: Page, where: str, *, tags: Sequence[str] = WCAG21_AA) -> None:
    """Raise :class:`AccessibilityViolations` if axe finds anything on the page; ``where``
    names the page and state (e.g. "login, en, wrong code") in the failure."""
    violations = axe_violations(page, tags=tags)
    if violations:
        raise AccessibilityViolations(where, page.url, violations)
