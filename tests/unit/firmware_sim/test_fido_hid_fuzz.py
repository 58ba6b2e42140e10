"""Fuzzing the security key's CTAPHID engine: any sequence of reports gets only well-formed
CTAPHID answers, never an exception, and the key still talks afterwards."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.protocol.ctaphid import (
    BROADCAST_CID,
    PACKET_SIZE,
    Cmd,
    ContPacket,
    HidError,
    InitPacket,
    InitResponse,
    Message,
    Reassembler,
    encode_message,
    parse_packet,
)
from firmware_sim.tokens import ctap2
from firmware_sim.tokens.fido_hid import FidoHidDevice

EP_OUT = 0x01
EP_IN = 0x81


@contextmanager
def key() -> Iterator[FidoHidDevice]:
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder) / "key.json"
        ctap2.new_fido_state(state, manufacturer_home=Path(folder) / "home")
        presence = ctap2.ButtonPresence()
        authenticator = ctap2.load_authenticator(state, presence, up_timeout=0.05)
        device = FidoHidDevice(authenticator, presence, "fuzz", transaction_timeout=0.02)
        try:
            yield device
        finally:
            device.close()


def drain(device: FidoHidDevice, wait: float = 0.0) -> list[bytes]:
    reports = []
    while (report := device.read_in(EP_IN, wait)) is not None:
        reports.append(report)
    return reports


def await_message(
    device: FidoHidDevice, cid: int, cmd: int, timeout: float = 2.0
) -> Message | None:
    """Read answers until ``cmd`` arrives on ``cid``; None if the key goes quiet first."""
    reassemblers: dict[int, Reassembler] = {}
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        report = device.read_in(EP_IN, remaining)
        if report is None:
            return None
        packet = parse_packet(report)
        message = reassemblers.setdefault(packet.cid, Reassembler()).feed(packet)
        if message is None or message.cid != cid:
            continue
        if message.cmd == cmd:
            return message
        if message.cmd == Cmd.ERROR:
            return None
    return None


def ping_works(device: FidoHidDevice) -> bool:
    """Allocate a channel and PING it, retrying while an earlier transaction ends."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        nonce = os.urandom(8)
        for report in encode_message(BROADCAST_CID, Cmd.INIT, nonce):
            device.out(EP_OUT, report)
        init = await_message(device, BROADCAST_CID, Cmd.INIT)
        if init is None or init.payload[:8] != nonce:
            continue  # busy (a transaction or a half message on another channel): retry
        cid = InitResponse.decode(init.payload).cid
        for report in encode_message(cid, Cmd.PING, b"still there?"):
            device.out(EP_OUT, report)
        ping = await_message(device, cid, Cmd.PING)
        return ping is not None and ping.payload == b"still there?"
    return False


cids = st.sampled_from([BROADCAST_CID, 0, 1, 0x01020304]) | st.integers(0, 0xFFFFFFFF)
commands = st.sampled_from([c.value for c in Cmd]) | st.integers(0, 0x7F)
init_packets = st.builds(
    lambda cid, cmd, length, data: InitPacket(cid, cmd, length, data).encode(),
    cids,
    commands,
    st.integers(0, 8000),
    st.binary(max_size=57),
)
cont_packets = st.builds(
    lambda cid, seq, data: ContPacket(cid, seq, data).encode(),
    cids,
    st.integers(0, 0x7F),
    st.binary(max_size=59),
)
raw_reports = st.binary(min_size=PACKET_SIZE, max_size=PACKET_SIZE)
wrong_size = st.binary(max_size=130).filter(lambda b: len(b) != PACKET_SIZE)
reports = st.lists(st.one_of(init_packets, cont_packets, raw_reports, wrong_size), max_size=12)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(sequence=reports)
def test_any_reports_get_well_formed_answers_and_key_recovers(sequence: list[bytes]) -> None:
    with key() as device:
        for report in sequence:
            device.out(EP_OUT, report)  # never raises
        for answer in drain(device, 0.03):
            assert len(answer) == PACKET_SIZE
            packet = parse_packet(answer)
            if isinstance(packet, InitPacket) and packet.cmd == Cmd.ERROR:
                assert packet.data[0] in {code.value for code in HidError}
        assert ping_works(device)


@settings(max_examples=60, deadline=None)
@given(payload=st.binary(min_size=1, max_size=1200))
def test_any_cbor_payload_gets_a_ctap_status(payload: bytes) -> None:
    with key() as device:
        nonce = os.urandom(8)
        for report in encode_message(BROADCAST_CID, Cmd.INIT, nonce):
            device.out(EP_OUT, report)
        init = await_message(device, BROADCAST_CID, Cmd.INIT)
        assert init is not None
        cid = InitResponse.decode(init.payload).cid
        for report in encode_message(cid, Cmd.CBOR, payload):
            device.out(EP_OUT, report)
        answer = await_message(device, cid, Cmd.CBOR, timeout=5)
        assert answer is not None, "the key never answered"
        assert answer.cid == cid
        assert answer.cmd == Cmd.CBOR
        assert len(answer.payload) >= 1  # a CTAP status byte, then any CBOR
