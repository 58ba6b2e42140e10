"""The pages every visitor has: the front page, the language choice, signing out, more time
for the session, the accessibility statement, help, spoken guidance (``/speech``) and the
site's icon."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import threading
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from starlette.responses import FileResponse, JSONResponse, Response

from server.api.deps import ServicesDep
from server.domain.errors import Unavailable, UnknownSubject
from server.web.browser import BrowserDep, CheckedForm
from server.web.i18n import LANGUAGES, Translator, parse_language
from server.web.render import Support, local_path, mark_page, page, redirect

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

log = logging.getLogger(__name__)

SPEECH_PREFIX = "guide."
SPEECH_TIMEOUT_S = 60


class SpeechNotAvailable(Unavailable):
    """Speech could not be made (espeak-ng missing or failing); the text is on the page."""

    code = "speech-unavailable"


@router.get("/")
def home(request: Request, browser: BrowserDep) -> Response:
    return page(request, browser, "index.html", title=browser.t("home.title"))


@router.post("/lang")
def choose_language(browser: BrowserDep, form: CheckedForm) -> Response:
    """Switch language; the choice is kept in the session and in a year-long cookie."""
    lang = parse_language(str(form.get("lang", "")))
    if lang is not None:
        browser.choose_language(lang)
    return redirect(browser, local_path(str(form.get("next", "/"))))


@router.post("/logout")
def logout(browser: BrowserDep, form: CheckedForm) -> Response:
    browser.sign_out()
    browser.flash("common.signed_out")
    return redirect(browser, "/")


@router.post("/session/extend")
def extend(request: Request, browser: BrowserDep, form: CheckedForm) -> Response:
    """More time: the page's script asks in the background (JSON answer), a page without
    script posts the form and comes back to where it was."""
    browser.extend()
    if "application/json" in request.headers.get("accept", ""):
        return browser.apply(JSONResponse({"expires_at": browser.expires_at.isoformat()}))
    browser.flash("session.extended")
    return redirect(browser, local_path(str(form.get("next", "/"))))


FAVICON = Path(__file__).parent / "static" / "favicon.ico"


@router.get("/favicon.ico")
def favicon() -> Response:
    """The site's icon, where browsers look for it by default."""
    response = FileResponse(FAVICON, media_type="image/x-icon")
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


@router.get("/accessibility")
def accessibility(request: Request, browser: BrowserDep) -> Response:
    return page(
        request,
        browser,
        "accessibility.html",
        title=browser.t("a11y.title"),
        support=Support.of(request),
    )


@router.get("/help")
def help_page(request: Request, browser: BrowserDep) -> Response:
    return page(
        request, browser, "help.html", title=browser.t("help.title"), support=Support.of(request)
    )


_SPEECH_LOCK = threading.Lock()


@router.get("/speech/{lang}/{key}.wav")
def speech(lang: str, key: str, services: ServicesDep) -> Response:
    """A guidance text of the pages spoken (WAV), in Danish or English: the same words the
    page shows, for people who listen rather than read. Made with espeak-ng once, then kept."""
    if lang not in LANGUAGES or not key.startswith(SPEECH_PREFIX):
        raise SpeechNotFound("no such guidance", detail="no such guidance")
    t = Translator(lang)
    if not t.has(key):
        raise SpeechNotFound("no such guidance", detail="no such guidance")
    text = t(key)
    folder = services.settings.kek_file.parent / "speech"
    fingerprint = hashlib.sha256(f"{lang}\x00{text}".encode()).hexdigest()[:16]
    target = folder / f"{lang}-{key}-{fingerprint}.wav"
    if not target.exists():
        _render_speech(text, lang, target)
    response = FileResponse(target, media_type="audio/wav")
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


class SpeechNotFound(UnknownSubject):
    code = "not-found"


def _render_speech(text: str, lang: str, target: Path) -> None:
    """Speak ``text`` into ``target`` in a process of its own (``accessibility.speak_file``
    says why), written beside it and renamed, so a reader never sees half a file."""
    with _SPEECH_LOCK:
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.with_suffix(".part")
        try:
            done = subprocess.run(  # noqa: S603 - our own module, arguments checked above
                [sys.executable, "-m", "accessibility.speak_file", lang, str(scratch)],
                input=text,
                capture_output=True,
                text=True,
                timeout=SPEECH_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SpeechNotAvailable("speech timed out", detail="speech is not available") from exc
        if done.returncode != 0 or not scratch.exists():
            log.warning("speech failed (%s): %s", done.returncode, done.stderr.strip()[-300:])
            raise SpeechNotAvailable("speech failed", detail="speech is not available")
        scratch.replace(target)
