"""Screenshots of the main pages for the README: saved only when AKKREDITIV_SCREENSHOTS names
a folder (``AKKREDITIV_SCREENSHOTS=docs/screenshots scripts/test tests/browser``)."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import Page


def save(page: Page, name: str) -> Path | None:
    folder = os.environ.get("AKKREDITIV_SCREENSHOTS")
    if not folder:
        return None
    target = Path(folder) / f"{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    return target
