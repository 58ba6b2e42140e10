"""Property tests: CTAPHID framing (devices.protocol.ctaphid) on arbitrary and near-valid
reports."""

from __future__ import annotations

import copy
import hashlib

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from devices.protocol.ctaphid import (
    BROADCAST_CID,
    MAX_MESSAGE,
    PACKET_SIZE,
    TYPE_INIT,
    Cmd,
    ContPacket,
    FrameError,
    HidError,
    InitPacket,
    MalformedFrame,
    Message,
    Reassembler,
    encode_message,
    max_message_size,
    parse_packet,
)

FUZZ = settings(max_examples=300, deadline=None)

# A few channels, so that collisions (same channel, other channel) are common.
CIDS = [0x0000_0001, 0x0102_0304, 0xA0B0_C0D0, BROADCAST_CID]
cids = st.sampled_from(CIDS) | st.integers(0, 0xFFFF_FFFF)
cmds = st.integers(0, 0x7F) | st.sampled_from([int(cmd) for cmd in Cmd])


@st.composite
def payloads(draw: st.DrawFn, max_size: int = MAX_MESSAGE) -> bytes:
    """Any length up to ``max_size``, boundaries drawn often. Long payloads are expanded from a
    drawn seed, since drawing thousands of bytes one by one would overrun Hypothesis' buffer."""
    boundaries = [0, 1, 56, 57, 58, 115, 116, 117, max_size - 1, max_size]
    length = draw(
        st.sampled_from([n for n in boundaries if 0 <= n <= max_size])
        | st.integers(0, min(200, max_size))
        | st.integers(0, max_size)
    )
    if length <= 64:
        return draw(st.binary(min_size=length, max_size=length))
    return hashlib.shake_256(draw(st.binary(min_size=1, max_size=16))).digest(length)


@st.composite
def near_valid_reports(draw: st.DrawFn) -> bytes:
    """A 64-byte report whose header is plausible: a known channel, an INIT/PING/... command
    or a small sequence number, a length around the packet boundaries or the limit."""
    cid = draw(st.sampled_from(CIDS))
    body_size = PACKET_SIZE - (7 if draw(st.booleans()) else 5)
    body = draw(st.binary(max_size=body_size))
    if body_size == 57:
        cmd = draw(st.sampled_from([int(cmd) for cmd in Cmd]) | st.integers(0, 0x7F))
        length = draw(
            st.sampled_from([0, 1, 57, 58, 116, 117, MAX_MESSAGE, MAX_MESSAGE + 1, 0xFFFF])
            | st.integers(0, 300)
        )
        return InitPacket(cid, cmd, length, body).encode()
    seq = draw(st.integers(0, 4) | st.integers(0, 0x7F))
    return ContPacket(cid, seq, body).encode()


reports = st.binary(min_size=PACKET_SIZE, max_size=PACKET_SIZE) | near_valid_reports()


@st.composite
def valid_messages(draw: st.DrawFn) -> Message:
    return Message(draw(cids), draw(cmds), draw(payloads(max_size=400)))


def deliver(reassembler: Reassembler, message: Message) -> list[Message | None]:
    return [
        reassembler.feed(parse_packet(report))
        for report in encode_message(message.cid, message.cmd, message.payload)
    ]


def check_accepts_fresh_message_after(
    error: FrameError,
    reassembler: Reassembler,
    packet: InitPacket | ContPacket,
    busy_before: int | None,
    fresh: Message,
    data: st.DataObject,
) -> None:
    """After ``error``, the reassembler still takes a fresh valid message (checked on copies,
    so the caller's sequence of reports goes on against the real state)."""
    assert isinstance(error.code, HidError)
    assert error.code in {HidError.INVALID_SEQ, HidError.CHANNEL_BUSY, HidError.INVALID_LEN}
    assert error.cid == packet.cid
    if error.code is HidError.CHANNEL_BUSY:
        # The other channel's message is kept, not abandoned (CTAP 2.1 §11.2.4) ...
        assert busy_before is not None
        assert busy_before != packet.cid
        assert reassembler.busy_cid == busy_before
        # ... so a fresh message is an INIT resynchronising that channel, or comes after
        # reset() (what a token does when the transaction times out).
        resync = copy.deepcopy(reassembler)
        init = Message(busy_before, Cmd.INIT, data.draw(st.binary(max_size=100)))
        assert deliver(resync, init)[-1] == init
        cleared = copy.deepcopy(reassembler)
        cleared.reset()
        assert deliver(cleared, fresh)[-1] == fresh
    else:
        # INVALID_SEQ and INVALID_LEN leave the reassembler idle: anything is accepted.
        assert reassembler.busy_cid is None
        assert deliver(copy.deepcopy(reassembler), fresh)[-1] == fresh


# --- (a) any reports into one Reassembler ----------------------------------------------------


