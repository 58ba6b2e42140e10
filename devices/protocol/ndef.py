"""NFC Forum Type 4 Tag files and NDEF messages, with no I/O: how an NFC OTP token hands its code
to a phone as a URI record (NDEF 1.0, URI RTD 1.0, Type 4 Tag 2.0).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, unique

from devices.protocol.errors import MalformedNdef

NDEF_AID = bytes.fromhex("D2760000850101")  # the NDEF Tag Application, mapping version 2.0+
CC_FILE_ID = 0xE103
NDEF_FILE_ID = 0xE104

CC_SIZE = 15  # CCLEN, version, MLe, MLc and the NDEF File Control TLV
NLEN_SIZE = 2
MAX_NLEN = 0xFFFE  # FFFF is RFU

TLV_NDEF_FILE_CONTROL = 0x04
TLV_EXTENDED_NDEF_FILE_CONTROL = 0x06  # mapping version 3.0, 4-byte sizes
NDEF_FILE_CONTROL_LENGTH = 6

ACCESS_GRANTED = 0x00
ACCESS_DENIED = 0xFF

# File identifiers a Type 4 Tag may not use for its NDEF file (T4T 2.0, 5.1.2.1).
_RESERVED_FILE_IDS = frozenset({0x0000, 0xE102, CC_FILE_ID, 0x3F00, 0x3FFF, 0xFFFF})

# Record header flags (NDEF 1.0, 3.2).
MB = 0x80  # message begin
ME = 0x40  # message end
CF = 0x20  # chunk flag
SR = 0x10  # short record: one-byte payload length
IL = 0x08  # ID length present
TNF_MASK = 0x07
SHORT_RECORD_MAX = 0xFF
MAX_PAYLOAD = 0xFFFF_FFFF


@unique
class Tnf(IntEnum):
    """Type Name Format: how to read a record's type."""

    EMPTY = 0x00
    WELL_KNOWN = 0x01
    MIME_MEDIA = 0x02
    ABSOLUTE_URI = 0x03
    EXTERNAL = 0x04
    UNKNOWN = 0x05
    UNCHANGED = 0x06  # only in the later chunks of a chunked record
    RESERVED = 0x07


URI_TYPE = b"U"

# URI RTD 1.0, table 3: the prefix each URI identifier code stands for. 24..FF are RFU.
URI_PREFIXES: tuple[str, ...] = (
    "",
    "http://www.",
    "https://www.",
    "http://",
    "https://",
    "tel:",
    "mailto:",
    "ftp://anonymous:anonymous@",
    "ftp://ftp.",
    "ftps://",
    "sftp://",
    "smb://",
    "nfs://",
    "ftp://",
    "dav://",
    "news:",
    "telnet://",
    "imap:",
    "rtsp://",
    "urn:",
    "pop:",
    "sip:",
    "sips:",
    "tftp:",
    "btspp://",
    "btl2cap://",
    "btgoep://",
    "tcpobex://",
    "irdaobex://",
    "file://",
    "urn:epc:id:",
    "urn:epc:tag:",
    "urn:epc:pat:",
    "urn:epc:raw:",
    "urn:epc:",
    "urn:nfc:",
)
# Longest first, so that "https://www." wins over "https://" and "urn:epc:id:" over "urn:".
_PREFIXES_LONGEST_FIRST = sorted(
    range(1, len(URI_PREFIXES)), key=lambda code: -len(URI_PREFIXES[code])
)


