"""The console's list of registered service providers: supervisors see each provider's name,
client id, return addresses, authentication, entitlements, SSO group and API keys (audited);
other operators are refused."""

from __future__ import annotations

from fastapi.testclient import TestClient

from server.services.access import ApiKeys, Role
from server.services.audit import AuditLog
from server.services.oidc.registry import ProviderRegistry, Registration
from server.settings import Settings
from tests.unit.server.web.forms import text_of
from tests.unit.server.web.test_console import services_of, signed_in

SP = "https://kommune.example"


def _register(browser: TestClient, settings: Settings) -> str:
    entry, _ = ApiKeys(settings.api_keys_file).add(SP, [Role.PROVIDER])
    with services_of(browser).sessions() as session, session.begin():
        ProviderRegistry(session).add(
            Registration(
                client_id=SP,
                name="Testkommunen",
                redirect_uris=[SP + "/cb"],
                dev_secret=True,
                entitled=["cpr"],
                sso_group="kommuner",
            )
        )
    return entry.key_id


def test_a_supervisor_sees_the_registered_providers(
    browser: TestClient, settings: Settings
) -> None:
    key_id = _register(browser, settings)
    signed_in(browser, settings, "super", Role.SUPERVISOR)
    home = browser.get("/console")
    assert 'href="/console/providers"' in home.text
    page = browser.get("/console/providers")
    assert page.status_code == 200
    text = text_of(page)
    assert "Testkommunen" in text
    assert SP + "/cb" in text
    assert "kommuner" in text
    assert key_id in text
    assert "CPR-nummer" in text
    assert "Hemmelighed (kun til udvikling)" in text
    with services_of(browser).sessions() as session:
        assert AuditLog(session).tail(1)[0].event == "console.providers_viewed"


def test_an_operator_who_is_not_a_supervisor_is_refused(
    browser: TestClient, settings: Settings
) -> None:
    _register(browser, settings)
    signed_in(browser, settings, "teller", Role.OPERATOR_CENTRE)
    assert 'href="/console/providers"' not in browser.get("/console").text
    refused = browser.get("/console/providers")
    assert refused.status_code == 403
    assert "Testkommunen" not in refused.text
