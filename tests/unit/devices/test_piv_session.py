"""PivSession end to end against the simulated PIV card, in process (no pcscd, no mocks)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devices.errors import ApduError, InvalidPin, PinBlocked, SecurityStatusNotSatisfied
from devices.protocol import tlv
from devices.protocol.piv import (
    DEFAULT_MANAGEMENT_KEY,
    Algorithm,
    ObjectId,
    PinPolicy,
    Slot,
)
from devices.tokens.piv import ManagementKeyRejected, PivSession
from firmware_sim.attach.inprocess import InProcessConnection
from firmware_sim.tokens.piv import PivApplet, make_card, new_card_state


def open_session(applet: PivApplet) -> PivSession:
    session = PivSession(InProcessConnection(make_card(applet, strict=True)))
    session.select()
    return session


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "piv.json"


@pytest.fixture
def applet(state_path: Path) -> PivApplet:
    return new_card_state(state_path)


@pytest.fixture
def session(applet: PivApplet) -> PivSession:
    return open_session(applet)


def make_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "akkreditiv test CA")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    subject: str = "Jane Doe",
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )


# --- application and objects -------------------------------------------------------------------


def test_select_reports_label_and_algorithms(applet: PivApplet) -> None:
    session = PivSession(InProcessConnection(make_card(applet, strict=True)))

    info = session.select()

    assert info.label == "akkreditiv PIV"
    assert {Algorithm.TDES, Algorithm.ECC_P256, Algorithm.ECC_P384} <= set(info.algorithms)


def test_version_returns_three_numbers(session: PivSession) -> None:
    version = session.version()

    assert version is not None
    assert len(version) == 3


def test_chuid_serial_matches_guid_in_state(session: PivSession, applet: PivApplet) -> None:
    stored = tlv.parse_dict(applet.state.objects[ObjectId.CHUID.value])

    chuid = session.chuid()

    assert len(stored[0x34]) == 16
    assert chuid.guid == stored[0x34]
    assert chuid.serial == stored[0x34].hex()
    assert chuid.fascn == stored[0x30]


def test_certificate_is_none_for_empty_slot(session: PivSession) -> None:
    for slot in Slot:
        assert session.certificate(slot) is None


def test_certificate_returns_provisioned_certificate(state_path: Path) -> None:
    applet = new_card_state(state_path, provision=True, subject="Provisioned Card")
    session = open_session(applet)

    certificate = session.certificate(Slot.AUTHENTICATION)

    assert isinstance(certificate, x509.Certificate)
    common_name = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name == "Provisioned Card"
    private_key = serialization.load_der_private_key(
        bytes.fromhex(applet.state.keys[Slot.AUTHENTICATION]["pkcs8"]), password=None
    )
    assert certificate.public_key() == private_key.public_key()
    assert session.certificate(Slot.SIGNATURE) is None


# --- PIN and PUK -------------------------------------------------------------------------------


def test_pin_status_before_and_after_verify(session: PivSession) -> None:
    assert session.pin_status() == (False, 3)

    session.verify_pin("123456")

    assert session.pin_status() == (True, None)


def test_pin_status_after_wrong_pin_shows_tries_left(session: PivSession) -> None:
    with pytest.raises(InvalidPin):
        session.verify_pin("000000")

    assert session.pin_status() == (False, 2)


def test_verify_pin_wrong_counts_down_then_raises_pin_blocked(session: PivSession) -> None:
    retries = []
    for _ in range(3):
        with pytest.raises(InvalidPin) as caught:
            session.verify_pin("000000")
        retries.append(caught.value.retries_left)

    assert retries == [2, 1, 0]
    with pytest.raises(PinBlocked):
        session.verify_pin("000000")
    with pytest.raises(PinBlocked):
        session.verify_pin("123456")
    assert session.pin_status() == (False, 0)


def test_verify_pin_right_pin_restores_tries(session: PivSession) -> None:
    with pytest.raises(InvalidPin):
        session.verify_pin("000000")

    session.verify_pin("123456")
    session.verify_pin("123456")

    with pytest.raises(InvalidPin) as caught:
        session.verify_pin("000000")
    assert caught.value.retries_left == 2


def test_change_pin_then_new_pin_verifies(session: PivSession) -> None:
    session.change_pin("123456", "24681357")

    with pytest.raises(InvalidPin):
        session.verify_pin("123456")
    session.verify_pin("24681357")


def test_unblock_pin_with_puk_sets_new_pin(session: PivSession) -> None:
    for _ in range(3):
        with pytest.raises(InvalidPin):
            session.verify_pin("000000")

    session.unblock_pin("12345678", "654321")

    assert session.pin_status() == (False, 3)
    session.verify_pin("654321")
    assert session.pin_status() == (True, None)


def test_unblock_pin_wrong_puk_raises_invalid_pin_then_pin_blocked(session: PivSession) -> None:
    retries = []
    for _ in range(3):
        with pytest.raises(InvalidPin) as caught:
            session.unblock_pin("87654321", "654321")
        retries.append(caught.value.retries_left)

    assert retries == [2, 1, 0]
    with pytest.raises(PinBlocked, match="PUK is blocked"):
        session.unblock_pin("12345678", "654321")
    session.verify_pin("123456")  # the old PIN is untouched


def test_change_puk_then_new_puk_unblocks(session: PivSession) -> None:
    session.change_puk("12345678", "11223344")

    with pytest.raises(InvalidPin):
        session.unblock_pin("12345678", "654321")
    session.unblock_pin("11223344", "654321")
    session.verify_pin("654321")


# --- management key, key generation, certificates, signing --------------------------------------


def test_authenticate_with_wrong_key_raises_management_key_rejected(session: PivSession) -> None:
    with pytest.raises(ManagementKeyRejected):
        session.authenticate(bytes(range(24)))

    with pytest.raises(SecurityStatusNotSatisfied):
        session.generate_key(Slot.AUTHENTICATION)


def test_authenticate_with_wrong_algorithm_raises_management_key_rejected(
    session: PivSession,
) -> None:
    with pytest.raises(ManagementKeyRejected, match="AES192"):
        session.authenticate(bytes(24), Algorithm.AES192)


def test_set_management_key_then_only_new_key_authenticates(
    session: PivSession, applet: PivApplet
) -> None:
    new_key = bytes(range(100, 124))
    session.authenticate()

    session.set_management_key(new_key, Algorithm.AES192)

    fresh = open_session(applet)
    with pytest.raises(ManagementKeyRejected):
        fresh.authenticate()
    with pytest.raises(ManagementKeyRejected):
        fresh.authenticate(bytes(24), Algorithm.AES192)
    fresh.authenticate(new_key, Algorithm.AES192)
    fresh.generate_key(Slot.AUTHENTICATION)


def test_set_management_key_without_authentication_raises(session: PivSession) -> None:
    with pytest.raises(SecurityStatusNotSatisfied):
        session.set_management_key(bytes(range(24)), Algorithm.AES192)


def test_authenticate_rejects_key_of_wrong_length(session: PivSession) -> None:
    with pytest.raises(ValueError, match="24 bytes"):
        session.authenticate(DEFAULT_MANAGEMENT_KEY[:16])


def test_generate_key_without_authentication_raises(session: PivSession) -> None:
    with pytest.raises(SecurityStatusNotSatisfied):
        session.generate_key(Slot.AUTHENTICATION)


def test_generate_and_put_certificate_then_certificate_returns_it(
    session: PivSession, applet: PivApplet
) -> None:
    ca_key, ca_cert = make_ca()
    session.authenticate()
    public_key = session.generate_key(Slot.AUTHENTICATION)
    issued = issue(ca_key, ca_cert, public_key)

    session.put_certificate(Slot.AUTHENTICATION, issued)

    read_back = session.certificate(Slot.AUTHENTICATION)
    assert read_back == issued
    assert read_back is not None
    read_back.verify_directly_issued_by(ca_cert)
    assert read_back.public_key() == public_key
    # A fresh session (new power-up) sees the same certificate.
    assert open_session(applet).certificate(Slot.AUTHENTICATION) == issued


def test_put_certificate_larger_than_one_apdu_round_trips(session: PivSession) -> None:
    ca_key, ca_cert = make_ca()
    session.authenticate()
    public_key = session.generate_key(Slot.KEY_MANAGEMENT, Algorithm.ECC_P384)
    names: list[x509.GeneralName] = [x509.DNSName(f"n{i:03d}.example.org") for i in range(40)]
    now = dt.datetime.now(dt.UTC)
    issued = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "big")]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    assert len(issued.public_bytes(serialization.Encoding.DER)) > 600

    session.put_certificate(Slot.KEY_MANAGEMENT, issued)

    assert session.certificate(Slot.KEY_MANAGEMENT) == issued


@pytest.mark.parametrize(
    ("algorithm", "curve", "hash_alg"),
    [
        (Algorithm.ECC_P256, ec.SECP256R1, hashes.SHA256),
        (Algorithm.ECC_P384, ec.SECP384R1, hashes.SHA384),
    ],
    ids=["p256", "p384"],
)
def test_sign_produces_signature_that_verifies_with_generated_key(
    session: PivSession,
    algorithm: Algorithm,
    curve: type[ec.EllipticCurve],
    hash_alg: type[hashes.HashAlgorithm],
) -> None:
    session.authenticate()
    public_key = session.generate_key(Slot.AUTHENTICATION, algorithm)
    assert isinstance(public_key.curve, curve)
    session.verify_pin("123456")
    message = b"sign me, " + algorithm.name.encode()

    signature = session.sign(Slot.AUTHENTICATION, message, algorithm)

    public_key.verify(signature, message, ec.ECDSA(hash_alg()))
    with pytest.raises(InvalidSignature):
        public_key.verify(signature, message + b".", ec.ECDSA(hash_alg()))


def test_sign_without_pin_raises_security_status(session: PivSession) -> None:
    session.authenticate()
    session.generate_key(Slot.AUTHENTICATION)

    with pytest.raises(SecurityStatusNotSatisfied):
        session.sign(Slot.AUTHENTICATION, b"message")


def test_sign_with_pin_policy_always_needs_pin_each_time(session: PivSession) -> None:
    session.authenticate()
    public_key = session.generate_key(Slot.SIGNATURE, pin_policy=PinPolicy.ALWAYS)
    session.verify_pin("123456")
    public_key.verify(session.sign(Slot.SIGNATURE, b"one"), b"one", ec.ECDSA(hashes.SHA256()))

    with pytest.raises(SecurityStatusNotSatisfied):
        session.sign(Slot.SIGNATURE, b"two")

    session.verify_pin("123456")
    public_key.verify(session.sign(Slot.SIGNATURE, b"two"), b"two", ec.ECDSA(hashes.SHA256()))


def test_sign_with_pin_policy_never_needs_no_pin(session: PivSession) -> None:
    session.authenticate()
    public_key = session.generate_key(Slot.CARD_AUTHENTICATION, pin_policy=PinPolicy.NEVER)

    signature = session.sign(Slot.CARD_AUTHENTICATION, b"badge")

    public_key.verify(signature, b"badge", ec.ECDSA(hashes.SHA256()))
    assert session.pin_status() == (False, 3)


# --- key attestation ----------------------------------------------------------------------------


def test_attest_gives_the_keys_attestation_and_the_attestation_keys_certificate(
    session: PivSession, applet: PivApplet
) -> None:
    session.authenticate()
    public_key = session.generate_key(Slot.AUTHENTICATION)

    attestation = session.attest(Slot.AUTHENTICATION)

    assert attestation.certificate.public_key() == public_key
    attestation.certificate.verify_directly_issued_by(attestation.intermediate)
    assert session.serial() == applet.state.serial


def test_attest_of_an_empty_slot_is_an_apdu_error(session: PivSession) -> None:
    with pytest.raises(ApduError) as refused:
        session.attest(Slot.SIGNATURE)

    assert refused.value.sw == 0x6A88