@dataclass(frozen=True, slots=True)
class CapabilityContainer:
    """The Type 4 Tag CC file (E103): the tag's APDU limits and where its NDEF file is."""

    mapping_version: int = 0x20
    max_le: int = 0x00FF
    max_lc: int = 0x00FF
    ndef_file_id: int = NDEF_FILE_ID
    max_ndef_size: int = 0x0400
    read_access: int = ACCESS_GRANTED
    write_access: int = ACCESS_DENIED

    def __post_init__(self) -> None:
        if not 0x20 <= self.mapping_version <= 0x3F:
            raise MalformedNdef(
                f"mapping version 0x{self.mapping_version:02X} is not 2.x or 3.x",
                field="mapping_version",
            )
        if not 0x000F <= self.max_le <= 0xFFFF:
            raise MalformedNdef(f"MLe {self.max_le} is out of range 15..65535", field="max_le")
        if not 0x0001 <= self.max_lc <= 0xFFFF:
            raise MalformedNdef(f"MLc {self.max_lc} is out of range 1..65535", field="max_lc")
        if not 0 <= self.ndef_file_id <= 0xFFFF or self.ndef_file_id in _RESERVED_FILE_IDS:
            raise MalformedNdef(
                f"NDEF file identifier 0x{self.ndef_file_id:04X} is reserved",
                field="ndef_file_id",
            )
        if not 0x0005 <= self.max_ndef_size <= MAX_NLEN:
            raise MalformedNdef(
                f"maximum NDEF file size {self.max_ndef_size} is out of range 5..65534",
                field="max_ndef_size",
            )
        for name in ("read_access", "write_access"):
            value = getattr(self, name)
            # 01..7F are RFU; 80..FE are proprietary conditions.
            if not (value == ACCESS_GRANTED or 0x80 <= value <= 0xFF):
                raise MalformedNdef(f"{name} 0x{value:02X} is reserved", field=name)

    @property
    def readable(self) -> bool:
        return self.read_access == ACCESS_GRANTED

    @property
    def writable(self) -> bool:
        return self.write_access == ACCESS_GRANTED

    def encode(self) -> bytes:
        return struct.pack(
            ">HBHHBBHHBB",
            CC_SIZE,
            self.mapping_version,
            self.max_le,
            self.max_lc,
            TLV_NDEF_FILE_CONTROL,
            NDEF_FILE_CONTROL_LENGTH,
            self.ndef_file_id,
            self.max_ndef_size,
            self.read_access,
            self.write_access,
        )

    @classmethod
    def decode(cls, raw: bytes) -> CapabilityContainer:
        """Parse a whole CC file (CCLEN bytes). TLVs after the NDEF File Control TLV must be
        well formed and are otherwise ignored."""
        if len(raw) < 2:
            raise MalformedNdef(
                f"a CC file starts with 2-byte CCLEN, got {len(raw)} bytes", field="cclen"
            )
        cclen = int.from_bytes(raw[:2], "big")
        if cclen < CC_SIZE:
            raise MalformedNdef(f"CCLEN {cclen} is below the minimum of {CC_SIZE}", field="cclen")
        if cclen != len(raw):
            raise MalformedNdef(
                f"CCLEN says {cclen} bytes but the file has {len(raw)}", field="cclen"
            )
        version, max_le, max_lc, tag, length = struct.unpack_from(">BHHBB", raw, 2)
        if tag == TLV_EXTENDED_NDEF_FILE_CONTROL:
            raise MalformedNdef(
                "the extended NDEF File Control TLV (06) is not supported", field="tlv"
            )
        if tag != TLV_NDEF_FILE_CONTROL:
            raise MalformedNdef(
                f"expected the NDEF File Control TLV (04), got {tag:02X}", field="tlv"
            )
        if length != NDEF_FILE_CONTROL_LENGTH:
            raise MalformedNdef(
                f"NDEF File Control TLV of length {length}, not 6", field="tlv_length"
            )
        file_id, max_size, read, write = struct.unpack_from(">HHBB", raw, 9)
        offset = CC_SIZE
        while offset < len(raw):
            if offset + 2 > len(raw) or offset + 2 + raw[offset + 1] > len(raw):
                raise MalformedNdef(f"truncated TLV at offset {offset} of the CC file", field="tlv")
            offset += 2 + raw[offset + 1]
        return cls(version, max_le, max_lc, file_id, max_size, read, write)


@dataclass(frozen=True, slots=True)
class NdefRecord:
    """One unchunked NDEF record. The TNF's rules on type, ID and payload hold on construction
    (NDEF 1.0, 3.3.2): empty records are empty, unknown records have no type, the others
    have one."""

    tnf: int
    type: bytes
    payload: bytes
    id: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.tnf <= TNF_MASK:
            raise MalformedNdef(f"TNF {self.tnf} is out of range 0..7", field="tnf")
        if self.tnf == Tnf.UNCHANGED:
            raise MalformedNdef("TNF 6 (unchanged) belongs to chunked records", field="tnf")
        if self.tnf == Tnf.RESERVED:
            raise MalformedNdef("TNF 7 is reserved", field="tnf")
        if len(self.type) > 0xFF:
            raise MalformedNdef(f"type of {len(self.type)} bytes, at most 255", field="type")
        if len(self.id) > 0xFF:
            raise MalformedNdef(f"ID of {len(self.id)} bytes, at most 255", field="id")
        if len(self.payload) > MAX_PAYLOAD:
            raise MalformedNdef("payload longer than 2^32 - 1 bytes", field="payload")
        if self.tnf == Tnf.EMPTY:
            for name in ("type", "id", "payload"):
                if getattr(self, name):
                    raise MalformedNdef(f"an empty record (TNF 0) has no {name}", field=name)
        elif self.tnf == Tnf.UNKNOWN:
            if self.type:
                raise MalformedNdef("an unknown-type record (TNF 5) has no type", field="type")
        elif not self.type:
            raise MalformedNdef(f"a record with TNF {self.tnf} needs a type", field="type")

    def __repr__(self) -> str:
        return (
            f"NdefRecord(tnf={self.tnf}, type={self.type!r}, id={self.id!r}, "
            f"payload={len(self.payload)} bytes)"
        )


def _encode_record(record: NdefRecord, flags: int) -> bytes:
    short = len(record.payload) <= SHORT_RECORD_MAX
    header = flags | record.tnf | (SR if short else 0) | (IL if record.id else 0)
    out = bytearray((header, len(record.type)))
    out += len(record.payload).to_bytes(1 if short else 4, "big")
    if record.id:
        out.append(len(record.id))
    return bytes(out + record.type + record.id + record.payload)


