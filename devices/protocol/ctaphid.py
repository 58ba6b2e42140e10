"""CTAPHID framing (CTAP 2.1 §11.2), both directions, with no I/O.

A message travels as one initialization packet (channel, command with bit 7 set, 2-byte
length, up to 57 bytes of data) and up to 128 continuation packets (channel, sequence
0..127, up to 59 bytes). The host driver and the simulated token share this module.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag, unique

from devices.protocol.errors import ProtocolError

PACKET_SIZE = 64
BROADCAST_CID = 0xFFFFFFFF
TYPE_INIT = 0x80
INIT_HEADER = 7  # cid(4) + cmd(1) + bcnt(2)
CONT_HEADER = 5  # cid(4) + seq(1)
MAX_SEQ = 0x7F
INIT_NONCE_SIZE = 8
CTAPHID_PROTOCOL_VERSION = 2


def max_message_size(packet_size: int = PACKET_SIZE) -> int:
    return (packet_size - INIT_HEADER) + (MAX_SEQ + 1) * (packet_size - CONT_HEADER)


MAX_MESSAGE = max_message_size()  # 7609 bytes with 64-byte reports


@unique
class Cmd(IntEnum):
    PING = 0x01
    MSG = 0x03
    LOCK = 0x04
    INIT = 0x06
    WINK = 0x08
    CBOR = 0x10
    CANCEL = 0x11
    KEEPALIVE = 0x3B
    ERROR = 0x3F


@unique
class HidError(IntEnum):
    INVALID_CMD = 0x01
    INVALID_PAR = 0x02
    INVALID_LEN = 0x03
    INVALID_SEQ = 0x04
    MSG_TIMEOUT = 0x05
    CHANNEL_BUSY = 0x06
    LOCK_REQUIRED = 0x0A
    INVALID_CHANNEL = 0x0B
    OTHER = 0x7F


@unique
class KeepaliveStatus(IntEnum):
    PROCESSING = 0x01
    UP_NEEDED = 0x02


class Capability(IntFlag):
    WINK = 0x01
    CBOR = 0x04
    NMSG = 0x08


class MalformedFrame(ProtocolError):
    """A report that is not a CTAPHID packet at all (wrong size)."""


class FrameError(ProtocolError):
    """A packet that breaks CTAPHID's rules; ``code`` is the ERROR the token answers with and
    ``cid`` the channel to answer on."""

    def __init__(self, code: HidError, cid: int, message: str) -> None:
        super().__init__(message, field=code.name.lower())
        self.code = code
        self.cid = cid


@dataclass(frozen=True, slots=True)
class InitPacket:
    cid: int
    cmd: int  # without the TYPE_INIT bit
    length: int  # BCNT: the whole message's length
    data: bytes  # this packet's share of the message

    def encode(self, packet_size: int = PACKET_SIZE) -> bytes:
        header = struct.pack(">IBH", self.cid, TYPE_INIT | self.cmd, self.length)
        return (header + self.data).ljust(packet_size, b"\0")


@dataclass(frozen=True, slots=True)
class ContPacket:
    cid: int
    seq: int
    data: bytes

    def encode(self, packet_size: int = PACKET_SIZE) -> bytes:
        return (struct.pack(">IB", self.cid, self.seq) + self.data).ljust(packet_size, b"\0")


Packet = InitPacket | ContPacket


def parse_packet(raw: bytes, packet_size: int = PACKET_SIZE) -> Packet:
    """One report as a packet. Only the size is checked here; the rules across packets are
    the ``Reassembler``'s."""
    if len(raw) != packet_size:
        raise MalformedFrame(
            f"a CTAPHID report is {packet_size} bytes, got {len(raw)}", field="length"
        )
    cid = int.from_bytes(raw[:4], "big")
    if raw[4] & TYPE_INIT:
        length = int.from_bytes(raw[5:7], "big")
        return InitPacket(cid, raw[4] & 0x7F, length, bytes(raw[INIT_HEADER:]))
    return ContPacket(cid, raw[4], bytes(raw[CONT_HEADER:]))


