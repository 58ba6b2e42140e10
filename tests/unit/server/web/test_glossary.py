"""The pages' words against the glossary (``docs/glossary.md``): no catalogue text, no literal
text of a template and no spoken prompt uses a word the glossary says to avoid, in either
language; a failure names the catalogue key and the word."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from accessibility.guidance import Prompt, message
from accessibility.speech import Language

ROOT = Path(__file__).resolve().parents[4]
GLOSSARY = ROOT / "docs" / "glossary.md"
LOCALES = ROOT / "server" / "web" / "locales"
TEMPLATES = ROOT / "server" / "web" / "templates"
LANGS = ("da", "en")

Texts = Iterator[tuple[str, str, str]]  # (where, language, text)
_ROW = re.compile(r"^\|\s*(da|en)\s*\|(.*)\|\s*$")
_VARIANT = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Avoided:
    """A word the glossary says to avoid: its term (the section), language and variant."""

    term: str
    lang: str
    variant: str
    exact_case: bool

    @property
    def pattern(self) -> re.Pattern[str]:
        # Whole words: not inside a longer word, a hyphen counting as part of the word (so
        # "kode" is not found in "PIN-kode"); any run of spaces between the words.
        body = r"\s+".join(re.escape(word) for word in self.variant.split())
        flags = 0 if self.exact_case else re.IGNORECASE
        return re.compile(rf"(?<![\w-]){body}(?![\w-])", flags)

    def found_in(self, text: str) -> bool:
        return self.pattern.search(text) is not None


def glossary(source: str | None = None) -> list[Avoided]:
    """Every avoided variant of the glossary: per section ("## term"), a row per language with
    the columns use | avoid | avoid, as written (each variant in backticks)."""
    words: list[Avoided] = []
    term = ""
    for line in (source if source is not None else GLOSSARY.read_text("utf-8")).splitlines():
        if line.startswith("## "):
            term = line[3:].strip()
            continue
        row = _ROW.match(line)
        if row is None or not term:
            continue
        cells = row.group(2).split("|")
        avoid, exact = (cells[1], cells[2]) if len(cells) >= 3 else (cells[1], "")
        for cell, exact_case in ((avoid, False), (exact, True)):
            for variant in _VARIANT.findall(cell):
                words.append(Avoided(term, row.group(1), variant, exact_case))
    return words


def catalogue_texts() -> Texts:
    """(where, language, text) of every catalogue text: where is "<file>: <key>"."""
    for path in sorted(LOCALES.glob("*.json")):
        lang = path.name.split(".")[-2]
        if lang not in LANGS:
            continue
        for key, text in json.loads(path.read_text("utf-8")).items():
            yield f"{path.name}: {key}", lang, text


class _Literal(HTMLParser):
    """The text a template shows or announces itself, outside its catalogue texts."""

    SPOKEN = frozenset({"aria-label", "title", "alt", "placeholder"})

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "pre", "code"):
            self._skip += 1  # a command or code is not prose
        self.texts.extend(value for name, value in attrs if name in self.SPOKEN and value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "pre", "code"):
            self._skip = max(0, self._skip - 1)

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.texts.append(data.strip())


_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def template_texts() -> Texts:
    """The templates' literal text, checked against both languages' lists."""
    for path in sorted(TEMPLATES.glob("*.html")):
        parser = _Literal()
        parser.feed(_JINJA.sub(" ", path.read_text("utf-8")))
        for text in parser.texts:
            for lang in LANGS:
                yield f"templates/{path.name}", lang, text


# Parameters that every spoken prompt is said with here: each level, both ways of opening.
_SAID_WITH: dict[Prompt, list[dict[str, object]]] = {
    Prompt.WRONG_PIN: [{"tries_left": tries} for tries in range(3)],
    Prompt.CODE: [{"code": "123456"}],
    Prompt.CONFIRM_LOGIN: [
        {"provider": "Borger.dk", "level": level, "began": "14:05", "in_browser": opened}
        for level in ("low", "substantial", "high")
        for opened in (True, False)
    ],
}


def spoken_texts() -> Texts:
    """What the card reader program and the audio guidance say (``accessibility.guidance``),
    as said: each prompt with its parameters filled in."""
    for language in (Language.DA, Language.EN):
        for prompt in Prompt:
            for params in _SAID_WITH.get(prompt, [{}]):
                yield (
                    f"accessibility: {prompt.value}",
                    language.value,
                    message(prompt, language, **params),
                )


def findings(words: list[Avoided], texts: Texts) -> list[tuple[str, Avoided]]:
    return [
        (where, word)
        for where, lang, text in texts
        for word in words
        if word.lang == lang and word.found_in(text)
    ]


# --- the check itself ----------------------------------------------------------------------


SAMPLE = """
## log på

