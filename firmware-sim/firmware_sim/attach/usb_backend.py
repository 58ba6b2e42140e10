"""A pyusb backend (``usb.backend.IBackend``) that reaches the simulated USB bus.

With it, ``usb.core.find(backend=SimulatedBusBackend())`` finds simulated tokens and the
driver's ordinary pyusb calls (descriptors, control transfers, interrupt endpoints) reach
the device processes; with real hardware the libusb backend takes its place.
"""

from __future__ import annotations

import array
import errno
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import usb.backend
import usb.core

from firmware_sim.attach import usb_bus

SIM_BUS_NUMBER = 250  # far from the bus numbers real host controllers get


def _gone(address: int) -> usb.core.USBError:
    return usb.core.USBError(f"simulated device {address} is gone", errno.ENODEV, errno.ENODEV)


@dataclass
class _Device:
    info: usb_bus.DeviceInfo
    descriptors: dict[str, Any]


@dataclass
class _Handle:
    device: _Device
    sock: socket.socket
    lock: threading.Lock = field(default_factory=threading.Lock)
    configuration: int = 1

    def call(self, message: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            try:
                usb_bus.send_frame(self.sock, message)
                reply = usb_bus.recv_frame(self.sock)
            except (OSError, ConnectionError, ValueError) as exc:
                raise _gone(self.device.info.address) from exc
        if "error" in reply:
            raise usb.core.USBError(str(reply["error"]), errno.EIO, errno.EIO)
        return reply


def _extra(data: dict[str, Any]) -> array.array[int]:
    return array.array("B", bytes.fromhex(data.get("extra", "")))


class SimulatedBusBackend(usb.backend.IBackend):  # type: ignore[misc]
    """pyusb backend over the folder of device sockets that ``usb_bus`` maintains."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder

    def enumerate_devices(self) -> list[_Device]:
        found = []
        for info in usb_bus.devices(self.folder):
            try:
                reply = usb_bus.request(info, {"op": "describe"})
            except (usb_bus.BusError, OSError, ConnectionError):
                continue  # unplugged while we looked
            found.append(_Device(info, reply["descriptors"]))
        return found

    # --- descriptors --------------------------------------------------------------------

    def get_device_descriptor(self, dev: _Device) -> SimpleNamespace:
        d = dev.descriptors["device"]
        return SimpleNamespace(
            bLength=18,
            bDescriptorType=1,
            bcdUSB=d.get("bcdUSB", 0x0200),
            bDeviceClass=d.get("bDeviceClass", 0),
            bDeviceSubClass=d.get("bDeviceSubClass", 0),
            bDeviceProtocol=d.get("bDeviceProtocol", 0),
            bMaxPacketSize0=d.get("bMaxPacketSize0", 64),
            idVendor=d["idVendor"],
            idProduct=d["idProduct"],
            bcdDevice=d.get("bcdDevice", 0x0100),
            iManufacturer=d.get("iManufacturer", 1),
            iProduct=d.get("iProduct", 2),
            iSerialNumber=d.get("iSerialNumber", 3),
            bNumConfigurations=1,
            address=dev.info.address,
            bus=SIM_BUS_NUMBER,
            port_number=dev.info.address,
            port_numbers=(dev.info.address,),
            speed=2,  # full speed, as FIDO tokens are
        )

    def get_configuration_descriptor(self, dev: _Device, config: int) -> SimpleNamespace:
        if config != 0:
            raise IndexError("one configuration")
        c = dev.descriptors["configuration"]
        interfaces = c["interfaces"]
        return SimpleNamespace(
            bLength=9,
            bDescriptorType=2,
            wTotalLength=c.get("wTotalLength", 0),
            bNumInterfaces=len(interfaces),
            bConfigurationValue=1,
            iConfiguration=0,
            bmAttributes=c.get("bmAttributes", 0x80),
            bMaxPower=c.get("bMaxPower", 50),
            extra_descriptors=array.array("B"),
        )

    def _interface(self, dev: _Device, intf: int, alt: int, config: int) -> dict[str, Any]:
        interfaces = dev.descriptors["configuration"]["interfaces"]
        if config != 0 or alt != 0 or not 0 <= intf < len(interfaces):
            raise IndexError("no such interface")
        interface: dict[str, Any] = interfaces[intf]
        return interface

    def get_interface_descriptor(
        self, dev: _Device, intf: int, alt: int, config: int
    ) -> SimpleNamespace:
        i = self._interface(dev, intf, alt, config)
        return SimpleNamespace(
            bLength=9,
            bDescriptorType=4,
            bInterfaceNumber=i["bInterfaceNumber"],
            bAlternateSetting=0,
            bNumEndpoints=len(i["endpoints"]),
            bInterfaceClass=i["bInterfaceClass"],
            bInterfaceSubClass=i.get("bInterfaceSubClass", 0),
            bInterfaceProtocol=i.get("bInterfaceProtocol", 0),
            iInterface=i.get("iInterface", 0),
            extra_descriptors=_extra(i),
        )

    def get_endpoint_descriptor(
        self, dev: _Device, ep: int, intf: int, alt: int, config: int
    ) -> SimpleNamespace:
        endpoints = self._interface(dev, intf, alt, config)["endpoints"]
        if not 0 <= ep < len(endpoints):
            raise IndexError("no such endpoint")
        e = endpoints[ep]
        return SimpleNamespace(
            bLength=7,
            bDescriptorType=5,
            bEndpointAddress=e["bEndpointAddress"],
            bmAttributes=e.get("bmAttributes", 0x03),
            wMaxPacketSize=e.get("wMaxPacketSize", 64),
            bInterval=e.get("bInterval", 5),
            bRefresh=0,
            bSynchAddress=0,
            extra_descriptors=array.array("B"),
        )

    # --- handles ------------------------------------------------------------------------

    def open_device(self, dev: _Device) -> _Handle:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(dev.info.socket)
        except OSError as exc:
            sock.close()
            raise _gone(dev.info.address) from exc
        return _Handle(dev, sock)

    def close_device(self, dev_handle: _Handle) -> None:
        dev_handle.sock.close()

    def set_configuration(self, dev_handle: _Handle, config_value: int) -> None:
        dev_handle.configuration = config_value

    def get_configuration(self, dev_handle: _Handle) -> int:
        return dev_handle.configuration

    def set_interface_altsetting(self, dev_handle: _Handle, intf: int, altsetting: int) -> None:
        if altsetting != 0:
            raise usb.core.USBError("no alternate settings", errno.EINVAL, errno.EINVAL)

    def claim_interface(self, dev_handle: _Handle, intf: int) -> None:
        dev_handle.call({"op": "ping"})  # a claim on a device that left fails like libusb's

    def release_interface(self, dev_handle: _Handle, intf: int) -> None:
        return None

    def is_kernel_driver_active(self, dev_handle: _Handle, intf: int) -> bool:
        return False

    def detach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        return None

    def attach_kernel_driver(self, dev_handle: _Handle, intf: int) -> None:
        return None

    # --- transfers ----------------------------------------------------------------------

    def ctrl_transfer(  # pyusb's own parameter names
        self,
        dev_handle: _Handle,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: array.array[int],
        timeout: int,
    ) -> int:
        device_to_host = bool(bmRequestType & 0x80)
        reply = dev_handle.call(
            {
                "op": "control",
                "request_type": bmRequestType,
                "request": bRequest,
                "value": wValue,
                "index": wIndex,
                "data": "" if device_to_host else bytes(data).hex(),
                "length": len(data) if device_to_host else 0,
            }
        )
        if reply.get("stall"):
            raise usb.core.USBError("pipe error (stall)", errno.EPIPE, errno.EPIPE)
        if not device_to_host:
            return len(data)
        answer = bytes.fromhex(reply["data"])[: len(data)]
        data[: len(answer)] = array.array("B", answer)
        return len(answer)

    def intr_write(
        self, dev_handle: _Handle, ep: int, intf: int, data: array.array[int], timeout: int
    ) -> int:
        dev_handle.call({"op": "out", "endpoint": ep, "data": bytes(data).hex()})
        return len(data)

    def intr_read(
        self, dev_handle: _Handle, ep: int, intf: int, buff: array.array[int], timeout: int
    ) -> int:
        seconds = (timeout or 0) / 1000 if timeout else 3600.0
        reply = dev_handle.call({"op": "in", "endpoint": ep, "timeout": seconds})
        if reply.get("timeout"):
            raise usb.core.USBTimeoutError("timed out", errno.ETIMEDOUT, errno.ETIMEDOUT)
        report = bytes.fromhex(reply["data"])[: len(buff)]
        buff[: len(report)] = array.array("B", report)
        return len(report)
