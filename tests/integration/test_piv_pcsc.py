"""The PIV path end to end through the real PC/SC stack: our driver (and Yubico's yubikit) ->
pyscard -> pcscd -> vpcd -> the simulated card in its own process."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from smartcard.System import readers
from ykman.pcsc import ScardSmartCardConnection
from yubikit.core.smartcard import ApduError
from yubikit.piv import SLOT
from yubikit.piv import PivSession as YubikitPivSession

from akkreditiv.cli.pcscd import VpcdReader
from devices.errors import (
    DeviceRemoved,
    InvalidPin,
    NoCard,
    NoReader,
    PinBlocked,
    ReaderBusy,
    SecurityStatusNotSatisfied,
)
from devices.protocol.piv import Algorithm, AttestedKey, PinPolicy, Slot, certificate_from_object
from devices.tokens.piv import ManagementKeyRejected, PivSession
from devices.transports.pcsc import PcscContext
from firmware_sim import faults
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


def open_session(reader: str) -> tuple[PcscContext, PivSession]:
    context = PcscContext()
    session = PivSession(context.connect(reader))
    session.select()
    return context, session


def test_devices_list_shows_attached_card_with_serial_and_certificate(
    attach: Attach, card_state: Path, cli: CliRunner
) -> None:
    card = attach(card_state)
    expected_serial = sim_piv.load_applet(card_state).serial_text()

    result = cli("devices", "list", "--json")

    assert result.returncode == 0, result.stderr
    tokens = [t for t in json.loads(result.stdout)["tokens"] if t["reader"] == card.reader.name]
    assert len(tokens) == 1
    assert tokens[0]["kind"] == "piv"
    assert tokens[0]["transport"] == "pcsc"
    assert tokens[0]["serial"] == expected_serial
    assert "CN=akkreditiv simulated PIV card" in tokens[0]["details"]["certificates"]["9a"]


def test_sign_through_pcscd_verifies_with_card_certificate(
    attach: Attach, card_state: Path
) -> None:
    card = attach(card_state)
    context, session = open_session(card.reader.name)
    with context:
        certificate = session.certificate(Slot.AUTHENTICATION)
        assert certificate is not None
        session.verify_pin("123456")
        challenge = b"login challenge \x00\x01\x02"
        signature = session.sign(Slot.AUTHENTICATION, challenge)
    public_key = certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(signature, challenge, ec.ECDSA(hashes.SHA256()))


def test_sign_without_pin_is_refused_through_pcscd(attach: Attach, card_state: Path) -> None:
    card = attach(card_state)
    context, session = open_session(card.reader.name)
    with context, pytest.raises(SecurityStatusNotSatisfied):
        session.sign(Slot.AUTHENTICATION, b"no pin given")


def test_generate_key_and_write_certificate_through_pcscd(attach: Attach, card_state: Path) -> None:
    card = attach(card_state)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    context, session = open_session(card.reader.name)
    with context:
        session.authenticate()
        public_key = session.generate_key(Slot.SIGNATURE, Algorithm.ECC_P384)
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signing key")])
        issued = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(ca_key, hashes.SHA256())
        )
        # A certificate of this size needs command chaining on the way in.
        session.put_certificate(Slot.SIGNATURE, issued)
        assert session.certificate(Slot.SIGNATURE) == issued
        session.verify_pin("123456")
        signature = session.sign(Slot.SIGNATURE, b"document", Algorithm.ECC_P384)
        # 9C is PIN-always: a second signature needs a fresh VERIFY.
        with pytest.raises(SecurityStatusNotSatisfied):
            session.sign(Slot.SIGNATURE, b"document", Algorithm.ECC_P384)
    public_key.verify(signature, b"document", ec.ECDSA(hashes.SHA384()))


def test_wrong_pins_block_and_block_survives_simulator_restart(
    attach: Attach, card_state: Path
) -> None:
    card = attach(card_state)
    context, session = open_session(card.reader.name)
    with context:
        with pytest.raises(InvalidPin) as first:
            session.verify_pin("000000")
        with pytest.raises(InvalidPin) as second:
            session.verify_pin("000000")
        with pytest.raises(InvalidPin) as third:
            session.verify_pin("000000")
        with pytest.raises(PinBlocked):
            session.verify_pin("123456")
    assert [first.value.retries_left, second.value.retries_left, third.value.retries_left] == [
        2,
        1,
        0,
    ]
    assert card.detach() == 0

    card = attach(card_state)
    context, session = open_session(card.reader.name)
    with context:
        assert session.pin_status() == (False, 0)
        with pytest.raises(PinBlocked):
            session.verify_pin("123456")
        session.unblock_pin("12345678", "654321")
        session.verify_pin("654321")


def test_wrong_puk_three_times_blocks_card_for_good_across_restart(
    attach: Attach, card_state: Path
) -> None:
    card = attach(card_state)
    context, session = open_session(card.reader.name)
    with context:
        for expected_left in (2, 1, 0):
            with pytest.raises(InvalidPin) as wrong:
                session.unblock_pin("99999999", "111111")
            assert wrong.value.retries_left == expected_left
        with pytest.raises(PinBlocked, match="PUK is blocked"):
            session.unblock_pin("12345678", "111111")
    card.detach()

    card = attach(card_state)
    context, session = open_session(card.reader.name)
    with context, pytest.raises(PinBlocked):
        session.unblock_pin("12345678", "111111")
    assert load(card_state)["puk_tries"] == 0


def test_card_pulled_mid_command_raises_device_removed_and_keeps_state(
    attach: Attach, card_state: Path
) -> None:
    card = attach(card_state)
    before = card_state.read_bytes()
    context, session = open_session(card.reader.name)
    faults.arm(card_state, faults.Fault(faults.Action.PULL, faults.Phase.BEFORE, ins=0x87))
    with context:
        session.verify_pin("123456")  # VERIFY is not the armed instruction: it completes
        with pytest.raises(DeviceRemoved):
            session.sign(Slot.AUTHENTICATION, b"never signed")
    assert card.wait_gone() == 0
    assert card_state.read_bytes() == before  # the try counter was reset by the right PIN
    sim_piv.load_applet(card_state)  # and the file is a whole, loadable state
    assert not faults.plan_path(card_state).exists()


def test_card_pulled_after_wrong_pin_keeps_the_spent_try(attach: Attach, card_state: Path) -> None:
    card = attach(card_state)
    faults.arm(card_state, faults.Fault(faults.Action.PULL, faults.Phase.AFTER, ins=0x20))
    context, session = open_session(card.reader.name)
    with context, pytest.raises(DeviceRemoved):
        session.verify_pin("000000")
    card.wait_gone()
    # The card counted the try before it compared: pulling it does not give a free guess.
    assert load(card_state)["pin_tries"] == 2


def test_sigterm_detaches_cleanly(attach: Attach, card_state: Path) -> None:
    card = attach(card_state)
    before = card_state.read_bytes()
    assert card.detach() == 0
    with PcscContext() as context:
        assert context.card_present(card.reader.name) is None
    assert card_state.read_bytes() == before


def test_watch_reports_insertion_and_removal(
    attach: Attach, card_state: Path, free_reader: VpcdReader
) -> None:
    with PcscContext() as context:
        events = context.watch([free_reader.name], timeout=10)
        initial = next(events)
        assert initial.present is False
        card = attach(card_state)
        inserted = next(events)
        assert inserted.present is True
        assert inserted.atr == sim_piv.ATR
        card.process.send_signal(15)
        removed = next(events)
        assert removed.present is False


def test_exclusive_connection_makes_second_connection_reader_busy(
    attach: Attach, card_state: Path
) -> None:
    card = attach(card_state)
    with PcscContext() as first, first.connect(card.reader.name) as held:
        assert held.exclusive
        with PcscContext() as second, pytest.raises(ReaderBusy):
            second.connect(card.reader.name)


def test_shared_fallback_when_another_holds_card_shared(attach: Attach, card_state: Path) -> None:
    card = attach(card_state)
    with PcscContext() as first, first.connect(card.reader.name, exclusive=False):
        with PcscContext() as second, second.connect(card.reader.name) as fallback:
            assert not fallback.exclusive
            PivSession(fallback).select()


def test_empty_reader_raises_no_card(free_reader: VpcdReader) -> None:
    with PcscContext() as context, pytest.raises(NoCard, match="insert the card"):
        context.connect(free_reader.name)


def test_unknown_reader_raises_no_reader(vpcd_readers: list[VpcdReader]) -> None:
    with PcscContext() as context, pytest.raises(NoReader):
        context.connect("No Such Reader 00 00")


def test_cli_reports_pcscd_not_running_with_what_to_do(cli: CliRunner, tmp_path: Path) -> None:
    result = cli("devices", "list", env={"PCSCLITE_CSOCK_NAME": str(tmp_path / "no-pcscd.comm")})
    assert result.returncode == 2
    assert "pcscd is not running" in result.stderr
    assert "start pcscd" in result.stderr


def test_cli_sign_reads_pin_from_stdin_and_prints_verified_signature(
    attach: Attach, card_state: Path, cli: CliRunner
) -> None:
    card = attach(card_state)
    result = cli(
        "devices",
        "piv",
        "sign",
        "--challenge",
        "00112233",
        "--reader",
        card.reader.name,
        "--pin-stdin",
        stdin="123456\n",
    )
    assert result.returncode == 0, result.stderr
    signature = bytes.fromhex(result.stdout.strip())
    stored = sim_piv.load_applet(card_state).state.objects[Slot.AUTHENTICATION.object_id.value]
    public_key = x509.load_der_x509_certificate(certificate_from_object(stored)).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(signature, bytes.fromhex("00112233"), ec.ECDSA(hashes.SHA256()))
    assert "123456" not in result.stdout + result.stderr


def test_cli_wrong_pin_says_tries_left_and_exits_2(
    attach: Attach, card_state: Path, cli: CliRunner
) -> None:
    card = attach(card_state)
    result = cli(
        "devices",
        "piv",
        "verify-pin",
        "--reader",
        card.reader.name,
        "--pin-stdin",
        stdin="999999\n",
    )
    assert result.returncode == 2
    assert "wrong PIN, 2 tries left" in result.stderr
    assert "999999" not in result.stderr


def test_cli_malformed_pin_is_refused_without_spending_a_try(
    attach: Attach, card_state: Path, cli: CliRunner
) -> None:
    card = attach(card_state)
    result = cli(
        "devices", "piv", "verify-pin", "--reader", card.reader.name, "--pin-stdin", stdin="12\n"
    )
    assert result.returncode == 2
    assert "6 to 8 digits" in result.stderr
    assert load(card_state)["pin_tries"] == 3


def test_aes_management_key_authenticates_and_can_be_replaced(
    attach: Attach, tmp_path: Path, cli: CliRunner
) -> None:
    state = tmp_path / "aes.json"
    aes256 = bytes(range(32))
    created = cli(
        "sim",
        "new",
        "piv",
        "--state",
        str(state),
        "--management-key",
        aes256.hex(),
        "--management-alg",
        "aes256",
    )
    assert created.returncode == 0, created.stderr
    card = attach(state)
    replacement = bytes(range(100, 124))
    context, session = open_session(card.reader.name)
    with context:
        with pytest.raises(ManagementKeyRejected):
            session.authenticate()  # the default 3DES key is not this card's
        session.authenticate(aes256, Algorithm.AES256)
        session.set_management_key(replacement, Algorithm.AES192)
        with pytest.raises(ManagementKeyRejected):
            session.authenticate(aes256, Algorithm.AES256)
        session.authenticate(replacement, Algorithm.AES192)
        session.generate_key(Slot.KEY_MANAGEMENT)
    assert load(state)["management_alg"] == Algorithm.AES192


def test_cli_asks_pin_on_terminal_without_echo(attach: Attach, card_state: Path) -> None:
    card = attach(card_state)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "akkreditiv",
            "devices",
            "piv",
            "verify-pin",
            "--reader",
            card.reader.name,
        ],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    seen = b""
    answered = False
    deadline = time.monotonic() + 30
    while process.poll() is None or select.select([controller], [], [], 0)[0]:
        ready, _, _ = select.select([controller], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            process.kill()
            process.wait()
            pytest.fail(f"the command neither prompted nor ended; it printed {seen!r}")
        try:
            chunk = os.read(controller, 1024)
        except OSError:  # the terminal closes when the command ends
            break
        seen += chunk
        if b"PIN:" in seen and not answered:
            os.write(controller, b"123456\n")
            answered = True
    os.close(controller)
    assert process.wait(timeout=30) == 0
    assert b"PIN correct." in seen
    assert b"123456" not in seen


# --- Yubico's library: yubikit reads the card and its key attestation -----------------------------


@contextmanager
def yubikit_session(reader: str) -> Iterator[YubikitPivSession]:
    found = next(r for r in readers() if str(r) == reader)
    connection = ScardSmartCardConnection(found.createConnection())
    try:
        yield YubikitPivSession(connection)
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
