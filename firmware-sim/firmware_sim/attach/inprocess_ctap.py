"""Reach a simulated FIDO2 key directly, without USB or NFC: a python-fido2 ``CtapDevice``
for unit tests and for benchmarks that measure what the transports cost. Production code
never uses this; it behaves as ``CtapHidDevice`` does towards ``Ctap2``, ``Ctap1`` and
``Fido2Client``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from threading import Event

from fido2.ctap import STATUS, CtapDevice, CtapError
from fido2.hid import CAPABILITY, CTAPHID

from firmware_sim.tokens.ctap2 import Authenticator


class InProcessCtapDevice(CtapDevice):
    """Status bytes are returned, not raised, for CBOR, as a HID device returns them (``Ctap2``
    raises ``CtapError`` from them); transport-level failures raise ``CtapError`` as
    CTAPHID_ERROR does. Setting ``event`` during a touch wait cancels it, as CTAPHID_CANCEL."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    @property
    def capabilities(self) -> int:
        flags = CAPABILITY.WINK | CAPABILITY.CBOR
        if not self.authenticator.u2f_enabled:
            flags |= CAPABILITY.NMSG
        return int(flags)

    def call(
        self,
        cmd: int,
        data: bytes = b"",
        event: Event | None = None,
        on_keepalive: Callable[[STATUS], None] | None = None,
    ) -> bytes:
        if cmd == CTAPHID.CBOR:
            return self.authenticator.handle_cbor(data, self._keepalive(event, on_keepalive))
        if cmd == CTAPHID.MSG and self.authenticator.u2f_enabled:
            return self.authenticator.handle_u2f(data)
        if cmd == CTAPHID.PING:
            return bytes(data)
        if cmd == CTAPHID.WINK:
            return b""
        raise CtapError(CtapError.ERR.INVALID_COMMAND)

    def _keepalive(
        self, event: Event | None, on_keepalive: Callable[[STATUS], None] | None
    ) -> Callable[[int], None]:
        last: list[int] = []

        def keepalive(status: int) -> None:
            if event is not None and event.is_set():
                cancel = getattr(self.authenticator.presence, "cancel", None)
                if callable(cancel):
                    cancel()
            # CtapHidDevice reports a status once until it changes; so do we.
            if on_keepalive is not None and last != [status]:
                last[:] = [status]
                on_keepalive(STATUS(status))

        return keepalive

    @classmethod
    def list_devices(cls) -> Iterator[InProcessCtapDevice]:
        return iter(())
