"""BER-TLV (ISO 7816-4 5.2, X.690 8.1.2/8.1.3) encode and decode, with no I/O.

Tags are kept as integers of their full encoding (``0x5FC102`` is the three bytes 5F C1 02),
which is how PIV and ISO 7816 documents write them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from devices.protocol.errors import MalformedTlv

# Four length bytes are more than any smartcard object can use; refusing more keeps a
# corrupt length from being read as a multi-gigabyte promise.
_MAX_LENGTH_BYTES = 3


@dataclass(frozen=True, slots=True)
class Tlv:
    tag: int
    value: bytes

    def encode(self) -> bytes:
        return encode_tlv(self.tag, self.value)

    @property
    def constructed(self) -> bool:
        return bool(tag_bytes(self.tag)[0] & 0x20)

    def children(self) -> list[Tlv]:
        return parse_all(self.value)


def tag_bytes(tag: int) -> bytes:
    if tag < 0:
        raise ValueError("a tag is not negative")
    return tag.to_bytes(max(1, (tag.bit_length() + 7) // 8), "big")


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    if len(body) > _MAX_LENGTH_BYTES:
        raise ValueError("value too long for BER-TLV here")
    return bytes((0x80 | len(body),)) + body


def encode_tlv(tag: int, value: bytes) -> bytes:
    return tag_bytes(tag) + encode_length(len(value)) + value


def encode_all(items: Iterable[tuple[int, bytes] | Tlv]) -> bytes:
    out = bytearray()
    for item in items:
        out += item.encode() if isinstance(item, Tlv) else encode_tlv(*item)
    return bytes(out)


def _read_tag(data: bytes, offset: int) -> tuple[int, int]:
    if offset >= len(data):
        raise MalformedTlv("data ends where a tag should start", field="tag")
    start = offset
    first = data[offset]
    tag = first
    offset += 1
    if first & 0x1F == 0x1F:
        while True:
            if offset - start >= 4:
                raise MalformedTlv("tag longer than four bytes", field="tag")
            if offset >= len(data):
                raise MalformedTlv("data ends inside a multi-byte tag", field="tag")
            byte = data[offset]
            tag = (tag << 8) | byte
            offset += 1
            if not byte & 0x80:
                break
    return tag, offset


def _read_length(data: bytes, offset: int) -> tuple[int, int]:
    if offset >= len(data):
        raise MalformedTlv("data ends where a length should start", field="length")
    first = data[offset]
    offset += 1
    if first < 0x80:
        return first, offset
    count = first & 0x7F
    if count == 0:
        raise MalformedTlv("indefinite length is not allowed here", field="length")
    if count > _MAX_LENGTH_BYTES:
        raise MalformedTlv(f"{count} length bytes is more than this format allows", field="length")
    if offset + count > len(data):
        raise MalformedTlv("data ends inside a length", field="length")
    return int.from_bytes(data[offset : offset + count], "big"), offset + count


def iter_tlv(data: bytes) -> Iterator[Tlv]:
    """Yield each top-level TLV; raise ``MalformedTlv`` on any truncation."""
    offset = 0
    while offset < len(data):
        tag, offset = _read_tag(data, offset)
        length, offset = _read_length(data, offset)
        end = offset + length
        if end > len(data):
            raise MalformedTlv(
                f"tag {tag:X} says {length} bytes but {len(data) - offset} remain", field="value"
            )
        yield Tlv(tag, bytes(data[offset:end]))
        offset = end


def parse_all(data: bytes) -> list[Tlv]:
    return list(iter_tlv(data))


def parse_one(data: bytes, expected_tag: int | None = None) -> Tlv:
    """Exactly one TLV spanning ``data`` (with ``expected_tag`` if given)."""
    items = parse_all(data)
    if len(items) != 1:
        raise MalformedTlv(f"expected one TLV, found {len(items)}", field="tag")
    if expected_tag is not None and items[0].tag != expected_tag:
        raise MalformedTlv(f"expected tag {expected_tag:X}, found {items[0].tag:X}", field="tag")
    return items[0]


def parse_dict(data: bytes) -> dict[int, bytes]:
    """Top-level TLVs as a mapping; a repeated tag is malformed for the objects we read."""
    out: dict[int, bytes] = {}
    for item in iter_tlv(data):
        if item.tag in out:
            raise MalformedTlv(f"tag {item.tag:X} appears twice", field="tag")
        out[item.tag] = item.value
    return out
