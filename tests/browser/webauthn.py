"""Chromium's virtual WebAuthn authenticator over the DevTools protocol: a security key that
the page's ``navigator.credentials`` reaches exactly as it would a USB key, always present
and user-verified, so registration and login run without a person touching anything.

An authenticator lives in the page's one DevTools session (tests/browser/keyboard.py
``page_session``, which ``tab_to`` uses too): it stays, with its credentials, across the
page's navigations, and ends when the page closes or a DevTools session of the page detaches
(Chromium 156), which is why no code here opens a session of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from tests.browser.keyboard import page_session

if TYPE_CHECKING:
    from playwright.sync_api import CDPSession, Page

# A resident-key capable FIDO2 key over USB that verifies the user (PIN or biometric) and
# answers at once: what the service asks for at level Substantial and High.
AUTHENTICATOR_OPTIONS: dict[str, Any] = {
    "protocol": "ctap2",
    "transport": "usb",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
    "automaticPresenceSimulation": True,
}


def add_virtual_authenticator(page: Page, **overrides: Any) -> tuple[CDPSession, str]:
    """Attach a virtual authenticator to ``page`` and return the page's DevTools session with
    its id (for :func:`credentials`); the page must be on ``http://localhost:PORT``
    (127.0.0.1 is not a valid relying party id). Each call adds another authenticator."""
    cdp = page_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator", {"options": {**AUTHENTICATOR_OPTIONS, **overrides}}
    )
    return cdp, str(added["authenticatorId"])


def credentials(cdp: CDPSession, authenticator_id: str) -> list[dict[str, Any]]:
    """The credentials the authenticator holds: ``credentialId``, ``rpId``, ``userHandle``,
    ``signCount``, ``isResidentCredential`` and the private key (base64)."""
    answer = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})
    return cast("list[dict[str, Any]]", answer["credentials"])
