"""Chromium's virtual WebAuthn authenticator over the DevTools protocol: a security key that
the page's ``navigator.credentials`` reaches exactly as it would a USB key, always present
and user-verified, so registration and login run without a person touching anything.

An authenticator lives in the page's one DevTools session (tests/browser/keyboard.py
``page_session``, which ``tab_to`` uses too): it stays, with its credentials, across the
page's navigations, and ends when the page closes or a DevTools session of the page detaches
(Chromium 156), which is why no code here opens a session of its own.

The service trusts a key only if its attestation chains to a root in the file that
``AKKREDITIV_FIDO_TRUSTED_ROOTS`` names (read on each request). A module that registers keys
uses the ``roots_file`` fixture (tests/browser/conftest.py), which at first holds an unrelated
root of our own, and trusts the virtual authenticator's self-signed attestation certificate
when the test wants its keys accepted, as an operator trusts a key model's root.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import TYPE_CHECKING, Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from fido2 import cbor

from tests.browser.keyboard import page_session

if TYPE_CHECKING:
    from pathlib import Path

    from playwright.sync_api import CDPSession, Page

TRUSTED_ROOTS_ENV = "AKKREDITIV_FIDO_TRUSTED_ROOTS"

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


def unb64(text: str) -> bytes:
    """Base64url without padding (as WebAuthn's JSON and JWTs write it) to bytes."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def unrelated_root() -> bytes:
    """A self-signed root of our own that signs no key (PEM): the roots file must hold a
    certificate, and this one makes every key's attestation untrusted."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unrelated test root")])
    now = dt.datetime.now(dt.UTC)
    root = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return root.public_bytes(Encoding.PEM)


def trust_attestation(roots_file: Path, attestation_object: str) -> dict[str, Any]:
    """Add the top certificate of an attestation (``attestationObject``, base64url) to the
    trusted roots; it must be self-signed, as the virtual authenticator's is. The decoded
    attestation, for further checks."""
    attestation = cbor.decode(unb64(attestation_object))
    assert isinstance(attestation, dict)
    top = x509.load_der_x509_certificate(attestation["attStmt"]["x5c"][-1])
    assert top.issuer == top.subject, "the attestation certificate is not self-signed"
    with roots_file.open("ab") as roots:
        roots.write(top.public_bytes(Encoding.PEM))
    return attestation


# A registration outside the service, only to read the virtual authenticator's attestation.
_PROBE = """async () => {
    const random = (n) => crypto.getRandomValues(new Uint8Array(n));
    const credential = await navigator.credentials.create({publicKey: {
        rp: {id: location.hostname, name: "probe"},
        user: {id: random(16), name: "probe", displayName: "probe"},
        challenge: random(32),
        pubKeyCredParams: [{type: "public-key", alg: -7}],
        attestation: "direct",
    }});
    return credential.toJSON().response.attestationObject;
}"""


def trust_virtual_keys(page: Page, roots_file: Path) -> None:
    """Trust the page's virtual authenticator's attestation root (read from a throwaway
    registration, which leaves one more credential in the authenticator)."""
    trust_attestation(roots_file, str(page.evaluate(_PROBE)))
