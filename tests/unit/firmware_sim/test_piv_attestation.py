"""The simulated PIV card's key attestation (Yubico's INS F9): a certificate for a key the card
generated, signed by the card's F9 key, whose certificate (object 5FFF01) the simulator's PIV
vendor root issued; imported keys and empty slots are not attested."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from devices.protocol import tlv
from devices.protocol.piv import (
    Algorithm,
    AttestedKey,
    PinPolicy,
    Slot,
    certificate_from_object,
)
from firmware_sim import state as state_store
from firmware_sim.tokens import piv_keys
from firmware_sim.tokens.card import SimulatedCard
from firmware_sim.tokens.piv import load_applet, make_card, new_card_state
from firmware_sim.tokens.piv_attestation import VERSION, PivManufacturer
from firmware_sim.tokens.piv_state import IMPORTED, KIND
from tests.unit.firmware_sim.test_piv_applet import Terminal, public_key_from_generate


@pytest.fixture
def maker(tmp_path: Path) -> PivManufacturer:
    return PivManufacturer.load_or_create(tmp_path / "maker")


@pytest.fixture
def state_path(tmp_path: Path, maker: PivManufacturer) -> Path:
    path = tmp_path / "piv.json"
    new_card_state(path, manufacturer_home=tmp_path / "maker")
    return path


def terminal(state_path: Path) -> Terminal:
    card: SimulatedCard = make_card(load_applet(state_path), strict=True)
    card.power_on()
    term = Terminal(card)
    term.select()
    return term


def attestation_key_certificate(term: Terminal) -> x509.Certificate:
    answer, sw = term.send_all(0xCB, 0x3F, 0xFF, tlv.encode_tlv(0x5C, bytes.fromhex("5FFF01")))
    assert sw == 0x9000
    return x509.load_der_x509_certificate(
        certificate_from_object(tlv.parse_one(answer, 0x53).value)
    )


@pytest.mark.parametrize(
    ("slot", "policy", "expected"),
    [
        (Slot.AUTHENTICATION, None, PinPolicy.ONCE),
        (Slot.SIGNATURE, None, PinPolicy.ALWAYS),
        (Slot.CARD_AUTHENTICATION, None, PinPolicy.NEVER),
        (Slot.AUTHENTICATION, PinPolicy.ALWAYS, PinPolicy.ALWAYS),
    ],
)
def test_a_generated_key_is_attested_with_the_cards_facts(
    state_path: Path,
    maker: PivManufacturer,
    slot: Slot,
    policy: PinPolicy | None,
    expected: PinPolicy,
) -> None:
    term = terminal(state_path)
    term.authenticate()
    answer, sw = term.generate(slot, policy=None if policy is None else int(policy))
    assert sw == 0x9000
    public_key = public_key_from_generate(answer, ec.SECP256R1())

    der, sw = term.send_all(0xF9, slot, 0x00)

    assert sw == 0x9000
    attestation = x509.load_der_x509_certificate(der)
    signer = attestation_key_certificate(term)
    attestation.verify_directly_issued_by(signer)
    signer.verify_directly_issued_by(maker.root_certificate)
    assert attestation.public_key() == public_key
    serial = state_store.load(state_path, KIND)["serial"]
    assert AttestedKey.of(attestation) == AttestedKey(VERSION, serial, expected, 0x01)


def test_attestation_needs_no_pin_or_management_key(state_path: Path) -> None:
    term = terminal(state_path)
    term.authenticate()
    term.generate(Slot.AUTHENTICATION)
    fresh = terminal(state_path)  # power cycled: nothing verified

    assert fresh.send_all(0xF9, Slot.AUTHENTICATION, 0x00)[1] == 0x9000


def test_an_imported_key_is_not_attested(state_path: Path) -> None:
    term = terminal(state_path)
    term.authenticate()
    term.generate(Slot.AUTHENTICATION)
    document = state_store.load(state_path, KIND)
    document["keys"]["9a"]["origin"] = IMPORTED
    state_store.save(state_path, KIND, document)

    assert terminal(state_path).send_all(0xF9, Slot.AUTHENTICATION, 0x00) == (b"", 0x6A80)


def test_an_empty_slot_and_unknown_slots_are_not_attested(state_path: Path) -> None:
    term = terminal(state_path)

    assert term.send_all(0xF9, Slot.SIGNATURE, 0x00) == (b"", 0x6A88)
    assert term.send_all(0xF9, 0xF9, 0x00)[1] == 0x6A86
    assert term.send_all(0xF9, 0x9A, 0x01)[1] == 0x6A86


def test_a_card_made_before_attestation_attests_nothing(state_path: Path) -> None:
    term = terminal(state_path)
    term.authenticate()
    term.generate(Slot.AUTHENTICATION)
    document = state_store.load(state_path, KIND)
    del document["attestation_key"]
    document["objects"].pop("5fff01")
    state_store.save(state_path, KIND, document)

    assert terminal(state_path).send_all(0xF9, Slot.AUTHENTICATION, 0x00) == (b"", 0x6A88)


def test_each_card_has_its_own_attestation_key_from_one_vendor_root(
    tmp_path: Path, maker: PivManufacturer
) -> None:
    first = new_card_state(tmp_path / "a.json", manufacturer_home=tmp_path / "maker")
    second = new_card_state(tmp_path / "b.json", manufacturer_home=tmp_path / "maker")

    assert first.state.attestation_key != second.state.attestation_key
    for applet in (first, second):
        content = applet.state.objects[bytes.fromhex("5FFF01")]
        signer = x509.load_der_x509_certificate(certificate_from_object(content))
        signer.verify_directly_issued_by(maker.root_certificate)
        assert str(applet.state.serial) in signer.subject.rfc4514_string()


def test_key_entries_record_that_the_card_generated_them(tmp_path: Path) -> None:
    keys: piv_keys.KeyEntries = {}
    piv_keys.create_key(keys, Slot.AUTHENTICATION, Algorithm.ECC_P256, PinPolicy.ONCE)

    assert piv_keys.generated_on_card(keys, Slot.AUTHENTICATION)
    assert not piv_keys.generated_on_card(keys, Slot.SIGNATURE)
    del keys[Slot.AUTHENTICATION.value]["origin"]  # a key from before origins were kept
    assert not piv_keys.generated_on_card(keys, Slot.AUTHENTICATION)


def test_the_vendor_root_is_made_once_per_home(tmp_path: Path) -> None:
    first = PivManufacturer.load_or_create(tmp_path / "home")
    again = PivManufacturer.load_or_create(tmp_path / "home")

    assert first.root_pem() == again.root_pem()
    assert (tmp_path / "home" / "piv-manufacturer.json").exists()


def test_a_damaged_vendor_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "piv-manufacturer.json").write_text("{}")

    with pytest.raises(state_store.StateError, match="damaged"):
        PivManufacturer.load_or_create(tmp_path)
