"""The USB OTP token: a HID boot keyboard that, when touched, types its one-time password and
Enter as key-down and key-up input reports, exactly as a keyboard does."""

from __future__ import annotations

import logging
from collections.abc import Callable

from devices.protocol.hid_keyboard import REPORT_SIZE, get_layout, type_text
from firmware_sim.faults import Action, FaultPlan, Phase
from firmware_sim.tokens.hid_device import HidDevice
from firmware_sim.tokens.otp_token import OtpGenerator

log = logging.getLogger(__name__)

# The HID 1.11 appendix B boot keyboard: modifiers, reserved byte, six key codes; LEDs out.
BOOT_KEYBOARD_REPORT_DESCRIPTOR = bytes.fromhex(
    "05010906a101050719e029e71500250175019508810295017508810195057501"
    "05081901290591029501750391019506750815002565050719002965810"
    "0c0"
)
OTP_PRODUCT_ID = 0x0701
TOUCH_CODE = 0x00  # what a fault plan's --ins matches on a keyboard token: the touch


class OtpKeyboardDevice(HidDevice):
    kind = "otp-usb"
    product_id = OTP_PRODUCT_ID
    interface_subclass = 1  # boot interface
    interface_protocol = 1  # keyboard
    report_descriptor = BOOT_KEYBOARD_REPORT_DESCRIPTOR
    report_size = REPORT_SIZE
    ep_out = 0  # a keyboard token has no OUT endpoint
    product = "akkreditiv simulated OTP token"

    def __init__(
        self,
        generator: OtpGenerator,
        *,
        faults: FaultPlan | None = None,
        on_pull: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(generator.token.serial)
        self.generator = generator
        self.layout = get_layout(generator.token.layout)
        self._faults = faults
        self._on_pull = on_pull

    def touch(self) -> None:
        code = self.generator.next_code()
        reports = type_text(code + "\n", self.layout)
        fault = self._faults.take(TOUCH_CODE, Phase.AFTER, Action.PULL) if self._faults else None
        if fault is not None:
            # Pulled out while typing: the host gets half an OTP and then no device.
            reports = reports[: len(reports) // 2]
        for report in reports:
            self.send_report(report)
        if fault is not None and self._on_pull is not None:
            log.warning("fault: OTP token pulled while typing")
            self._on_pull()
