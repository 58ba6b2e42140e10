"""The NFC OTP token: an NFC Forum Type 4 Tag whose NDEF file holds a URI record carrying a
fresh one-time password each time the file is selected, as YubiKey-style tags do."""

from __future__ import annotations

from devices.protocol.apdu import CommandApdu
from devices.protocol.ndef import (
    CC_FILE_ID,
    NDEF_AID,
    NDEF_FILE_ID,
    CapabilityContainer,
    encode_message,
    ndef_file,
    uri_record,
)
from devices.protocol.sw import SW
from firmware_sim.tokens.card import SimulatedCard, build_atr
from firmware_sim.tokens.otp_token import OtpGenerator

ATR = build_atr(b"\x80\x5a" + b"akkreditiv", contactless=True)
INS_SELECT = 0xA4
INS_READ_BINARY = 0xB0
INS_UPDATE_BINARY = 0xD6
MAX_NDEF_SIZE = 0x0400


class NdefTagApplet:
    aid = NDEF_AID

    def __init__(self, generator: OtpGenerator) -> None:
        self.generator = generator
        self.capability = CapabilityContainer(max_ndef_size=MAX_NDEF_SIZE)
        self._file: bytes | None = None

    def power_reset(self) -> None:
        self._file = None

    def deselect(self) -> None:
        self._file = None

    def select(self, apdu: CommandApdu) -> bytes:
        self._file = None
        return b""

    def process(self, apdu: CommandApdu) -> tuple[bytes, int]:
        if apdu.cla != 0x00:
            return b"", SW.CLA_NOT_SUPPORTED
        if apdu.ins == INS_SELECT:
            return self._select_file(apdu)
        if apdu.ins == INS_READ_BINARY:
            return self._read_binary(apdu)
        if apdu.ins == INS_UPDATE_BINARY:
            return b"", SW.SECURITY_STATUS_NOT_SATISFIED  # the tag is read-only
        return b"", SW.INS_NOT_SUPPORTED

    def _select_file(self, apdu: CommandApdu) -> tuple[bytes, int]:
        if apdu.p1 != 0x00 or len(apdu.data) != 2:
            return b"", SW.INCORRECT_P1P2
        file_id = int.from_bytes(apdu.data, "big")
        if file_id == CC_FILE_ID:
            self._file = self.capability.encode()
        elif file_id == NDEF_FILE_ID:
            # Every selection of the NDEF file is a new read: a new code.
            uri = self.generator.token.uri_prefix + self.generator.next_code()
            self._file = ndef_file(encode_message([uri_record(uri)]))
        else:
            return b"", SW.FILE_NOT_FOUND
        return b"", SW.SUCCESS

    def _read_binary(self, apdu: CommandApdu) -> tuple[bytes, int]:
        if self._file is None:
            return b"", SW.CONDITIONS_NOT_SATISFIED
        offset = (apdu.p1 << 8) | apdu.p2
        if apdu.p1 & 0x80 or offset > len(self._file):
            return b"", SW.INCORRECT_P1P2
        length = min(apdu.le or 256, self.capability.max_le)
        return self._file[offset : offset + length], SW.SUCCESS


def make_card(generator: OtpGenerator, *, strict: bool = False) -> SimulatedCard:
    return SimulatedCard(atr=ATR, applets=[NdefTagApplet(generator)], strict=strict)
