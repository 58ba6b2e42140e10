"""The strict CBOR decoder of the simulated FIDO2 key: one CTAP2 canonical CBOR item (CTAP 2.1
8), refusing non-shortest heads, unsorted or repeated map keys, and deep nesting."""

from __future__ import annotations

from typing import Any

MAX_CBOR_DEPTH = 4  # CTAP 2.1 8: at most four levels of nested maps and arrays


class _CborError(ValueError):
    pass


def _cbor_head(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """Major type, additional info, argument and the position after the head. Only the
    shortest form of an argument is accepted (CTAP2 canonical CBOR)."""
    if pos >= len(data):
        raise _CborError("truncated")
    major, info = data[pos] >> 5, data[pos] & 0x1F
    pos += 1
    if info < 24:
        return major, info, info, pos
    if info > 27:
        raise _CborError("indefinite length or reserved additional information")
    size = 1 << (info - 24)
    if pos + size > len(data):
        raise _CborError("truncated")
    value = int.from_bytes(data[pos : pos + size], "big")
    if major != 7 and value < (24 if size == 1 else 1 << (4 * size)):
        raise _CborError("integer not in its shortest form")
    return major, info, value, pos + size


def _cbor_item(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    major, info, value, pos = _cbor_head(data, pos)
    if major == 0:
        return value, pos
    if major == 1:
        return -1 - value, pos
    if major in (2, 3):
        if pos + value > len(data):
            raise _CborError("truncated string")
        raw = data[pos : pos + value]
        if major == 2:
            return raw, pos + value
        try:
            return raw.decode("utf-8"), pos + value
        except UnicodeDecodeError as exc:
            raise _CborError("text string is not UTF-8") from exc
    if major in (4, 5):
        if depth >= MAX_CBOR_DEPTH:
            raise _CborError("nested too deeply")
        if major == 4:
            items = []
            for _ in range(value):
                item, pos = _cbor_item(data, pos, depth + 1)
                items.append(item)
            return items, pos
        mapping: dict[Any, Any] = {}
        previous: tuple[int, int, bytes] | None = None
        for _ in range(value):
            start = pos
            key, pos = _cbor_item(data, pos, depth + 1)
            encoded = data[start:pos]
            order = (encoded[0] >> 5, len(encoded), encoded)
            if previous is not None and order <= previous:
                raise _CborError("map keys not in canonical order, or repeated")
            if isinstance(key, list | dict):
                raise _CborError("container as map key")
            previous = order
            mapping[key], pos = _cbor_item(data, pos, depth + 1)
        return mapping, pos
    if major == 7 and info in (20, 21):
        return info == 21, pos
    if major == 7 and info == 22:
        return None, pos
    raise _CborError("tags, floats and other simple values are not used by CTAP")


def decode_cbor(data: bytes) -> Any:
    """Decode one CTAP2 canonical CBOR item filling ``data``; raises ValueError otherwise."""
    value, pos = _cbor_item(data, 0, 0)
    if pos != len(data):
        raise _CborError("bytes after the CBOR item")
    return value
