"""The revocation list of the PIV cards taken out of use."""

from __future__ import annotations

from cryptography import x509
from sqlalchemy.orm import Session

from server.domain.model import CredentialKind, CredentialState
from server.services.piv.ca import Revocation, ServiceCa
from server.services.piv.card import SERIAL_PREFIX
from server.storage.repositories import CredentialRepository

# The CRL reason of each state that takes a card out of use. A block can be lifted, and
# RFC 5280 lets a held certificate leave the list again.
REASONS: dict[CredentialState, x509.ReasonFlags] = {
    CredentialState.LOST: x509.ReasonFlags.key_compromise,
    CredentialState.REVOKED: x509.ReasonFlags.cessation_of_operation,
    CredentialState.REPLACED: x509.ReasonFlags.superseded,
    CredentialState.BLOCKED: x509.ReasonFlags.certificate_hold,
}


def revocations(session: Session, ca: ServiceCa) -> list[Revocation]:
    """The CRL entries: the cards of ``ca`` in a state that takes them out of use, each dated
    by the credential's last change."""
    rows = CredentialRepository(session).of_kind_in(CredentialKind.PIV, REASONS)
    issuer = ca.key_id.hex()
    entries = []
    for credential in rows:
        serial = credential.serial or ""
        if credential.public_data.get("issuer_key_id") != issuer:
            continue  # an order placeholder, or a card of an earlier CA
        if not serial.startswith(SERIAL_PREFIX):
            continue
        entries.append(
            Revocation(
                serial=int(serial[len(SERIAL_PREFIX) :], 16),
                revoked_at=credential.updated_at,
                reason=REASONS[credential.state],
            )
        )
    return entries