def encode_message(records: Sequence[NdefRecord]) -> bytes:
    """An NDEF message: MB on the first record, ME on the last, short records where the
    payload fits, no chunks."""
    if not records:
        raise MalformedNdef("an NDEF message has at least one record", field="records")
    last = len(records) - 1
    return b"".join(
        _encode_record(record, (MB if i == 0 else 0) | (ME if i == last else 0))
        for i, record in enumerate(records)
    )


def decode_message(raw: bytes) -> list[NdefRecord]:
    """The records of one NDEF message, which must fill ``raw`` exactly; raises
    ``MalformedNdef`` naming the bad field."""
    if not raw:
        raise MalformedNdef(
            "an NDEF message has at least one record, got no bytes", field="message"
        )
    records: list[NdefRecord] = []
    offset = 0
    while True:
        index = len(records)
        if offset >= len(raw):
            raise MalformedNdef(f"the message ends after {index} records without ME", field="me")
        header = raw[offset]
        if bool(header & MB) != (index == 0):
            where = "the first record lacks" if index == 0 else f"record {index} has"
            raise MalformedNdef(f"{where} the message-begin flag", field="mb")
        if header & CF:
            raise MalformedNdef(f"record {index} is chunked, which is not supported", field="cf")
        fixed = 2 + (1 if header & SR else 4) + (1 if header & IL else 0)
        if offset + fixed > len(raw):
            raise MalformedNdef(f"record {index}'s header is truncated", field="header")
        type_length = raw[offset + 1]
        length_size = 1 if header & SR else 4
        payload_length = int.from_bytes(raw[offset + 2 : offset + 2 + length_size], "big")
        id_length = raw[offset + fixed - 1] if header & IL else 0
        start = offset + fixed
        end = start + type_length + id_length + payload_length
        if end > len(raw):
            raise MalformedNdef(
                f"record {index} needs {end - start} bytes of type, ID and payload, "
                f"{len(raw) - start} remain",
                field="payload_length",
            )
        type_ = bytes(raw[start : start + type_length])
        id_ = bytes(raw[start + type_length : start + type_length + id_length])
        payload = bytes(raw[start + type_length + id_length : end])
        try:
            records.append(NdefRecord(header & TNF_MASK, type_, payload, id_))
        except MalformedNdef as error:
            raise MalformedNdef(f"record {index}: {error}", field=error.field) from None
        offset = end
        if header & ME:
            break
    if offset != len(raw):
        raise MalformedNdef(f"{len(raw) - offset} bytes follow the ME record", field="message")
    return records


def uri_record(uri: str) -> NdefRecord:
    """A well-known "U" record, its prefix abbreviated by the longest matching code."""
    code = next((c for c in _PREFIXES_LONGEST_FIRST if uri.startswith(URI_PREFIXES[c])), 0)
    rest = uri[len(URI_PREFIXES[code]) :]
    return NdefRecord(Tnf.WELL_KNOWN, URI_TYPE, bytes((code,)) + rest.encode("utf-8"))


def record_uri(record: NdefRecord) -> str:
    """The URI of a URI record. Raises ``MalformedNdef`` for any other record and for the RFU
    identifier codes 24..FF (which the URI RTD would read as no prefix)."""
    if record.tnf != Tnf.WELL_KNOWN or record.type != URI_TYPE:
        raise MalformedNdef(
            f"not a URI record (TNF {record.tnf}, type {record.type!r})", field="type"
        )
    if not record.payload:
        raise MalformedNdef(
            "a URI record's payload holds at least its prefix code", field="payload"
        )
    code = record.payload[0]
    if code >= len(URI_PREFIXES):
        raise MalformedNdef(f"URI identifier code 0x{code:02X} is reserved", field="uri_code")
    try:
        rest = record.payload[1:].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNdef("the URI field is not UTF-8", field="payload") from None
    return URI_PREFIXES[code] + rest


def ndef_file(message: bytes) -> bytes:
    """The content of the NDEF file (E104): NLEN, then the message. An empty ``message`` gives
    NLEN 0, which is how a writer marks the file empty while it writes."""
    if len(message) > MAX_NLEN:
        raise MalformedNdef(f"a message of {len(message)} bytes exceeds NLEN's 65534", field="nlen")
    return len(message).to_bytes(NLEN_SIZE, "big") + message


def parse_ndef_file(data: bytes) -> bytes:
    """The message in an NDEF file's content; bytes past NLEN (the unused file) are ignored."""
    if len(data) < NLEN_SIZE:
        raise MalformedNdef(f"an NDEF file starts with 2-byte NLEN, got {len(data)}", field="nlen")
    nlen = int.from_bytes(data[:NLEN_SIZE], "big")
    if nlen == 0:
        raise MalformedNdef("the tag holds no NDEF message (NLEN is 0): it is empty", field="nlen")
    if nlen > MAX_NLEN:
        raise MalformedNdef("NLEN FFFF is reserved", field="nlen")
    if NLEN_SIZE + nlen > len(data):
        raise MalformedNdef(
            f"NLEN says {nlen} bytes but only {len(data) - NLEN_SIZE} follow (truncated file)",
            field="nlen",
        )
    return bytes(data[NLEN_SIZE : NLEN_SIZE + nlen])
