"""Reach a simulated card directly, without pcscd: for unit tests and for the benchmark that
shows what the PC/SC stack costs. Production code never uses this."""

from __future__ import annotations

from devices.protocol.apdu import CommandApdu, ResponseApdu
from devices.protocol.chaining import transmit as chained_transmit
from firmware_sim.tokens.card import SimulatedCard


class InProcessConnection:
    """The same ``send``/``transmit`` seam as ``devices.transports.pcsc.PcscConnection``."""

    def __init__(self, card: SimulatedCard) -> None:
        self.card = card
        if not card.powered:
            card.power_on()

    def send(self, apdu: CommandApdu) -> ResponseApdu:
        return ResponseApdu.decode(self.card.transmit(apdu.encode()))

    def transmit(self, apdu: CommandApdu) -> ResponseApdu:
        return chained_transmit(self.send, apdu)
