"""Host side of OTP tokens: capture the code a USB keyboard token types (through pyusb, decoded
with the token's keyboard layout) and read the code an NFC tag hands out as an NDEF URI."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import usb.core
import usb.util

from devices.errors import DeviceTimeout, MalformedNdef, TransportError
from devices.events import DeviceEvent, Event, EventSink, ignore
from devices.protocol.apdu import CommandApdu
from devices.protocol.hid_keyboard import REPORT_SIZE, KeyboardDecoder, Layout
from devices.protocol.ndef import (
    CC_FILE_ID,
    NDEF_AID,
    CapabilityContainer,
    decode_message,
    parse_ndef_file,
    record_uri,
)
from devices.tokens.piv import ApduTransport
from devices.transports.usb import usb_error

log = logging.getLogger(__name__)

# Vendor/product pairs of keyboard OTP tokens: Yubico's, and the simulator's.
OTP_KEYBOARD_IDS: dict[int, set[int] | None] = {0x1050: None, 0x1209: {0x0701}}
HID_CLASS = 3
BOOT_KEYBOARD = (1, 1)  # interface subclass 1 (boot), protocol 1 (keyboard)
OTP_TEXT = re.compile(r"^[0-9A-Za-z]{6,64}$")


@dataclass(frozen=True)
class KeyboardToken:
    device: Any  # usb.core.Device
    interface: int
    ep_in: int
    serial_number: str | None

    @property
    def path(self) -> str:
        return f"usb:{self.device.bus:03d}:{self.device.address:03d}:{self.interface}"


def _is_otp_token(device: Any) -> bool:
    products = OTP_KEYBOARD_IDS.get(device.idVendor, set())
    return device.idVendor in OTP_KEYBOARD_IDS and (
        products is None or device.idProduct in products
    )


def find_keyboard_tokens(backends: Iterable[Any]) -> list[KeyboardToken]:
    """USB OTP tokens' keyboard interfaces reachable through the given pyusb backends."""
    found = []
    for backend in backends:
        try:
            devices = list(
                usb.core.find(find_all=True, backend=backend, custom_match=_is_otp_token)
            )
        except usb.core.USBError as exc:
            log.warning("USB enumeration failed: %s", exc)
            continue
        for device in devices:
            for configuration in device:
                for interface in configuration:
                    kind = (interface.bInterfaceSubClass, interface.bInterfaceProtocol)
                    if interface.bInterfaceClass != HID_CLASS or kind != BOOT_KEYBOARD:
                        continue
                    ep_in = next(
                        (ep.bEndpointAddress for ep in interface if ep.bEndpointAddress & 0x80),
                        None,
                    )
                    if ep_in is None:
                        continue
                    try:
                        serial = usb.util.get_string(device, device.iSerialNumber)
                    except (usb.core.USBError, ValueError, NotImplementedError):
                        serial = None
                    found.append(KeyboardToken(device, interface.bInterfaceNumber, ep_in, serial))
    return found


def read_keyboard_otp(
    token: KeyboardToken, layout: Layout, timeout: float = 30.0, *, events: EventSink = ignore
) -> str:
    """Wait for the token to type a line (the person touches it) and return it.

    Raises ``DeviceTimeout`` when nothing complete arrives in time and ``DeviceRemoved`` when
    the token goes away; a partial code is never returned as if whole."""
    device = token.device
    reattach = False
    try:
        if device.is_kernel_driver_active(token.interface):
            device.detach_kernel_driver(token.interface)
            reattach = True
    except NotImplementedError:
        pass
    except usb.core.USBError as exc:
        raise usb_error(exc, "opening the OTP token") from exc
    decoder = KeyboardDecoder(layout)
    events(Event(DeviceEvent.TOUCH_KEY))
    deadline = time.monotonic() + timeout
    try:
        usb.util.claim_interface(device, token.interface)
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise DeviceTimeout(
                    f"no complete code from the token within {timeout:.0f} s"
                    + (f" (got {len(decoder.pending)} characters)" if decoder.pending else ""),
                    hint="touch the token once and wait for it to finish typing",
                )
            try:
                report = bytes(device.read(token.ep_in, REPORT_SIZE, remaining_ms))
            except usb.core.USBTimeoutError:
                continue
            line = decoder.feed(report)
            if line is not None:
                return check_otp_text(line)
    except usb.core.USBError as exc:
        raise usb_error(exc, "reading the OTP token") from exc
    finally:
        try:
            usb.util.release_interface(device, token.interface)
            if reattach:
                device.attach_kernel_driver(token.interface)
        except (usb.core.USBError, NotImplementedError):
            pass
        usb.util.dispose_resources(device)


