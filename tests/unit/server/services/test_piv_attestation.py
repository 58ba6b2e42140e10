"""``verify_card_key``: a PIV attestation chain as a YubiKey gives it (slot certificate <- F9
certificate without basicConstraints <- vendor root) is accepted; every way of bending it is
refused with its reason."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devices.protocol.piv import OID_POLICY, AttestedKey, PinPolicy, Slot
from firmware_sim.tokens.piv_attestation import PivManufacturer, attestation_certificate
from server.services.piv.attestation import CardKeyNotAttested, verify_card_key

DER = serialization.Encoding.DER
SERIAL = 4242


@pytest.fixture
def maker(tmp_path: Path) -> PivManufacturer:
    return PivManufacturer.load_or_create(tmp_path)


def f9(
    maker: PivManufacturer, constraints: x509.BasicConstraints | None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """An F9 key and certificate, with ``constraints`` if given."""
    key, plain = maker.issue_attestation_key(SERIAL)
    builder = (
        x509.CertificateBuilder()
        .subject_name(plain.subject)
        .issuer_name(plain.issuer)
        .public_key(key.public_key())
        .serial_number(plain.serial_number)
        .not_valid_before(plain.not_valid_before_utc)
        .not_valid_after(plain.not_valid_after_utc)
    )
    if constraints is not None:
        builder = builder.add_extension(constraints, critical=True)
    return key, builder.sign(maker.root_key, hashes.SHA256())


def check(
    maker: PivManufacturer,
    key: ec.EllipticCurvePublicKey,
    leaf: x509.Certificate,
    signer: x509.Certificate,
    *,
    card_serial: int | None = SERIAL,
) -> AttestedKey:
    return verify_card_key(
        key,
        leaf.public_bytes(DER),
        signer.public_bytes(DER),
        [maker.root_certificate],
        card_serial=card_serial,
        now=dt.datetime.now(dt.UTC),
    )


def facts(policy: PinPolicy = PinPolicy.ONCE) -> AttestedKey:
    return AttestedKey(firmware=(5, 2, 7), serial=SERIAL, pin_policy=policy, touch_policy=1)


@pytest.mark.parametrize(
    "constraints",
    [None, x509.BasicConstraints(ca=True, path_length=None)],
    ids=["no-ca-flag", "ca"],
)
def test_a_chain_to_the_vendor_root_is_accepted(
    maker: PivManufacturer, constraints: x509.BasicConstraints | None
) -> None:
    signer_key, signer = f9(maker, constraints)
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    leaf = attestation_certificate(signer_key, signer, key, Slot.AUTHENTICATION, facts())

    assert check(maker, key, leaf, signer) == facts()
    assert check(maker, key, leaf, signer, card_serial=None) == facts()


def test_an_f9_certificate_that_says_it_is_no_ca_is_refused(maker: PivManufacturer) -> None:
    signer_key, signer = f9(maker, x509.BasicConstraints(ca=False, path_length=None))
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    leaf = attestation_certificate(signer_key, signer, key, Slot.AUTHENTICATION, facts())

    with pytest.raises(CardKeyNotAttested) as refused:
        check(maker, key, leaf, signer)
    assert refused.value.reason == "chain"


def test_a_slot_certificate_the_root_signed_itself_is_refused(maker: PivManufacturer) -> None:
    """The chain has exactly one card key between the root and the slot's key."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    leaf = attestation_certificate(
        maker.root_key, maker.root_certificate, key, Slot.AUTHENTICATION, facts()
    )

    with pytest.raises(CardKeyNotAttested) as refused:
        check(maker, key, leaf, maker.root_certificate)
    assert refused.value.reason == "chain"


def test_an_attestation_without_the_policy_extension_is_refused(maker: PivManufacturer) -> None:
    signer_key, signer = f9(maker, None)
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    leaf = attestation_certificate(signer_key, signer, key, Slot.AUTHENTICATION, facts())
    stripped = x509.CertificateBuilder(
        issuer_name=leaf.issuer,
        subject_name=leaf.subject,
        public_key=key,
        serial_number=leaf.serial_number,
        not_valid_before=leaf.not_valid_before_utc,
        not_valid_after=leaf.not_valid_after_utc,
        extensions=[e for e in leaf.extensions if e.oid != OID_POLICY],
    ).sign(signer_key, hashes.SHA256())

    with pytest.raises(CardKeyNotAttested) as refused:
        check(maker, key, stripped, signer)
    assert refused.value.reason == "facts"


@pytest.mark.parametrize("policy", [PinPolicy.NEVER, PinPolicy.DEFAULT])
def test_a_key_used_without_the_pin_is_refused(maker: PivManufacturer, policy: PinPolicy) -> None:
    signer_key, signer = f9(maker, None)
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    leaf = attestation_certificate(signer_key, signer, key, Slot.AUTHENTICATION, facts(policy))

    with pytest.raises(CardKeyNotAttested) as refused:
        check(maker, key, leaf, signer)
    assert refused.value.reason == "pin-policy"
    assert "not generated on a card" in refused.value.detail


def test_garbage_is_unreadable(maker: PivManufacturer) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()

    with pytest.raises(CardKeyNotAttested) as refused:
        verify_card_key(
            key, b"\x30\x00", b"\x30\x00", [maker.root_certificate], card_serial=None,
            now=dt.datetime.now(dt.UTC),
        )  # fmt: skip
    assert refused.value.reason == "unreadable"
