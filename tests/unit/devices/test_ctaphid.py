"""CTAPHID framing (devices.protocol.ctaphid, CTAP 2.1 §11.2).

The framing is checked byte by byte against the specification, and both directions are
checked against python-fido2's own framing: ``fido2.hid.CtapHidDevice`` talks to ``EchoToken``,
a tiny token whose receive side is our ``Reassembler`` and whose send side is our
``encode_message``. No mocks: fido2's real ``_do_call`` writes and reads every report.
"""

from __future__ import annotations

from collections import deque

import pytest
from fido2.ctap import STATUS, CtapError
from fido2.hid import CTAPHID, ConnectionFailure, CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor

from devices.errors import DeviceError, ProtocolError
from devices.protocol.ctaphid import (
    BROADCAST_CID,
    CONT_HEADER,
    CTAPHID_PROTOCOL_VERSION,
    INIT_HEADER,
    MAX_MESSAGE,
    MAX_SEQ,
    PACKET_SIZE,
    TYPE_INIT,
    Capability,
    Cmd,
    ContPacket,
    FrameError,
    HidError,
    InitPacket,
    InitResponse,
    KeepaliveStatus,
    MalformedFrame,
    Message,
    Reassembler,
    encode_message,
    max_message_size,
    parse_packet,
)

CID = 0x0102_0304
OTHER_CID = 0xA0B0_C0D0
ALLOCATED_CID = 0x1234_5678
NONCE = bytes.fromhex("0011223344556677")


