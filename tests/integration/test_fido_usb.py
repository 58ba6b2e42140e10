"""FIDO2 over the simulated USB bus: our pyusb driver, python-fido2's client stack unchanged
on top, and the simulated key in its own process."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fido2 import cbor
from fido2.ctap import CtapError
from fido2.ctap2.base import Ctap2
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    UserVerificationRequirement,
)

from devices.errors import DeviceRemoved, FidoPinInvalid, NoCredentials, PinRequired, TouchTimeout
from devices.protocol.ctaphid import (
    BROADCAST_CID,
    Cmd,
    ContPacket,
    HidError,
    InitPacket,
    InitResponse,
    KeepaliveStatus,
    Reassembler,
    encode_message,
    parse_packet,
)
from devices.tokens.fido import FidoSession
from devices.transports.usb import UsbCtapHidConnection
from firmware_sim import faults
from firmware_sim.tokens import ctap2

from .fido_fixtures import ORIGIN, RP_ID, PluggedKey

pytestmark = pytest.mark.integration

PlugKey = Callable[..., PluggedKey]


def server() -> Fido2Server:
    return Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP_ID))


def register_and_authenticate(key: PluggedKey, *, pin: str | None = None) -> int:
    """A full WebAuthn ceremony through the driver; returns the assertion's counter."""
    rp = server()
    uv = UserVerificationRequirement.REQUIRED if pin else UserVerificationRequirement.DISCOURAGED
    options, state = rp.register_begin(
        PublicKeyCredentialUserEntity(name="alice", id=b"user-alice", display_name="Alice"),
        user_verification=uv,
    )
    session = key.session()
    try:
        registration = session.make_credential(options.public_key, origin=ORIGIN, pin=pin)
        auth_data = rp.register_complete(state, registration)
        assert auth_data.credential_data is not None
        credentials = [auth_data.credential_data]
        request, state = rp.authenticate_begin(credentials, user_verification=uv)
        assertion = session.get_assertion(request.public_key, origin=ORIGIN, pin=pin)
        rp.authenticate_complete(state, credentials, assertion)
    finally:
        session.close()
    assert assertion.response.authenticator_data.is_user_present()
    assert assertion.response.authenticator_data.is_user_verified() is bool(pin)
    return assertion.response.authenticator_data.counter


def test_pyusb_finds_key_by_fido_usage_page(plug_key: PlugKey) -> None:
    key = plug_key()
    interface = key.interface()
    assert (interface.report_size_in, interface.report_size_out) == (64, 64)
    assert interface.ep_in == 0x81
    assert interface.ep_out == 0x01
    assert interface.product_name == "akkreditiv simulated FIDO2 security key"
    assert interface.path.startswith("usb:250:")


def test_python_fido2_pings_and_gets_info_over_pyusb(plug_key: PlugKey) -> None:
    key = plug_key()
    device = key.open()
    try:
        payload = bytes(range(256)) * 4  # 18 packets each way
        assert device.ping(payload) == payload
        info = Ctap2(device).get_info()
    finally:
        device.close()
    assert "FIDO_2_1" in info.versions
    assert info.options["rk"] is True


def test_fido2_client_registers_and_authenticates_without_pin(plug_key: PlugKey) -> None:
    key = plug_key()
    first = register_and_authenticate(key)
    second = register_and_authenticate(key)
    assert second > first


def test_fido2_client_registers_and_authenticates_with_pin(plug_key: PlugKey) -> None:
    key = plug_key()
    session = key.session()
    try:
        session.set_pin("4711")
        assert session.pin_is_set
    finally:
        session.close()
    register_and_authenticate(key, pin="4711")


def test_pin_required_and_wrong_pin_give_typed_errors(plug_key: PlugKey) -> None:
    key = plug_key()
    session = key.session()
    try:
        session.set_pin("4711")
        with pytest.raises(PinRequired):
            session.register(RP_ID, "bob", b"user-bob", os.urandom(32), resident=True)
        with pytest.raises(FidoPinInvalid) as wrong:
            session.register(RP_ID, "bob", b"user-bob", os.urandom(32), pin="0000")
        assert wrong.value.retries_left == 7
    finally:
        session.close()


def test_pin_retries_survive_unplug(plug_key: PlugKey) -> None:
    key = plug_key()
    session = key.session()
    try:
        session.set_pin("4711")
        with pytest.raises(FidoPinInvalid):
            session.change_pin("0000", "5555")
    finally:
        session.close()
    key.unplug()
    key = plug_key(key.state)
    session = key.session()
    try:
        assert session.pin_retries() == 7
    finally:
        session.close()


def test_no_touch_gives_touch_timeout(plug_key: PlugKey) -> None:
    key = plug_key(up_timeout=1.0)
    session_without_touch = FidoSession(key.open())  # nobody presses the button
    try:
        with pytest.raises(TouchTimeout):
            session_without_touch.register(RP_ID, "carol", b"user-carol", os.urandom(32))
    finally:
        session_without_touch.close()


