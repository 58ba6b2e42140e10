"""Yubico's own library reads the simulated card through the real PC/SC stack (yubikit ->
pyscard -> pcscd -> vpcd -> the card in its own process): its PIV session opens, and
``attest_key`` reads the card's attestation, which chains to the simulator's PIV vendor root."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from smartcard.System import readers
from ykman.pcsc import ScardSmartCardConnection
from yubikit.core.smartcard import ApduError
from yubikit.piv import SLOT, PivSession

from devices.protocol.piv import AttestedKey, PinPolicy
from firmware_sim.state import load, save
from firmware_sim.tokens import piv as sim_piv
from firmware_sim.tokens.piv_attestation import VERSION, PivManufacturer
from firmware_sim.tokens.piv_state import IMPORTED, KIND

from .conftest import AttachedCard, CliRunner

pytestmark = pytest.mark.integration

Attach = Callable[[Path], AttachedCard]


@pytest.fixture
def card_state(tmp_path: Path) -> Path:
    path = tmp_path / "piv.json"
    sim_piv.new_card_state(path, provision=True)
    return path


@contextmanager
def yubikit_session(reader: str) -> Iterator[PivSession]:
    found = next(r for r in readers() if str(r) == reader)
    connection = ScardSmartCardConnection(found.createConnection())
    try:
        yield PivSession(connection)
    finally:
        connection.close()


def test_yubikit_attests_the_key_the_card_generated(attach: Attach, card_state: Path) -> None:
    card = attach(card_state)

    with yubikit_session(card.reader.name) as session:
        assert tuple(session.version) == VERSION
        attestation = session.attest_key(SLOT.AUTHENTICATION)
        signer = session.get_certificate(SLOT.ATTESTATION)
        slot_certificate = session.get_certificate(SLOT.AUTHENTICATION)

    attestation.verify_directly_issued_by(signer)
    signer.verify_directly_issued_by(PivManufacturer.load_or_create().root_certificate)
    assert attestation.public_key() == slot_certificate.public_key()
    facts = AttestedKey.of(attestation)
    assert facts.pin_policy is PinPolicy.ONCE
    assert facts.serial == load(card_state, KIND)["serial"]
    assert isinstance(attestation, x509.Certificate)


def test_yubikit_is_refused_an_attestation_of_an_imported_key(
    attach: Attach, card_state: Path
) -> None:
    document = load(card_state, KIND)
    document["keys"]["9a"]["origin"] = IMPORTED
    save(card_state, KIND, document)
    card = attach(card_state)

    with yubikit_session(card.reader.name) as session, pytest.raises(ApduError) as refused:
        session.attest_key(SLOT.AUTHENTICATION)

    assert refused.value.sw == 0x6A80


def test_the_piv_attestation_root_is_exported_for_a_service_to_trust(
    attach: Attach, card_state: Path, cli: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "piv-root.pem"

    result = cli("sim", "attestation-root", "--kind", "piv", "--out", str(out))

    assert result.returncode == 0, result.stderr
    root = x509.load_pem_x509_certificate(out.read_bytes())
    with yubikit_session(attach(card_state).reader.name) as session:
        session.get_certificate(SLOT.ATTESTATION).verify_directly_issued_by(root)
