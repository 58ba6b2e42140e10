"""Property tests: HID boot keyboard reports and layouts (devices.protocol.hid_keyboard) on
arbitrary reports and arbitrary typeable text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.errors import MalformedReport
from devices.protocol.hid_keyboard import (
    DANISH,
    KEY_ENTER,
    KEY_ERROR_ROLLOVER,
    MAX_KEYS,
    MODHEX,
    REPORT_SIZE,
    US,
    KeyboardDecoder,
    KeyReport,
    Layout,
    type_text,
)

FUZZ = settings(max_examples=300, deadline=None)

layouts = st.sampled_from([US, DANISH])

# Usages that matter: letters, digits, punctuation, Enter, the error usages, unmapped keys.
usages = st.sampled_from(
    [
        0,
        KEY_ERROR_ROLLOVER,
        2,
        3,
        0x04,
        0x06,
        0x1F,
        0x2D,
        0x2E,
        0x30,
        0x33,
        0x38,
        0x64,
        KEY_ENTER,
        0x3A,
        0xE0,
        0xFF,
    ]
) | st.integers(0, 0xFF)


@st.composite
def near_valid_reports(draw: st.DrawFn) -> bytes:
    """Mostly valid reports: any modifiers, a zero reserved byte, plausible key slots; now and
    then the rollover report or a non-zero reserved byte."""
    modifiers = draw(st.integers(0, 0xFF))
    reserved = draw(st.sampled_from([0] * 9 + [1]))
    if draw(st.integers(0, 19)) == 0:
        slots = [KEY_ERROR_ROLLOVER] * MAX_KEYS
    else:
        slots = draw(st.lists(usages, min_size=MAX_KEYS, max_size=MAX_KEYS))
    return bytes((modifiers, reserved, *slots))


reports = (
    st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE)
    | near_valid_reports()
    | st.binary(max_size=2 * REPORT_SIZE)
    | st.binary(max_size=80)
)


def check_feed(decoder: KeyboardDecoder, raw: bytes) -> None:
    try:
        line = decoder.feed(raw)
    except MalformedReport as error:
        failed_field = error.field
    else:
        failed_field = None
    if failed_field is not None:
        assert failed_field in {"length", "reserved", "keys"}
        return
    assert line is None or (isinstance(line, str) and "\n" not in line)
    assert "\n" not in decoder.pending


@FUZZ
@given(layout=layouts, stream=st.lists(reports, max_size=40))
def test_decoder_on_arbitrary_reports_returns_str_none_or_raises_malformed(
    layout: Layout, stream: list[bytes]
) -> None:
    decoder = KeyboardDecoder(layout)
    for raw in stream:
        check_feed(decoder, raw)


@FUZZ
@given(raw=st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE) | near_valid_reports())
def test_report_decode_then_encode_is_identity_up_to_slot_order(raw: bytes) -> None:
    try:
        report = KeyReport.decode(raw)
    except MalformedReport:
        return
    again = report.encode()
    assert again[:2] == raw[:2]
    assert sorted(again[2:]) == sorted(raw[2:])
    assert KeyReport.decode(again) == report


def typeable_text(layout: Layout) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from(sorted(layout.characters)), max_size=60)


def decode(reports: list[bytes], layout: Layout) -> str:
    """Everything typed, lines joined by the Enter that ended them."""
    decoder = KeyboardDecoder(layout)
    lines = [line for raw in reports if (line := decoder.feed(raw)) is not None]
    return "".join(line + "\n" for line in lines) + decoder.pending


@FUZZ
@given(text=typeable_text(US))
def test_type_text_round_trips_us(text: str) -> None:
    assert decode(type_text(text, US), US) == text


@FUZZ
@given(text=typeable_text(DANISH))
def test_type_text_round_trips_danish(text: str) -> None:
    assert decode(type_text(text, DANISH), DANISH) == text


@FUZZ
@given(otp=st.text(st.sampled_from(MODHEX + "\n"), max_size=60), token=layouts, host=layouts)
def test_modhex_round_trips_across_layouts(otp: str, token: Layout, host: Layout) -> None:
    assert decode(type_text(otp, token), host) == otp