def pattern(length: int, seed: int = 0) -> bytes:
    """Bytes where neighbours differ and no byte is zero, so a dropped, duplicated or
    reordered chunk, or padding mistaken for data, cannot go unnoticed."""
    return bytes(1 + (seed + i * 7 + i // 251) % 255 for i in range(length))


def packet_count(length: int, packet_size: int = PACKET_SIZE) -> int:
    first = packet_size - INIT_HEADER
    rest = packet_size - CONT_HEADER
    return 1 + max(0, -(-(length - first) // rest))


def feed_all(reassembler: Reassembler, reports: list[bytes]) -> list[Message | None]:
    return [reassembler.feed(parse_packet(report, reassembler.packet_size)) for report in reports]


def init_report(cid: int, cmd: int, length: int, data: bytes = b"") -> bytes:
    return InitPacket(cid, cmd, length, data).encode()


def cont_report(cid: int, seq: int, data: bytes = b"") -> bytes:
    return ContPacket(cid, seq, data).encode()


# --- constants -------------------------------------------------------------------------------


def test_max_message_is_7609_bytes_for_64_byte_reports() -> None:
    assert MAX_MESSAGE == 7609
    assert max_message_size(64) == 57 + 128 * 59
    assert max_message_size(32) == 25 + 128 * 27


# --- encode_message --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "packets"),
    [(0, 1), (1, 1), (57, 1), (58, 2), (116, 2), (117, 3), (1000, 17), (MAX_MESSAGE, 129)],
)
def test_encode_message_packet_count_and_size_ping(length: int, packets: int) -> None:
    reports = encode_message(CID, Cmd.PING, pattern(length))

    assert len(reports) == packets == packet_count(length)
    assert all(isinstance(report, bytes) for report in reports)
    assert [len(report) for report in reports] == [64] * packets


@pytest.mark.parametrize("length", [0, 57, 58, 116, 117, MAX_MESSAGE])
def test_encode_message_init_header_bytes_ping(length: int) -> None:
    first = encode_message(CID, Cmd.PING, pattern(length))[0]

    assert first[0:4] == bytes([0x01, 0x02, 0x03, 0x04])  # cid, big-endian
    assert first[4] == 0x81 == Cmd.PING | TYPE_INIT
    assert first[5:7] == length.to_bytes(2, "big")  # BCNT, big-endian
    assert first[7 : 7 + min(length, 57)] == pattern(length)[:57]


def test_encode_message_bcnt_of_max_message_is_big_endian() -> None:
    first = encode_message(CID, Cmd.CBOR, pattern(MAX_MESSAGE))[0]

    assert first[4] == 0x90
    assert first[5:7] == bytes([0x1D, 0xB9])  # 7609 = 0x1DB9


def test_encode_message_cid_big_endian_in_every_packet_broadcast() -> None:
    reports = encode_message(BROADCAST_CID, Cmd.INIT, NONCE)
    assert reports == [bytes.fromhex("ffffffff860008") + NONCE + bytes(49)]

    reports = encode_message(0xDEADBEEF, Cmd.PING, pattern(200))
    assert all(report[:4] == bytes.fromhex("deadbeef") for report in reports)


@pytest.mark.parametrize("length", [58, 116, 117, 1000, MAX_MESSAGE])
def test_encode_message_continuation_sequence_counts_from_zero_ping(length: int) -> None:
    reports = encode_message(CID, Cmd.PING, pattern(length))

    continuations = reports[1:]
    assert [report[4] for report in continuations] == list(range(len(continuations)))
    assert all(report[4] & TYPE_INIT == 0 for report in continuations)


def test_encode_message_sequence_reaches_max_seq_max_message() -> None:
    reports = encode_message(CID, Cmd.PING, pattern(MAX_MESSAGE))

    assert reports[-1][4] == MAX_SEQ == 127
    assert len(reports) - 1 == MAX_SEQ + 1


@pytest.mark.parametrize("length", [0, 1, 57, 58, 116, 117, 1000, MAX_MESSAGE])
def test_encode_message_data_split_in_order_ping(length: int) -> None:
    payload = pattern(length)
    reports = encode_message(CID, Cmd.PING, payload)

    joined = reports[0][7:] + b"".join(report[5:] for report in reports[1:])
    assert joined[:length] == payload


@pytest.mark.parametrize("length", [0, 1, 56, 57, 58, 100, 116, 117, 1000, MAX_MESSAGE])
def test_encode_message_pads_with_zeros_ping(length: int) -> None:
    payload = pattern(length)  # no zero bytes in the payload itself
    reports = encode_message(CID, Cmd.PING, payload)

    joined = reports[0][7:] + b"".join(report[5:] for report in reports[1:])
    assert joined[length:] == bytes(len(joined) - length)
    # All of the padding sits in the last packet.
    assert len(joined) - length < (59 if len(reports) > 1 else 58)


def test_encode_message_full_packets_have_no_padding_exact_fit() -> None:
    reports = encode_message(CID, Cmd.PING, pattern(57 + 59))

    assert len(reports) == 2
    assert 0 not in reports[0][7:]
    assert 0 not in reports[1][5:]


def test_encode_message_zero_length_is_header_then_zeros() -> None:
    assert encode_message(CID, Cmd.PING, b"") == [bytes.fromhex("01020304810000") + bytes(57)]


def test_encode_message_accepts_max_message_exactly() -> None:
    assert len(encode_message(CID, Cmd.PING, bytes(MAX_MESSAGE))) == 129


@pytest.mark.parametrize("length", [MAX_MESSAGE + 1, MAX_MESSAGE + 59, 65535])
def test_encode_message_raises_value_error_above_max_message(length: int) -> None:
    with pytest.raises(ValueError, match="7609"):
        encode_message(CID, Cmd.PING, bytes(length))


@pytest.mark.parametrize("packet_size", [8, 32, 48, 128])
def test_encode_message_other_packet_size_round_trips(packet_size: int) -> None:
    payload = pattern(max_message_size(packet_size) // 3)
    reports = encode_message(CID, Cmd.CBOR, payload, packet_size)

    assert len(reports) == packet_count(len(payload), packet_size)
    assert all(len(report) == packet_size for report in reports)
    assert reports[0][:7] == bytes.fromhex("01020304") + bytes([0x90]) + len(payload).to_bytes(
        2, "big"
    )
    assert [report[4] for report in reports[1:]] == list(range(len(reports) - 1))
    results = feed_all(Reassembler(packet_size=packet_size), reports)
    assert results[:-1] == [None] * (len(reports) - 1)
    assert results[-1] == Message(CID, Cmd.CBOR, payload)


def test_encode_message_other_packet_size_limits_message() -> None:
    limit = max_message_size(32)
    assert len(encode_message(CID, Cmd.PING, bytes(limit), 32)) == 129
    with pytest.raises(ValueError, match=str(limit)):
        encode_message(CID, Cmd.PING, bytes(limit + 1), 32)


def test_encode_message_128_byte_packets_hold_more() -> None:
    reports = encode_message(CID, Cmd.PING, pattern(121 + 123), 128)

    assert len(reports) == 2
    assert all(len(report) == 128 for report in reports)


# --- parse_packet ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 7, 63, 65, 128])
def test_parse_packet_raises_malformed_frame_wrong_size(size: int) -> None:
    with pytest.raises(MalformedFrame) as caught:
        parse_packet(bytes(size))

    assert caught.value.field == "length"
    assert str(size) in str(caught.value)
    assert isinstance(caught.value, ProtocolError)
    assert isinstance(caught.value, DeviceError)


def test_parse_packet_raises_malformed_frame_size_not_the_given_packet_size() -> None:
    with pytest.raises(MalformedFrame):
        parse_packet(bytes(64), packet_size=32)
    assert isinstance(parse_packet(bytes(32), packet_size=32), ContPacket)


def test_parse_packet_init_when_bit_7_set() -> None:
    raw = bytes.fromhex("01020304900123") + pattern(57)

    packet = parse_packet(raw)

    assert packet == InitPacket(cid=CID, cmd=Cmd.CBOR, length=0x0123, data=pattern(57))
    assert isinstance(packet.data, bytes)


def test_parse_packet_continuation_when_bit_7_clear() -> None:
    raw = bytes.fromhex("0102030405") + pattern(59)

    packet = parse_packet(raw)

    assert packet == ContPacket(cid=CID, seq=5, data=pattern(59))


@pytest.mark.parametrize(
    ("byte4", "expected"),
    [
        (0x00, ContPacket(CID, 0, bytes(59))),
        (0x7F, ContPacket(CID, 0x7F, bytes(59))),
        (0x80, InitPacket(CID, 0x00, 0, bytes(57))),
        (0xFF, InitPacket(CID, 0x7F, 0, bytes(57))),
    ],
)
def test_parse_packet_type_decided_by_bit_7_boundaries(
    byte4: int, expected: InitPacket | ContPacket
) -> None:
    assert parse_packet(bytes.fromhex("01020304") + bytes([byte4]) + bytes(59)) == expected


def test_parse_packet_accepts_bytearray() -> None:
    packet = parse_packet(bytearray(encode_message(CID, Cmd.PING, b"abc")[0]))

    assert packet == InitPacket(CID, Cmd.PING, 3, b"abc" + bytes(54))
    assert isinstance(packet.data, bytes)


def test_parse_packet_inverts_encode_init_and_continuation() -> None:
    init = InitPacket(BROADCAST_CID, Cmd.INIT, 8, NONCE + bytes(49))
    cont = ContPacket(OTHER_CID, 77, pattern(59))

    assert parse_packet(init.encode()) == init
    assert parse_packet(cont.encode()) == cont


# --- Reassembler -----------------------------------------------------------------------------


def test_reassembler_single_packet_message_returned_at_once() -> None:
    reassembler = Reassembler()

    message = reassembler.feed(parse_packet(encode_message(CID, Cmd.PING, b"hello")[0]))

    assert message == Message(CID, Cmd.PING, b"hello")
    assert reassembler.busy_cid is None


def test_reassembler_zero_length_message_returned_at_once() -> None:
    reassembler = Reassembler()

    assert reassembler.feed(parse_packet(init_report(CID, Cmd.WINK, 0, b"junk"))) == Message(
        CID, Cmd.WINK, b""
    )


def test_reassembler_ignores_padding_after_bcnt() -> None:
    reassembler = Reassembler()
    init = init_report(CID, Cmd.PING, 60, pattern(57, seed=1))
    cont = cont_report(CID, 0, pattern(59, seed=2))  # only 3 of these bytes are message

    assert reassembler.feed(parse_packet(init)) is None
    message = reassembler.feed(parse_packet(cont))

    assert message == Message(CID, Cmd.PING, pattern(57, seed=1) + pattern(3, seed=2))


@pytest.mark.parametrize("length", [58, 116, 117, 1000, MAX_MESSAGE])
def test_reassembler_multi_packet_message_returned_with_last_packet(length: int) -> None:
    payload = pattern(length)
    reports = encode_message(CID, Cmd.CBOR, payload)
    reassembler = Reassembler()

    for report in reports[:-1]:
        assert reassembler.feed(parse_packet(report)) is None
        assert reassembler.busy_cid == CID

    assert reassembler.feed(parse_packet(reports[-1])) == Message(CID, Cmd.CBOR, payload)
    assert reassembler.busy_cid is None


def test_reassembler_messages_back_to_back_on_different_channels() -> None:
    reassembler = Reassembler()
    first = encode_message(CID, Cmd.PING, pattern(300, seed=1))
    second = encode_message(OTHER_CID, Cmd.MSG, pattern(70, seed=2))

    assert feed_all(reassembler, first)[-1] == Message(CID, Cmd.PING, pattern(300, seed=1))
    assert feed_all(reassembler, second)[-1] == Message(OTHER_CID, Cmd.MSG, pattern(70, seed=2))


def test_reassembler_busy_cid_none_when_idle() -> None:
    assert Reassembler().busy_cid is None


def test_reassembler_busy_cid_names_half_received_channel() -> None:
    reassembler = Reassembler()
    reassembler.feed(parse_packet(encode_message(OTHER_CID, Cmd.PING, bytes(100))[0]))

    assert reassembler.busy_cid == OTHER_CID


@pytest.mark.parametrize("wrong_seq", [1, 2, 0x7F])
def test_reassembler_raises_invalid_seq_wrong_first_sequence(wrong_seq: int) -> None:
    reassembler = Reassembler()
    reassembler.feed(parse_packet(init_report(CID, Cmd.PING, 200, pattern(57))))

    with pytest.raises(FrameError) as caught:
        reassembler.feed(parse_packet(cont_report(CID, wrong_seq, pattern(59))))

    assert caught.value.code is HidError.INVALID_SEQ
    assert caught.value.cid == CID
    assert caught.value.field == "invalid_seq"
    assert f"sequence {wrong_seq}, expected 0" in str(caught.value)
    assert reassembler.busy_cid is None


def test_reassembler_raises_invalid_seq_repeated_sequence() -> None:
    reports = encode_message(CID, Cmd.PING, pattern(300))
    reassembler = Reassembler()
    feed_all(reassembler, reports[:3])  # init, seq 0, seq 1

    with pytest.raises(FrameError) as caught:
        reassembler.feed(parse_packet(reports[2]))  # seq 1 again

    assert caught.value.code is HidError.INVALID_SEQ
    assert caught.value.cid == CID
    assert "sequence 1, expected 2" in str(caught.value)


def test_reassembler_invalid_seq_abandons_message() -> None:
    reports = encode_message(CID, Cmd.PING, pattern(300))
    reassembler = Reassembler()
    feed_all(reassembler, reports[:2])

    with pytest.raises(FrameError):
        reassembler.feed(parse_packet(reports[3]))

    assert reassembler.busy_cid is None
    # The rest of the broken message is now stray and ignored.
    assert feed_all(reassembler, reports[2:]) == [None] * (len(reports) - 2)
    # A fresh message is taken normally.
    assert feed_all(reassembler, encode_message(CID, Cmd.PING, b"again")) == [
        Message(CID, Cmd.PING, b"again")
    ]


def test_reassembler_raises_channel_busy_init_on_other_channel() -> None:
    reports = encode_message(CID, Cmd.CBOR, pattern(200))
    reassembler = Reassembler()
    reassembler.feed(parse_packet(reports[0]))

    with pytest.raises(FrameError) as caught:
        reassembler.feed(parse_packet(encode_message(OTHER_CID, Cmd.PING, b"hi")[0]))

    assert caught.value.code is HidError.CHANNEL_BUSY
    assert caught.value.cid == OTHER_CID
    assert caught.value.field == "channel_busy"


def test_reassembler_raises_channel_busy_init_command_on_other_channel() -> None:
    reassembler = Reassembler()
    reassembler.feed(parse_packet(encode_message(CID, Cmd.CBOR, pattern(200))[0]))

    with pytest.raises(FrameError) as caught:
        reassembler.feed(parse_packet(encode_message(BROADCAST_CID, Cmd.INIT, NONCE)[0]))

    assert caught.value.code is HidError.CHANNEL_BUSY
    assert caught.value.cid == BROADCAST_CID


def test_reassembler_channel_busy_keeps_message_in_progress() -> None:
    payload = pattern(200)
    reports = encode_message(CID, Cmd.CBOR, payload)
    reassembler = Reassembler()
    reassembler.feed(parse_packet(reports[0]))
    reassembler.feed(parse_packet(reports[1]))

    with pytest.raises(FrameError):
        reassembler.feed(parse_packet(encode_message(OTHER_CID, Cmd.PING, b"hi")[0]))

    assert reassembler.busy_cid == CID
    assert feed_all(reassembler, reports[2:])[-1] == Message(CID, Cmd.CBOR, payload)


def test_reassembler_raises_channel_busy_continuation_on_other_channel() -> None:
    payload = pattern(200)
    reports = encode_message(CID, Cmd.CBOR, payload)
    reassembler = Reassembler()
    reassembler.feed(parse_packet(reports[0]))

    with pytest.raises(FrameError) as caught:
        reassembler.feed(parse_packet(cont_report(OTHER_CID, 0, pattern(59))))

    assert caught.value.code is HidError.CHANNEL_BUSY
    assert caught.value.cid == OTHER_CID
    assert reassembler.busy_cid == CID
    assert feed_all(reassembler, reports[1:])[-1] == Message(CID, Cmd.CBOR, payload)


@pytest.mark.parametrize("seq", [0, 1, 0x7F])
def test_reassembler_returns_none_stray_continuation_when_idle(seq: int) -> None:
    reassembler = Reassembler()

    assert reassembler.feed(parse_packet(cont_report(CID, seq, pattern(59)))) is None
    assert reassembler.busy_cid is None
    assert feed_all(reassembler, encode_message(CID, Cmd.PING, b"ok")) == [
        Message(CID, Cmd.PING, b"ok")
    ]


def test_reassembler_returns_none_stray_continuation_after_complete_message() -> None:
    reports = encode_message(CID, Cmd.PING, pattern(100))
    reassembler = Reassembler()
    assert feed_all(reassembler, reports)[-1] is not None

    assert reassembler.feed(parse_packet(reports[-1])) is None  # duplicate of the last packet
    assert reassembler.busy_cid is None


@pytest.mark.parametrize("length", [MAX_MESSAGE + 1, 0x2000, 0xFFFF])
def test_reassembler_raises_invalid_len_bcnt_above_max(length: int) -> None:
    reassembler = Reassembler()

    with pytest.raises(FrameError) as caught:
        reassembler.feed(parse_packet(init_report(CID, Cmd.PING, length, pattern(57))))

    assert caught.value.code is HidError.INVALID_LEN
    assert caught.value.cid == CID
    assert caught.value.field == "invalid_len"
    assert str(length) in str(caught.value)
    assert reassembler.busy_cid is None


def test_reassembler_accepts_bcnt_of_max_message() -> None:
    reassembler = Reassembler()

    assert reassembler.feed(parse_packet(init_report(CID, Cmd.PING, MAX_MESSAGE))) is None
    assert reassembler.busy_cid == CID


def test_reassembler_invalid_len_uses_own_packet_size() -> None:
    limit = max_message_size(32)
    reassembler = Reassembler(packet_size=32)
    too_long = InitPacket(CID, Cmd.PING, limit + 1, bytes(25)).encode(32)

    with pytest.raises(FrameError) as caught:
        reassembler.feed(parse_packet(too_long, 32))

    assert caught.value.code is HidError.INVALID_LEN
    assert reassembler.feed(parse_packet(InitPacket(CID, 1, limit, b"").encode(32), 32)) is None


def test_reassembler_resynchronises_init_mid_message_same_channel() -> None:
    reports = encode_message(CID, Cmd.CBOR, pattern(300))
    reassembler = Reassembler()
    feed_all(reassembler, reports[:2])

    message = reassembler.feed(parse_packet(encode_message(CID, Cmd.INIT, NONCE)[0]))

    assert message == Message(CID, Cmd.INIT, NONCE)
    assert reassembler.busy_cid is None
    # The abandoned message's remaining packets are stray now.
    assert feed_all(reassembler, reports[2:]) == [None] * (len(reports) - 2)


def test_reassembler_resynchronising_init_can_span_packets() -> None:
    reassembler = Reassembler()
    reassembler.feed(parse_packet(encode_message(CID, Cmd.CBOR, pattern(300))[0]))
    payload = pattern(80, seed=9)

    results = feed_all(reassembler, encode_message(CID, Cmd.INIT, payload))

    assert results == [None, Message(CID, Cmd.INIT, payload)]


@pytest.mark.parametrize("cmd", [Cmd.PING, Cmd.CBOR, Cmd.MSG, Cmd.CANCEL, 0x40])
def test_reassembler_raises_invalid_seq_other_command_mid_message_same_channel(
    cmd: int,
) -> None:
    reassembler = Reassembler()
    reassembler.feed(parse_packet(encode_message(CID, Cmd.CBOR, pattern(300))[0]))

    with pytest.raises(FrameError) as caught:
        reassembler.feed(parse_packet(encode_message(CID, cmd, b"x")[0]))

    assert caught.value.code is HidError.INVALID_SEQ
    assert caught.value.cid == CID
    assert reassembler.busy_cid is None


def test_reassembler_reset_clears_message_in_progress() -> None:
    reports = encode_message(CID, Cmd.PING, pattern(300))
    reassembler = Reassembler()
    feed_all(reassembler, reports[:3])

    reassembler.reset()

    assert reassembler.busy_cid is None
    assert reassembler.feed(parse_packet(reports[3])) is None  # stray now
    # Another channel is no longer refused, and nothing of the old message leaks in.
    assert feed_all(reassembler, encode_message(OTHER_CID, Cmd.PING, pattern(60, seed=3))) == [
        None,
        Message(OTHER_CID, Cmd.PING, pattern(60, seed=3)),
    ]


def test_reassembler_reset_when_idle_is_harmless() -> None:
    reassembler = Reassembler()
    reassembler.reset()

    assert reassembler.busy_cid is None
    assert feed_all(reassembler, encode_message(CID, Cmd.PING, b"z")) == [
        Message(CID, Cmd.PING, b"z")
    ]


def test_frame_error_is_protocol_error_with_code_and_cid() -> None:
    error = FrameError(HidError.MSG_TIMEOUT, OTHER_CID, "too slow")

    assert isinstance(error, ProtocolError)
    assert error.code is HidError.MSG_TIMEOUT
    assert error.cid == OTHER_CID
    assert error.field == "msg_timeout"
    assert str(error) == "too slow"


# --- InitResponse ----------------------------------------------------------------------------


def test_init_response_encode_layout() -> None:
    response = InitResponse(
        NONCE, ALLOCATED_CID, CTAPHID_PROTOCOL_VERSION, (5, 4, 3), Capability.CBOR | Capability.WINK
    )

    assert response.encode() == NONCE + bytes.fromhex("12345678") + bytes([2, 5, 4, 3, 0x05])


def test_init_response_decode_inverts_encode() -> None:
    response = InitResponse(
        NONCE, ALLOCATED_CID, 2, (1, 2, 3), Capability.CBOR | Capability.WINK | Capability.NMSG
    )

    decoded = InitResponse.decode(response.encode())

    assert decoded == response
    assert isinstance(decoded.capabilities, Capability)
    assert isinstance(decoded.nonce, bytes)


def test_init_response_decode_ignores_trailing_bytes() -> None:
    payload = NONCE + bytes.fromhex("cafef00d") + bytes([2, 9, 8, 7, 0x04]) + b"extra"

    decoded = InitResponse.decode(payload)

    assert decoded == InitResponse(NONCE, 0xCAFEF00D, 2, (9, 8, 7), Capability.CBOR)


def test_init_response_decode_keeps_unknown_capability_bits() -> None:
    payload = NONCE + bytes(4) + bytes([2, 0, 0, 0, 0x0F])

    assert int(InitResponse.decode(payload).capabilities) == 0x0F


@pytest.mark.parametrize("length", [0, 8, 16])
def test_init_response_decode_raises_protocol_error_short_payload(length: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        InitResponse.decode(bytes(length))

    assert caught.value.field == "init"
    assert f"{length} bytes" in str(caught.value)


def test_init_response_travels_in_one_packet_on_broadcast_channel() -> None:
    payload = InitResponse(NONCE, ALLOCATED_CID, 2, (1, 0, 0), Capability.CBOR).encode()
    reports = encode_message(BROADCAST_CID, Cmd.INIT, payload)

    assert len(reports) == 1
    message = Reassembler().feed(parse_packet(reports[0]))
    assert message is not None
    assert InitResponse.decode(message.payload).cid == ALLOCATED_CID


# --- interop with python-fido2's own framing -------------------------------------------------


class EchoToken(CtapHidConnection):
    """A token at the far end of python-fido2's ``CtapHidDevice``.

    Every report fido2 writes goes through our ``parse_packet`` and ``Reassembler``; every
    report fido2 reads was made by our ``encode_message``. It answers INIT on the broadcast
    channel with our ``InitResponse`` and echoes PING on the channel it allocated."""

    def __init__(
        self,
        *,
        allocated_cid: int = ALLOCATED_CID,
        keepalive: KeepaliveStatus | None = None,
        corrupt_nonce: bool = False,
    ) -> None:
        self.allocated_cid = allocated_cid
        self.keepalive = keepalive
        self.corrupt_nonce = corrupt_nonce
        self.reassembler = Reassembler()
        self.written: list[bytes] = []
        self.received: list[Message] = []
        self.errors: list[FrameError] = []
        self.outbox: deque[bytes] = deque()
        self.closed = False

    def write_packet(self, data: bytes) -> None:
        self.written.append(bytes(data))
        try:
            message = self.reassembler.feed(parse_packet(data))
        except FrameError as error:
            self.errors.append(error)
            self.outbox.extend(encode_message(error.cid, Cmd.ERROR, bytes([error.code])))
            return
        if message is not None:
            self.received.append(message)
            self.outbox.extend(self._answer(message))

    def read_packet(self) -> bytes:
        if not self.outbox:
            raise AssertionError("the host read a report the token never sent")
        return self.outbox.popleft()

    def close(self) -> None:
        self.closed = True

    def _answer(self, message: Message) -> list[bytes]:
        if message.cmd == Cmd.INIT and message.cid == BROADCAST_CID:
            nonce = (
                bytes(b ^ 0xFF for b in message.payload) if self.corrupt_nonce else message.payload
            )
            response = InitResponse(
                nonce,
                self.allocated_cid,
                CTAPHID_PROTOCOL_VERSION,
                (5, 4, 3),
                Capability.WINK | Capability.CBOR,
            )
            return encode_message(BROADCAST_CID, Cmd.INIT, response.encode())
        if message.cid != self.allocated_cid:
            return encode_message(message.cid, Cmd.ERROR, bytes([HidError.INVALID_CHANNEL]))
        if message.cmd == Cmd.PING:
            reports = []
            if self.keepalive is not None:
                reports += encode_message(message.cid, Cmd.KEEPALIVE, bytes([self.keepalive]))
            return reports + encode_message(message.cid, Cmd.PING, message.payload)
        return encode_message(message.cid, Cmd.ERROR, bytes([HidError.INVALID_CMD]))


DESCRIPTOR = HidDescriptor("in-test echo token", 0x1209, 0x0001, 64, 64, "Echo", None)


def open_fido2(token: EchoToken) -> CtapHidDevice:
    return CtapHidDevice(DESCRIPTOR, token)


def test_fido2_init_nonce_check_passes_with_our_init_response() -> None:
    token = EchoToken()

    device = open_fido2(token)

    # fido2 sent an 8-byte nonce on the broadcast channel, framed as we parse it...
    assert len(token.written) == 1
    assert token.received == [Message(BROADCAST_CID, Cmd.INIT, token.received[0].payload)]
    assert len(token.received[0].payload) == 8
    # ...and took our answer: nonce matched, allocated channel and versions decoded.
    assert device.version == CTAPHID_PROTOCOL_VERSION
    assert device.device_version == (5, 4, 3)
    assert device.capabilities == Capability.WINK | Capability.CBOR
    assert not token.outbox


def test_fido2_init_fails_nonce_check_wrong_nonce() -> None:
    with pytest.raises(ConnectionFailure, match="nonce"):
        open_fido2(EchoToken(corrupt_nonce=True))


def test_fido2_written_init_equals_encode_message() -> None:
    token = EchoToken()
    open_fido2(token)

    nonce = token.received[0].payload
    assert token.written == encode_message(BROADCAST_CID, Cmd.INIT, nonce)


def test_fido2_uses_allocated_channel_after_init() -> None:
    token = EchoToken(allocated_cid=0xFEDC_BA98)
    device = open_fido2(token)

    assert device.ping(b"channel?") == b"channel?"
    assert token.received[-1] == Message(0xFEDC_BA98, Cmd.PING, b"channel?")
    assert all(report[:4] == bytes.fromhex("fedcba98") for report in token.written[1:])


def test_fido2_ping_of_1000_bytes_round_trips() -> None:
    payload = pattern(1000, seed=42)
    token = EchoToken()
    device = open_fido2(token)
    token.written.clear()

    echoed = device.ping(payload)

    assert echoed == payload
    assert len(token.written) == 17  # 57 + 16 * 59 >= 1000
    assert token.received[-1] == Message(ALLOCATED_CID, Cmd.PING, payload)
    assert token.errors == []
    assert not token.outbox  # fido2 read exactly the reports we sent, no more, no fewer


@pytest.mark.parametrize("length", [0, 1, 57, 58, 116, 117, 1000, MAX_MESSAGE])
def test_fido2_ping_round_trips_boundary_lengths(length: int) -> None:
    payload = pattern(length, seed=length)
    token = EchoToken()
    device = open_fido2(token)
    token.written.clear()

    assert device.ping(payload) == payload
    assert len(token.written) == packet_count(length)
    assert token.received[-1] == Message(ALLOCATED_CID, Cmd.PING, payload)
    assert not token.outbox


@pytest.mark.parametrize("length", [0, 57, 58, 1000, MAX_MESSAGE])
def test_fido2_written_reports_equal_encode_message_byte_for_byte(length: int) -> None:
    payload = pattern(length, seed=7)
    token = EchoToken()
    device = open_fido2(token)
    token.written.clear()

    device.ping(payload)

    assert token.written == encode_message(ALLOCATED_CID, Cmd.PING, payload)


def test_fido2_reads_our_keepalive_then_answer() -> None:
    token = EchoToken(keepalive=KeepaliveStatus.UP_NEEDED)
    device = open_fido2(token)
    statuses: list[STATUS] = []

    echoed = device.call(CTAPHID.PING, pattern(300), on_keepalive=statuses.append)

    assert echoed == pattern(300)
    assert statuses == [STATUS.UPNEEDED]
    assert not token.outbox


def test_fido2_raises_ctap_error_our_error_frame() -> None:
    token = EchoToken()
    device = open_fido2(token)

    with pytest.raises(CtapError) as caught:
        device.wink()  # the echo token knows only INIT and PING

    assert caught.value.code == CtapError.ERR.INVALID_COMMAND == HidError.INVALID_CMD
    assert token.received[-1] == Message(ALLOCATED_CID, Cmd.WINK, b"")


def test_fido2_oversized_ping_refused_with_invalid_len() -> None:
    token = EchoToken()
    device = open_fido2(token)
    token.written.clear()

    with pytest.raises(CtapError) as caught:
        device.ping(bytes(MAX_MESSAGE + 1))

    assert caught.value.code == CtapError.ERR.INVALID_LENGTH == HidError.INVALID_LEN
    # fido2 still wrote every continuation (its sequence wraps past 127); the reassembler
    # refused the initialization packet and ignored the rest as stray.
    assert len(token.written) == 1 + 129
    assert [error.code for error in token.errors] == [HidError.INVALID_LEN]
    assert token.errors[0].cid == ALLOCATED_CID
    assert token.reassembler.busy_cid is None
    # The channel still works afterwards.
    assert device.ping(b"after") == b"after"
