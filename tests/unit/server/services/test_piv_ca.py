"""The PIV service CA: the certificate profile it issues, what it verifies, the CRL it signs,
and its key files (made once, mode 0600, reloaded, refused when they do not fit)."""

from __future__ import annotations

import datetime as dt
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from server.services.errors import KeyMaterialRejected
from server.services.piv.ca import (
    CA_VALIDITY,
    CARD_VALIDITY,
    CRL_LIFETIME,
    SMARTCARD_LOGON,
    CertificateRejected,
    Revocation,
    ServiceCa,
    _self_signed,
    serial_hex,
)

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.UTC)
CRL_URL = "https://eid.example/piv/crl"
SUBJECT = "8c0d3c1e-7d5a-8f0e-9b1a-2f6e4a1b3c5d"
T = TypeVar("T", bound=x509.ExtensionType)


@pytest.fixture(scope="module")
def ca() -> ServiceCa:
    return ServiceCa.generate(now=NOW)


def card_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(curve or ec.SECP256R1()).public_key()


def issue(ca: ServiceCa, key: ec.EllipticCurvePublicKey | None = None) -> x509.Certificate:
    return ca.issue(key or card_key(), subject_id=SUBJECT, crl_url=CRL_URL, now=NOW)


def ext(certificate: x509.Certificate, kind: type[T]) -> x509.Extension[T]:
    return certificate.extensions.get_extension_for_class(kind)


# --- issuing ------------------------------------------------------------------------------------


