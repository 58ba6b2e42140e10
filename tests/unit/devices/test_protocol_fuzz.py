"""Property tests: the APDU and BER-TLV codecs on arbitrary and near-valid input."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from devices.errors import MalformedApdu, MalformedTlv
from devices.protocol.apdu import CommandApdu
from devices.protocol.tlv import Tlv, encode_all, parse_all, parse_dict

FUZZ = settings(max_examples=300, deadline=None)

bytes_1 = st.integers(0, 0xFF)

# Le values: everything the constructor's range admits, with its boundaries drawn often.
le_values = st.none() | st.integers(0, 65536) | st.sampled_from([0, 1, 255, 256, 257, 65536])

# Data: mostly short, often long enough to need the extended encoding.
apdu_data = st.binary(max_size=16) | st.binary(min_size=250, max_size=600)


@st.composite
def command_apdus(draw: st.DrawFn) -> CommandApdu:
    """Any CommandApdu the constructor accepts."""
    try:
        return CommandApdu(
            draw(bytes_1),
            draw(bytes_1),
            draw(bytes_1),
            draw(bytes_1),
            draw(apdu_data),
            le=draw(le_values),
            extended=draw(st.booleans()),
        )
    except MalformedApdu:
        assume(False)
        raise


@st.composite
def near_apdu_bytes(draw: st.DrawFn) -> bytes:
    """A valid encoding, then maybe cut short, lengthened or with one byte changed, so the
    decoder's length checks are reached far more often than random bytes reach them."""
    raw = bytearray(draw(command_apdus()).encode())
    mutation = draw(st.sampled_from(["none", "cut", "append", "change"]))
    if mutation == "cut":
        del raw[draw(st.integers(0, len(raw) - 1)) :]
    elif mutation == "append":
        raw += draw(st.binary(min_size=1, max_size=3))
    elif mutation == "change":
        index = draw(st.integers(0, len(raw) - 1))
        raw[index] = draw(bytes_1)
    return bytes(raw)


apdu_inputs = st.binary(max_size=64) | near_apdu_bytes()


@FUZZ
@given(apdu_inputs)
def test_decode_returns_canonical_apdu_or_raises_malformed_apdu_for_any_bytes(
    raw: bytes,
) -> None:
    try:
        apdu = CommandApdu.decode(raw)
    except MalformedApdu as error:
        failed_field = error.field
    else:
        failed_field = None
    if failed_field is not None:
        assert failed_field in {"header", "lc"}
        return
    encoded = apdu.encode()
    assert encoded == raw
    assert CommandApdu.decode(encoded) == apdu


@FUZZ
@given(command_apdus())
def test_encode_then_decode_round_trips_for_any_valid_apdu(apdu: CommandApdu) -> None:
    raw = apdu.encode()
    decoded = CommandApdu.decode(raw)
    assert (decoded.cla, decoded.ins, decoded.p1, decoded.p2) == (
        apdu.cla,
        apdu.ins,
        apdu.p1,
        apdu.p2,
    )
    assert decoded.data == apdu.data
    assert decoded.le == apdu.le
    assert decoded.encode() == raw
    # ``extended`` comes back as "the wire used the extended form". Case 1 has no
    # extended form, so there it is False whatever was asked.
    has_body = bool(apdu.data) or apdu.le is not None
    assert decoded == replace(apdu, extended=apdu.needs_extended and has_body)


# --- BER-TLV -----------------------------------------------------------------------------------


@st.composite
def ber_tags(draw: st.DrawFn) -> int:
    """A well-formed BER tag of one to four bytes, as the integer of its encoding."""
    size = draw(st.integers(1, 4))
    if size == 1:
        return draw(bytes_1.filter(lambda byte: byte & 0x1F != 0x1F))
    first = draw(st.integers(0, 7)) << 5 | 0x1F
    middle = [draw(st.integers(0x80, 0xFF)) for _ in range(size - 2)]
    last = draw(st.integers(0x00, 0x7F))
    return int.from_bytes(bytes([first, *middle, last]), "big")


tlv_values = st.binary(max_size=20) | st.binary(min_size=120, max_size=300)
tlv_items = st.lists(st.tuples(ber_tags(), tlv_values), max_size=6)


@st.composite
def near_tlv_bytes(draw: st.DrawFn) -> bytes:
    """A valid TLV sequence, then maybe cut short or with one byte changed."""
    raw = bytearray(encode_all(draw(tlv_items)))
    if raw and draw(st.booleans()):
        if draw(st.booleans()):
            del raw[draw(st.integers(0, len(raw) - 1)) :]
        else:
            raw[draw(st.integers(0, len(raw) - 1))] = draw(bytes_1)
    return bytes(raw)


tlv_inputs = st.binary(max_size=200) | near_tlv_bytes()


@FUZZ
@given(tlv_inputs)
def test_parse_all_returns_items_or_raises_malformed_tlv_for_any_bytes(raw: bytes) -> None:
    try:
        items = parse_all(raw)
    except MalformedTlv as error:
        failed_field = error.field
    else:
        failed_field = None
    if failed_field is not None:
        assert failed_field in {"tag", "length", "value"}
        return
    # Whatever parsed re-encodes into something that parses to the same items, and no
    # item's value is longer than the input it came from.
    assert parse_all(encode_all(items)) == items
    assert sum(len(item.value) for item in items) <= len(raw)
    for item in items:
        try:
            item.children()
        except MalformedTlv:
            pass


@FUZZ
@given(tlv_inputs)
def test_parse_dict_returns_mapping_or_raises_malformed_tlv_for_any_bytes(raw: bytes) -> None:
    try:
        mapping = parse_dict(raw)
    except MalformedTlv:
        return
    assert list(mapping) == [item.tag for item in parse_all(raw)]


@FUZZ
@given(tlv_items)
def test_encode_all_then_parse_all_round_trips_any_items(items: list[tuple[int, bytes]]) -> None:
    raw = encode_all(items)
    assert parse_all(raw) == [Tlv(tag, value) for tag, value in items]


@FUZZ
@given(tlv_items)
def test_encode_all_then_parse_dict_round_trips_unique_tags(
    items: list[tuple[int, bytes]],
) -> None:
    assume(len({tag for tag, _ in items}) == len(items))
    assert parse_dict(encode_all(items)) == dict(items)


@FUZZ
@given(tlv_items, ber_tags())
def test_children_round_trip_items_nested_in_any_tag(
    items: list[tuple[int, bytes]], outer: int
) -> None:
    wrapped = Tlv(outer, encode_all(items))
    [parsed] = parse_all(wrapped.encode())
    assert parsed == wrapped
    assert parsed.children() == [Tlv(tag, value) for tag, value in items]