def test_unplug_mid_message_raises_device_removed_and_state_survives(plug_key: PlugKey) -> None:
    key = plug_key()
    session = key.session()
    registration = session.register(RP_ID, "dave", b"user-dave", os.urandom(32))
    faults.arm(key.state, faults.Fault(faults.Action.PULL, faults.Phase.BEFORE, ins=0x02))
    with pytest.raises(DeviceRemoved):
        session.authenticate(RP_ID, os.urandom(32), [registration.credential_id])
    session.close()
    ctap2.load_authenticator(key.state, ctap2.AlwaysPresent())  # whole and loadable
    key = plug_key(key.state)
    session = key.session()
    try:
        assertion = session.authenticate(RP_ID, os.urandom(32), [registration.credential_id])
    finally:
        session.close()
    assert assertion.response.authenticator_data.counter >= 1


def test_unknown_credential_gives_no_credentials(plug_key: PlugKey) -> None:
    key = plug_key()
    session = key.session()
    try:
        with pytest.raises(NoCredentials):
            session.authenticate(RP_ID, os.urandom(32), [os.urandom(64)])
    finally:
        session.close()


def test_several_keys_on_the_bus_at_once(plug_key: PlugKey) -> None:
    first, second = plug_key(), plug_key()
    assert first.info.address != second.info.address
    assert first.interface().serial_number != second.interface().serial_number
    register_and_authenticate(second)
    register_and_authenticate(first)


# --- raw CTAPHID: what the token answers to bad framing -----------------------------------


class RawChannel:
    """Writes reports straight to the key and reads its answers, below python-fido2."""

    def __init__(self, key: PluggedKey) -> None:
        self.connection = UsbCtapHidConnection(key.interface())

    def send(self, report: bytes) -> None:
        self.connection.write_packet(report)

    def receive(self) -> tuple[int, int, bytes]:
        reassembler = Reassembler()
        while True:
            message = reassembler.feed(parse_packet(self.connection.read_packet()))
            if message is not None:
                return message.cid, message.cmd, message.payload

    def allocate(self) -> int:
        nonce = os.urandom(8)
        for report in encode_message(BROADCAST_CID, Cmd.INIT, nonce):
            self.send(report)
        _, cmd, payload = self.receive()
        assert cmd == Cmd.INIT
        answer = InitResponse.decode(payload)
        assert answer.nonce == nonce
        return answer.cid

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def raw(plug_key: PlugKey) -> Iterator[RawChannel]:
    channel = RawChannel(plug_key(up_timeout=5.0))
    yield channel
    channel.close()


def test_wrong_sequence_number_answers_invalid_seq(raw: RawChannel) -> None:
    cid = raw.allocate()
    raw.send(InitPacket(cid, Cmd.PING, 100, bytes(57)).encode())
    raw.send(ContPacket(cid, 5, bytes(59)).encode())
    assert raw.receive() == (cid, Cmd.ERROR, bytes((HidError.INVALID_SEQ,)))


def test_repeated_continuation_packet_answers_invalid_seq(raw: RawChannel) -> None:
    cid = raw.allocate()
    raw.send(InitPacket(cid, Cmd.PING, 200, bytes(57)).encode())
    raw.send(ContPacket(cid, 0, bytes(59)).encode())
    raw.send(ContPacket(cid, 0, bytes(59)).encode())
    assert raw.receive() == (cid, Cmd.ERROR, bytes((HidError.INVALID_SEQ,)))


def test_unallocated_channel_answers_invalid_channel(raw: RawChannel) -> None:
    raw.allocate()
    for report in encode_message(0x12345678, Cmd.PING, b"hello"):
        raw.send(report)
    assert raw.receive() == (0x12345678, Cmd.ERROR, bytes((HidError.INVALID_CHANNEL,)))


def test_truncated_message_answers_msg_timeout(raw: RawChannel) -> None:
    cid = raw.allocate()
    raw.send(InitPacket(cid, Cmd.PING, 300, bytes(57)).encode())
    assert raw.receive() == (cid, Cmd.ERROR, bytes((HidError.MSG_TIMEOUT,)))


def test_garbage_cbor_answers_invalid_cbor_status(raw: RawChannel) -> None:
    cid = raw.allocate()
    for report in encode_message(cid, Cmd.CBOR, b"\x01\xff\xfe\xfd"):
        raw.send(report)
    got_cid, cmd, payload = raw.receive()
    assert (got_cid, cmd) == (cid, Cmd.CBOR)
    assert payload[:1] == bytes((CtapError.ERR.INVALID_CBOR,))


def _make_credential_request() -> bytes:
    return b"\x01" + cbor.encode(
        {
            1: os.urandom(32),
            2: {"id": RP_ID, "name": "Example"},
            3: {"id": b"user", "name": "user"},
            4: [{"type": "public-key", "alg": -7}],
        }
    )


