"""Keyboard-only use of a page, as a person without a mouse: Tab to a control found by its
accessible name (Chromium's own computation, what a screen reader hears), check that the focus
is visible, then press Enter or Space or type.

The accessible names come over the page's one DevTools session (:func:`page_session`), which
the virtual WebAuthn authenticators of tests/browser/webauthn.py share: Chromium (156) ends a
page's virtual authenticators when any DevTools session of that page detaches, so no session
of a page is ever closed before the page is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from weakref import WeakKeyDictionary

if TYPE_CHECKING:
    from playwright.sync_api import CDPSession, ElementHandle, Page

# The focused element, descending into open shadow roots; the page itself when nothing is.
_FOCUSED = """(() => {
    let element = document.activeElement;
    while (element && element.shadowRoot && element.shadowRoot.activeElement) {
        element = element.shadowRoot.activeElement;
    }
    return element;
})()"""
_FOCUS_STYLE = """(element) => {
    const style = getComputedStyle(element);
    return {
        focused: element.matches(":focus"),
        outlineStyle: style.outlineStyle,
        outlineWidth: style.outlineWidth,
        outlineColor: style.outlineColor,
        outlineOffset: style.outlineOffset,
        boxShadow: style.boxShadow,
    };
}"""
_EDITABLE = """(element) => element !== null && (element.isContentEditable
    || element instanceof HTMLTextAreaElement
    || (element instanceof HTMLInputElement && !["button", "submit", "reset", "checkbox",
        "radio", "image", "file", "range", "color", "hidden"].includes(element.type)))
    && !element.disabled && !element.readOnly"""
_PAGE_ITSELF = {"BODY", "HTML"}
_TRANSPARENT = re.compile(r"rgba\(.*,\s*0\)$|^transparent$")


# Each page's DevTools session, for as long as the page object lives.
_SESSIONS: WeakKeyDictionary[Page, CDPSession] = WeakKeyDictionary()


def page_session(page: Page) -> CDPSession:
    """The page's DevTools session: opened on first use and kept, never detached, for the
    life of the page (across its navigations). Everything in these tests that speaks the
    protocol to a page uses this one, because detaching a session ends the page's virtual
    authenticators."""
    cdp = _SESSIONS.get(page)
    if cdp is None:
        cdp = page.context.new_cdp_session(page)
        _SESSIONS[page] = cdp
    return cdp


class KeyboardError(AssertionError):
    """The page cannot be used by keyboard the way the test expected."""


class NotReachable(KeyboardError):
    """Tabbing did not reach the control; ``visited`` lists what got focus, in order."""

    def __init__(self, wanted: str, visited: list[Focused], reason: str) -> None:
        self.visited = visited
        path = " -> ".join(f"{item.role} {item.name!r}" for item in visited) or "(nothing)"
        super().__init__(f"Tab did not reach {wanted} ({reason}); focus went: {path}")


class FocusNotVisible(KeyboardError):
    """The control takes focus but shows no outline or shadow that differs from its
    unfocused look (WCAG 2.4.7)."""


@dataclass(frozen=True)
class Focused:
    """The element that has keyboard focus: Chromium's accessible ``name`` and ``role``, its
    DOM node id (stable while the element exists) and a handle for further checks."""

    name: str
    role: str
    tag: str
    node_id: int
    element: ElementHandle


Target = str | re.Pattern[str] | Callable[[Focused], bool]


def focused(page: Page, cdp: CDPSession) -> Focused | None:
    """What has focus now, or None while focus is on the page itself (before the first Tab or
    after the last)."""
    handle = page.evaluate_handle(_FOCUSED).as_element()
    if handle is None:
        return None
    tag = str(handle.evaluate("(element) => element.tagName"))
    if tag in _PAGE_ITSELF:
        return None
    result = cdp.send("Runtime.evaluate", {"expression": _FOCUSED, "objectGroup": "keyboard"})
    try:
        tree = cdp.send(
            "Accessibility.getPartialAXTree",
            {"objectId": result["result"]["objectId"], "fetchRelatives": False},
        )
    finally:
        cdp.send("Runtime.releaseObjectGroup", {"objectGroup": "keyboard"})
    node = tree["nodes"][0]
    return Focused(
        name=" ".join(str(_value(node, "name")).split()),
        role=str(_value(node, "role")),
        tag=tag.lower(),
        node_id=int(node["backendDOMNodeId"]),
        element=handle,
    )


def tab_to(page: Page, target: Target, *, max_tabs: int = 60, backwards: bool = False) -> Focused:
    """Press Tab (Shift+Tab with ``backwards``) until the focused element's accessible name
    equals ``target`` (a string, whitespace-normalised), matches it (a pattern) or satisfies
    it (a predicate); then check that the focus is visible. Stops early when focus comes back
    round to an element it already passed."""
    wanted = _describe(target)
    key = "Shift+Tab" if backwards else "Tab"
    cdp = page_session(page)
    visited: list[Focused] = []
    for _ in range(max_tabs):
        page.keyboard.press(key)
        now = focused(page, cdp)
        if now is None:
            continue
        if _matches(target, now):
            _check_focus_visible(page, now, key)
            return now
        if any(item.node_id == now.node_id for item in visited):
            raise NotReachable(wanted, visited, "focus went round the page")
        visited.append(now)
    raise NotReachable(wanted, visited, f"not within {max_tabs} presses")


def activate(page: Page, key: Literal["Enter", "Space"] = "Enter") -> None:
    """Press Enter or Space on whatever has focus, as a keyboard user activates a control."""
    page.keyboard.press(key)


def type_into_focused(page: Page, text: str) -> None:
    """Type ``text`` key by key into the focused field; fails if the focus is not on
    something one can type into (typing would silently go nowhere)."""
    if not page.evaluate(f"({_EDITABLE})({_FOCUSED})"):
        raise KeyboardError("the focused element does not take text input")
    page.keyboard.type(text)


def _check_focus_visible(page: Page, now: Focused, key: str) -> None:
    """Compare the element's focused look with its unfocused one, leaving and coming back by
    keyboard so that ``:focus-visible`` applies exactly as for a keyboard user."""
    focused_style = now.element.evaluate(_FOCUS_STYLE)
    back = "Tab" if key == "Shift+Tab" else "Shift+Tab"
    page.keyboard.press(back)
    unfocused_style = now.element.evaluate(_FOCUS_STYLE)
    page.keyboard.press(key)
    if unfocused_style["focused"] or not now.element.evaluate(_FOCUS_STYLE)["focused"]:
        raise KeyboardError(
            f"focus on {now.role} {now.name!r} did not leave and come back by {key}"
        )
    if not _indicator_shown(focused_style, unfocused_style):
        raise FocusNotVisible(
            f"{now.role} {now.name!r} has no visible focus indicator: focused outline "
            f"{focused_style['outlineStyle']} {focused_style['outlineWidth']} "
            f"{focused_style['outlineColor']}, box-shadow {focused_style['boxShadow']}; "
            f"unfocused outline {unfocused_style['outlineStyle']} "
            f"{unfocused_style['outlineWidth']}, box-shadow {unfocused_style['boxShadow']}"
        )


def _indicator_shown(focused_style: dict[str, Any], unfocused_style: dict[str, Any]) -> bool:
    outline = ("outlineStyle", "outlineWidth", "outlineColor", "outlineOffset")
    outline_shown = (
        focused_style["outlineStyle"] != "none"
        and _pixels(focused_style["outlineWidth"]) > 0
        and not _TRANSPARENT.search(focused_style["outlineColor"])
        and any(focused_style[part] != unfocused_style[part] for part in outline)
    )
    shadow_shown = (
        focused_style["boxShadow"] != "none"
        and focused_style["boxShadow"] != unfocused_style["boxShadow"]
    )
    return outline_shown or shadow_shown


def _pixels(length: str) -> float:
    return float(length[:-2]) if length.endswith("px") else 0.0


def _value(node: dict[str, Any], field: str) -> Any:
    return node.get(field, {}).get("value", "")


def _matches(target: Target, now: Focused) -> bool:
    if isinstance(target, str):
        return now.name == " ".join(target.split())
    if isinstance(target, re.Pattern):
        return target.search(now.name) is not None
    return target(now)


def _describe(target: Target) -> str:
    if isinstance(target, str):
        return repr(target)
    if isinstance(target, re.Pattern):
        return f"a name matching /{target.pattern}/"
    return "the element the predicate looks for"