def encode_message(
    cid: int, cmd: int, payload: bytes, packet_size: int = PACKET_SIZE
) -> list[bytes]:
    """The reports that carry one message."""
    if len(payload) > max_message_size(packet_size):
        raise ValueError(f"a CTAPHID message holds at most {max_message_size(packet_size)} bytes")
    first = packet_size - INIT_HEADER
    rest = packet_size - CONT_HEADER
    packets = [InitPacket(cid, cmd, len(payload), payload[:first]).encode(packet_size)]
    offset, seq = first, 0
    while offset < len(payload):
        packets.append(ContPacket(cid, seq, payload[offset : offset + rest]).encode(packet_size))
        offset += rest
        seq += 1
    return packets


@dataclass(frozen=True, slots=True)
class Message:
    cid: int
    cmd: int
    payload: bytes


@dataclass
class Reassembler:
    """Joins packets into messages for one receiver. ``feed`` returns a whole message, None
    while one is still arriving, or raises ``FrameError`` with the code to answer.

    The token side answers CHANNEL_BUSY for an initialization packet on another channel while
    a message is arriving. A host checks the channel of each message it gets back itself."""

    packet_size: int = PACKET_SIZE
    _cid: int | None = None
    _cmd: int = 0
    _length: int = 0
    _seq: int = 0
    _data: bytearray = field(default_factory=bytearray)

    @property
    def busy_cid(self) -> int | None:
        """The channel whose message is half received, if any."""
        return self._cid

    def reset(self) -> None:
        self._cid = None
        self._data = bytearray()

    def feed(self, packet: Packet) -> Message | None:
        if isinstance(packet, InitPacket):
            return self._start(packet)
        return self._continue(packet)

    def _start(self, packet: InitPacket) -> Message | None:
        if self._cid is not None and packet.cid != self._cid:
            raise FrameError(HidError.CHANNEL_BUSY, packet.cid, "another channel is sending")
        # A new initialization packet on the same channel abandons the message before it
        # (CTAP 2.1 §11.2.4 allows a resynchronising INIT), except that anything but INIT
        # in the middle of a message is a sequence error.
        if self._cid is not None and packet.cmd != Cmd.INIT:
            self.reset()
            raise FrameError(HidError.INVALID_SEQ, packet.cid, "new message inside a message")
        self.reset()
        if packet.length > max_message_size(self.packet_size):
            raise FrameError(HidError.INVALID_LEN, packet.cid, f"length {packet.length} too long")
        self._cid, self._cmd, self._length, self._seq = packet.cid, packet.cmd, packet.length, 0
        self._data = bytearray(packet.data[: packet.length])
        return self._maybe_done()

    def _continue(self, packet: ContPacket) -> Message | None:
        if self._cid is None:
            # A stray continuation packet is ignored, as the spec says for the token side;
            # callers that must answer it can check busy_cid themselves.
            return None
        if packet.cid != self._cid:
            raise FrameError(HidError.CHANNEL_BUSY, packet.cid, "another channel is sending")
        if packet.seq != self._seq:
            cid = self._cid
            self.reset()
            raise FrameError(
                HidError.INVALID_SEQ, cid, f"sequence {packet.seq}, expected {self._seq}"
            )
        self._seq += 1
        self._data += packet.data[: self._length - len(self._data)]
        return self._maybe_done()

    def _maybe_done(self) -> Message | None:
        if self._cid is None or len(self._data) < self._length:
            return None
        message = Message(self._cid, self._cmd, bytes(self._data))
        self.reset()
        return message


@dataclass(frozen=True, slots=True)
class InitResponse:
    """The payload answering CTAPHID_INIT."""

    nonce: bytes
    cid: int
    protocol_version: int
    device_version: tuple[int, int, int]
    capabilities: Capability

    def encode(self) -> bytes:
        return self.nonce + struct.pack(
            ">IBBBBB", self.cid, self.protocol_version, *self.device_version, self.capabilities
        )

    @classmethod
    def decode(cls, payload: bytes) -> InitResponse:
        if len(payload) < 17:
            raise ProtocolError(f"INIT response of {len(payload)} bytes, 17 expected", field="init")
        cid, version, major, minor, build, caps = struct.unpack_from(">IBBBBB", payload, 8)
        return cls(payload[:8], cid, version, (major, minor, build), Capability(caps))
