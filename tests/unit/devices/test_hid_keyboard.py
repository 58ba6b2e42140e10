"""HID boot keyboard reports and layouts (devices.protocol.hid_keyboard).

The "prove it" tests at the end type with one layout and decode with another, the way an OTP
token programmed for a US host behaves when plugged into a Danish one: modhex survives, and
anything with the punctuation or shifted digits that the two layouts put elsewhere does not.
"""

from __future__ import annotations

import string

import pytest

from devices.errors import (
    DeviceError,
    MalformedReport,
    ProtocolError,
    UnknownCharacter,
    UnknownLayout,
)
from devices.protocol.hid_keyboard import (
    DANISH,
    KEY_ENTER,
    LAYOUTS,
    MOD_LALT,
    MOD_LCTRL,
    MOD_LGUI,
    MOD_LSHIFT,
    MOD_RALT,
    MOD_RSHIFT,
    MODHEX,
    RELEASED,
    REPORT_SIZE,
    US,
    KeyboardDecoder,
    KeyReport,
    Layout,
    Modifier,
    get_layout,
    type_text,
)

# Yubico's example OTP from "OTPs Explained" (12 modhex characters of public ID, 32 of token).
YUBICO_OTP = "cccjgjgkhcbbirdrfdnlnghhfgrtnnlgedjlftrbdeut"

KEY_A, KEY_B, KEY_C = 0x04, 0x05, 0x06
KEY_2, KEY_F1 = 0x1F, 0x3A


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def down(modifiers: int, *keys: int) -> bytes:
    return KeyReport(modifiers, keys).encode()


def decode_all(reports: list[bytes], layout: Layout) -> tuple[list[str], str]:
    """Feed every report; the lines completed by Enter and the text after the last Enter."""
    decoder = KeyboardDecoder(layout)
    lines = [line for report in reports if (line := decoder.feed(report)) is not None]
    return lines, decoder.pending


def typed_on(text: str, token_layout: Layout, host_layout: Layout) -> str:
    """What a host set to ``host_layout`` shows when a token made for ``token_layout`` types
    ``text`` followed by Enter."""
    lines, pending = decode_all(type_text(text + "\n", token_layout), host_layout)
    assert pending == ""
    assert len(lines) == 1
    return lines[0]


# --- reports ---------------------------------------------------------------------------------


def test_modifier_bits_match_the_hid_usage_tables() -> None:
    assert (MOD_LCTRL, MOD_LSHIFT, MOD_LALT, MOD_LGUI) == (0x01, 0x02, 0x04, 0x08)
    assert (MOD_RSHIFT, MOD_RALT) == (0x20, 0x40)
    assert [int(m) for m in Modifier] == [1 << bit for bit in range(8)]
    assert KEY_ENTER == 0x28
    assert REPORT_SIZE == 8


@pytest.mark.parametrize(
    ("report", "raw"),
    [
        pytest.param(KeyReport(0), "00 00 000000000000", id="released"),
        pytest.param(KeyReport(MOD_LSHIFT, (KEY_A,)), "02 00 040000000000", id="shift-a"),
        pytest.param(KeyReport(MOD_RALT, (KEY_2,)), "40 00 1f0000000000", id="altgr-2"),
        pytest.param(KeyReport(0, (4, 5, 6, 7, 8, 9)), "00 00 040506070809", id="six-keys"),
        pytest.param(KeyReport(0xFF, (KEY_ENTER,)), "ff 00 280000000000", id="all-modifiers"),
    ],
)
def test_report_encodes_and_decodes_byte_exact(report: KeyReport, raw: str) -> None:
    assert report.encode() == h(raw)
    assert KeyReport.decode(h(raw)) == report


def test_report_decode_drops_empty_slots_anywhere() -> None:
    assert KeyReport.decode(h("00 00 00 04 00 05 00 00")).keys == (KEY_A, KEY_B)


