"""What every simulated USB HID token shares: descriptors, standard and HID control requests,
and a queue of IN reports. Subclasses add their report descriptor and what OUT reports do
(the FIDO key's CTAPHID engine; later the OTP token's keyboard)."""

from __future__ import annotations

import queue
import struct
from typing import Any

REQ_GET_STATUS = 0x00
REQ_GET_DESCRIPTOR = 0x06
REQ_SET_CONFIGURATION = 0x09
REQ_GET_CONFIGURATION = 0x08
HID_SET_IDLE = 0x0A
HID_SET_PROTOCOL = 0x0B
HID_SET_REPORT = 0x09

DT_DEVICE = 1
DT_CONFIGURATION = 2
DT_STRING = 3
DT_HID = 0x21
DT_REPORT = 0x22

VENDOR_ID = 0x1209  # pid.codes, the open-hardware vendor ID


class HidDevice:
    """A one-interface HID device with an interrupt IN and OUT endpoint."""

    kind = "hid"
    product_id = 0x0000
    interface_subclass = 0
    interface_protocol = 0
    report_descriptor = b""
    report_size = 64
    ep_in = 0x81
    ep_out = 0x01
    manufacturer = "akkreditiv"
    product = "akkreditiv simulated token"

    def __init__(self, serial: str) -> None:
        self.serial = serial
        self._in: queue.Queue[bytes] = queue.Queue()
        self.configuration = 0

    # --- descriptors --------------------------------------------------------------------

    def _hid_descriptor(self) -> bytes:
        return struct.pack(
            "<BBHBBBH", 9, DT_HID, 0x0111, 0, 1, DT_REPORT, len(self.report_descriptor)
        )

    def _endpoints(self) -> list[dict[str, int]]:
        endpoints = [
            {
                "bEndpointAddress": self.ep_in,
                "bmAttributes": 3,
                "wMaxPacketSize": self.report_size,
                "bInterval": 5,
            }
        ]
        if self.ep_out:
            endpoints.append(
                {
                    "bEndpointAddress": self.ep_out,
                    "bmAttributes": 3,
                    "wMaxPacketSize": self.report_size,
                    "bInterval": 5,
                }
            )
        return endpoints

    def describe(self) -> dict[str, Any]:
        return {
            "device": {
                "idVendor": VENDOR_ID,
                "idProduct": self.product_id,
                "bcdDevice": 0x0100,
                "iManufacturer": 1,
                "iProduct": 2,
                "iSerialNumber": 3,
            },
            "configuration": {
                "wTotalLength": len(self._configuration_bytes()),
                "bmAttributes": 0x80,
                "bMaxPower": 50,
                "interfaces": [
                    {
                        "bInterfaceNumber": 0,
                        "bInterfaceClass": 3,
                        "bInterfaceSubClass": self.interface_subclass,
                        "bInterfaceProtocol": self.interface_protocol,
                        "extra": self._hid_descriptor().hex(),
                        "endpoints": self._endpoints(),
                    }
                ],
            },
        }

    def _device_bytes(self) -> bytes:
        return struct.pack(
            "<BBHBBBBHHHBBBB",
            18,
            DT_DEVICE,
            0x0200,
            0,
            0,
            0,
            64,
            VENDOR_ID,
            self.product_id,
            0x0100,
            1,
            2,
            3,
            1,
        )

    def _configuration_bytes(self) -> bytes:
        interface = struct.pack(
            "<BBBBBBBBB",
            9,
            4,
            0,
            0,
            len(self._endpoints()),
            3,
            self.interface_subclass,
            self.interface_protocol,
            0,
        )
        endpoints = b"".join(
            struct.pack("<BBBBHB", 7, 5, e["bEndpointAddress"], 3, self.report_size, 5)
            for e in self._endpoints()
        )
        body = interface + self._hid_descriptor() + endpoints
        return (
            struct.pack("<BBHBBBBB", 9, DT_CONFIGURATION, 9 + len(body), 1, 1, 0, 0x80, 50) + body
        )

    def _string(self, index: int) -> bytes | None:
        if index == 0:
            return b"\x04\x03\x09\x04"  # English (United States)
        text = {1: self.manufacturer, 2: self.product, 3: self.serial}.get(index)
        if text is None:
            return None
        encoded = text.encode("utf-16-le")
        return bytes((2 + len(encoded), DT_STRING)) + encoded

    # --- control transfers --------------------------------------------------------------

    def control(
        self, request_type: int, request: int, value: int, index: int, data: bytes, length: int
    ) -> bytes | None:
        kind, number = value >> 8, value & 0xFF
        if request_type == 0x80 and request == REQ_GET_DESCRIPTOR:
            answer = {
                DT_DEVICE: self._device_bytes,
                DT_CONFIGURATION: self._configuration_bytes,
            }.get(kind)
            if answer is not None:
                return answer()[:length]
            if kind == DT_STRING:
                string = self._string(number)
                return None if string is None else string[:length]
            return None
        if request_type == 0x81 and request == REQ_GET_DESCRIPTOR and index == 0:
            if kind == DT_REPORT:
                return self.report_descriptor[:length]
            if kind == DT_HID:
                return self._hid_descriptor()[:length]
            return None
        if request_type == 0x80 and request == REQ_GET_STATUS:
            return b"\x00\x00"[:length]
        if request_type == 0x80 and request == REQ_GET_CONFIGURATION:
            return bytes((self.configuration,))[:length]
        if request_type == 0x00 and request == REQ_SET_CONFIGURATION:
            self.configuration = value
            return b""
        if request_type == 0x21 and request in (HID_SET_IDLE, HID_SET_PROTOCOL):
            return b""
        return None

    # --- reports ------------------------------------------------------------------------

    def send_report(self, report: bytes) -> None:
        self._in.put(report.ljust(self.report_size, b"\0"))

    def read_in(self, endpoint: int, timeout: float) -> bytes | None:
        if endpoint != self.ep_in:
            return None
        try:
            return self._in.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def out(self, endpoint: int, data: bytes) -> None:
        """Subclasses handle OUT reports."""

    def touch(self) -> None:
        """Subclasses with a button handle presses."""

    def close(self) -> None:
        """Subclasses stop their work here."""
