"""The FIDO security key's NFC side: an ISO 7816 applet (CTAP 2.1 §11.3) in front of the same
authenticator core as USB.

SELECT A0000006472F0001 answers "U2F_V2" when U2F is on, else "FIDO_2_0". CTAP2 requests
arrive as NFCCTAP_MSG (80 10); when the host said it can poll (P1 bit 0x80) and the answer
is not ready within ``poll_after`` seconds, the card answers with a keepalive status and
91 00, and the host asks again with NFCCTAP_GETRESPONSE (80 11). U2F arrives as plain
ISO 7816 APDUs. Long answers use 61xx / GET RESPONSE from the card runtime.
"""

from __future__ import annotations

import logging
import threading
import time

from devices.protocol.apdu import CommandApdu
from devices.protocol.ctaphid import KeepaliveStatus
from devices.protocol.sw import SW
from firmware_sim.tokens.card import SimulatedCard, build_atr
from firmware_sim.tokens.fido_hid import CtapCore

log = logging.getLogger(__name__)

AID = bytes.fromhex("A0000006472F0001")
CLA_NFCCTAP = 0x80
INS_NFCCTAP_MSG = 0x10
INS_NFCCTAP_GETRESPONSE = 0x11
P1_CLIENT_CAN_POLL = 0x80
SW_STILL_PROCESSING = 0x9100
# Contactless ATR form (PC/SC part 3): middleware treats the reader as NFC.
ATR = build_atr(b"\x80\x5a" + b"akkreditiv", contactless=True)


class _Job:
    """One CTAP2 request running on the core in its own thread, so the card can answer
    'still processing' while it runs."""

    def __init__(self, core: CtapCore, request: bytes, delay: float = 0.0) -> None:
        self.status = KeepaliveStatus.PROCESSING
        self.answer: bytes | None = None
        self.done = threading.Event()
        self._delay = delay
        self._thread = threading.Thread(target=self._run, args=(core, request), daemon=True)
        self._thread.start()

    def _keepalive(self, status: int) -> None:
        self.status = KeepaliveStatus(status)

    def _run(self, core: CtapCore, request: bytes) -> None:
        if self._delay:
            time.sleep(self._delay)  # fault injection: a slow key
        try:
            self.answer = core.handle_cbor(request, self._keepalive)
        except Exception:  # the core never raises; if it does, answer like firmware would
            log.exception("authenticator fault")
            self.answer = b"\x7f"  # CTAP1_ERR_OTHER
        finally:
            self.done.set()


class FidoNfcApplet:
    aid = AID

    def __init__(self, core: CtapCore, *, poll_after: float = 0.1) -> None:
        self.core = core
        self.poll_after = poll_after
        self._job: _Job | None = None
        self.work_delay = 0.0  # fault injection: the next request takes this much longer

    def power_reset(self) -> None:
        # Taking the key away from the reader ends any running request; the next tap is a
        # new power cycle for the authenticator.
        self._job = None
        self.core.power_up()

    def deselect(self) -> None:
        self._job = None

    def select(self, apdu: CommandApdu) -> bytes:
        return b"U2F_V2" if self.core.u2f_enabled else b"FIDO_2_0"

    def process(self, apdu: CommandApdu) -> tuple[bytes, int]:
        if apdu.cla == CLA_NFCCTAP and apdu.ins == INS_NFCCTAP_MSG:
            if not apdu.data:
                return b"", SW.WRONG_LENGTH
            delay, self.work_delay = self.work_delay, 0.0
            self._job = _Job(self.core, apdu.data, delay)
            return self._answer(poll=bool(apdu.p1 & P1_CLIENT_CAN_POLL))
        if apdu.cla == CLA_NFCCTAP and apdu.ins == INS_NFCCTAP_GETRESPONSE:
            if self._job is None:
                return b"", SW.CONDITIONS_NOT_SATISFIED
            return self._answer(poll=True)
        if apdu.cla == 0x00 and apdu.ins in (0x01, 0x02, 0x03):
            if not self.core.u2f_enabled:
                return b"", SW.INS_NOT_SUPPORTED
            response = self.core.handle_u2f(apdu.encode())
            return response[:-2], int.from_bytes(response[-2:], "big")
        if apdu.cla not in (0x00, CLA_NFCCTAP):
            return b"", SW.CLA_NOT_SUPPORTED
        return b"", SW.INS_NOT_SUPPORTED

    def _answer(self, *, poll: bool) -> tuple[bytes, int]:
        job = self._job
        if job is None:
            return b"", SW.CONDITIONS_NOT_SATISFIED
        if not job.done.wait(self.poll_after if poll else None):
            return bytes((job.status,)), SW_STILL_PROCESSING
        self._job = None
        return job.answer or b"\x7f", SW.SUCCESS


def make_card(core: CtapCore, *, strict: bool = False) -> SimulatedCard:
    return SimulatedCard(atr=ATR, applets=[FidoNfcApplet(core)], strict=strict)
