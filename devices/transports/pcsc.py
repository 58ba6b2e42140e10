"""PC/SC transport: pyscard against the system pcscd.

The low-level ``smartcard.scard`` API is used so every PC/SC result code can be turned into a
typed error that says what to do (``devices.errors``), instead of pyscard's generic ones.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from devices.errors import (
    DeviceError,
    DeviceRemoved,
    DeviceTimeout,
    NoCard,
    NoReader,
    PcscUnavailable,
    ReaderBusy,
    TransportError,
)
from devices.protocol.apdu import CommandApdu, ResponseApdu, redact_for_log
from devices.protocol.chaining import transmit as chained_transmit

log = logging.getLogger(__name__)

try:
    from smartcard import scard as _scard
except ImportError as exc:  # pragma: no cover - depends on the machine
    _scard = None
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

REMOVAL_SETTLE_SECONDS = 2.0
PNP_READER = "\\\\?PnP?\\Notification"


def _api() -> Any:
    if _scard is None:
        raise PcscUnavailable(
            f"the PC/SC client library is missing ({_IMPORT_ERROR})",
            hint="install libpcsclite1 and pcscd (Debian: apt-get install pcscd)",
        )
    return _scard


def _message(hresult: int) -> str:
    try:
        return str(_api().SCardGetErrorMessage(hresult)).strip()
    except Exception:  # pragma: no cover - message lookup never matters more than the code
        return ""


def error_for(hresult: int, doing: str, reader: str | None = None) -> DeviceError:
    """The typed error for a PC/SC result code."""
    s = _api()
    where = f" on reader {reader!r}" if reader else ""
    text = f"{doing}{where} failed: {_message(hresult)} (0x{hresult & 0xFFFFFFFF:08X})"
    if hresult in (s.SCARD_E_NO_SERVICE, s.SCARD_E_SERVICE_STOPPED):
        return PcscUnavailable(f"pcscd is not running: {text}")
    if hresult == s.SCARD_E_NO_READERS_AVAILABLE:
        return NoReader(f"no smartcard reader: {text}")
    if hresult in (s.SCARD_E_UNKNOWN_READER, s.SCARD_E_READER_UNAVAILABLE):
        return NoReader(f"the reader is gone: {text}")
    if hresult == s.SCARD_E_NO_SMARTCARD:
        return NoCard(f"no card in the reader: {text}")
    if hresult in (s.SCARD_W_REMOVED_CARD, s.SCARD_W_RESET_CARD, s.SCARD_W_UNPOWERED_CARD):
        return DeviceRemoved(f"the card was removed or reset: {text}")
    if hresult == s.SCARD_W_UNRESPONSIVE_CARD:
        return DeviceRemoved(f"the card does not answer: {text}")
    if hresult == s.SCARD_E_SHARING_VIOLATION:
        return ReaderBusy(f"another program holds the card: {text}")
    if hresult == s.SCARD_E_TIMEOUT:
        return DeviceTimeout(text)
    return TransportError(text)


@dataclass(frozen=True)
class CardEvent:
    reader: str
    present: bool
    atr: bytes


class PcscContext:
    """A PC/SC resource-manager context; use as a context manager."""

    def __init__(self) -> None:
        s = _api()
        hresult, self._handle = s.SCardEstablishContext(s.SCARD_SCOPE_USER)
        if hresult != s.SCARD_S_SUCCESS:
            raise error_for(hresult, "connecting to pcscd")

    def __enter__(self) -> PcscContext:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            _api().SCardReleaseContext(self._handle)
            self._handle = None

    def readers(self) -> list[str]:
        s = _api()
        hresult, readers = s.SCardListReaders(self._handle, [])
        if hresult == s.SCARD_E_NO_READERS_AVAILABLE:
            return []
        if hresult != s.SCARD_S_SUCCESS:
            raise error_for(hresult, "listing readers")
        return list(readers)

    def card_present(self, reader: str) -> bytes | None:
        """The ATR of the card in ``reader``, or None when it is empty."""
        s = _api()
        hresult, states = s.SCardGetStatusChange(self._handle, 0, [(reader, s.SCARD_STATE_UNAWARE)])
        if hresult != s.SCARD_S_SUCCESS:
            raise error_for(hresult, "reading the reader state", reader)
        _, event, atr = states[0]
        return bytes(atr) if event & s.SCARD_STATE_PRESENT else None

    def wait_for(self, reader: str, *, present: bool, timeout: float) -> CardEvent:
        """Block until a card is in (or out of) ``reader``; ``DeviceTimeout`` after ``timeout``."""
        for event in self.watch([reader], timeout=timeout):
            if event.present is present:
                return event
        raise DeviceTimeout(
            f"no card was {'inserted into' if present else 'removed from'} {reader!r} "
            f"within {timeout:.1f} s"
        )

    def watch(self, readers: list[str], *, timeout: float) -> Iterator[CardEvent]:
        """Yield the current state of each reader, then every insertion and removal, until
        ``timeout`` seconds pass with nothing happening."""
        s = _api()
        states = [(reader, s.SCARD_STATE_UNAWARE) for reader in readers]
        first = True
        while True:
            hresult, changed = s.SCardGetStatusChange(
                self._handle, 0 if first else int(timeout * 1000), states
            )
            if hresult == s.SCARD_E_TIMEOUT:
                return
            if hresult != s.SCARD_S_SUCCESS:
                raise error_for(hresult, "watching readers")
            next_states = []
            for (reader, event, atr), (_, before) in zip(changed, states, strict=True):
                if first or event & s.SCARD_STATE_CHANGED:
                    was_present = bool(before & s.SCARD_STATE_PRESENT)
                    present = bool(event & s.SCARD_STATE_PRESENT)
                    if first or present != was_present:
                        yield CardEvent(reader, present, bytes(atr))
                next_states.append((reader, event & ~s.SCARD_STATE_CHANGED))
            states = next_states
            first = False

    def connect(self, reader: str, *, exclusive: bool = True) -> PcscConnection:
        return PcscConnection(self, reader, exclusive=exclusive)


class PcscConnection:
    """A connection to the card in one reader: ``send`` moves one APDU, ``transmit`` also does
    command and response chaining."""

    def __init__(self, context: PcscContext, reader: str, *, exclusive: bool = True) -> None:
        s = _api()
        self.reader = reader
        self._context = context
        protocols = s.SCARD_PROTOCOL_T0 | s.SCARD_PROTOCOL_T1
        modes = (
            [s.SCARD_SHARE_EXCLUSIVE, s.SCARD_SHARE_SHARED] if exclusive else [s.SCARD_SHARE_SHARED]
        )
        hresult = s.SCARD_S_SUCCESS
        for mode in modes:
            hresult, self._card, self._protocol = s.SCardConnect(
                context._handle, reader, mode, protocols
            )
            if hresult == s.SCARD_S_SUCCESS:
                self.exclusive = mode == s.SCARD_SHARE_EXCLUSIVE
                break
            if hresult != s.SCARD_E_SHARING_VIOLATION:
                break
        if hresult != s.SCARD_S_SUCCESS:
            self._card = None
            raise error_for(hresult, "connecting to the card", reader)
        _, _, _, _, atr = s.SCardStatus(self._card)
        self.atr = bytes(atr)

    def __enter__(self) -> PcscConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._card is not None:
            s = _api()
            s.SCardDisconnect(self._card, s.SCARD_LEAVE_CARD)
            self._card = None

    def send(self, apdu: CommandApdu) -> ResponseApdu:
        """One APDU exchange, no chaining."""
        s = _api()
        if self._card is None:
            raise DeviceRemoved("the connection to the card is closed")
        raw = apdu.encode()
        log.debug("%s > %s", self.reader, redact_for_log(raw))
        hresult, response = s.SCardTransmit(self._card, self._protocol, list(raw))
        if hresult != s.SCARD_S_SUCCESS:
            raise self._transmit_error(error_for(hresult, "sending a command", self.reader))
        if len(response) < 2:
            # Some readers (vpcd among them) report a broken-off transfer as success with no
            # bytes at all; no card ever answers that way.
            raise self._transmit_error(
                TransportError(f"the card on {self.reader!r} answered with no status word")
            )
        answer = ResponseApdu.decode(bytes(response))
        log.debug("%s < %d bytes, SW %04X", self.reader, len(answer.data), answer.sw)
        return answer

    def transmit(self, apdu: CommandApdu) -> ResponseApdu:
        """Send ``apdu`` with command chaining and collect a chained (61xx) answer."""
        return chained_transmit(self.send, apdu)

    def _transmit_error(self, error: DeviceError) -> DeviceError:
        if isinstance(error, DeviceRemoved):
            return error
        # A transfer that broke off is, nearly always, a card that left the reader. pcscd
        # learns of a removal a moment after the transfer fails, so wait (bounded) for it to
        # say so, and give the caller the error that fits.
        try:
            self._context.wait_for(self.reader, present=False, timeout=REMOVAL_SETTLE_SECONDS)
        except DeviceTimeout:
            return error
        except DeviceError:
            pass  # the reader itself went away: the card is gone with it
        return DeviceRemoved(f"the card was removed in the middle of a command ({error})")
