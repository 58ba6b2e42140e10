"""The service's own certificate authority for PIV smartcards: it certifies the keys cards
generate, checks a card's certificate is its own, and signs the revocation list (RFC 5280)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import (
    AuthorityKeyIdentifier,
    BasicConstraints,
    Certificate,
    CertificateBuilder,
    CertificateRevocationList,
    CertificateRevocationListBuilder,
    CRLDistributionPoints,
    CRLNumber,
    CRLReason,
    DistributionPoint,
    ExtendedKeyUsage,
    ExtensionNotFound,
    KeyUsage,
    Name,
    NameAttribute,
    ObjectIdentifier,
    ReasonFlags,
    RevokedCertificateBuilder,
    SubjectKeyIdentifier,
    UniformResourceIdentifier,
    load_pem_x509_certificate,
    random_serial_number,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from server.domain.errors import DomainError
from server.services.errors import KeyMaterialRejected
from server.services.secretbox import create_file_once, ec_key_file

CA_VALIDITY = dt.timedelta(days=20 * 365)
CARD_VALIDITY = dt.timedelta(days=5 * 365)
# Relying parties may cache a CRL until its nextUpdate: the longest a lost card stays usable
# with a party that checks only the published list (the service itself checks its database).
CRL_LIFETIME = dt.timedelta(hours=1)
# Certificates start a little in the past, so a verifier whose clock lags still accepts them.
BACKDATE = dt.timedelta(minutes=5)
SMARTCARD_LOGON = ObjectIdentifier("1.3.6.1.4.1.311.20.2.2")
CA_NAME = Name(
    [
        NameAttribute(NameOID.ORGANIZATION_NAME, "akkreditiv"),
        NameAttribute(NameOID.COMMON_NAME, "akkreditiv PIV CA"),
    ]
)
_CURVES = (ec.SECP256R1, ec.SECP384R1)


class CertificateRejected(DomainError):
    """A certificate this CA does not vouch for now: another issuer, a bad signature, outside
    its validity, or not a card certificate. ``reason`` is for the audit log only."""

    code = "certificate-rejected"
    default_detail = "the certificate was not issued by this service or is not valid now"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Revocation:
    """One entry of the CRL."""

    serial: int
    revoked_at: dt.datetime
    reason: ReasonFlags


def hash_for(
    key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey,
) -> hashes.SHA256 | hashes.SHA384:
    """The hash that goes with a curve: SHA-384 for P-384, otherwise SHA-256 (SP 800-78-4)."""
    return hashes.SHA384() if isinstance(key.curve, ec.SECP384R1) else hashes.SHA256()


def require_card_key(key: object) -> ec.EllipticCurvePublicKey:
    """``key`` if it is an EC P-256 or P-384 public key (what PIV cards make); else raises
    ``ValueError``."""
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _CURVES):
        raise ValueError("only EC P-256 and P-384 keys are accepted")
    return key


def serial_hex(serial: int) -> str:
    """The canonical text of a certificate serial: 40 lower-case hex digits (159 bits fit)."""
    return f"{serial:040x}"


def _public_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class ServiceCa:
    """The CA key and certificate, and everything signed with them.

    The key (EC P-256, PKCS#8 PEM, mode 0600) and its self-signed certificate (PEM) live in two
    files, made on first use when missing, like the service's other keys. End-entity
    certificates name the holder only by a pseudonymous id, never by person number or name: a
    certificate is shown to whoever the card is used with.
    """

    __slots__ = ("_key", "certificate", "key_id")

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, certificate: Certificate) -> None:
        if not isinstance(private_key.curve, _CURVES):
            raise KeyMaterialRejected(
                f"the PIV CA key must be P-256 or P-384, not {private_key.curve.name}"
            )
        public = certificate.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey) or _public_der(public) != _public_der(
            private_key.public_key()
        ):
            raise KeyMaterialRejected("the PIV CA certificate does not belong to the CA key")
        try:
            constraints = certificate.extensions.get_extension_for_class(BasicConstraints).value
        except ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.ca:
            raise KeyMaterialRejected("the PIV CA certificate is not a CA certificate")
        self._key = private_key
        self.certificate = certificate
        try:
            # The CA certificate's own key id, if it names one: AKIs must match it exactly.
            self.key_id = certificate.extensions.get_extension_for_class(
                SubjectKeyIdentifier
            ).value.digest
        except ExtensionNotFound:
            self.key_id = SubjectKeyIdentifier.from_public_key(public).digest

    # --- making and loading ---------------------------------------------------------------

    @classmethod
    def generate(cls, *, now: dt.datetime) -> ServiceCa:
        """A new CA in memory (tests, and the first start)."""
        key = ec.generate_private_key(ec.SECP256R1())
        return cls(key, _self_signed(key, now))

    @classmethod
    def from_files(
        cls,
        key_file: str | os.PathLike[str],
        certificate_file: str | os.PathLike[str],
        *,
        create: bool = False,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> ServiceCa:
        """Load the CA; with ``create``, make a missing key (mode 0600) and a missing certificate
        for the key first. Several processes starting at once end up with the same files: each
        file is linked into place only if no other process got there first. A certificate that
        does not belong to the key is refused rather than replaced: replacing the CA would
        disown every card issued so far."""
        key_path, certificate_path = Path(key_file), Path(certificate_file)
        if create:
            for folder in {key_path.parent, certificate_path.parent}:
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = ec_key_file(key_path, create=create, what="PIV CA key file")
        if create and not certificate_path.exists():
            pem = _self_signed(key, clock()).public_bytes(serialization.Encoding.PEM)
            create_file_once(certificate_path, pem, mode=0o644)
        try:
            certificate = load_pem_x509_certificate(certificate_path.read_bytes())
        except FileNotFoundError:
            raise KeyMaterialRejected(
                f"no PIV CA certificate at {certificate_path}; start with create enabled"
            ) from None
        except (OSError, ValueError) as exc:
            raise KeyMaterialRejected(
                f"PIV CA certificate {certificate_path} is unreadable: {exc}"
            ) from None
        return cls(key, certificate)

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    # --- issuing --------------------------------------------------------------------------

    def issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        *,
        subject_id: str,
        crl_url: str,
        now: dt.datetime,
        validity: dt.timedelta = CARD_VALIDITY,
    ) -> Certificate:
        """A card authentication certificate for ``public_key``: subject CN ``subject_id`` (a
        pseudonymous id), a random 159-bit serial, digitalSignature only, client auth and
        smartcard logon, and the URL of the CRL. It never outlives the CA certificate."""
        require_card_key(public_key)
        not_after = min(now + validity, self.certificate.not_valid_after_utc)
        return (
            CertificateBuilder()
            .subject_name(
                Name(
                    [
                        NameAttribute(NameOID.ORGANIZATION_NAME, "akkreditiv"),
                        NameAttribute(NameOID.COMMON_NAME, subject_id),
                    ]
                )
            )
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, SMARTCARD_LOGON]),
                critical=False,
            )
            .add_extension(SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                    SubjectKeyIdentifier(self.key_id)
                ),
                critical=False,
            )
            .add_extension(
                CRLDistributionPoints(
                    [
                        DistributionPoint(
                            full_name=[UniformResourceIdentifier(crl_url)],
                            relative_name=None,
                            reasons=None,
                            crl_issuer=None,
                        )
                    ]
                ),
                critical=False,
            )
            .sign(self._key, hash_for(self._key))
        )

    # --- checking -------------------------------------------------------------------------

    def verify(self, certificate: Certificate, now: dt.datetime) -> ec.EllipticCurvePublicKey:
        """Check that this CA issued ``certificate`` (name and signature), that it and the CA
        certificate are valid at ``now``, and that it is a card key; return its public key.
        Revocation is the caller's part (it knows the credential's state)."""
        try:
            certificate.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise CertificateRejected("not-issued-by-this-ca") from None
        for cert in (certificate, self.certificate):
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise CertificateRejected("outside-validity")
        try:
            constraints = certificate.extensions.get_extension_for_class(BasicConstraints).value
            usage = certificate.extensions.get_extension_for_class(KeyUsage).value
        except (ExtensionNotFound, ValueError):
            raise CertificateRejected("not-a-card-certificate") from None
        if constraints.ca or not usage.digital_signature:
            raise CertificateRejected("not-a-card-certificate")
        try:
            return require_card_key(certificate.public_key())
        except (ValueError, UnsupportedAlgorithm):
            raise CertificateRejected("unsupported-key") from None

    # --- revocation -----------------------------------------------------------------------

    def crl(
        self,
        revocations: Iterable[Revocation],
        *,
        now: dt.datetime,
        lifetime: dt.timedelta = CRL_LIFETIME,
    ) -> CertificateRevocationList:
        """The CRL of ``revocations``, valid from ``now`` for ``lifetime``. Its CRL number is
        ``now`` in microseconds since the epoch: it grows with every list made, across worker
        processes, with no counter to share."""
        builder = (
            CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now)
            .next_update(now + lifetime)
            .add_extension(CRLNumber(_crl_number(now)), critical=False)
            .add_extension(
                AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                    SubjectKeyIdentifier(self.key_id)
                ),
                critical=False,
            )
        )
        for entry in sorted(revocations, key=lambda item: item.serial):
            builder = builder.add_revoked_certificate(
                RevokedCertificateBuilder()
                .serial_number(entry.serial)
                .revocation_date(entry.revoked_at)
                .add_extension(CRLReason(entry.reason), critical=False)
                .build()
            )
        return builder.sign(self._key, hash_for(self._key))

    def __repr__(self) -> str:
        return f"ServiceCa(key_id={self.key_id.hex()!r})"


def _crl_number(now: dt.datetime) -> int:
    delta = now - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _self_signed(key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> Certificate:
    public = key.public_key()
    return (
        CertificateBuilder()
        .subject_name(CA_NAME)
        .issuer_name(CA_NAME)
        .public_key(public)
        .serial_number(random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hash_for(key))
    )
