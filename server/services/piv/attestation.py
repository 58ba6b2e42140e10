"""PIV key attestation (Yubico's scheme): whether a key was generated on a genuine card whose
PIN guards it, from the card's attestation certificate and its vendor chain."""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devices.protocol.errors import MalformedTlv
from devices.protocol.piv import AttestedKey, PinPolicy
from server.domain.errors import Unprocessable

# A card's key reaches level High only with the card's PIN verified on the card: its policy must
# ask for the PIN once per session or for every use ("never" is possession alone).
PIN_POLICIES_FOR_HIGH = frozenset({PinPolicy.ONCE, PinPolicy.ALWAYS})

_WHY = {
    "missing": "no attestation from the card was sent",
    "no-roots": "this service trusts no card vendor (piv_attestation_roots is empty)",
    "unreadable": "the attestation is not a certificate",
    "chain": "the attestation does not chain to a trusted card vendor",
    "expired": "the attestation chain is not valid now",
    "key": "the attestation is for another key",
    "facts": "the attestation does not say the key's firmware and PIN policy",
    "serial": "the attestation is for another card",
    "pin-policy": "the card uses the key without its PIN, which level High needs",
}


class CardKeyNotAttested(Unprocessable):
    """The key sent as a card's is not shown to be a card's: no attestation, or one that does
    not hold. ``reason`` is a stable code for the audit log."""

    code = "not-generated-on-card"
    default_detail = "the key was not generated on a card"

    def __init__(self, reason: str) -> None:
        super().__init__(reason, detail=f"the key was not generated on a card: {_WHY[reason]}")
        self.reason = reason


def verify_card_key(
    public_key: ec.EllipticCurvePublicKey,
    attestation: bytes | None,
    intermediate: bytes | None,
    roots: Sequence[x509.Certificate],
    *,
    card_serial: int | None,
    now: dt.datetime,
) -> AttestedKey:
    """The facts of ``attestation`` (DER) when it shows ``public_key`` was generated on a card:
    signed by the card's attestation key, whose certificate ``intermediate`` (DER) a vendor
    root of ``roots`` issued, all valid at ``now``; of the card ``card_serial`` when one is
    given; with a PIN policy level High accepts. Raises ``CardKeyNotAttested`` otherwise.

    The intermediate's missing CA flag is tolerated (many YubiKeys' F9 certificates have no
    basicConstraints), but one that says it is no CA, or may not sign certificates, is not."""
    if not roots:
        raise CardKeyNotAttested("no-roots")
    if attestation is None or intermediate is None:
        raise CardKeyNotAttested("missing")
    try:
        leaf = x509.load_der_x509_certificate(attestation)
        signer = x509.load_der_x509_certificate(intermediate)
    except ValueError:
        raise CardKeyNotAttested("unreadable") from None
    chain = _chain(leaf, signer, roots)
    if any(not c.not_valid_before_utc <= now <= c.not_valid_after_utc for c in chain):
        raise CardKeyNotAttested("expired")
    if not hmac.compare_digest(_spki(leaf.public_key()), _spki(public_key)):
        raise CardKeyNotAttested("key")
    try:
        facts = AttestedKey.of(leaf)
    except MalformedTlv:
        raise CardKeyNotAttested("facts") from None
    if card_serial is not None and facts.serial != card_serial:
        raise CardKeyNotAttested("serial")
    if facts.pin_policy not in PIN_POLICIES_FOR_HIGH:
        raise CardKeyNotAttested("pin-policy")
    return facts


def _chain(
    leaf: x509.Certificate, signer: x509.Certificate, roots: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    """leaf <- signer <- one of ``roots``, each signature checked; ``signer`` may sign."""
    # The signer is a card's attestation key, never a root itself.
    if signer.issuer == signer.subject or not _may_sign_certificates(signer):
        raise CardKeyNotAttested("chain")
    try:
        leaf.verify_directly_issued_by(signer)
    except (ValueError, TypeError, InvalidSignature):
        raise CardKeyNotAttested("chain") from None
    for root in roots:
        try:
            signer.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return leaf, signer, root
    raise CardKeyNotAttested("chain")


def _may_sign_certificates(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        if not constraints.value.ca:
            return False
    except x509.ExtensionNotFound:
        pass  # tolerated on the attestation key's certificate only (see verify_card_key)
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    except x509.ExtensionNotFound:
        return True
    return usage.value.key_cert_sign


def _spki(key: object) -> bytes:
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CardKeyNotAttested("key")
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
