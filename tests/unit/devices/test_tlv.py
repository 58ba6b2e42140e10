"""BER-TLV encode and decode (devices.protocol.tlv)."""

from __future__ import annotations

import pytest

from devices.errors import MalformedTlv, ProtocolError
from devices.protocol.tlv import (
    Tlv,
    encode_all,
    encode_length,
    encode_tlv,
    iter_tlv,
    parse_all,
    parse_dict,
    parse_one,
    tag_bytes,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- tags --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "raw"),
    [
        (0x00, h("00")),
        (0x53, h("53")),
        (0x7C, h("7C")),
        (0xFE, h("FE")),
        (0x7F49, h("7F 49")),
        (0x5F2D, h("5F 2D")),
        (0x5FC102, h("5F C1 02")),
        (0x5FFF01, h("5F FF 01")),
        (0x1F818101, h("1F 81 81 01")),
    ],
)
def test_tag_bytes_uses_minimal_big_endian_bytes(tag: int, raw: bytes) -> None:
    assert tag_bytes(tag) == raw


def test_tag_bytes_rejects_negative_tag() -> None:
    with pytest.raises(ValueError, match="negative"):
        tag_bytes(-1)


@pytest.mark.parametrize(
    ("raw", "tag"),
    [
        pytest.param(h("53 01 AA"), 0x53, id="one-byte"),
        pytest.param(h("7F 49 01 AA"), 0x7F49, id="two-byte"),
        pytest.param(h("5F 2D 01 AA"), 0x5F2D, id="two-byte-application"),
        pytest.param(h("5F C1 02 01 AA"), 0x5FC102, id="three-byte"),
        pytest.param(h("9F 81 80 01 01 AA"), 0x9F818001, id="four-byte"),
    ],
)
def test_parse_one_reads_multi_byte_tags(raw: bytes, tag: int) -> None:
    item = parse_one(raw)
    assert item.tag == tag
    assert item.value == h("AA")
    assert item.encode() == raw


@pytest.mark.parametrize(
    ("tag", "constructed"),
    [(0x53, False), (0x5FC102, False), (0x70, True), (0x7C, True), (0x7F49, True), (0x80, False)],
)
def test_constructed_reflects_bit_0x20_of_first_tag_byte(tag: int, constructed: bool) -> None:
    assert Tlv(tag, b"").constructed is constructed


# --- lengths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "raw"),
    [
        (0, h("00")),
        (1, h("01")),
        (127, h("7F")),
        (128, h("81 80")),
        (255, h("81 FF")),
        (256, h("82 01 00")),
        (65535, h("82 FF FF")),
        (65536, h("83 01 00 00")),
        (0xFFFFFF, h("83 FF FF FF")),
    ],
)
def test_encode_length_uses_shortest_form_at_boundaries(length: int, raw: bytes) -> None:
    assert encode_length(length) == raw


def test_encode_length_rejects_more_than_three_length_bytes() -> None:
    with pytest.raises(ValueError, match="too long"):
        encode_length(0x1000000)


@pytest.mark.parametrize("length", [0, 1, 127, 128, 255, 256, 65535, 65536])
def test_encode_then_parse_round_trips_at_length_boundaries(length: int) -> None:
    value = bytes(i & 0xFF for i in range(length))
    raw = encode_tlv(0x53, value)
    header = len(tag_bytes(0x53)) + len(encode_length(length))
    assert len(raw) == header + length
    item = parse_one(raw, expected_tag=0x53)
    assert item.value == value


@pytest.mark.parametrize(
    ("length", "header_length"),
    [(127, 1), (128, 2), (255, 2), (256, 3), (65535, 3), (65536, 4)],
)
def test_encode_tlv_header_grows_at_boundaries(length: int, header_length: int) -> None:
    raw = encode_tlv(0x5FC102, bytes(length))
    assert raw[:3] == h("5F C1 02")
    assert len(raw) == 3 + header_length + length


@pytest.mark.parametrize(
    "raw",
    [
        h("53 05 0102030405"),
        h("53 81 05 0102030405"),
        h("53 82 0005 0102030405"),
        h("53 83 000005 0102030405"),
    ],
)
def test_parse_reads_long_form_with_any_byte_count(raw: bytes) -> None:
    assert parse_one(raw) == Tlv(0x53, h("0102030405"))


# --- sequences and nesting ---------------------------------------------------------------------


def test_parse_all_reads_consecutive_items() -> None:
    raw = h("5C 03 5F C1 02") + h("53 00") + h("7F 49 02 86 00")
    assert parse_all(raw) == [
        Tlv(0x5C, h("5F C1 02")),
        Tlv(0x53, b""),
        Tlv(0x7F49, h("86 00")),
    ]


def test_parse_all_returns_empty_list_for_empty_input() -> None:
    assert parse_all(b"") == []
    assert list(iter_tlv(b"")) == []


def test_children_parse_nested_dynamic_authentication_template() -> None:
    challenge = bytes(range(16))
    raw = encode_tlv(0x7C, encode_all([(0x82, b""), (0x81, challenge)]))
    outer = parse_one(raw, expected_tag=0x7C)
    assert outer.constructed
    assert outer.children() == [Tlv(0x82, b""), Tlv(0x81, challenge)]


def test_children_parse_three_levels_deep() -> None:
    point = b"\x04" + bytes(range(64))
    public_key = encode_tlv(0x7F49, encode_tlv(0x86, point))
    raw = encode_tlv(0x53, encode_all([(0x70, public_key), (0xFE, b"")]))
    top = parse_one(raw)
    level1 = top.children()
    assert [item.tag for item in level1] == [0x70, 0xFE]
    level2 = level1[0].children()
    assert level2 == [Tlv(0x7F49, encode_tlv(0x86, point))]
    level3 = level2[0].children()
    assert level3 == [Tlv(0x86, point)]
    assert len(point) == 65
    assert level2[0].encode()[:4] == h("7F 49 43 86")


