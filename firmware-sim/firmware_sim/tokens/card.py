"""An ISO 7816-4 smartcard runtime: APDU parsing, command and response chaining, application
selection by AID, and the mapping of every failure to a status word.

Applets (PIV here; FIDO over NFC, OATH and NDEF tags later) implement only their commands.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

from devices.protocol.apdu import INS_GET_RESPONSE, CommandApdu, ResponseApdu
from devices.protocol.chaining import CommandAssembler, ResponseChunker
from devices.protocol.errors import MalformedApdu
from devices.protocol.sw import SW

log = logging.getLogger(__name__)

INS_SELECT = 0xA4


class CardError(Exception):
    """Raised inside an applet to answer with ``sw`` and no data."""

    def __init__(self, sw: int) -> None:
        super().__init__(f"{sw:04X}")
        self.sw = sw


class Applet(Protocol):
    """An application on the card. An applet whose protocol has its own instruction for the
    rest of a long answer (YKOATH's SEND REMAINING) lists it in an optional
    ``get_response_ins`` attribute; the runtime answers those exactly like GET RESPONSE."""

    aid: bytes

    def select(self, apdu: CommandApdu) -> bytes:
        """Become the current application; return the data for the SELECT response."""

    def deselect(self) -> None:
        """Another application was selected."""

    def process(self, apdu: CommandApdu) -> tuple[bytes, int]:
        """Answer a (complete, unchained) command with data and a status word."""

    def power_reset(self) -> None:
        """Power was cut or the card was reset: clear every volatile security state."""


def build_atr(historical: bytes, *, contactless: bool = False) -> bytes:
    """A T=1 ATR carrying ``historical`` bytes, with its check byte.

    Contact: 3B Fn 13 00 00 81 31 FE 15 <hist> TCK (TA1 Fi/Di, T=1 with IFSC 254).
    Contactless (PC/SC part 3): 3B 8n 80 01 <hist> TCK, which middleware reads as NFC.
    """
    if len(historical) > 15:
        raise ValueError("at most 15 historical bytes")
    if contactless:
        body = bytes((0x80 | len(historical), 0x80, 0x01)) + historical
    else:
        body = (
            bytes((0xF0 | len(historical), 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15)) + historical
        )
    tck = 0
    for byte in body:
        tck ^= byte
    return b"\x3b" + body + bytes((tck,))


@dataclass
class SimulatedCard:
    """A card with one or more applets. ``strict`` lets applet bugs propagate (tests and fuzzing
    find them); otherwise an unexpected exception answers 6F00 and is logged, as firmware would."""

    atr: bytes
    applets: list[Applet]
    strict: bool = False
    selected: Applet | None = None
    powered: bool = False
    # Seconds the next command takes longer (fault injection: a slow card). Applets that
    # work in the background (FIDO over NFC) take it as ``work_delay``; others just stall.
    pending_delay: float = 0.0
    _assembler: CommandAssembler = field(default_factory=CommandAssembler)
    _chunker: ResponseChunker = field(default_factory=ResponseChunker)

    def power_on(self) -> None:
        self.powered = True
        self._reset_volatile()

    def power_off(self) -> None:
        self.powered = False
        self._reset_volatile()

    def reset(self) -> None:
        self._reset_volatile()
        self.powered = True

    def _reset_volatile(self) -> None:
        if self.selected is not None:
            self.selected.deselect()
        self.selected = None
        self._assembler.reset()
        self._chunker.reset()
        for applet in self.applets:
            applet.power_reset()

    def transmit(self, raw: bytes) -> bytes:
        """Answer one command APDU's bytes with the response's bytes."""
        try:
            return self._transmit(raw).encode()
        except CardError as exc:
            return exc.sw.to_bytes(2, "big")
        except Exception:
            if self.strict:
                raise
            log.exception("firmware fault while answering a command")
            return int(SW.NO_PRECISE_DIAGNOSIS).to_bytes(2, "big")

    def _transmit(self, raw: bytes) -> ResponseApdu:
        try:
            apdu = CommandApdu.decode(raw)
        except MalformedApdu:
            self._assembler.reset()
            return ResponseApdu(b"", SW.WRONG_LENGTH)
        if apdu.cla == 0xFF:
            return ResponseApdu(b"", SW.CLA_NOT_SUPPORTED)
        if apdu.cla & 0x03:
            return ResponseApdu(b"", SW.LOGICAL_CHANNEL_NOT_SUPPORTED)
        if apdu.cla & 0x0C:
            return ResponseApdu(b"", SW.SECURE_MESSAGING_NOT_SUPPORTED)
        if self._is_get_response(apdu.ins) and not self._assembler.in_progress:
            return self._chunker.get_response(apdu.le)
        self._chunker.reset()
        try:
            whole = self._assembler.feed(apdu)
        except MalformedApdu:
            return ResponseApdu(b"", SW.WRONG_LENGTH)
        if whole is None:
            return ResponseApdu(b"", SW.SUCCESS)
        data, sw = self._dispatch(whole)
        return self._chunker.first(data, sw, whole.le, extended=whole.extended)

    def _is_get_response(self, ins: int) -> bool:
        if ins == INS_GET_RESPONSE:
            return True
        extra: Collection[int] = getattr(self.selected, "get_response_ins", ())
        return ins in extra

    def _dispatch(self, apdu: CommandApdu) -> tuple[bytes, int]:
        delay, self.pending_delay = self.pending_delay, 0.0
        if delay:
            if hasattr(self.selected, "work_delay"):
                setattr(self.selected, "work_delay", delay)  # noqa: B010 - optional capability
            else:
                time.sleep(delay)  # the simulated card itself is slow: that is the fault
        if apdu.ins == INS_SELECT and apdu.p1 == 0x04:
            return self._select(apdu)
        if self.selected is None:
            # No application: the card's master file knows nothing else.
            if apdu.ins == INS_SELECT:
                return b"", SW.FILE_NOT_FOUND
            return b"", SW.INS_NOT_SUPPORTED
        return self.selected.process(apdu)

    def _select(self, apdu: CommandApdu) -> tuple[bytes, int]:
        if apdu.p2 & 0xF3 != 0x00:
            return b"", SW.INCORRECT_P1P2
        aid = apdu.data
        if not 5 <= len(aid) <= 16:
            return b"", SW.FILE_NOT_FOUND
        for applet in self.applets:
            if applet.aid.startswith(aid):
                if self.selected is not None and self.selected is not applet:
                    self.selected.deselect()
                self.selected = applet
                answer = applet.select(apdu)
                return (b"" if apdu.p2 & 0x0C == 0x0C else answer), SW.SUCCESS
        return b"", SW.FILE_NOT_FOUND
