"""FIDO2 assertions per second on one simulated authenticator design, over three paths in the
same run: in-process calls (baseline), the simulated USB bus (pyusb + CTAPHID), and NFC through
pcscd (vpcd + NFCCTAP). Each assertion is authenticatorGetAssertion with up=false, so no
button is pressed and only the transports differ.

    .venv/bin/python benchmarks/bench_fido.py [--seconds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path

from bench_common import attached, free_reader, rate
from fido2.ctap import CtapDevice
from fido2.ctap2.base import Ctap2
from fido2.pcsc import CtapPcscDevice

from devices.transports.usb import find_fido_interfaces, open_ctap_device
from firmware_sim.attach import usb_bus
from firmware_sim.attach.inprocess_ctap import InProcessCtapDevice
from firmware_sim.attach.usb_backend import SimulatedBusBackend
from firmware_sim.tokens import ctap2

RP_ID = "bench.example"


def assertion_loop(
    device: CtapDevice, on_touch: Callable[[], None] | None = None
) -> Callable[[], object]:
    """Register once (touching when the key asks), then assert silently."""
    ctap = Ctap2(device)

    def keepalive(status: int) -> None:
        if status == 2 and on_touch is not None:
            on_touch()

    attestation = ctap.make_credential(
        os.urandom(32),
        {"id": RP_ID, "name": "bench"},
        {"id": b"bench-user", "name": "bench"},
        [{"type": "public-key", "alg": -7}],
        on_keepalive=keepalive,
    )
    assert attestation.auth_data.credential_data is not None
    credential_id = attestation.auth_data.credential_data.credential_id
    allow = [{"type": "public-key", "id": credential_id}]
    client_data_hash = sha256(b"bench").digest()

    def assert_once() -> object:
        return ctap.get_assertion(RP_ID, client_data_hash, allow, options={"up": False})

    return assert_once


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--minimum", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        os.environ.setdefault("AKKREDITIV_SIM_HOME", str(folder / "home"))
        bus = folder / "bus"

        local_state = folder / "local.json"
        ctap2.new_fido_state(local_state)
        local = InProcessCtapDevice(ctap2.load_authenticator(local_state, ctap2.AlwaysPresent()))
        in_process, in_process_n = rate(assertion_loop(local), args.seconds, args.minimum)

        usb_state = folder / "usb.json"
        ctap2.new_fido_state(usb_state)
        usb_bus.plug("fido", usb_state, bus)
        try:
            interface = find_fido_interfaces([SimulatedBusBackend(bus)])[0]
            device = open_ctap_device(interface)
            try:
                loop = assertion_loop(device, lambda: usb_bus.touch(usb_state, bus))
                over_usb, usb_n = rate(loop, args.seconds, args.minimum)
            finally:
                device.close()
        finally:
            usb_bus.unplug(usb_state, bus)

        reader = free_reader()
        if reader is None:
            return 2
        nfc_state = folder / "nfc.json"
        ctap2.new_fido_state(nfc_state)
        with attached("fido", nfc_state, reader):
            nfc = next(iter(CtapPcscDevice.list_devices(reader.name)))
            try:
                over_nfc, nfc_n = rate(assertion_loop(nfc), args.seconds, args.minimum)
            finally:
                nfc.close()

    results = {
        "in_process_assertions_per_s": round(in_process, 1),
        "usb_assertions_per_s": round(over_usb, 1),
        "nfc_pcscd_assertions_per_s": round(over_nfc, 1),
        "usb_vs_in_process_ratio": round(over_usb / in_process, 3),
        "nfc_vs_in_process_ratio": round(over_nfc / in_process, 3),
        "operations": {"in_process": in_process_n, "usb": usb_n, "nfc": nfc_n},
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"getAssertion in-process          {in_process:9.1f} /s   (baseline)")
        print(
            f"getAssertion over simulated USB  {over_usb:9.1f} /s   {over_usb / in_process:.3f} x"
        )
        print(
            f"getAssertion over NFC (pcscd)    {over_nfc:9.1f} /s   {over_nfc / in_process:.3f} x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