def test_children_of_primitive_with_non_tlv_value_raise_malformed_tlv() -> None:
    with pytest.raises(MalformedTlv):
        Tlv(0x53, h("53 05 00")).children()


def test_encode_all_accepts_tuples_and_tlv_objects() -> None:
    raw = encode_all([(0x5C, h("7E")), Tlv(0x53, h("01 02"))])
    assert raw == h("5C 01 7E 53 02 01 02")


def test_encode_all_of_nothing_is_empty() -> None:
    assert encode_all([]) == b""


def test_encode_all_then_parse_all_round_trips_with_large_values() -> None:
    items = [Tlv(0x70, bytes(1000)), Tlv(0x71, h("00")), Tlv(0xFE, b""), Tlv(0x5FC105, h("AA"))]
    assert parse_all(encode_all(items)) == items


# --- parse_one and parse_dict ------------------------------------------------------------------


def test_parse_one_accepts_expected_tag() -> None:
    assert parse_one(h("7E 00"), expected_tag=0x7E) == Tlv(0x7E, b"")


def test_parse_one_raises_on_wrong_tag() -> None:
    with pytest.raises(MalformedTlv, match="expected tag 53, found 7E") as caught:
        parse_one(h("7E 00"), expected_tag=0x53)
    assert caught.value.field == "tag"


@pytest.mark.parametrize("raw", [b"", h("53 00 53 00"), h("53 00 7E 01 00")])
def test_parse_one_raises_unless_exactly_one_item(raw: bytes) -> None:
    with pytest.raises(MalformedTlv, match="expected one TLV") as caught:
        parse_one(raw)
    assert caught.value.field == "tag"


def test_parse_dict_maps_tags_to_values() -> None:
    raw = h("30 02 D4 E7 34 03 01 02 03 35 00 FE 00")
    assert parse_dict(raw) == {0x30: h("D4 E7"), 0x34: h("01 02 03"), 0x35: b"", 0xFE: b""}


def test_parse_dict_raises_on_repeated_tag() -> None:
    with pytest.raises(MalformedTlv, match="appears twice") as caught:
        parse_dict(h("53 01 AA 5C 00 53 01 BB"))
    assert caught.value.field == "tag"


def test_parse_dict_propagates_truncation() -> None:
    with pytest.raises(MalformedTlv) as caught:
        parse_dict(h("53 01 AA 5C 05 00"))
    assert caught.value.field == "value"


# --- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param(h("5F"), "tag", id="ends-after-first-tag-byte"),
        pytest.param(h("5F C1"), "tag", id="ends-inside-three-byte-tag"),
        pytest.param(h("7F"), "tag", id="ends-inside-two-byte-tag"),
        pytest.param(h("53 00 5F C1"), "tag", id="second-item-ends-inside-tag"),
        pytest.param(h("53"), "length", id="ends-before-length"),
        pytest.param(h("5F C1 02"), "length", id="three-byte-tag-without-length"),
        pytest.param(h("53 81"), "length", id="ends-inside-81-length"),
        pytest.param(h("53 82 01"), "length", id="ends-inside-82-length"),
        pytest.param(h("53 83 00 01"), "length", id="ends-inside-83-length"),
        pytest.param(h("53 80 00 00"), "length", id="indefinite-length"),
        pytest.param(h("53 84 00 00 00 01 AA"), "length", id="four-length-bytes"),
        pytest.param(h("53 FF"), "length", id="127-length-bytes"),
        pytest.param(h("53 01"), "value", id="value-missing"),
        pytest.param(h("53 05 01 02 03 04"), "value", id="value-one-short"),
        pytest.param(h("53 81 80") + bytes(127), "value", id="81-value-one-short"),
        pytest.param(h("53 82 01 00") + bytes(255), "value", id="82-value-one-short"),
        pytest.param(h("53 83 01 00 00") + bytes(100), "value", id="83-value-short"),
        pytest.param(h("53 00 7E 02 00"), "value", id="second-item-value-short"),
        pytest.param(h("1F 81 81 81 81 01 00"), "tag", id="six-byte-tag"),
    ],
)
def test_parse_all_raises_malformed_tlv_naming_field(raw: bytes, field: str) -> None:
    with pytest.raises(MalformedTlv) as caught:
        parse_all(raw)
    assert caught.value.field == field
    assert isinstance(caught.value, ProtocolError)


def test_parse_all_accepts_four_byte_tag() -> None:
    assert parse_all(h("1F 81 81 01 00")) == [Tlv(0x1F818101, b"")]


def test_parse_all_rejects_five_byte_tag() -> None:
    # _read_tag says "tag longer than four bytes", but only checks the length while the
    # tag continues; a fifth byte that ends the tag slips through.
    with pytest.raises(MalformedTlv) as caught:
        parse_all(h("1F 81 81 81 01 00"))
    assert caught.value.field == "tag"


def test_iter_tlv_yields_good_items_before_raising_on_truncation() -> None:
    items = iter_tlv(h("53 01 AA 7E 05 00"))
    assert next(items) == Tlv(0x53, h("AA"))
    with pytest.raises(MalformedTlv) as caught:
        next(items)
    assert caught.value.field == "value"


def test_parse_all_does_not_read_past_truncated_value() -> None:
    # A length that promises far more than is there must fail, not return a short value.
    with pytest.raises(MalformedTlv, match="says 16777215 bytes but 2 remain"):
        parse_all(h("53 83 FF FF FF 01 02"))