def test_second_channel_while_busy_answers_channel_busy_and_cancel_ends_wait(
    raw: RawChannel,
) -> None:
    busy = raw.allocate()
    other = raw.allocate()
    for report in encode_message(busy, Cmd.CBOR, _make_credential_request()):
        raw.send(report)
    cid, cmd, payload = raw.receive()  # the key asks for a touch
    assert (cid, cmd, payload) == (busy, Cmd.KEEPALIVE, bytes((KeepaliveStatus.UP_NEEDED,)))
    for report in encode_message(other, Cmd.PING, b"anyone there?"):
        raw.send(report)
    answers = []
    while True:
        answer = raw.receive()
        if answer[1] != Cmd.KEEPALIVE:
            answers.append(answer)
        if answer[0] == other:
            break
    assert answers[-1] == (other, Cmd.ERROR, bytes((HidError.CHANNEL_BUSY,)))
    raw.send(InitPacket(busy, Cmd.CANCEL, 0, b"").encode())
    while True:
        cid, cmd, payload = raw.receive()
        if cmd != Cmd.KEEPALIVE:
            break
    assert (cid, cmd, payload[:1]) == (busy, Cmd.CBOR, bytes((CtapError.ERR.KEEPALIVE_CANCEL,)))


def test_slow_key_sends_processing_keepalives(raw: RawChannel) -> None:
    cid = raw.allocate()
    # Make the key slow on authenticatorGetInfo (04).
    delay = faults.Fault(faults.Action.DELAY, faults.Phase.BEFORE, ins=0x04, seconds=0.35)
    faults.arm(_state_of(raw), delay)
    for report in encode_message(cid, Cmd.CBOR, b"\x04"):
        raw.send(report)
    keepalives = 0
    while True:
        got, cmd, payload = raw.receive()
        if cmd == Cmd.KEEPALIVE:
            assert payload == bytes((KeepaliveStatus.PROCESSING,))
            keepalives += 1
            continue
        break
    assert (got, cmd, payload[:1]) == (cid, Cmd.CBOR, b"\x00")
    assert keepalives >= 2
    assert "FIDO_2_0" in cbor.decode(payload[1:])[1]


def _state_of(raw: RawChannel) -> Path:
    from firmware_sim.attach import usb_bus

    serial = raw.connection.interface.serial_number
    for info in usb_bus.devices():
        if info.serial == serial:
            return Path(info.state)
    raise AssertionError("key not on the bus")


def test_u2f_register_and_authenticate_over_usb(plug_key: PlugKey) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from fido2.ctap1 import Ctap1

    key = plug_key()
    device = key.open()
    try:
        u2f = Ctap1(device)
        app_param, client_param = os.urandom(32), os.urandom(32)
        key.touch()
        registration = u2f.register(client_param, app_param)
        key.touch()
        signed = u2f.authenticate(client_param, app_param, registration.key_handle)
    finally:
        device.close()
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), registration.public_key
    )
    message = app_param + struct.pack(">BI", signed.user_presence, signed.counter) + client_param
    public_key.verify(signed.signature, message, ec.ECDSA(hashes.SHA256()))


def test_cli_lists_plugs_touches_and_registers(
    plug_key: PlugKey, tmp_path: Path, usb_bus_dir: Path
) -> None:
    key = plug_key()
    listing = subprocess.run(
        [sys.executable, "-m", "akkreditiv", "devices", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listing.returncode == 0, listing.stderr
    fido = [
        t
        for t in json.loads(listing.stdout)["tokens"]
        if t["kind"] == "fido" and t["transport"] == "usb"
    ]
    assert [t["serial"] for t in fido] == [key.info.serial]

    credential = tmp_path / "credential.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "akkreditiv",
            "devices",
            "fido",
            "register",
            "--rp",
            RP_ID,
            "--user",
            "erin",
            "--out",
            str(credential),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    prompt = process.stderr.readline()
    assert "Touch your security key now." in prompt
    touched = subprocess.run(
        [sys.executable, "-m", "akkreditiv", "sim", "touch", "--state", str(key.state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert touched.returncode == 0, touched.stderr
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "registered credential" in out
    assert json.loads(credential.read_text())["rp"] == RP_ID


def test_speak_says_touch_your_key_when_the_key_waits(
    plug_key: PlugKey, tmp_path: Path, usb_bus_dir: Path
) -> None:
    key = plug_key()
    audio = tmp_path / "speech"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "akkreditiv",
            "devices",
            "--speak",
            "--language",
            "en",
            "--audio-dir",
            str(audio),
            "fido",
            "register",
            "--rp",
            RP_ID,
            "--user",
            "fay",
            "--out",
            str(tmp_path / "cred.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    said = []
    while not (line := process.stderr.readline()).startswith("Touch your security key now."):
        assert line, f"the command ended without asking for a touch: {said}"
        said.append(line.strip())
    assert "Touch your security key." in said
    key.touch()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Done. It worked." in err
    names = sorted(p.name for p in audio.glob("*.wav"))
    assert names[0] == "0001-touch_key.wav"
    assert names[-1].endswith("-done.wav")
