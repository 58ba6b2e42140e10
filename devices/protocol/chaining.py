"""Command chaining (CLA bit 0x10) and response chaining (61xx / GET RESPONSE), as small
processors over a ``send`` callable so both the host and the simulated card reuse them.
No I/O happens here: the caller supplies the function that moves bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from devices.protocol.apdu import (
    CLA_CHAINING,
    INS_GET_RESPONSE,
    SHORT_MAX_DATA,
    SHORT_MAX_LE,
    CommandApdu,
    ResponseApdu,
)
from devices.protocol.errors import MalformedApdu
from devices.protocol.sw import SW, bytes_remaining

Send = Callable[[CommandApdu], ResponseApdu]

# A bound on how much a card may return through GET RESPONSE, so a card that answers 61xx
# forever cannot make the host loop forever.
MAX_CHAINED_RESPONSE = 1 << 20
MAX_GET_RESPONSE_ROUNDS = MAX_CHAINED_RESPONSE // 256


def split_command(apdu: CommandApdu, chunk: int = SHORT_MAX_DATA) -> list[CommandApdu]:
    """The short APDUs that carry ``apdu`` with command chaining; one if it already fits."""
    if len(apdu.data) <= chunk and not apdu.needs_extended:
        return [apdu]
    pieces = [apdu.data[i : i + chunk] for i in range(0, len(apdu.data), chunk)] or [b""]
    out = []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        out.append(
            CommandApdu(
                apdu.cla if last else apdu.cla | CLA_CHAINING,
                apdu.ins,
                apdu.p1,
                apdu.p2,
                piece,
                le=min(apdu.le, SHORT_MAX_LE) if last and apdu.le is not None else None,
            )
        )
    return out


def transmit(send: Send, apdu: CommandApdu, *, extended: bool = False) -> ResponseApdu:
    """Send ``apdu`` with command chaining (unless ``extended``) and collect a chained
    response. Intermediate chain answers other than 9000 end the exchange at once."""
    parts = [apdu] if extended else split_command(apdu)
    response = ResponseApdu(b"", SW.SUCCESS)
    for part in parts:
        response = send(part)
        if part is not parts[-1] and not response.ok:
            return response
    return collect_response(send, response, cla=apdu.cla & ~CLA_CHAINING & 0xFF)


def collect_response(send: Send, first: ResponseApdu, *, cla: int = 0x00) -> ResponseApdu:
    """Follow 61xx with GET RESPONSE until the card has nothing more to say."""
    data = bytearray(first.data)
    response = first
    rounds = 0
    while response.more_data:
        le = response.sw2 or SHORT_MAX_LE
        response = send(CommandApdu(cla, INS_GET_RESPONSE, 0x00, 0x00, le=le))
        data += response.data
        rounds += 1
        # Both bounds: a card may also promise more data and then send none.
        if len(data) > MAX_CHAINED_RESPONSE or rounds > MAX_GET_RESPONSE_ROUNDS:
            raise MalformedApdu("the card's chained response does not end", field="sw")
    return ResponseApdu(bytes(data), response.sw)


# --- the card's side -------------------------------------------------------------------------


@dataclass
class CommandAssembler:
    """Joins a chain of commands on the card's side. ``feed`` returns the whole command when
    the chain is complete, or None when more parts must follow (answer those with 9000)."""

    max_length: int = 65535
    _head: CommandApdu | None = None
    _data: bytearray = field(default_factory=bytearray)

    def feed(self, apdu: CommandApdu) -> CommandApdu | None:
        if self._head is not None and (
            (apdu.ins, apdu.p1, apdu.p2) != (self._head.ins, self._head.p1, self._head.p2)
        ):
            # A new command interrupts a chain: the chain is abandoned (ISO 7816-4 5.3.3).
            self.reset()
        self._data += apdu.data
        if len(self._data) > self.max_length:
            self.reset()
            raise MalformedApdu("chained command too long", field="data")
        if apdu.chained:
            self._head = self._head or apdu
            return None
        whole = CommandApdu(
            apdu.cla & ~CLA_CHAINING & 0xFF,
            apdu.ins,
            apdu.p1,
            apdu.p2,
            bytes(self._data),
            le=apdu.le,
            extended=apdu.extended,
        )
        self.reset()
        return whole

    @property
    def in_progress(self) -> bool:
        return self._head is not None

    def reset(self) -> None:
        self._head = None
        self._data = bytearray()


@dataclass
class ResponseChunker:
    """Holds a long answer on the card's side and hands it out through 61xx / GET RESPONSE."""

    _pending: bytes = b""
    _sw: int = SW.SUCCESS

    def first(self, data: bytes, sw: int, le: int | None, *, extended: bool) -> ResponseApdu:
        limit = (le or 65536) if extended else min(le or SHORT_MAX_LE, SHORT_MAX_LE)
        if le is None and not extended:
            limit = SHORT_MAX_LE
        if len(data) <= limit:
            self._pending = b""
            return ResponseApdu(data, sw)
        self._pending, self._sw = data[limit:], sw
        return ResponseApdu(data[:limit], bytes_remaining(len(self._pending)))

    def get_response(self, le: int | None) -> ResponseApdu:
        if not self._pending:
            return ResponseApdu(b"", SW.CONDITIONS_NOT_SATISFIED)
        limit = min(le or SHORT_MAX_LE, SHORT_MAX_LE)
        chunk, self._pending = self._pending[:limit], self._pending[limit:]
        if self._pending:
            return ResponseApdu(chunk, bytes_remaining(len(self._pending)))
        return ResponseApdu(chunk, self._sw)

    def reset(self) -> None:
        self._pending = b""
