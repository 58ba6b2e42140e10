"""The pages' two languages: Danish (the default) and English. Each area of the pages has a
flat JSON catalogue per language (``locales/<area>.da.json``, ``locales/<area>.en.json``); the
two languages must have the same keys and no key may be in two areas, checked when loaded.

A text takes ``{name}`` parameters (``str.format_map``); a key missing from the catalogue or a
parameter missing from the call raises, so a page never shows a raw key or a hole.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

LANGUAGES: Final = ("da", "en")
DEFAULT_LANGUAGE: Final = "da"
LANGUAGE_NAMES: Final = {"da": "Dansk", "en": "English"}
_LOCALES = Path(__file__).parent / "locales"


class CatalogueError(ValueError):
    """The catalogues disagree (a key in one language only) or a text is malformed."""


@cache
def catalogues() -> Mapping[str, Mapping[str, str]]:
    loaded: dict[str, dict[str, str]] = {lang: {} for lang in LANGUAGES}
    for lang in LANGUAGES:
        for path in sorted(_LOCALES.glob(f"*.{lang}.json")):
            texts = json.loads(path.read_text(encoding="utf-8"))
            if twice := sorted(set(texts) & set(loaded[lang])):
                raise CatalogueError(f"{path.name}: {twice} are in another catalogue too")
            loaded[lang].update(texts)
    keys = {lang: set(texts) for lang, texts in loaded.items()}
    for lang, own in keys.items():
        for other, theirs in keys.items():
            if missing := sorted(theirs - own):
                raise CatalogueError(f"{lang} lacks {missing} (present in {other})")
    for lang, texts in loaded.items():
        for key, text in texts.items():
            if not isinstance(text, str) or not text.strip():
                raise CatalogueError(f"{lang}: {key!r} is not a non-empty string")
    return loaded


@dataclass(frozen=True)
class Translator:
    """``t("login.title")`` in one language; ``t.lang`` is the ``lang`` attribute's value."""

    lang: str

    def __call__(self, key: str, /, **params: object) -> str:
        text = catalogues()[self.lang][key]
        return text.format_map(params) if params else text

    def has(self, key: str) -> bool:
        return key in catalogues()[self.lang]


def parse_language(value: str | None) -> str | None:
    """``value`` if it names one of the languages (``da``, ``en-GB`` -> ``en``), else None."""
    if not value:
        return None
    primary = value.strip().split("-")[0].split("_")[0].lower()
    return primary if primary in LANGUAGES else None


def negotiate(accept_language: str | None) -> str:
    """The language a browser prefers (RFC 9110 Accept-Language, q-values), or Danish."""
    best: tuple[float, int, str] | None = None
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        lang = parse_language(tag)
        if lang is None:
            continue
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                continue
        if quality <= 0:
            continue
        candidate = (-quality, position, lang)
        if best is None or candidate < best:
            best = candidate
    return best[2] if best is not None else DEFAULT_LANGUAGE
