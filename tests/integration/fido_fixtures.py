"""Fixtures for FIDO keys on the simulated USB bus: each key is its own process, plugged,
touched and unplugged through the same commands a test rig uses."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fido2.hid import CtapHidDevice

from devices.tokens.fido import FidoSession
from devices.transports.usb import UsbHidInterface, find_fido_interfaces, open_ctap_device
from firmware_sim.attach import usb_bus
from firmware_sim.attach.usb_backend import SimulatedBusBackend
from firmware_sim.tokens import ctap2

RP_ID = "example.com"
ORIGIN = "https://example.com"


@dataclass
class PluggedKey:
    state: Path
    bus: Path
    info: usb_bus.DeviceInfo

    def touch(self) -> None:
        usb_bus.touch(self.state, self.bus)

    def interface(self) -> UsbHidInterface:
        for interface in find_fido_interfaces([SimulatedBusBackend(self.bus)]):
            if interface.serial_number == self.info.serial:
                return interface
        raise AssertionError(f"key {self.info.serial} is not on the bus")

    def open(self) -> CtapHidDevice:
        return open_ctap_device(self.interface())

    def session(self) -> FidoSession:
        """A driver session whose 'touch your key' prompt presses the simulated button,
        exactly when the key asks for it (KEEPALIVE with UP needed)."""
        return FidoSession(self.open(), on_touch=self.touch)

    def unplug(self) -> None:
        usb_bus.unplug(self.state, self.bus)


@pytest.fixture(scope="session")
def sim_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The simulator's manufacturer (attestation CA) for this test run."""
    home = tmp_path_factory.mktemp("sim-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AKKREDITIV_SIM_HOME", str(home))
        yield home


@pytest.fixture
def usb_bus_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "usb"
    monkeypatch.setenv("AKKREDITIV_USB_BUS", str(folder))
    return folder


@pytest.fixture
def plug_key(
    sim_home: Path, usb_bus_dir: Path, tmp_path: Path
) -> Iterator[Callable[..., PluggedKey]]:
    plugged: list[PluggedKey] = []
    counter = iter(range(1000))

    def _plug(
        state: Path | None = None, *, up_timeout: float | None = None, u2f: bool = True
    ) -> PluggedKey:
        if state is None:
            state = tmp_path / f"fido-{next(counter)}.json"
            ctap2.new_fido_state(state, manufacturer_home=sim_home, u2f=u2f)
        info = usb_bus.plug("fido", state, usb_bus_dir, up_timeout=up_timeout)
        key = PluggedKey(state, usb_bus_dir, info)
        plugged.append(key)
        return key

    yield _plug
    for key in plugged:
        with contextlib.suppress(usb_bus.BusError):
            key.unplug()
