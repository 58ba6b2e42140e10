"""The FIDO security key's USB side: a HID interface on usage page 0xF1D0 running the CTAPHID
transport (CTAP 2.1 §11.2) in front of the authenticator core.

Channels, INIT, PING, WINK, LOCK, CBOR, MSG, CANCEL, KEEPALIVE and every CTAPHID ERROR are
handled here; the authenticator sees only whole CTAP2 requests and U2F APDUs.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from devices.protocol.ctaphid import (
    BROADCAST_CID,
    CTAPHID_PROTOCOL_VERSION,
    INIT_NONCE_SIZE,
    Capability,
    Cmd,
    FrameError,
    HidError,
    InitPacket,
    InitResponse,
    KeepaliveStatus,
    Message,
    Reassembler,
    encode_message,
    parse_packet,
)
from devices.protocol.errors import ProtocolError
from firmware_sim.faults import Action, FaultPlan, Phase
from firmware_sim.tokens.hid_device import HidDevice

log = logging.getLogger(__name__)

# FIDO usage page 0xF1D0, usage 0x01, 64-byte input and output reports (FIDO CTAP §11.2.8.1).
FIDO_REPORT_DESCRIPTOR = bytes.fromhex(
    "06d0f1"  # usage page (FIDO alliance)
    "0901"  # usage (CTAPHID)
    "a101"  # collection (application)
    "0920150026ff0075089540"
    "8102"  # usage (data in), 64 x 8 bits, input
    "0921150026ff0075089540"
    "9102"  # usage (data out), 64 x 8 bits, output
    "c0"
)
TRANSACTION_TIMEOUT = 0.5  # seconds between the packets of one message (CTAPHID §11.2.4)
MAX_LOCK_SECONDS = 10


class CtapCore(Protocol):
    """The authenticator as the transports see it."""

    @property
    def u2f_enabled(self) -> bool: ...

    def power_up(self) -> None: ...

    def handle_cbor(self, request: bytes, keepalive: Callable[[int], None] = ...) -> bytes: ...

    def handle_u2f(self, apdu: bytes) -> bytes: ...


class Button(Protocol):
    def press(self) -> None: ...

    def cancel(self) -> None: ...


class FidoHidDevice(HidDevice):
    kind = "fido"
    product_id = 0xF1D0
    report_descriptor = FIDO_REPORT_DESCRIPTOR
    product = "akkreditiv simulated FIDO2 security key"
    device_version = (1, 0, 0)

    def __init__(
        self,
        core: CtapCore,
        button: Button,
        serial: str,
        *,
        faults: FaultPlan | None = None,
        on_pull: Callable[[], None] | None = None,
        transaction_timeout: float = TRANSACTION_TIMEOUT,
    ) -> None:
        super().__init__(serial)
        self.transaction_timeout = transaction_timeout
        self.core = core
        self.button = button
        self._faults = faults
        self._on_pull = on_pull
        self._lock = threading.RLock()
        self._send_lock = threading.Lock()
        self._assembler = Reassembler(self.report_size)
        self._channels: set[int] = set()
        self._busy_cid: int | None = None
        self._transaction = 0  # bumped when a transaction is abandoned, so its answer is dropped
        self._locked_cid: int | None = None
        self._locked_until = 0.0
        self._timer: threading.Timer | None = None
        self._closed = False
        core.power_up()

    @property
    def capabilities(self) -> Capability:
        caps = Capability.WINK | Capability.CBOR
        if not self.core.u2f_enabled:
            caps |= Capability.NMSG
        return caps

    # --- output ---------------------------------------------------------------------------

    def _send(self, cid: int, cmd: int, payload: bytes) -> None:
        # One message's packets go out together: a keepalive from a running transaction
        # must not land between the packets of another answer.
        with self._send_lock:
            for report in encode_message(cid, cmd, payload, self.report_size):
                self.send_report(report)

    def _error(self, cid: int, code: HidError) -> None:
        log.debug("CTAPHID error %s on channel %08x", code.name, cid)
        self._send(cid, Cmd.ERROR, bytes((code,)))

    def _keepalive(self, cid: int) -> Callable[[int], None]:
        def send(status: int) -> None:
            if not self._closed:
                self._send(cid, Cmd.KEEPALIVE, bytes((status,)))

        return send

    # --- input ----------------------------------------------------------------------------

    def out(self, endpoint: int, data: bytes) -> None:
        if endpoint != self.ep_out or self._closed:
            return
        with self._lock:
            self._on_report(data)

    def _on_report(self, data: bytes) -> None:
        try:
            packet = parse_packet(data, self.report_size)
        except ProtocolError:
            if len(data) >= 4:
                self._error(int.from_bytes(data[:4], "big"), HidError.INVALID_LEN)
            return
        if packet.cid == 0:
            self._error(0, HidError.INVALID_CHANNEL)
            return
        if self._busy_cid is not None:
            self._while_busy(packet)
            return
        if (
            self._locked_cid is not None
            and time.monotonic() < self._locked_until
            and packet.cid != self._locked_cid
        ):
            self._error(packet.cid, HidError.CHANNEL_BUSY)
            return
        try:
            message = self._assembler.feed(packet)
        except FrameError as exc:
            # A packet from another channel neither ends nor extends the message that is
            # arriving: its timer keeps running, or the key would stay busy for ever.
            if self._assembler.busy_cid is None:
                self._cancel_timer()
            self._error(exc.cid, exc.code)
            return
        if message is None:
            if self._assembler.busy_cid == packet.cid:
                self._arm_timer(packet.cid)
            return
        self._cancel_timer()
        self._dispatch(message)

    def _while_busy(self, packet: object) -> None:
        """A transaction is running: only its channel may CANCEL or re-INIT."""
        if not isinstance(packet, InitPacket):
            return  # continuation packets of nothing: ignored
        if packet.cid == self._busy_cid and packet.cmd == Cmd.CANCEL:
            self.button.cancel()
            return
        if packet.cid == self._busy_cid and packet.cmd == Cmd.INIT:
            # Resynchronise: abandon the transaction (its answer is dropped) and answer INIT.
            self.button.cancel()
            self._transaction += 1
            self._busy_cid = None
            self._dispatch(Message(packet.cid, packet.cmd, packet.data[: packet.length]))
            return
        self._error(packet.cid, HidError.CHANNEL_BUSY)

    def _arm_timer(self, cid: int) -> None:
        self._cancel_timer()
        timer = threading.Timer(self.transaction_timeout, self._message_timeout, args=(cid,))
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _message_timeout(self, cid: int) -> None:
        with self._lock:
            if self._assembler.busy_cid == cid:
                self._assembler.reset()
                self._error(cid, HidError.MSG_TIMEOUT)

    # --- messages -------------------------------------------------------------------------

    def _dispatch(self, message: Message) -> None:
        cid, cmd, payload = message.cid, message.cmd, message.payload
        if cmd == Cmd.INIT:
            self._init(cid, payload)
            return
        if cid == BROADCAST_CID or cid not in self._channels:
            self._error(cid, HidError.INVALID_CHANNEL)
            return
        if cmd == Cmd.PING:
            self._send(cid, Cmd.PING, payload)
        elif cmd == Cmd.WINK:
            self._send(cid, Cmd.WINK, b"")
        elif cmd == Cmd.LOCK:
            self._lock_channel(cid, payload)
        elif cmd == Cmd.CANCEL:
            pass  # nothing is running on this channel: nothing to cancel, no answer
        elif cmd == Cmd.CBOR:
            if not payload:
                self._error(cid, HidError.INVALID_LEN)
                return
            self._start(cid, Cmd.CBOR, payload)
        elif cmd == Cmd.MSG:
            if not self.core.u2f_enabled:
                self._error(cid, HidError.INVALID_CMD)
                return
            self._start(cid, Cmd.MSG, payload)
        else:
            self._error(cid, HidError.INVALID_CMD)

    def _init(self, cid: int, payload: bytes) -> None:
        if len(payload) != INIT_NONCE_SIZE:
            self._error(cid, HidError.INVALID_LEN)
            return
        if cid == BROADCAST_CID:
            new_cid = secrets.randbelow(0xFFFFFFFE) + 1
            while new_cid in self._channels or new_cid == BROADCAST_CID:
                new_cid = secrets.randbelow(0xFFFFFFFE) + 1
            self._channels.add(new_cid)
        elif cid in self._channels:
            new_cid = cid  # resynchronise an existing channel
        else:
            self._error(cid, HidError.INVALID_CHANNEL)
            return
        answer = InitResponse(
            payload, new_cid, CTAPHID_PROTOCOL_VERSION, self.device_version, self.capabilities
        )
        self._send(cid, Cmd.INIT, answer.encode())

    def _lock_channel(self, cid: int, payload: bytes) -> None:
        if len(payload) != 1 or payload[0] > MAX_LOCK_SECONDS:
            self._error(cid, HidError.INVALID_PAR)
            return
        if payload[0] == 0:
            self._locked_cid = None
        else:
            self._locked_cid, self._locked_until = cid, time.monotonic() + payload[0]
        self._send(cid, Cmd.LOCK, b"")

    def _start(self, cid: int, cmd: int, payload: bytes) -> None:
        code = payload[0] if cmd == Cmd.CBOR else cmd
        if self._pull_if_armed(code, Phase.BEFORE):
            return
        self._busy_cid = cid
        self._transaction += 1
        threading.Thread(
            target=self._run, args=(cid, cmd, payload, code, self._transaction), daemon=True
        ).start()

    def _run(self, cid: int, cmd: int, payload: bytes, code: int, transaction: int) -> None:
        self._delay_if_armed(cid, code)
        try:
            if cmd == Cmd.CBOR:
                answer = self.core.handle_cbor(payload, self._keepalive(cid))
            else:
                answer = self.core.handle_u2f(payload)
        except Exception:  # the core must never raise; if it does, answer like firmware would
            log.exception("authenticator fault")
            answer = None
        with self._lock:
            if transaction != self._transaction:
                return  # abandoned by a re-INIT on its channel
            self._busy_cid = None
            if answer is None:
                self._error(cid, HidError.OTHER)
                return
            if self._pull_if_armed(code, Phase.AFTER):
                return
            if not self._closed:
                self._send(cid, cmd, answer)

    def _delay_if_armed(self, cid: int, code: int) -> None:
        """A slow key: it keeps saying 'processing' (KEEPALIVE) while it works, as real keys
        do every 100 ms."""
        if self._faults is None:
            return
        fault = self._faults.take(code, Phase.BEFORE, Action.DELAY)
        if fault is None:
            return
        keepalive = self._keepalive(cid)
        deadline = time.monotonic() + fault.seconds
        while not self._closed and time.monotonic() < deadline:
            keepalive(KeepaliveStatus.PROCESSING)
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _pull_if_armed(self, code: int, phase: Phase) -> bool:
        if self._faults is None:
            return False
        fault = self._faults.take(code, phase, Action.PULL)
        if fault is None:
            return False
        log.warning("fault: key pulled %s command %02X", phase.value, code)
        self._closed = True
        if self._on_pull is not None:
            self._on_pull()
        return True

    # --- the rest -------------------------------------------------------------------------

    def touch(self) -> None:
        self.button.press()

    def close(self) -> None:
        self._closed = True
        self._cancel_timer()
        self.button.cancel()

    def status(self) -> dict[str, Any]:
        return {"busy": self._busy_cid is not None, "channels": len(self._channels)}
