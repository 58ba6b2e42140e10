"""USB HID transport with pyusb: find FIDO devices by their HID report descriptor (usage page
0xF1D0), claim the interface and move 64-byte reports over the interrupt endpoints.

``UsbCtapHidConnection`` is a python-fido2 ``CtapHidConnection``, so python-fido2's
``CtapHidDevice``, ``Ctap2``, ``ClientPin`` and ``Fido2Client`` run over it unchanged. Which
USB stack is used is the caller's choice of pyusb backends: libusb for hardware, the
simulator's backend for the simulated bus.
"""

from __future__ import annotations

import errno
import logging
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import usb.core
import usb.util
from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor, parse_report_descriptor

from devices.errors import DeviceError, DeviceRemoved, DeviceTimeout, TransportError

log = logging.getLogger(__name__)

HID_CLASS = 3
READ_TIMEOUT_MS = 30_000  # a token answers or sends KEEPALIVE at least every 100 ms
WRITE_TIMEOUT_MS = 5_000


def usb_error(exc: usb.core.USBError, doing: str) -> DeviceError:
    """A pyusb error as the typed error a caller can act on."""
    if isinstance(exc, usb.core.USBTimeoutError):
        return DeviceTimeout(f"{doing}: the token did not answer in time")
    if exc.errno in (errno.ENODEV, errno.ENOENT, errno.EIO, errno.EPIPE, errno.ESHUTDOWN):
        return DeviceRemoved(f"{doing}: the token was unplugged ({exc})")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return TransportError(
            f"{doing}: no permission to use the USB device ({exc})",
            hint="add a udev rule for the token or run with the needed permissions",
        )
    if exc.errno == errno.EBUSY:
        return TransportError(f"{doing}: another program holds the token ({exc})")
    return TransportError(f"{doing}: {exc}")


@dataclass(frozen=True)
class UsbHidInterface:
    """A FIDO HID interface found on a USB device."""

    device: Any  # usb.core.Device
    interface: int
    ep_in: int
    ep_out: int
    report_size_in: int
    report_size_out: int
    product_name: str | None
    serial_number: str | None

    @property
    def path(self) -> str:
        return f"usb:{self.device.bus:03d}:{self.device.address:03d}:{self.interface}"

    def descriptor(self) -> HidDescriptor:
        return HidDescriptor(
            self.path,
            self.device.idVendor,
            self.device.idProduct,
            self.report_size_in,
            self.report_size_out,
            self.product_name,
            self.serial_number,
        )


def _report_descriptor_length(extra: bytes) -> int:
    """wDescriptorLength of the report descriptor, from the HID class descriptor."""
    offset = 0
    while offset + 2 <= len(extra):
        length, kind = extra[offset], extra[offset + 1]
        if length == 0:
            break
        if kind == 0x21 and length >= 9:
            return int(struct.unpack_from("<H", extra, offset + 7)[0])
        offset += length
    return 1024


def _string(device: Any, index: int) -> str | None:
    if not index:
        return None
    try:
        return str(usb.util.get_string(device, index))
    except (usb.core.USBError, ValueError, NotImplementedError):
        return None


def _fido_interfaces(device: Any) -> Iterator[UsbHidInterface]:
    for configuration in device:
        for interface in configuration:
            if interface.bInterfaceClass != HID_CLASS:
                continue
            number = interface.bInterfaceNumber
            length = _report_descriptor_length(bytes(interface.extra_descriptors))
            try:
                report = bytes(device.ctrl_transfer(0x81, 0x06, 0x2200, number, length))
                size_in, size_out = parse_report_descriptor(report)
            except (usb.core.USBError, ValueError):
                continue  # not readable, or not a FIDO interface
            endpoints = {ep.bEndpointAddress & 0x80: ep.bEndpointAddress for ep in interface}
            if 0x80 not in endpoints or 0x00 not in endpoints:
                continue
            yield UsbHidInterface(
                device,
                number,
                endpoints[0x80],
                endpoints[0x00],
                size_in,
                size_out,
                _string(device, device.iProduct),
                _string(device, device.iSerialNumber),
            )


def find_fido_interfaces(backends: Iterable[Any]) -> list[UsbHidInterface]:
    """Every FIDO HID interface reachable through the given pyusb backends."""
    found: list[UsbHidInterface] = []
    for backend in backends:
        try:
            devices = list(usb.core.find(find_all=True, backend=backend))
        except usb.core.USBError as exc:
            log.warning("USB enumeration failed: %s", exc)
            continue
        for device in devices:
            try:
                found.extend(_fido_interfaces(device))
            except usb.core.USBError as exc:
                log.debug("skipping USB device %s: %s", device, exc)
    return found


class UsbCtapHidConnection(CtapHidConnection):
    """python-fido2's connection seam over pyusb interrupt endpoints.

    On raw endpoints a report has no report-ID byte (only hidraw adds one)."""

    def __init__(self, interface: UsbHidInterface) -> None:
        self.interface = interface
        self._device = interface.device
        self._reattach = False
        try:
            if self._device.is_kernel_driver_active(interface.interface):
                self._device.detach_kernel_driver(interface.interface)
                self._reattach = True
            usb.util.claim_interface(self._device, interface.interface)
        except NotImplementedError:
            pass  # backends without kernel drivers
        except usb.core.USBError as exc:
            raise usb_error(exc, "opening the token") from exc

    def read_packet(self) -> bytes:
        try:
            data = self._device.read(
                self.interface.ep_in, self.interface.report_size_in, READ_TIMEOUT_MS
            )
        except usb.core.USBError as exc:
            raise usb_error(exc, "reading from the token") from exc
        return bytes(data)

    def write_packet(self, data: bytes) -> None:
        try:
            written = self._device.write(self.interface.ep_out, data, WRITE_TIMEOUT_MS)
        except usb.core.USBError as exc:
            raise usb_error(exc, "writing to the token") from exc
        if written != len(data):
            raise TransportError(f"the token took {written} of {len(data)} bytes")

    def close(self) -> None:
        try:
            usb.util.release_interface(self._device, self.interface.interface)
            if self._reattach:
                self._device.attach_kernel_driver(self.interface.interface)
        except (usb.core.USBError, NotImplementedError):
            pass  # already gone: nothing to release
        usb.util.dispose_resources(self._device)


def open_ctap_device(interface: UsbHidInterface) -> CtapHidDevice:
    """A python-fido2 ``CtapHidDevice`` on the interface (sends CTAPHID INIT)."""
    connection = UsbCtapHidConnection(interface)
    try:
        return CtapHidDevice(interface.descriptor(), connection)
    except Exception:
        connection.close()
        raise
