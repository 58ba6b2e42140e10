"""The simulated PIV card's key pairs: made inside the card, used there to sign and for ECDH,
and never exported."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import NameOID

from devices.protocol import tlv
from devices.protocol.piv import (
    TAG_CHALLENGE,
    TAG_DYN_AUTH,
    TAG_EXPONENTIATION,
    TAG_RESPONSE,
    Algorithm,
    PinPolicy,
    Slot,
)
from devices.protocol.sw import SW
from firmware_sim.tokens.card import CardError
from firmware_sim.tokens.piv_state import GENERATED

CURVES: dict[Algorithm, ec.EllipticCurve] = {
    Algorithm.ECC_P256: ec.SECP256R1(),
    Algorithm.ECC_P384: ec.SECP384R1(),
}
PREHASH: dict[Algorithm, hashes.SHA256 | hashes.SHA384] = {
    Algorithm.ECC_P256: hashes.SHA256(),
    Algorithm.ECC_P384: hashes.SHA384(),
}

# The card's key entries as stored: slot -> {"alg", "pkcs8" (hex), "pin_policy", "origin"}.
KeyEntries = dict[int, dict[str, Any]]


def create_key(keys: KeyEntries, slot: Slot, algorithm: Algorithm, policy: PinPolicy) -> bytes:
    """Make a key pair into ``keys``; returns the uncompressed public point. The caller saves."""
    key = ec.generate_private_key(CURVES[algorithm])
    keys[slot.value] = {
        "alg": int(algorithm),
        "pkcs8": pkcs8_hex(key),
        "pin_policy": int(policy),
        "origin": GENERATED,
    }
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def private_key(
    keys: KeyEntries, slot: Slot
) -> tuple[Algorithm, ec.EllipticCurvePrivateKey, PinPolicy]:
    entry = keys.get(slot.value)
    if entry is None:
        raise CardError(SW.REFERENCED_DATA_NOT_FOUND)
    return Algorithm(entry["alg"]), load_pkcs8(entry["pkcs8"]), PinPolicy(entry["pin_policy"])


def load_pkcs8(text: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_der_private_key(bytes.fromhex(text), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CardError(SW.NO_PRECISE_DIAGNOSIS)
    return key


def pkcs8_hex(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).hex()


def generated_on_card(keys: KeyEntries, slot: Slot) -> bool:
    """Whether the key in ``slot`` was made inside the card (only such a key is attested)."""
    entry = keys.get(slot.value)
    return entry is not None and entry.get("origin") == GENERATED


def sign_or_exchange(
    algorithm: Algorithm, key: ec.EllipticCurvePrivateKey, fields: dict[int, bytes]
) -> tuple[bytes, int]:
    """GENERAL AUTHENTICATE with a slot's key, once its PIN policy is met: sign a digest the
    host sent (challenge), or agree a shared secret with the host's point (exponentiation)."""
    size = algorithm.field_bytes
    if fields.keys() == {TAG_RESPONSE, TAG_CHALLENGE} and fields[TAG_RESPONSE] == b"":
        digest = fields[TAG_CHALLENGE]
        if not 1 <= len(digest) <= size:
            return b"", SW.WRONG_DATA
        digest = digest.rjust(size, b"\x00")
        signature = key.sign(digest, ec.ECDSA(Prehashed(PREHASH[algorithm])))
        return tlv.encode_tlv(TAG_DYN_AUTH, tlv.encode_tlv(TAG_RESPONSE, signature)), SW.SUCCESS
    if fields.keys() == {TAG_RESPONSE, TAG_EXPONENTIATION} and fields[TAG_RESPONSE] == b"":
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(
                CURVES[algorithm], fields[TAG_EXPONENTIATION]
            )
        except ValueError:
            return b"", SW.WRONG_DATA
        shared = key.exchange(ec.ECDH(), peer)
        return tlv.encode_tlv(TAG_DYN_AUTH, tlv.encode_tlv(TAG_RESPONSE, shared)), SW.SUCCESS
    return b"", SW.WRONG_DATA


def self_signed_certificate(
    key: ec.EllipticCurvePrivateKey, algorithm: Algorithm, slot: Slot, subject: str, serial: int
) -> x509.Certificate:
    """The factory's certificate for a slot's key, signed by that key inside the card."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, subject),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, str(serial)),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3 * 365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=slot is Slot.SIGNATURE,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=slot is Slot.KEY_MANAGEMENT,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, PREHASH[algorithm])
    )
