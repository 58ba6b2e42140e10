"""The simulated PIV cards' vendor attestation, as YubiKeys do it: a PIV attestation root (one
per machine, beside the FIDO manufacturer's), the slot F9 key and certificate each card gets
when it is made, and the certificate ``INS F9`` answers for a key the card generated."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devices.protocol.piv import AttestedKey, PinPolicy, Slot
from firmware_sim import state as state_store
from firmware_sim.tokens.attestation import (
    COUNTRY,
    VALIDITY,
    VENDOR,
    load_key,
    load_or_create,
    pem_key,
    root_authority,
)

FILE_NAME = "piv-manufacturer.json"
ROOT_NAME = "akkreditiv simulator PIV attestation root"
TOUCH_NEVER = 0x01  # Yubico's touch policy "never": the simulated card has no button
# A YubiKey 5 before 5.3 as yubikit sees it: attestation (4.3+) without the metadata
# commands (5.3+) that yubikit would otherwise send and the simulated card does not answer.
VERSION = (5, 2, 7)


@dataclass(frozen=True)
class PivManufacturer:
    """The PIV attestation root CA that certifies every simulated card's F9 key."""

    root_certificate: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey

    @classmethod
    def load_or_create(cls, home: Path | None = None) -> PivManufacturer:
        return load_or_create(home, FILE_NAME, cls._load, cls._create, cls._dump)

    def root_pem(self) -> bytes:
        return self.root_certificate.public_bytes(serialization.Encoding.PEM)

    def issue_attestation_key(
        self, serial: int
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A new card's F9 key and its certificate. Like the F9 certificates of many
        YubiKeys it has no basicConstraints, though its key signs certificates: verifiers
        tolerate that on this one certificate of the chain."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, VENDOR),
                x509.NameAttribute(NameOID.COMMON_NAME, "akkreditiv PIV Attestation"),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, str(serial)),
            ]
        )
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(self.root_certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + VALIDITY)
            .sign(self.root_key, hashes.SHA256())
        )
        return key, certificate

    def attest(
        self,
        public_key: ec.EllipticCurvePublicKey,
        *,
        serial: int,
        pin_policy: PinPolicy = PinPolicy.ONCE,
    ) -> tuple[x509.Certificate, x509.Certificate]:
        """An attestation of ``public_key`` as a simulated card of ``serial`` would give it for
        slot 9A, and its F9 certificate: for test rigs whose card key signs in process. Only
        where this root is trusted (demos and tests) does it enrol anything."""
        signer, signer_certificate = self.issue_attestation_key(serial)
        facts = AttestedKey(VERSION, serial, pin_policy, TOUCH_NEVER)
        leaf = attestation_certificate(
            signer, signer_certificate, public_key, Slot.AUTHENTICATION, facts
        )
        return leaf, signer_certificate

    def _dump(self) -> bytes:
        document = {
            "root_key": pem_key(self.root_key),
            "root_certificate": self.root_pem().decode(),
        }
        return json.dumps(document, indent=1, sort_keys=True).encode("utf-8")

    @classmethod
    def _load(cls, path: Path) -> PivManufacturer:
        try:
            document = json.loads(path.read_bytes())
            return cls(
                root_certificate=x509.load_pem_x509_certificate(
                    document["root_certificate"].encode("ascii")
                ),
                root_key=load_key(document["root_key"]),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise state_store.StateError(f"PIV vendor data {path} is damaged: {exc!r}") from exc

    @classmethod
    def _create(cls) -> PivManufacturer:
        # No path length: the F9 key below the root signs the slots' attestations.
        key, certificate = root_authority(ROOT_NAME, path_length=None)
        return cls(root_certificate=certificate, root_key=key)


def attestation_certificate(
    signer: ec.EllipticCurvePrivateKey,
    signer_certificate: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    slot: Slot,
    facts: AttestedKey,
) -> x509.Certificate:
    """What ``INS F9`` answers for the key in ``slot``: that key, certified by the card's F9
    key with the card's firmware, serial and the key's PIN and touch policies."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [x509.NameAttribute(NameOID.COMMON_NAME, f"akkreditiv PIV Attestation {slot:02x}")]
            )
        )
        .issuer_name(signer_certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(signer_certificate.not_valid_before_utc)
        .not_valid_after(signer_certificate.not_valid_after_utc)
    )
    for extension in facts.extensions():
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(signer, hashes.SHA256())