def test_report_released_only_without_keys_and_modifiers() -> None:
    assert KeyReport(0).released
    assert KeyReport.decode(RELEASED).released
    assert not KeyReport(MOD_LSHIFT).released
    assert not KeyReport(0, (KEY_A,)).released


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param("", "length", id="empty"),
        pytest.param("00 00 04 00 00 00 00", "length", id="7-bytes"),
        pytest.param("00 00 04 00 00 00 00 00 00", "length", id="9-bytes"),
        pytest.param("01" + "00" * 63, "length", id="ctaphid-size"),
        pytest.param("00 01 04 00 00 00 00 00", "reserved", id="reserved-set"),
        pytest.param("00 00 01 01 01 01 01 01", "keys", id="error-rollover"),
        pytest.param("02 00 01 01 01 01 01 01", "keys", id="error-rollover-with-shift"),
        pytest.param("00 00 02 02 02 02 02 02", "keys", id="post-fail"),
        pytest.param("00 00 04 03 00 00 00 00", "keys", id="error-undefined-among-keys"),
    ],
)
def test_report_decode_rejects_malformed_naming_field(raw: str, field: str) -> None:
    with pytest.raises(MalformedReport) as caught:
        KeyReport.decode(h(raw))
    assert caught.value.field == field
    assert isinstance(caught.value, ProtocolError)


@pytest.mark.parametrize(
    ("modifiers", "keys", "field"),
    [
        pytest.param(0x100, (), "modifiers", id="modifiers-too-big"),
        pytest.param(-1, (), "modifiers", id="modifiers-negative"),
        pytest.param(0, (4, 5, 6, 7, 8, 9, 10), "keys", id="seven-keys"),
        pytest.param(0, (0,), "keys", id="zero-key"),
        pytest.param(0, (0x100,), "keys", id="key-too-big"),
    ],
)
def test_report_construction_rejects_out_of_range(
    modifiers: int, keys: tuple[int, ...], field: str
) -> None:
    with pytest.raises(MalformedReport) as caught:
        KeyReport(modifiers, keys)
    assert caught.value.field == field


# --- layouts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("char", "stroke"),
    [
        ("a", (0, 0x04)),
        ("A", (MOD_LSHIFT, 0x04)),
        ("1", (0, 0x1E)),
        ("0", (0, 0x27)),
        ("@", (MOD_LSHIFT, 0x1F)),
        ("-", (0, 0x2D)),
        ("+", (MOD_LSHIFT, 0x2E)),
        ("/", (0, 0x38)),
        (";", (0, 0x33)),
        (":", (MOD_LSHIFT, 0x33)),
        ("\\", (0, 0x31)),
        ("~", (MOD_LSHIFT, 0x35)),
        (" ", (0, 0x2C)),
        ("\n", (0, KEY_ENTER)),
    ],
)
def test_us_keystrokes(char: str, stroke: tuple[int, int]) -> None:
    assert US.keystroke(char) == stroke
    assert US.character(*stroke) == char


@pytest.mark.parametrize(
    ("char", "stroke"),
    [
        ("a", (0, 0x04)),
        ("Z", (MOD_LSHIFT, 0x1D)),
        ("å", (0, 0x2F)),
        ("Å", (MOD_LSHIFT, 0x2F)),
        ("æ", (0, 0x33)),
        ("Æ", (MOD_LSHIFT, 0x33)),
        ("ø", (0, 0x34)),
        ("Ø", (MOD_LSHIFT, 0x34)),
        ('"', (MOD_LSHIFT, 0x1F)),
        ("@", (MOD_RALT, 0x1F)),
        ("£", (MOD_RALT, 0x20)),
        ("¤", (MOD_LSHIFT, 0x21)),
        ("$", (MOD_RALT, 0x21)),
        ("&", (MOD_LSHIFT, 0x23)),
        ("/", (MOD_LSHIFT, 0x24)),
        ("{", (MOD_RALT, 0x24)),
        ("(", (MOD_LSHIFT, 0x25)),
        ("[", (MOD_RALT, 0x25)),
        ("]", (MOD_RALT, 0x26)),
        ("=", (MOD_LSHIFT, 0x27)),
        ("}", (MOD_RALT, 0x27)),
        ("+", (0, 0x2D)),
        ("?", (MOD_LSHIFT, 0x2D)),
        ("|", (MOD_RALT, 0x2E)),
        ("'", (0, 0x32)),
        ("*", (MOD_LSHIFT, 0x32)),
        ("½", (0, 0x35)),
        ("§", (MOD_LSHIFT, 0x35)),
        (";", (MOD_LSHIFT, 0x36)),
        (":", (MOD_LSHIFT, 0x37)),
        ("-", (0, 0x38)),
        ("_", (MOD_LSHIFT, 0x38)),
        ("<", (0, 0x64)),
        (">", (MOD_LSHIFT, 0x64)),
        ("\\", (MOD_RALT, 0x64)),
        ("€", (MOD_RALT, 0x08)),
        ("µ", (MOD_RALT, 0x10)),
    ],
)
def test_danish_keystrokes(char: str, stroke: tuple[int, int]) -> None:
    assert DANISH.keystroke(char) == stroke
    assert DANISH.character(*stroke) == char