def test_card_certificate_has_the_profile(ca: ServiceCa) -> None:
    key = card_key()
    certificate = issue(ca, key)

    certificate.verify_directly_issued_by(ca.certificate)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == SUBJECT
    assert 0 < certificate.serial_number < 2**159
    assert certificate.not_valid_after_utc - NOW == CARD_VALIDITY
    assert certificate.not_valid_before_utc < NOW
    usage = ext(certificate, x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert not usage.value.key_cert_sign
    assert not usage.value.crl_sign
    assert not usage.value.key_agreement
    constraints = ext(certificate, x509.BasicConstraints)
    assert constraints.critical
    assert not constraints.value.ca
    assert list(ext(certificate, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH,
        SMARTCARD_LOGON,
    ]
    assert ext(certificate, x509.SubjectKeyIdentifier).value.digest == (
        x509.SubjectKeyIdentifier.from_public_key(key).digest
    )
    assert ext(certificate, x509.AuthorityKeyIdentifier).value.key_identifier == ca.key_id
    points = ext(certificate, x509.CRLDistributionPoints).value
    assert points[0].full_name == [x509.UniformResourceIdentifier(CRL_URL)]


def test_serials_are_random(ca: ServiceCa) -> None:
    serials = {issue(ca).serial_number for _ in range(20)}
    assert len(serials) == 20
    assert all(len(serial_hex(serial)) == 40 for serial in serials)


def test_ca_certificate_is_a_ca_for_twenty_years(ca: ServiceCa) -> None:
    certificate = ca.certificate
    assert ext(certificate, x509.BasicConstraints).value.ca
    usage = ext(certificate, x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert certificate.not_valid_after_utc - NOW == CA_VALIDITY
    certificate.verify_directly_issued_by(certificate)


def test_card_certificate_never_outlives_the_ca(ca: ServiceCa) -> None:
    late = ca.certificate.not_valid_after_utc - dt.timedelta(days=30)
    certificate = ca.issue(card_key(), subject_id=SUBJECT, crl_url=CRL_URL, now=late)
    assert certificate.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_p384_card_keys_are_certified(ca: ServiceCa) -> None:
    certificate = issue(ca, card_key(ec.SECP384R1()))
    assert ca.verify(certificate, NOW).curve.name == "secp384r1"


def test_p384_ca_signs_with_sha384() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    p384 = ServiceCa(key, _self_signed(key, NOW))

    certificate = issue(p384)

    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA384)
    p384.verify(certificate, NOW)
    crl = p384.crl([], now=NOW)
    assert isinstance(crl.signature_hash_algorithm, hashes.SHA384)


def test_ca_key_and_certificate_must_match() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(KeyMaterialRejected, match="does not belong"):
        ServiceCa(key, ServiceCa.generate(now=NOW).certificate)


def test_only_ec_card_keys_are_certified(ca: ServiceCa) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(ValueError, match="P-256 and P-384"):
        ca.issue(rsa_key, subject_id=SUBJECT, crl_url=CRL_URL, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="P-256 and P-384"):
        issue(ca, card_key(ec.SECP521R1()))


# --- verifying ----------------------------------------------------------------------------------


def test_own_certificate_verifies(ca: ServiceCa) -> None:
    key = card_key()
    verified = ca.verify(issue(ca, key), NOW + dt.timedelta(days=365))
    assert verified.public_numbers() == key.public_numbers()


@pytest.mark.parametrize(
    "when",
    [
        NOW - dt.timedelta(hours=1),  # before it was issued
        NOW + CARD_VALIDITY + dt.timedelta(seconds=1),  # expired
    ],
)
def test_certificate_outside_its_validity_is_rejected(ca: ServiceCa, when: dt.datetime) -> None:
    with pytest.raises(CertificateRejected) as caught:
        ca.verify(issue(ca), when)
    assert caught.value.reason == "outside-validity"


def test_another_ca_with_the_same_name_is_rejected(ca: ServiceCa) -> None:
    impostor = ServiceCa.generate(now=NOW)
    assert impostor.certificate.subject == ca.certificate.subject

    with pytest.raises(CertificateRejected) as caught:
        ca.verify(issue(impostor), NOW)
    assert caught.value.reason == "not-issued-by-this-ca"


def test_the_ca_certificate_itself_is_not_a_card(ca: ServiceCa) -> None:
    with pytest.raises(CertificateRejected) as caught:
        ca.verify(ca.certificate, NOW)
    assert caught.value.reason == "not-a-card-certificate"


def test_altered_certificate_is_rejected(ca: ServiceCa) -> None:
    der = bytearray(issue(ca).public_bytes(serialization.Encoding.DER))
    der[-10] ^= 0x01  # inside the signature
    with pytest.raises(CertificateRejected):
        ca.verify(x509.load_der_x509_certificate(bytes(der)), NOW)


# --- CRL ----------------------------------------------------------------------------------------


def test_crl_lists_revocations_with_reasons_and_is_signed(ca: ServiceCa) -> None:
    lost, replaced = issue(ca), issue(ca)
    revoked_at = NOW - dt.timedelta(days=2)
    crl = ca.crl(
        [
            Revocation(lost.serial_number, revoked_at, x509.ReasonFlags.key_compromise),
            Revocation(replaced.serial_number, revoked_at, x509.ReasonFlags.superseded),
        ],
        now=NOW,
    )

    ca_key = ca.certificate.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(ca_key)
    assert crl.issuer == ca.certificate.subject
    assert crl.last_update_utc == NOW
    assert crl.next_update_utc == NOW + CRL_LIFETIME
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > 0
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.key_id
    reasons = {
        entry.serial_number: entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        for entry in crl
    }
    assert reasons == {
        lost.serial_number: x509.ReasonFlags.key_compromise,
        replaced.serial_number: x509.ReasonFlags.superseded,
    }
    entry = crl.get_revoked_certificate_by_serial_number(lost.serial_number)
    assert entry is not None
    assert entry.revocation_date_utc == revoked_at


def test_crl_number_grows_with_time(ca: ServiceCa) -> None:
    numbers = [
        ca.crl([], now=NOW + dt.timedelta(microseconds=step))
        .extensions.get_extension_for_class(x509.CRLNumber)
        .value.crl_number
        for step in (0, 1, 1_000_000)
    ]
    assert numbers == sorted(set(numbers))


def test_empty_crl_is_valid(ca: ServiceCa) -> None:
    crl = ca.crl([], now=NOW)
    assert len(crl) == 0
    ca_key = ca.certificate.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(ca_key)


# --- files --------------------------------------------------------------------------------------


def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "var" / "piv-ca-key.pem", tmp_path / "var" / "piv-ca.pem"


def test_files_are_made_on_first_start_and_reloaded(tmp_path: Path) -> None:
    key_file, cert_file = paths(tmp_path)

    made = ServiceCa.from_files(key_file, cert_file, create=True, clock=lambda: NOW)

    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not cert_file.stat().st_mode & 0o022
    assert b"PRIVATE KEY" not in cert_file.read_bytes()
    loaded = ServiceCa.from_files(key_file, cert_file)
    assert loaded.key_id == made.key_id
    assert loaded.certificate == made.certificate
    # What one issues, the other verifies: the reloaded CA is the same CA.
    loaded.verify(issue(made), NOW)


def test_missing_files_without_create_are_refused(tmp_path: Path) -> None:
    key_file, cert_file = paths(tmp_path)
    with pytest.raises(KeyMaterialRejected, match="no key file"):
        ServiceCa.from_files(key_file, cert_file)
    ServiceCa.from_files(key_file, cert_file, create=True)
    cert_file.unlink()
    with pytest.raises(KeyMaterialRejected, match="no PIV CA certificate"):
        ServiceCa.from_files(key_file, cert_file)


def test_missing_certificate_is_remade_for_the_same_key(tmp_path: Path) -> None:
    key_file, cert_file = paths(tmp_path)
    first = ServiceCa.from_files(key_file, cert_file, create=True)
    cert_file.unlink()

    again = ServiceCa.from_files(key_file, cert_file, create=True)

    assert again.key_id == first.key_id
    again.verify(issue(first), NOW)


def test_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    key_file, cert_file = paths(tmp_path)
    ServiceCa.from_files(key_file, cert_file, create=True)
    os.chmod(key_file, 0o640)

    with pytest.raises(KeyMaterialRejected, match="mode 0640"):
        ServiceCa.from_files(key_file, cert_file, create=True)


def test_certificate_of_another_key_is_refused_not_replaced(tmp_path: Path) -> None:
    key_file, cert_file = paths(tmp_path)
    ServiceCa.from_files(key_file, cert_file, create=True)
    foreign = ServiceCa.generate(now=NOW).certificate_pem
    cert_file.write_bytes(foreign)

    with pytest.raises(KeyMaterialRejected, match="does not belong"):
        ServiceCa.from_files(key_file, cert_file, create=True)
    assert cert_file.read_bytes() == foreign


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    key_file, cert_file = paths(tmp_path)
    ServiceCa.from_files(key_file, cert_file, create=True)
    cert_file.write_bytes(b"-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----\n")
    with pytest.raises(KeyMaterialRejected, match="unreadable"):
        ServiceCa.from_files(key_file, cert_file)
    key_file.write_bytes(b"not a key")
    with pytest.raises(KeyMaterialRejected, match="not an unencrypted PEM"):
        ServiceCa.from_files(key_file, cert_file)


def test_concurrent_first_starts_agree_on_one_ca(tmp_path: Path) -> None:
    key_file, cert_file = paths(tmp_path)
    with ThreadPoolExecutor(max_workers=8) as pool:
        cas = list(
            pool.map(lambda _: ServiceCa.from_files(key_file, cert_file, create=True), range(16))
        )

    assert len({ca.key_id for ca in cas}) == 1
    assert len({ca.certificate.serial_number for ca in cas}) == 1
    assert not list(key_file.parent.glob(".*.tmp"))