def check_otp_text(text: str) -> str:
    if not OTP_TEXT.match(text):
        raise TransportError(
            f"the token typed {len(text)} characters that are not a one-time password",
            hint="check the keyboard layout the token is set up for (--layout)",
        )
    return text


# --- NFC tags ----------------------------------------------------------------------------------


class NdefTagSession:
    """Reads an NFC Forum Type 4 Tag's NDEF message over an APDU transport."""

    def __init__(self, transport: ApduTransport) -> None:
        self._transport = transport

    def _send(self, apdu: CommandApdu) -> bytes:
        return self._transport.transmit(apdu).check()

    def select(self) -> None:
        self._send(CommandApdu(0x00, 0xA4, 0x04, 0x00, NDEF_AID, le=256))

    def _read_file(self, file_id: int, length: int, max_le: int) -> bytes:
        self._send(CommandApdu(0x00, 0xA4, 0x00, 0x0C, file_id.to_bytes(2, "big")))
        data = bytearray()
        while len(data) < length:
            chunk = min(max_le, length - len(data), 0xFF)
            piece = self._send(CommandApdu(0x00, 0xB0, len(data) >> 8, len(data) & 0xFF, le=chunk))
            data += piece
            if len(piece) < chunk:
                break  # fewer bytes than asked: the file ends here (ISO 7816-4 READ BINARY)
        return bytes(data)

    def read_message(self) -> bytes:
        """The NDEF message; raises ``MalformedNdef`` for a damaged or truncated tag."""
        self.select()
        head = self._read_file(CC_FILE_ID, 2, 2)
        cc_length = int.from_bytes(head, "big") if len(head) == 2 else 0
        cc = CapabilityContainer.decode(self._read_file(CC_FILE_ID, max(cc_length, 2), 0xFF))
        max_le = max(1, min(cc.max_le, 0xFF))
        self._send(CommandApdu(0x00, 0xA4, 0x00, 0x0C, cc.ndef_file_id.to_bytes(2, "big")))
        head = self._send(CommandApdu(0x00, 0xB0, 0x00, 0x00, le=2))
        if len(head) != 2:
            raise MalformedNdef("the tag's NDEF length is cut short", field="nlen")
        length = int.from_bytes(head, "big")
        if length > cc.max_ndef_size:
            raise MalformedNdef(f"NDEF length {length} exceeds the tag's size", field="nlen")
        data = bytearray(head)
        while len(data) < 2 + length:
            chunk = min(max_le, 2 + length - len(data))
            piece = self._send(CommandApdu(0x00, 0xB0, len(data) >> 8, len(data) & 0xFF, le=chunk))
            data += piece
            if len(piece) < chunk:
                break  # fewer bytes than asked: the file ends here (ISO 7816-4 READ BINARY)
        return parse_ndef_file(bytes(data))

    def read_otp(self) -> str:
        """The one-time password in the tag's URI record (its fragment or last path part)."""
        records = decode_message(self.read_message())
        if not records:
            raise MalformedNdef("the tag's NDEF message is empty", field="records")
        return otp_from_uri(record_uri(records[0]))


def otp_from_uri(uri: str) -> str:
    parts = urlsplit(uri)
    candidate = parts.fragment or parts.path.rstrip("/").rsplit("/", 1)[-1]
    if not OTP_TEXT.match(candidate):
        raise MalformedNdef("the tag's URI carries no one-time password", field="uri")
    return candidate