def test_us_types_all_printable_ascii() -> None:
    ascii_printable = set(string.printable) - set(string.whitespace) | {" "}
    assert ascii_printable <= US.characters
    assert US.characters == ascii_printable | {"\n"}


def test_danish_types_printable_ascii_except_dead_keys_and_danish_letters() -> None:
    ascii_printable = set(string.printable) - set(string.whitespace) | {" "}
    assert ascii_printable - DANISH.characters == {"^", "`", "~"}
    assert set("æøåÆØÅ") <= DANISH.characters


@pytest.mark.parametrize("layout", [US, DANISH], ids=lambda layout: layout.name)
def test_keystroke_and_character_are_inverse_for_every_typeable_char(layout: Layout) -> None:
    for char in layout.characters:
        assert layout.character(*layout.keystroke(char)) == char


@pytest.mark.parametrize(
    ("layout", "char"),
    [
        (DANISH, "^"),
        (DANISH, "`"),
        (DANISH, "~"),
        (DANISH, "\t"),
        (US, "æ"),
        (US, "€"),
        (US, "ab"),
        (US, ""),
    ],
)
def test_keystroke_raises_unknown_character(layout: Layout, char: str) -> None:
    with pytest.raises(UnknownCharacter) as caught:
        layout.keystroke(char)
    assert caught.value.char == char
    assert caught.value.layout == layout.name
    assert isinstance(caught.value, DeviceError)
    assert "modhex" in caught.value.hint


def test_right_shift_types_like_left_shift() -> None:
    assert US.character(MOD_RSHIFT, KEY_A) == "A"
    assert DANISH.character(MOD_RSHIFT, 0x2F) == "Å"


@pytest.mark.parametrize(
    ("layout", "modifiers", "usage"),
    [
        pytest.param(US, MOD_LCTRL, KEY_C, id="ctrl-c"),
        pytest.param(US, MOD_LALT, KEY_A, id="left-alt"),
        pytest.param(US, MOD_LGUI, KEY_A, id="gui"),
        pytest.param(US, MOD_RALT, KEY_2, id="us-has-no-altgr"),
        pytest.param(US, 0, KEY_F1, id="f1"),
        pytest.param(US, 0, 0x2A, id="backspace"),
        pytest.param(US, 0, 0x2B, id="tab"),
        pytest.param(DANISH, 0, 0x2E, id="dead-acute"),
        pytest.param(DANISH, MOD_LSHIFT, 0x30, id="dead-circumflex"),
        pytest.param(DANISH, MOD_RALT, 0x30, id="dead-tilde"),
        pytest.param(DANISH, MOD_RALT, KEY_A, id="altgr-a-unmapped"),
    ],
)
def test_character_none_for_keys_that_type_nothing(
    layout: Layout, modifiers: int, usage: int
) -> None:
    assert layout.character(modifiers, usage) is None


@pytest.mark.parametrize("modifiers", [0, MOD_LSHIFT, MOD_LCTRL, MOD_RALT])
def test_enter_is_newline_with_any_modifiers(modifiers: int) -> None:
    assert US.character(modifiers, KEY_ENTER) == "\n"
    assert DANISH.character(modifiers, KEY_ENTER) == "\n"


def test_get_layout_by_name_case_insensitive() -> None:
    assert get_layout("us") is US
    assert get_layout("DA") is DANISH
    assert LAYOUTS == {"us": US, "da": DANISH}


