"""The pages' foundation: sessions and their cookies, CSRF, the language choice, more time,
error pages in the browser's language, spoken guidance, and the catalogues."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.web import i18n
from server.web.browser import COOKIE, LANG_COOKIE
from tests.unit.server.conftest import ORIGIN
from tests.unit.server.web.forms import csrf_of, lang_of, text_of


def test_front_page_is_danish_by_default_and_sets_a_session_cookie(browser: TestClient) -> None:
    answer = browser.get("/")
    assert answer.status_code == 200
    assert lang_of(answer) == "da"
    assert "Din digitale identitet" in text_of(answer)
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http here; behind TLS the cookie is __Host- and Secure


def test_front_page_follows_accept_language(browser: TestClient) -> None:
    answer = browser.get("/", headers={"accept-language": "en-GB,en;q=0.9,da;q=0.5"})
    assert lang_of(answer) == "en"
    assert "Your digital identity" in text_of(answer)


def test_secure_cookie_behind_tls(browser: TestClient) -> None:
    answer = browser.get("https://localhost:8000/")
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("__Host-akk_session=")
    assert "Secure" in cookie
    assert "Path=/" in cookie
    assert "Domain" not in cookie


def test_language_choice_persists_in_a_cookie(browser: TestClient) -> None:
    token = csrf_of(browser.get("/"))
    answer = browser.post(
        "/lang", data={"csrf": token, "lang": "en", "next": "/help"}, follow_redirects=False
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/help"
    assert browser.cookies.get(LANG_COOKIE) == "en"
    assert lang_of(browser.get("/help")) == "en"
    # A new browser session (the old one ended) still opens in English.
    browser.cookies.delete(COOKIE)
    assert lang_of(browser.get("/", headers={"accept-language": "da"})) == "en"


def test_language_switch_refuses_foreign_next_paths(browser: TestClient) -> None:
    token = csrf_of(browser.get("/"))
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        answer = browser.post(
            "/lang", data={"csrf": token, "lang": "en", "next": target}, follow_redirects=False
        )
        assert answer.headers["location"] == "/"


@pytest.mark.parametrize("csrf", [None, "", "wrong"])
def test_a_form_without_the_session_csrf_token_is_refused(
    browser: TestClient, csrf: str | None
) -> None:
    browser.get("/")
    data = {"lang": "en", "next": "/"}
    if csrf is not None:
        data["csrf"] = csrf
    answer = browser.post("/lang", data=data, follow_redirects=False)
    assert answer.status_code == 403
    assert lang_of(answer) == "da"
    assert "Formularen var udløbet" in text_of(answer)
    assert LANG_COOKIE not in browser.cookies


def test_a_form_from_another_origin_is_refused(browser: TestClient) -> None:
    token = csrf_of(browser.get("/"))
    answer = browser.post(
        "/lang",
        data={"csrf": token, "lang": "en"},
        headers={"origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert answer.status_code == 403
    assert LANG_COOKIE not in browser.cookies
    same = browser.post(
        "/lang",
        data={"csrf": token, "lang": "en"},
        headers={"origin": ORIGIN},
        follow_redirects=False,
    )
    assert same.status_code == 303


def test_a_csrf_token_of_another_session_is_refused(settings: object, browser: TestClient) -> None:
    other = csrf_of(browser.get("/"))
    browser.cookies.clear()
    browser.get("/")
    answer = browser.post("/lang", data={"csrf": other, "lang": "en"}, follow_redirects=False)
    assert answer.status_code == 403


def test_more_time_answers_the_new_end_as_json(browser: TestClient) -> None:
    page = browser.get("/")
    token = csrf_of(page)
    answer = browser.post(
        "/session/extend", data={"csrf": token}, headers={"accept": "application/json"}
    )
    assert answer.status_code == 200
    assert answer.json()["expires_at"] >= page.text.split('data-session-expires="')[1][:19]


def test_more_time_without_script_returns_to_the_page(browser: TestClient) -> None:
    token = csrf_of(browser.get("/help"))
    answer = browser.post(
        "/session/extend", data={"csrf": token, "next": "/help"}, follow_redirects=False
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/help"
    assert "Du har fået 20 minutter mere" in text_of(browser.get("/help"))


def test_unknown_page_is_a_page_in_the_browsers_language(browser: TestClient) -> None:
    answer = browser.get("/no-such-page", headers={"accept": "text/html", "accept-language": "en"})
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("text/html")
    assert "We could not find this page" in text_of(answer)


def test_api_errors_stay_problem_json(browser: TestClient) -> None:
    answer = browser.get("/identities/00000000-0000-0000-0000-000000000000")
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"


def test_pages_carry_the_strict_content_security_policy(browser: TestClient) -> None:
    answer = browser.get("/")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "<script>" not in answer.text  # no inline script anywhere
    assert answer.headers["x-frame-options"] == "DENY"


def test_every_page_links_its_stylesheet_and_skip_link(browser: TestClient) -> None:
    for path in ("/", "/help", "/accessibility"):
        answer = browser.get(path)
        assert answer.status_code == 200, path
        assert 'href="#main"' in answer.text
        assert '<main id="main"' in answer.text
    assert browser.get("/static/app.css").status_code == 200
    assert browser.get("/static/app.js").status_code == 200


def test_signing_out_issues_a_new_session(browser: TestClient) -> None:
    token = csrf_of(browser.get("/"))
    before = browser.cookies.get(COOKIE)
    answer = browser.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert answer.status_code == 303
    after = browser.cookies.get(COOKIE)
    assert after is not None
    assert after != before
    # The old token is worth nothing now: its CSRF token no longer works either.
    assert browser.post("/lang", data={"csrf": token, "lang": "en"}).status_code == 403


def test_guidance_is_offered_as_speech(browser: TestClient, settings: object) -> None:
    answer = browser.get("/speech/da/guide.audio_reader.wav")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "audio/wav"
    assert answer.content[:4] == b"RIFF"
    assert answer.content[8:12] == b"WAVE"
    assert len(answer.content) > 20_000  # seconds of speech, not an empty file
    english = browser.get("/speech/en/guide.audio_reader.wav")
    assert english.status_code == 200
    assert english.content != answer.content


@pytest.mark.parametrize(
    "path",
    [
        "/speech/fr/guide.audio_reader.wav",
        "/speech/da/error.internal.wav",
        "/speech/da/guide.nothing.wav",
        "/speech/da/..%2Fkek.wav",
    ],
)
def test_only_guidance_texts_are_spoken(browser: TestClient, path: str) -> None:
    assert browser.get(path).status_code == 404


def test_catalogues_have_the_same_keys_and_no_empty_texts() -> None:
    texts = i18n.catalogues()
    assert set(texts["da"]) == set(texts["en"])
    assert all(value.strip() for lang in texts.values() for value in lang.values())


def _copy_catalogues(folder: Path) -> None:
    for source in (Path(i18n.__file__).parent / "locales").glob("*.json"):
        (folder / source.name).write_text(source.read_text(encoding="utf-8"), encoding="utf-8")


def _catalogue_error(folder: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(i18n, "_LOCALES", folder)
    i18n.catalogues.cache_clear()
    try:
        with pytest.raises(i18n.CatalogueError) as caught:
            i18n.catalogues()
    finally:
        monkeypatch.undo()
        i18n.catalogues.cache_clear()
    return str(caught.value)


def test_a_catalogue_missing_a_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy_catalogues(tmp_path)
    english = tmp_path / "common.en.json"
    data = json.loads(english.read_text(encoding="utf-8"))
    data.pop("home.title")
    english.write_text(json.dumps(data), encoding="utf-8")
    assert "home.title" in _catalogue_error(tmp_path, monkeypatch)


def test_a_key_in_two_catalogues_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _copy_catalogues(tmp_path)
    for lang in i18n.LANGUAGES:
        (tmp_path / f"zz-extra.{lang}.json").write_text('{"home.title": "x"}', encoding="utf-8")
    assert "another catalogue" in _catalogue_error(tmp_path, monkeypatch)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "da"),
        ("en", "en"),
        ("en-US,da;q=0.8", "en"),
        ("da;q=0.5,en;q=0.9", "en"),
        ("fr,de", "da"),
        ("en;q=0,da", "da"),
        ("en;q=bogus,da", "da"),
    ],
)
def test_negotiate(header: str | None, expected: str) -> None:
    assert i18n.negotiate(header) == expected


@pytest.mark.parametrize("target", ["/a\x00b", "/help\r\nSet-Cookie: x=1", "/\x7f"])
def test_next_paths_with_control_characters_fall_back_to_the_front_page(
    browser: TestClient, target: str
) -> None:
    token = csrf_of(browser.get("/"))
    answer = browser.post(
        "/lang", data={"csrf": token, "lang": "en", "next": target}, follow_redirects=False
    )
    assert answer.headers["location"] == "/"
