"""OTP tokens through the real stacks: the USB keyboard token on the simulated bus (pyusb),
the NFC tag on pcscd's vpcd reader (pyscard), and the code display."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devices.errors import DeviceRemoved, DeviceTimeout, MalformedNdef
from devices.protocol import otp, pskc, yubiotp
from devices.protocol.hid_keyboard import get_layout
from devices.tokens.otp import NdefTagSession, find_keyboard_tokens, read_keyboard_otp
from devices.transports.pcsc import PcscContext
from firmware_sim import faults
from firmware_sim.attach import usb_bus
from firmware_sim.attach.usb_backend import SimulatedBusBackend
from firmware_sim.tokens import otp_token
from firmware_sim.tokens.otp_token import Algorithm, Model

from .conftest import AttachedCard, CliRunner

pytestmark = pytest.mark.integration


@pytest.fixture
def plug_otp(usb_bus_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Path]]:
    plugged: list[Path] = []

    def _plug(layout: str = "us", algorithm: Algorithm | None = None) -> Path:
        state = tmp_path / f"otp-usb-{len(plugged)}.json"
        otp_token.create(state, otp_token.new_state(Model.USB, algorithm, layout=layout))
        usb_bus.plug("otp-usb", state, usb_bus_dir)
        plugged.append(state)
        return state

    yield _plug
    for state in plugged:
        with contextlib.suppress(usb_bus.BusError):
            usb_bus.unplug(state, usb_bus_dir)


def keyboard(bus: Path, state: Path):  # type: ignore[no-untyped-def]
    serial = otp_token.load_state(state).serial
    tokens = [
        t for t in find_keyboard_tokens([SimulatedBusBackend(bus)]) if t.serial_number == serial
    ]
    assert len(tokens) == 1, "pyusb did not find the OTP token's keyboard interface"
    return tokens[0]


def test_usb_token_types_a_valid_yubico_otp_on_touch(
    plug_otp: Callable[..., Path], usb_bus_dir: Path
) -> None:
    state = plug_otp()
    token = keyboard(usb_bus_dir, state)
    usb_bus.touch(state, usb_bus_dir)
    code = read_keyboard_otp(token, get_layout("us"), timeout=10)
    stored = otp_token.load_state(state)
    parsed = yubiotp.parse_otp(code, stored.secret)
    assert parsed.public_id == stored.public_id
    assert parsed.block.private_id == stored.private_id
    assert parsed.block.usage_counter == stored.counter


def test_modhex_survives_a_danish_token_read_as_us(
    plug_otp: Callable[..., Path], usb_bus_dir: Path
) -> None:
    state = plug_otp(layout="da")
    token = keyboard(usb_bus_dir, state)
    usb_bus.touch(state, usb_bus_dir)
    code = read_keyboard_otp(token, get_layout("us"), timeout=10)
    yubiotp.parse_otp(code, otp_token.load_state(state).secret)  # decrypts: every key was right


def test_hotp_usb_token_types_the_next_counter_value(
    plug_otp: Callable[..., Path], usb_bus_dir: Path
) -> None:
    state = plug_otp(algorithm=Algorithm.HOTP)
    token = keyboard(usb_bus_dir, state)
    secret = otp_token.load_state(state).secret
    for counter in range(2):
        usb_bus.touch(state, usb_bus_dir)
        assert read_keyboard_otp(token, get_layout("us"), timeout=10) == otp.hotp(secret, counter)


def test_no_touch_times_out_cleanly(plug_otp: Callable[..., Path], usb_bus_dir: Path) -> None:
    token = keyboard(usb_bus_dir, plug_otp())
    with pytest.raises(DeviceTimeout, match="touch the token"):
        read_keyboard_otp(token, get_layout("us"), timeout=0.5)


def test_unplugged_mid_otp_gives_device_removed_not_half_a_code(
    plug_otp: Callable[..., Path], usb_bus_dir: Path
) -> None:
    state = plug_otp()
    token = keyboard(usb_bus_dir, state)
    faults.arm(state, faults.Fault(faults.Action.PULL, faults.Phase.AFTER, ins=0x00))
    usb_bus.touch(state, usb_bus_dir)
    with pytest.raises(DeviceRemoved):
        read_keyboard_otp(token, get_layout("us"), timeout=10)


@pytest.fixture
def nfc_tag(tmp_path: Path, attach: Callable[..., AttachedCard]) -> AttachedCard:
    state = tmp_path / "otp-nfc.json"
    otp_token.create(state, otp_token.new_state(Model.NFC))
    return attach(state, "otp-nfc")


def read_tag(card: AttachedCard) -> str:
    with PcscContext() as context, context.connect(card.reader.name, exclusive=False) as connection:
        return NdefTagSession(connection).read_otp()


def test_nfc_tag_hands_out_a_fresh_valid_otp_on_every_read(nfc_tag: AttachedCard) -> None:
    first, second = read_tag(nfc_tag), read_tag(nfc_tag)
    assert first != second
    key = otp_token.load_state(nfc_tag.state).secret
    a, b = yubiotp.parse_otp(first, key), yubiotp.parse_otp(second, key)
    assert (b.block.usage_counter, b.block.session_counter) > (
        a.block.usage_counter,
        a.block.session_counter,
    )


def test_tag_pulled_mid_read_gives_device_removed(nfc_tag: AttachedCard) -> None:
    faults.arm(nfc_tag.state, faults.Fault(faults.Action.PULL, faults.Phase.BEFORE, ins=0xB0))
    with pytest.raises(DeviceRemoved):
        read_tag(nfc_tag)


def test_damaged_tag_answer_gives_malformed_ndef(nfc_tag: AttachedCard) -> None:
    faults.arm(nfc_tag.state, faults.Fault(faults.Action.CORRUPT, faults.Phase.AFTER, ins=0xB0))
    with pytest.raises(MalformedNdef):
        read_tag(nfc_tag)


def test_cli_new_display_prints_pskc_and_show_prints_its_code(
    cli: CliRunner, tmp_path: Path
) -> None:
    state = tmp_path / "display.json"
    created = cli("sim", "new", "otp-display", "--state", str(state))
    assert created.returncode == 0, created.stderr
    key = pskc.parse_pskc(created.stdout.encode())[0]
    assert key.algorithm == pskc.ALG_TOTP
    shown = cli("sim", "show", "--state", str(state))
    assert shown.returncode == 0, shown.stderr
    code = shown.stdout.strip()
    import time

    now = time.time()
    assert code in {otp.totp(key.secret, now + delta) for delta in (-30, 0, 30)}


def test_cli_lists_and_reads_usb_and_nfc_tokens(
    cli: CliRunner, plug_otp: Callable[..., Path], nfc_tag: AttachedCard, usb_bus_dir: Path
) -> None:
    import json

    state = plug_otp()
    listing = cli("devices", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    kinds = {(t["kind"], t["transport"]) for t in json.loads(listing.stdout)["tokens"]}
    assert {("otp-usb", "usb"), ("otp-nfc", "pcsc")} <= kinds

    nfc = cli("devices", "otp", "read", "--device", nfc_tag.reader.name)
    assert nfc.returncode == 0, nfc.stderr
    yubiotp.parse_otp(nfc.stdout.strip(), otp_token.load_state(nfc_tag.state).secret)

    process = subprocess.Popen(
        [sys.executable, "-m", "akkreditiv", "devices", "otp", "read", "--timeout", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    assert "Touch your OTP token now." in process.stderr.readline()
    touched = cli("sim", "touch", "--state", str(state))
    assert touched.returncode == 0, touched.stderr
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    yubiotp.parse_otp(out.strip(), otp_token.load_state(state).secret)


def test_oath_card_through_pcscd_lists_and_computes_totp(
    tmp_path: Path, attach: Callable[..., AttachedCard], cli: CliRunner
) -> None:
    import json
    import time

    from devices.protocol.ykoath import device_id
    from devices.tokens.oath import OathSession
    from firmware_sim.tokens import oath

    state = tmp_path / "oath.json"
    created = cli("sim", "new", "oath", "--state", str(state))
    assert created.returncode == 0, created.stderr
    key = pskc.parse_pskc(created.stdout.encode())[0]
    card = attach(state, "oath")

    with PcscContext() as context, context.connect(card.reader.name) as connection:
        session = OathSession(connection)
        session.select()
        now = time.time()
        codes = session.calculate_all(now)
    assert codes == {"akkreditiv:demo": otp.totp(key.secret, now)}

    listing = cli("devices", "list", "--json")
    entries = [t for t in json.loads(listing.stdout)["tokens"] if t["kind"] == "oath"]
    assert entries[0]["details"]["credentials"] == ["akkreditiv:demo"]
    assert entries[0]["serial"] == device_id(oath.load_applet(state).state.salt)

    printed = cli("devices", "otp", "oath", "--reader", card.reader.name)
    assert printed.returncode == 0, printed.stderr
    name, code = printed.stdout.strip().split(": ")
    assert name == "akkreditiv:demo"
    later = time.time()
    assert code in {otp.totp(key.secret, t) for t in (now, later)}


def test_cli_unknown_layout_is_refused_with_the_known_ones(cli: CliRunner) -> None:
    result = cli("devices", "otp", "read", "--layout", "klingon")
    assert result.returncode == 2
    assert "klingon" in result.stderr
    assert "us" in result.stderr


def test_cli_corrupt_fault_gives_malformed_ndef_error(
    nfc_tag: AttachedCard, cli: CliRunner
) -> None:
    armed = cli("sim", "fault", "corrupt", "--state", str(nfc_tag.state), "--ins", "B0")
    assert armed.returncode == 0, armed.stderr
    result = cli("devices", "otp", "read", "--device", nfc_tag.reader.name)
    assert result.returncode == 2
    assert "error:" in result.stderr