def test_get_layout_unknown_lists_known_layouts() -> None:
    with pytest.raises(UnknownLayout) as caught:
        get_layout("fr")
    assert caught.value.name == "fr"
    assert caught.value.known == ("da", "us")
    assert "da, us" in str(caught.value)


def test_layout_rejects_a_table_that_is_not_a_layout() -> None:
    with pytest.raises(ValueError, match="not a text key"):
        Layout("bad", {KEY_ENTER: ("x",)})
    with pytest.raises(ValueError, match="printable"):
        Layout("bad", {KEY_A: ("\t",)})


# --- typing and decoding ---------------------------------------------------------------------


def test_type_text_is_key_down_then_key_up_per_character() -> None:
    assert type_text("cC\n", US) == [
        h("00 00 06 00 00 00 00 00"),
        RELEASED,
        h("02 00 06 00 00 00 00 00"),
        RELEASED,
        h("00 00 28 00 00 00 00 00"),
        RELEASED,
    ]


def test_type_text_danish_uses_altgr() -> None:
    assert type_text("@", DANISH) == [h("40 00 1f 00 00 00 00 00"), RELEASED]


def test_type_text_raises_before_any_report() -> None:
    with pytest.raises(UnknownCharacter) as caught:
        type_text("abc^", DANISH)
    assert caught.value.char == "^"


def test_decoder_returns_line_on_enter() -> None:
    decoder = KeyboardDecoder(US)
    results = [decoder.feed(report) for report in type_text("ab", US)]
    assert results == [None] * 4
    assert decoder.pending == "ab"
    assert decoder.feed(down(0, KEY_ENTER)) == "ab"
    assert decoder.pending == ""
    assert decoder.feed(RELEASED) is None


def test_decoder_counts_a_held_key_once() -> None:
    decoder = KeyboardDecoder(US)
    for report in (down(0, KEY_A), down(0, KEY_A), down(MOD_LSHIFT, KEY_A), RELEASED):
        assert decoder.feed(report) is None
    assert decoder.pending == "a"


def test_decoder_counts_a_key_again_after_release() -> None:
    decoder = KeyboardDecoder(US)
    for report in (down(0, KEY_A), RELEASED, down(0, KEY_A), RELEASED):
        decoder.feed(report)
    assert decoder.pending == "aa"


def test_decoder_overlapping_keys_type_in_press_order() -> None:
    # Fast typing: b goes down before a comes up, then a comes up while b is held.
    decoder = KeyboardDecoder(US)
    for report in (down(0, KEY_A), down(0, KEY_A, KEY_B), down(0, KEY_B), RELEASED):
        decoder.feed(report)
    assert decoder.pending == "ab"


def test_decoder_keys_after_enter_in_one_report_start_the_next_line() -> None:
    decoder = KeyboardDecoder(US)
    decoder.feed(down(0, KEY_A))
    assert decoder.feed(down(0, KEY_A, KEY_ENTER, KEY_B)) == "a"
    assert decoder.pending == "b"


def test_decoder_empty_line() -> None:
    assert KeyboardDecoder(US).feed(down(0, KEY_ENTER)) == ""


def test_decoder_ignores_keys_that_type_nothing() -> None:
    decoder = KeyboardDecoder(US)
    for report in (down(MOD_LCTRL, KEY_C), RELEASED, down(0, KEY_F1), down(MOD_LSHIFT), RELEASED):
        assert decoder.feed(report) is None
    assert decoder.pending == ""


def test_decoder_malformed_report_raises_and_keeps_state() -> None:
    decoder = KeyboardDecoder(US)
    decoder.feed(down(0, KEY_A))
    with pytest.raises(MalformedReport):
        decoder.feed(h("00 00 01 01 01 01 01 01"))
    with pytest.raises(MalformedReport):
        decoder.feed(b"\x00\x00\x04")
    # a is still held: it does not type again; b does.
    decoder.feed(down(0, KEY_A, KEY_B))
    assert decoder.pending == "ab"