| | use | avoid | avoid, as written |
|---|---|---|---|
| da | `log på` | `log ind` `logget ind` `kodeviser, der læser` | `niveau høj` |
| en | `log in` | `sign in` `six digit` | |
"""


def test_the_check_finds_whole_words_in_any_case_and_listed_inflections() -> None:
    words = {word.variant: word for word in glossary(SAMPLE)}
    assert set(words) == {"log ind", "logget ind", "kodeviser, der læser", "niveau høj"} | {
        "sign in",
        "six digit",
    }
    assert words["log ind"].found_in("Log ind med dit CPR-nummer")
    assert words["log ind"].found_in("Du kan log\nind")  # a line break between the words
    assert words["logget ind"].found_in("Du er logget ind.")
    assert not words["log ind"].found_in("Du er logget ind.")  # an inflection is listed
    assert not words["log ind"].found_in("Dit login")
    assert not words["log ind"].found_in("katalog indeholder")  # not inside a longer word
    assert words["kodeviser, der læser"].found_in("En kodeviser, der læser koden op")
    assert words["sign in"].found_in("Sign in to the console")
    assert not words["sign in"].found_in("the card signs in the reader")
    assert not words["six digit"].found_in("a six-digit code, six digits")
    # As written: a name that differs only by its capital.
    assert words["niveau høj"].found_in("kræver niveau høj")
    assert not words["niveau høj"].found_in("kræver niveau Høj")


def test_the_glossary_has_both_languages_and_never_avoids_its_own_choice() -> None:
    words = glossary()
    terms = {word.term for word in words}
    assert {"log på", "Lav, Betydelig, Høj", "skriv", "nøglenummer", "kodeoplæser"} <= terms
    assert {word.lang for word in words} == set(LANGS)
    # The words to use, as the pages write them, are found by none of the avoided ones.
    chosen = {
        "da": "Log på, logget på, log ud. Sikringsniveau Betydelig, niveau Høj, Lav. Skriv koden. "
        "Nøglenummer 12. Operatørkonsol. Kodeoplæser. Kodeviser. USB-kodenøgle. "
        "Sikkerhedsnøgle. Chipkort. Pinkode. Loginmiddel. CPR-nummer. Det gamle eID, skiftet. "
        "Koden er forkert. Til dig, der ikke kan se skærmen. En sekscifret kode. "
        "Tab flytter mellem felter. Brug piletasterne og tastaturet.",
        "en": "Log in, log out. Level Substantial, High. Enter the code, press Enter. Key "
        "number 12. Operator console. Audio code reader. Code display. USB code token. Security "
        "key. Smartcard. PIN. Credential. CPR number. The old eID, the move. It is wrong. A "
        "six-digit code, six digits.",
    }
    clashes = [(w.variant, w.lang) for w in words if w.found_in(chosen[w.lang])]
    assert clashes == []


# --- the pages --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "texts", [catalogue_texts, template_texts, spoken_texts], ids=lambda f: f.__name__
)
def test_no_text_uses_a_word_the_glossary_avoids(texts: Callable[[], Texts]) -> None:
    found = findings(glossary(), texts())
    report = [
        f'{where}: "{word.variant}" (glossary: {word.term}, {word.lang})' for where, word in found
    ]
    assert report == [], "\n".join(["words docs/glossary.md says to avoid:", *report])


def test_a_template_is_read_for_its_own_text_and_spoken_attributes() -> None:
    """Text outside the catalogue calls and the attributes a screen reader says are checked;
    code (the smartcard's command) is not prose."""
    parser = _Literal()
    parser.feed(_JINJA.sub(" ", '<p aria-label="Log ind">{{ t("x") }} Sign in</p><pre>x</pre>'))
    assert parser.texts == ["Log ind", "Sign in"]
