"""Attach a simulated card to pcscd's vpcd virtual reader (vsmartcard-vpcd).

Wire format, card side: a 2-byte big-endian length, then the payload. A 1-byte payload is a
control code (00 power off, 01 power on, 02 reset, 04 "send your ATR"); anything longer is a
command APDU, answered with the response APDU. The card is "inserted" while this socket is
connected and "pulled out" when it closes.
"""

from __future__ import annotations

import logging
import signal
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from devices.protocol.apdu import redact_for_log
from firmware_sim.faults import Action, FaultPlan, Phase
from firmware_sim.tokens.card import SimulatedCard

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 35963

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)

CTRL_OFF = 0x00
CTRL_ON = 0x01
CTRL_RESET = 0x02
CTRL_ATR = 0x04


class Detached(Exception):
    """The simulator was asked to stop; the card leaves the reader."""


class Pulled(Exception):
    """An armed fault pulled the card out in the middle of a command."""


def parse_endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host or DEFAULT_HOST, int(port)


def _recv_exact(sock: socket.socket, count: int) -> bytes:
    buffer = bytearray()
    while len(buffer) < count:
        # vpcd writes a frame's length and payload separately without TCP_NODELAY, so Nagle
        # holds the payload until the length is acknowledged; a delayed ACK here would cost
        # ~40 ms per APDU. Linux resets QUICKACK after use, hence before every read.
        if _QUICKACK is not None:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        chunk = sock.recv(count - len(buffer))
        if not chunk:
            raise ConnectionError("vpcd closed the connection")
        buffer += chunk
    return bytes(buffer)


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">H", len(payload)) + payload)


@dataclass
class VpcdAttachment:
    """Serve ``card`` on a vpcd reader until stopped."""

    card: SimulatedCard
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    state_path: Path | None = None
    connect_timeout: float = 30.0

    def __post_init__(self) -> None:
        self._busy = False
        self._stop = False
        self._faults = FaultPlan(self.state_path) if self.state_path else None

    # SIGTERM while idle leaves at once; in the middle of a command it finishes the command
    # first, so a clean stop never loses an answer the way a pulled card does.
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop = True
        if not self._busy:
            raise Detached

    def run(self, *, install_signal_handlers: bool = True) -> str:
        """Returns why it ended: 'stopped' or 'pulled'."""
        if install_signal_handlers:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        try:
            while not self._stop:
                sock = self._connect()
                try:
                    self._serve(sock)
                except ConnectionError:
                    log.warning("vpcd went away; reconnecting (the card stays in the reader)")
                finally:
                    sock.close()
                    self.card.power_off()
        except Detached:
            return "stopped"
        except Pulled:
            return "pulled"
        return "stopped"

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + self.connect_timeout
        delay = 0.05
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=5)
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                log.info("card inserted into vpcd reader at %s:%d", self.host, self.port)
                return sock
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise ConnectionError(
                        f"no vpcd reader listens on {self.host}:{self.port}: is pcscd running "
                        "with vsmartcard-vpcd? ('akkreditiv sim pcscd' starts it)"
                    ) from exc
                # Waiting for pcscd to come up: back off, bounded by the deadline.
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _serve(self, sock: socket.socket) -> None:
        while not self._stop:
            (length,) = struct.unpack(">H", _recv_exact(sock, 2))
            payload = _recv_exact(sock, length) if length else b""
            self._busy = True
            try:
                answer = self._handle(payload)
                if answer is not None:
                    _send(sock, answer)
            finally:
                self._busy = False

    def _handle(self, payload: bytes) -> bytes | None:
        if len(payload) == 1:
            code = payload[0]
            if code == CTRL_OFF:
                self.card.power_off()
            elif code == CTRL_ON:
                self.card.power_on()
            elif code == CTRL_RESET:
                self.card.reset()
            elif code == CTRL_ATR:
                return self.card.atr
            return None
        log.debug("C-APDU %s", redact_for_log(payload))
        self._maybe_fault(payload, Phase.BEFORE)
        answer = self.card.transmit(payload)
        self._maybe_fault(payload, Phase.AFTER)
        if self._faults is not None and len(payload) >= 4:
            if self._faults.take(payload[1], Phase.AFTER, Action.CORRUPT) is not None:
                log.warning("fault: answer to INS %02X damaged", payload[1])
                data = answer[:-2]
                answer = data[: len(data) // 2] + answer[-2:]
        log.debug("R-APDU %s", answer[-2:].hex())
        return answer

    def _maybe_fault(self, payload: bytes, phase: Phase) -> None:
        if self._faults is None or len(payload) < 4:
            return
        fault = self._faults.take(payload[1], phase, Action.PULL) or self._faults.take(
            payload[1], phase, Action.DELAY
        )
        if fault is None:
            return
        if fault.action is Action.PULL:
            log.warning("fault: card pulled %s INS %02X", phase.value, payload[1])
            raise Pulled
        if fault.action is Action.DELAY:
            log.warning("fault: card slow by %.1f s on INS %02X", fault.seconds, payload[1])
            self.card.pending_delay = fault.seconds
