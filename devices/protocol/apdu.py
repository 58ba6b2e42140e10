"""ISO 7816-4 command and response APDUs (short and extended), with no I/O.

The four cases of ISO 7816-3 12.1 in both encodings:
  case 1  CLA INS P1 P2
  case 2  header Le                      (short Le: 1 byte, 00 = 256; extended: 00 Le1 Le2)
  case 3  header Lc data                 (short Lc: 1 byte 01..FF; extended: 00 Lc1 Lc2)
  case 4  header Lc data Le
"""

from __future__ import annotations

from dataclasses import dataclass

from devices.protocol.errors import MalformedApdu
from devices.protocol.sw import SW, error_for_sw

SHORT_MAX_DATA = 255
SHORT_MAX_LE = 256
EXTENDED_MAX_DATA = 65535
EXTENDED_MAX_LE = 65536

CLA_CHAINING = 0x10
INS_GET_RESPONSE = 0xC0


@dataclass(frozen=True, slots=True)
class CommandApdu:
    """A command APDU. ``le`` is the expected response length: None means absent (no data
    expected), 256 is the short maximum and 65536 the extended one."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None
    extended: bool = False

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFF:
                raise MalformedApdu(f"{name} must be one byte, got {value}", field=name)
        # Le counts from 1: an encoded 00 means the maximum, and "no data" is an absent Le.
        if self.le is not None and not 1 <= self.le <= EXTENDED_MAX_LE:
            raise MalformedApdu(f"Le {self.le} is out of range 1..65536", field="le")
        if len(self.data) > EXTENDED_MAX_DATA:
            raise MalformedApdu("command data longer than 65535 bytes", field="data")

    @property
    def needs_extended(self) -> bool:
        return (
            self.extended
            or len(self.data) > SHORT_MAX_DATA
            or (self.le is not None and self.le > SHORT_MAX_LE)
        )

    @property
    def chained(self) -> bool:
        """True when CLA says more command data follows (ISO 7816-4 5.3.3). Proprietary
        classes 8x/9x use the same bit (CTAP's NFCCTAP_MSG chains with CLA 90)."""
        return bool(self.cla & CLA_CHAINING) and self.cla & 0xE0 in (0x00, 0x80)

    def encode(self) -> bytes:
        header = bytes((self.cla, self.ins, self.p1, self.p2))
        if self.needs_extended:
            body = b""
            if self.data:
                body += b"\x00" + len(self.data).to_bytes(2, "big") + self.data
            if self.le is not None:
                le = b"\x00\x00" if self.le == EXTENDED_MAX_LE else self.le.to_bytes(2, "big")
                body += le if self.data else b"\x00" + le
            return header + body
        body = b""
        if self.data:
            body += bytes((len(self.data),)) + self.data
        if self.le is not None:
            body += bytes((0 if self.le == SHORT_MAX_LE else self.le,))
        return header + body

    @classmethod
    def decode(cls, raw: bytes) -> CommandApdu:
        """Parse any of the seven encodings; raises ``MalformedApdu`` naming the bad field."""
        if len(raw) < 4:
            raise MalformedApdu(
                f"an APDU has a 4-byte header, got {len(raw)} bytes", field="header"
            )
        cla, ins, p1, p2 = raw[:4]
        body = raw[4:]
        if not body:
            return cls(cla, ins, p1, p2)
        if len(body) == 1:
            return cls(cla, ins, p1, p2, le=body[0] or SHORT_MAX_LE)
        if body[0] != 0:
            lc = body[0]
            if len(body) == 1 + lc:
                return cls(cla, ins, p1, p2, data=bytes(body[1:]))
            if len(body) == 2 + lc:
                return cls(cla, ins, p1, p2, data=bytes(body[1 : 1 + lc]), le=body[-1] or 256)
            raise MalformedApdu(f"Lc says {lc} data bytes but {len(body) - 1} follow", field="lc")
        # Extended: a 00 byte, then two length bytes.
        if len(body) == 3:
            le = int.from_bytes(body[1:3], "big") or EXTENDED_MAX_LE
            return cls(cla, ins, p1, p2, le=le, extended=True)
        if len(body) < 3:
            raise MalformedApdu("truncated extended length", field="lc")
        lc = int.from_bytes(body[1:3], "big")
        if lc == 0:
            raise MalformedApdu("extended Lc of zero", field="lc")
        rest = body[3:]
        if len(rest) == lc:
            return cls(cla, ins, p1, p2, data=bytes(rest), extended=True)
        if len(rest) == lc + 2:
            le = int.from_bytes(rest[lc:], "big") or EXTENDED_MAX_LE
            return cls(cla, ins, p1, p2, data=bytes(rest[:lc]), le=le, extended=True)
        raise MalformedApdu(f"extended Lc says {lc} data bytes but {len(rest)} follow", field="lc")

    def __repr__(self) -> str:
        return (
            f"CommandApdu({self.cla:02X} {self.ins:02X} {self.p1:02X} {self.p2:02X}, "
            f"data={len(self.data)} bytes, le={self.le})"
        )


@dataclass(frozen=True, slots=True)
class ResponseApdu:
    """A response APDU: data followed by SW1 SW2."""

    data: bytes
    sw: int

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        return self.sw == SW.SUCCESS

    @property
    def more_data(self) -> bool:
        return self.sw1 == 0x61

    def encode(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    @classmethod
    def decode(cls, raw: bytes) -> ResponseApdu:
        if len(raw) < 2:
            raise MalformedApdu(
                f"a response ends with a 2-byte status word, got {len(raw)} bytes", field="sw"
            )
        return cls(bytes(raw[:-2]), int.from_bytes(raw[-2:], "big"))

    def check(self) -> bytes:
        """The data if the status word is 9000, else raise the status word's typed error."""
        if not self.ok:
            raise error_for_sw(self.sw)
        return self.data

    def __repr__(self) -> str:
        return f"ResponseApdu(data={len(self.data)} bytes, sw={self.sw:04X})"


# Instructions whose data is secret: VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER
# carry PINs and PUKs; YKOATH's PUT (01), SET CODE (03) and VALIDATE (A3) carry OATH secrets
# and access keys.
_SECRET_INS = frozenset({0x20, 0x24, 0x2C, 0x01, 0x03, 0xA3})


def redact_for_log(raw: bytes) -> str:
    """Hex for a debug log, with the data of PIN-carrying commands left out."""
    if len(raw) > 5 and raw[1] in _SECRET_INS:
        return f"{raw[:4].hex()} <{len(raw) - 4} bytes with a secret, not logged>"
    return raw.hex()