def test_decoder_reset_forgets_text_and_held_keys() -> None:
    decoder = KeyboardDecoder(US)
    decoder.feed(down(0, KEY_A))
    decoder.reset()
    assert decoder.pending == ""
    decoder.feed(down(0, KEY_A))
    assert decoder.pending == "a"


@pytest.mark.parametrize("layout", [US, DANISH], ids=lambda layout: layout.name)
def test_type_text_round_trips_every_typeable_character(layout: Layout) -> None:
    text = "".join(sorted(layout.characters - {"\n"}))
    assert typed_on(text, layout, layout) == text


# --- prove it: what survives a US token on a Danish host, and the other way round -----------


def test_yubico_example_otp_is_modhex() -> None:
    assert len(YUBICO_OTP) == 44
    assert set(YUBICO_OTP) <= set(MODHEX)


@pytest.mark.parametrize(
    ("token_layout", "host_layout"),
    [pytest.param(US, DANISH, id="us-token-danish-host"), pytest.param(DANISH, US, id="da-us")],
)
@pytest.mark.parametrize("otp", [YUBICO_OTP, MODHEX, MODHEX[::-1] * 3])
def test_modhex_otp_survives_the_other_layout(
    token_layout: Layout, host_layout: Layout, otp: str
) -> None:
    assert typed_on(otp, token_layout, host_layout) == otp


@pytest.mark.parametrize("letter", MODHEX)
def test_every_modhex_letter_is_the_same_keystroke_on_both_layouts(letter: str) -> None:
    assert US.keystroke(letter) == DANISH.keystroke(letter)
    assert US.keystroke(letter)[0] == 0  # no Shift, no AltGr: nothing for the host to remap


@pytest.mark.parametrize(
    ("text", "on_danish_host"),
    [
        pytest.param("123-456", "123+456", id="minus"),
        pytest.param("2024/06/01", "2024-06-01", id="slash"),
        pytest.param("12:34", "12Æ34", id="colon"),
        pytest.param("ab;cd", "abæcd", id="semicolon"),
        pytest.param("1+1", "11", id="plus-is-a-dead-key-there"),
        pytest.param("x=1", "x1", id="equals-is-a-dead-key-there"),
        pytest.param("(42)", ")42=", id="shifted-8-9-0"),
        pytest.param("a@b&c*", 'a"b/c(', id="shifted-2-7-8"),
        pytest.param("0x1F'", "0x1Fø", id="hex-literal-with-quote"),
        pytest.param("a_b?", "a?b_", id="underscore-question"),
    ],
)
def test_punctuation_does_not_survive_us_token_on_danish_host(
    text: str, on_danish_host: str
) -> None:
    assert typed_on(text, US, DANISH) == on_danish_host
    assert on_danish_host != text


@pytest.mark.parametrize(
    ("text", "on_us_host"),
    [
        pytest.param("123-456", "123/456", id="minus"),
        pytest.param("1+1", "1-1", id="plus"),
        pytest.param("12:34", "12>34", id="colon"),
        pytest.param("2024/06/01", "2024&06&01", id="slash"),
        pytest.param("user@host", "userhost", id="altgr-at-types-nothing"),
        pytest.param("a=b", "a)b", id="equals"),
    ],
)
def test_punctuation_does_not_survive_danish_token_on_us_host(text: str, on_us_host: str) -> None:
    assert typed_on(text, DANISH, US) == on_us_host
    assert on_us_host != text


def test_only_letters_digits_space_and_few_symbols_survive_us_to_danish() -> None:
    survivors = {char for char in US.characters if DANISH.character(*US.keystroke(char)) == char}
    letters_and_digits = set(string.ascii_letters + string.digits)
    assert survivors - letters_and_digits == {" ", "!", "#", "%", ",", ".", "\n"}


def test_digits_and_hex_survive_between_us_and_danish() -> None:
    # Both are QWERTY with digits unshifted, so decimal and hex codes do survive this pair;
    # modhex matters for layouts such as AZERTY (shifted digits) and QWERTZ (y/z), which are
    # not modelled here. The proof for US/Danish is the punctuation above.
    for text in ("0123456789", "0123456789abcdefABCDEF"):
        assert typed_on(text, US, DANISH) == text
        assert typed_on(text, DANISH, US) == text
