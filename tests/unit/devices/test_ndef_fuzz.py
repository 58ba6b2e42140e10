"""Property tests: NDEF messages, NDEF files and Type 4 Tag capability containers
(devices.protocol.ndef) on arbitrary and near-valid bytes, and record round trips."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.errors import MalformedNdef
from devices.protocol.ndef import (
    URI_PREFIXES,
    CapabilityContainer,
    NdefRecord,
    Tnf,
    decode_message,
    encode_message,
    ndef_file,
    parse_ndef_file,
    record_uri,
    uri_record,
)

FUZZ = settings(max_examples=200, deadline=None)


@st.composite
def records(draw: st.DrawFn) -> NdefRecord:
    """Any record NDEF 1.0 allows unchunked, payload lengths around the short-record limit."""
    tnf = draw(
        st.sampled_from(
            [Tnf.EMPTY, Tnf.WELL_KNOWN, Tnf.MIME_MEDIA, Tnf.ABSOLUTE_URI, Tnf.EXTERNAL, Tnf.UNKNOWN]
        )
    )
    if tnf == Tnf.EMPTY:
        return NdefRecord(tnf, b"", b"")
    type_ = b"" if tnf == Tnf.UNKNOWN else draw(st.binary(min_size=1, max_size=255))
    size = draw(st.sampled_from([0, 1, 254, 255, 256, 257]) | st.integers(0, 600))
    payload = (
        draw(st.binary(min_size=size, max_size=size))
        if size <= 64
        else bytes((draw(st.integers(0, 255)) + i) % 256 for i in range(size))
    )
    id_ = draw(st.binary(max_size=255) | st.just(b""))
    return NdefRecord(tnf, type_, payload, id_)


messages = st.lists(records(), min_size=1, max_size=4)


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """A valid message with a few bytes changed, cut or appended."""
    raw = bytearray(encode_message(draw(messages)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(raw) - 1))
        raw[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return bytes(raw) + draw(st.binary(max_size=4))


def decodes_or_malformed(raw: bytes) -> list[NdefRecord] | None:
    try:
        return decode_message(raw)
    except MalformedNdef:
        return None


@FUZZ
@given(raw=st.binary(max_size=300) | mutated_messages())
def test_decode_message_on_arbitrary_bytes_raises_only_malformed_ndef(raw: bytes) -> None:
    decoded = decodes_or_malformed(raw)
    if decoded is not None:
        # Whatever decodes re-encodes to a message with the same records (the encoding may
        # differ: long-form lengths for short payloads and empty IDs with IL are normalised).
        assert decode_message(encode_message(decoded)) == decoded


@FUZZ
@given(raw=st.binary(max_size=80) | st.binary().map(lambda b: b"\x00\x0f" + b))
def test_capability_container_on_arbitrary_bytes_raises_only_malformed_ndef(raw: bytes) -> None:
    try:
        cc = CapabilityContainer.decode(raw)
    except MalformedNdef:
        return
    assert CapabilityContainer.decode(cc.encode()) == cc


@st.composite
def near_valid_ccs(draw: st.DrawFn) -> bytes:
    raw = bytearray(CapabilityContainer().encode())
    at = draw(st.integers(0, len(raw) - 1))
    raw[at] = draw(st.integers(0, 255))
    return bytes(raw)


@FUZZ
@given(raw=near_valid_ccs())
def test_capability_container_single_byte_changes_raise_only_malformed_ndef(raw: bytes) -> None:
    try:
        cc = CapabilityContainer.decode(raw)
    except MalformedNdef:
        return
    assert cc.encode() == raw


@FUZZ
@given(data=st.binary(max_size=300) | messages.map(lambda m: ndef_file(encode_message(m))))
def test_parse_ndef_file_on_arbitrary_bytes_raises_only_malformed_ndef(data: bytes) -> None:
    try:
        message = parse_ndef_file(data)
    except MalformedNdef:
        return
    assert ndef_file(message) == data[: 2 + len(message)]


@FUZZ
@given(records=messages)
def test_encode_then_decode_round_trips_records(records: list[NdefRecord]) -> None:
    file = ndef_file(encode_message(records))
    assert decode_message(parse_ndef_file(file)) == records


@FUZZ
@given(prefix=st.sampled_from(URI_PREFIXES), rest=st.text(max_size=80))
def test_uri_round_trips(prefix: str, rest: str) -> None:
    uri = prefix + rest
    [record] = decode_message(encode_message([uri_record(uri)]))
    assert record_uri(record) == uri


@FUZZ
@given(payload=st.binary(max_size=80))
def test_record_uri_on_arbitrary_payload_raises_only_malformed_ndef(payload: bytes) -> None:
    try:
        uri = record_uri(NdefRecord(Tnf.WELL_KNOWN, b"U", payload))
    except MalformedNdef:
        return
    assert record_uri(uri_record(uri)) == uri