@FUZZ
@given(st.lists(reports, max_size=40), valid_messages(), st.data())
def test_reassembler_only_returns_message_none_or_frame_error_any_reports(
    raw_reports: list[bytes], fresh: Message, data: st.DataObject
) -> None:
    reassembler = Reassembler()
    for raw in raw_reports:
        packet = parse_packet(raw)
        busy_before = reassembler.busy_cid
        error: FrameError | None = None
        result: Message | None = None
        try:
            result = reassembler.feed(packet)
        except FrameError as caught:  # any other exception fails the test
            error = caught
        if error is not None:
            event(f"FrameError {error.code.name}")
            check_accepts_fresh_message_after(error, reassembler, packet, busy_before, fresh, data)
            continue
        assert result is None or isinstance(result, Message)
        if isinstance(result, Message):
            event("Message returned")
            assert result.cid == packet.cid
            assert 0 <= result.cmd <= 0x7F
            assert len(result.payload) <= MAX_MESSAGE
            assert reassembler.busy_cid is None
        elif isinstance(packet, InitPacket):
            assert reassembler.busy_cid == packet.cid
        else:
            assert reassembler.busy_cid in {None, packet.cid}
            assert reassembler.busy_cid == busy_before

    # Whatever came before, a reset reassembler takes any valid message.
    reassembler.reset()
    results = deliver(reassembler, fresh)
    assert results[-1] == fresh
    assert all(result is None for result in results[:-1])


@FUZZ
@given(valid_messages(), st.lists(reports, max_size=10), valid_messages())
def test_reassembler_completes_message_after_noise_and_reset(
    first: Message, noise: list[bytes], second: Message
) -> None:
    reassembler = Reassembler()
    assert deliver(reassembler, first)[-1] == first
    for raw in noise:
        try:
            reassembler.feed(parse_packet(raw))
        except FrameError:
            pass
    reassembler.reset()

    assert deliver(reassembler, second)[-1] == second


# --- (b) encode_message -> parse_packet -> Reassembler ---------------------------------------


@FUZZ
@given(st.integers(0, 0xFFFF_FFFF), st.integers(0, 0x7F), payloads())
def test_encode_parse_reassemble_round_trips_any_message(
    cid: int, cmd: int, payload: bytes
) -> None:
    encoded = encode_message(cid, cmd, payload)
    assert all(len(report) == PACKET_SIZE for report in encoded)
    assert len(encoded) <= 129

    packets = [parse_packet(report) for report in encoded]
    assert packets[0] == InitPacket(cid, cmd, len(payload), packets[0].data)
    assert [p.seq for p in packets[1:] if isinstance(p, ContPacket)] == list(
        range(len(packets) - 1)
    )

    reassembler = Reassembler()
    results = [reassembler.feed(packet) for packet in packets]
    assert results[:-1] == [None] * (len(packets) - 1)
    assert results[-1] == Message(cid, cmd, payload)
    assert reassembler.busy_cid is None


@FUZZ
@given(st.sampled_from([8, 16, 32, 48, 64, 128]), st.integers(0, 0xFFFF_FFFF), cmds, st.data())
def test_encode_parse_reassemble_round_trips_any_packet_size(
    packet_size: int, cid: int, cmd: int, data: st.DataObject
) -> None:
    payload = data.draw(payloads(max_size=max_message_size(packet_size)))
    encoded = encode_message(cid, cmd, payload, packet_size)
    assert all(len(report) == packet_size for report in encoded)

    reassembler = Reassembler(packet_size=packet_size)
    results = [reassembler.feed(parse_packet(report, packet_size)) for report in encoded]

    assert results[-1] == Message(cid, cmd, payload)
    assert results[:-1] == [None] * (len(encoded) - 1)


@FUZZ
@given(st.integers(0, 0xFFFF_FFFF), cmds, st.integers(MAX_MESSAGE + 1, 0xFFFF))
def test_encode_message_refuses_any_length_above_max(cid: int, cmd: int, length: int) -> None:
    with pytest.raises(ValueError, match="at most"):
        encode_message(cid, cmd, bytes(length))


# --- (c) parse_packet on arbitrary bytes -----------------------------------------------------


@FUZZ
@given(st.binary(max_size=200) | st.binary(min_size=60, max_size=68))
def test_parse_packet_raises_only_malformed_frame_any_bytes(raw: bytes) -> None:
    if len(raw) != PACKET_SIZE:
        with pytest.raises(MalformedFrame) as caught:  # any other exception fails the test
            parse_packet(raw)
        assert caught.value.field == "length"
        return
    packet = parse_packet(raw)
    assert len(raw) == PACKET_SIZE
    assert isinstance(packet, InitPacket | ContPacket)
    assert isinstance(packet, InitPacket) == bool(raw[4] & TYPE_INIT)
    assert packet.cid == int.from_bytes(raw[:4], "big")
    # A parsed report re-encodes to exactly the same bytes.
    assert packet.encode() == raw


@FUZZ
@given(st.binary(min_size=PACKET_SIZE, max_size=PACKET_SIZE))
def test_parse_packet_splits_header_and_data_any_64_byte_report(raw: bytes) -> None:
    packet = parse_packet(raw)

    if isinstance(packet, InitPacket):
        assert packet.cmd == raw[4] & 0x7F
        assert packet.length == int.from_bytes(raw[5:7], "big")
        assert packet.data == raw[7:]
    else:
        assert packet.seq == raw[4] <= 0x7F
        assert packet.data == raw[5:]
