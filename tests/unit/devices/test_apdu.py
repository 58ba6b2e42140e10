"""Command and response APDUs (devices.protocol.apdu) and status-word errors (sw.py)."""

from __future__ import annotations

import pytest

from devices.errors import (
    ApduError,
    ConditionsNotSatisfied,
    DeviceError,
    FileNotFound,
    InvalidPin,
    MalformedApdu,
    PinBlocked,
    ProtocolError,
    SecurityStatusNotSatisfied,
    WrongLength,
)
from devices.protocol.apdu import (
    EXTENDED_MAX_DATA,
    EXTENDED_MAX_LE,
    SHORT_MAX_DATA,
    SHORT_MAX_LE,
    CommandApdu,
    ResponseApdu,
)
from devices.protocol.sw import (
    SW,
    bytes_remaining,
    error_for_sw,
    is_success,
    retries_remaining,
    wrong_le,
)

PIV_AID = bytes.fromhex("A000000308000010000100")


def h(text: str) -> bytes:
    """Hex with spaces allowed, so byte layouts stay readable."""
    return bytes.fromhex(text)


# --- the seven encodings, both directions ------------------------------------------------------

# (wire bytes, the APDU they mean). Decoding the bytes gives the APDU and encoding the APDU
# gives the bytes, so every row is checked both ways.
SEVEN_CASES = [
    pytest.param(h("00 A4 04 00"), CommandApdu(0x00, 0xA4, 0x04, 0x00), id="case1"),
    pytest.param(h("00 CB 3F FF 05"), CommandApdu(0x00, 0xCB, 0x3F, 0xFF, le=5), id="case2S"),
    pytest.param(
        h("00 C0 00 00 00"), CommandApdu(0x00, 0xC0, 0x00, 0x00, le=256), id="case2S-le256"
    ),
    pytest.param(
        h("00 C0 00 00 FF"), CommandApdu(0x00, 0xC0, 0x00, 0x00, le=255), id="case2S-le255"
    ),
    pytest.param(
        h("00 20 00 80 08 31 32 33 34 35 36 FF FF"),
        CommandApdu(0x00, 0x20, 0x00, 0x80, h("31 32 33 34 35 36 FF FF")),
        id="case3S",
    ),
    pytest.param(
        h("00 A4 04 00 0B") + PIV_AID + h("00"),
        CommandApdu(0x00, 0xA4, 0x04, 0x00, PIV_AID, le=256),
        id="case4S-le256",
    ),
    pytest.param(
        h("00 87 11 9A 02 7C 00 40"),
        CommandApdu(0x00, 0x87, 0x11, 0x9A, h("7C 00"), le=0x40),
        id="case4S",
    ),
    pytest.param(
        h("00 B0 00 00 00 01 00"),
        CommandApdu(0x00, 0xB0, 0x00, 0x00, le=256, extended=True),
        id="case2E-le256",
    ),
    pytest.param(
        h("00 B0 00 00 00 FF FF"),
        CommandApdu(0x00, 0xB0, 0x00, 0x00, le=65535, extended=True),
        id="case2E-le65535",
    ),
    pytest.param(
        h("00 B0 00 00 00 00 00"),
        CommandApdu(0x00, 0xB0, 0x00, 0x00, le=65536, extended=True),
        id="case2E-le65536",
    ),
    pytest.param(
        h("00 DB 3F FF 00 01 00") + bytes(range(256)),
        CommandApdu(0x00, 0xDB, 0x3F, 0xFF, bytes(range(256)), extended=True),
        id="case3E",
    ),
    pytest.param(
        h("00 DB 3F FF 00 00 02 AB CD"),
        CommandApdu(0x00, 0xDB, 0x3F, 0xFF, h("AB CD"), extended=True),
        id="case3E-short-data",
    ),
    pytest.param(
        h("00 87 07 9A 00 00 03 7C 01 00 01 02"),
        CommandApdu(0x00, 0x87, 0x07, 0x9A, h("7C 01 00"), le=0x0102, extended=True),
        id="case4E",
    ),
    pytest.param(
        h("00 87 07 9A 00 00 03 7C 01 00 00 00"),
        CommandApdu(0x00, 0x87, 0x07, 0x9A, h("7C 01 00"), le=65536, extended=True),
        id="case4E-le65536",
    ),
]


@pytest.mark.parametrize(("raw", "apdu"), SEVEN_CASES)
def test_decode_yields_expected_apdu_for_each_case(raw: bytes, apdu: CommandApdu) -> None:
    assert CommandApdu.decode(raw) == apdu


@pytest.mark.parametrize(("raw", "apdu"), SEVEN_CASES)
def test_encode_yields_expected_bytes_for_each_case(raw: bytes, apdu: CommandApdu) -> None:
    assert apdu.encode() == raw


@pytest.mark.parametrize(("raw", "apdu"), SEVEN_CASES)
def test_decode_then_encode_round_trips_for_each_case(raw: bytes, apdu: CommandApdu) -> None:
    decoded = CommandApdu.decode(raw)
    assert decoded.encode() == raw
    assert CommandApdu.decode(apdu.encode()) == apdu


def test_decode_accepts_bytearray_and_memoryview_input() -> None:
    raw = h("00 A4 04 00 0B") + PIV_AID + h("00")
    expected = CommandApdu(0x00, 0xA4, 0x04, 0x00, PIV_AID, le=256)
    assert CommandApdu.decode(bytearray(raw)) == expected
    assert CommandApdu.decode(memoryview(raw)) == expected
    assert type(CommandApdu.decode(bytearray(raw)).data) is bytes


def test_encode_uses_short_form_at_short_maximums() -> None:
    apdu = CommandApdu(0x00, 0xDB, 0x3F, 0xFF, b"\x5a" * SHORT_MAX_DATA, le=SHORT_MAX_LE)
    raw = apdu.encode()
    assert not apdu.needs_extended
    assert raw == h("00 DB 3F FF FF") + b"\x5a" * 255 + h("00")
    assert len(raw) == 4 + 1 + 255 + 1


def test_encode_switches_to_extended_when_data_exceeds_255() -> None:
    apdu = CommandApdu(0x00, 0xDB, 0x3F, 0xFF, b"\x01" * 256)
    assert apdu.needs_extended
    assert apdu.encode() == h("00 DB 3F FF 00 01 00") + b"\x01" * 256


def test_encode_switches_to_extended_when_le_exceeds_256() -> None:
    apdu = CommandApdu(0x00, 0xB0, 0x00, 0x00, le=257)
    assert apdu.needs_extended
    assert apdu.encode() == h("00 B0 00 00 00 01 01")


def test_encode_extended_case4_when_only_le_exceeds_256() -> None:
    apdu = CommandApdu(0x00, 0x87, 0x07, 0x9A, h("7C 00"), le=1000)
    assert apdu.encode() == h("00 87 07 9A 00 00 02 7C 00 03 E8")


def test_encode_forces_extended_when_flag_set_with_small_body() -> None:
    assert CommandApdu(0x00, 0xB0, 0x00, 0x00, le=5, extended=True).encode() == h(
        "00 B0 00 00 00 00 05"
    )
    assert CommandApdu(0x00, 0xDB, 0x00, 0x00, h("AA"), extended=True).encode() == h(
        "00 DB 00 00 00 00 01 AA"
    )


def test_encode_case1_ignores_extended_flag() -> None:
    assert CommandApdu(0x00, 0xA4, 0x00, 0x00, extended=True).encode() == h("00 A4 00 00")


def test_encode_maximum_extended_command_has_exact_length() -> None:
    apdu = CommandApdu(0x00, 0xDB, 0x3F, 0xFF, bytes(EXTENDED_MAX_DATA), le=EXTENDED_MAX_LE)
    raw = apdu.encode()
    assert raw[4:7] == h("00 FF FF")
    assert raw[-2:] == h("00 00")
    assert len(raw) == 4 + 3 + EXTENDED_MAX_DATA + 2
    assert CommandApdu.decode(raw) == CommandApdu(
        0x00, 0xDB, 0x3F, 0xFF, bytes(EXTENDED_MAX_DATA), le=EXTENDED_MAX_LE, extended=True
    )


def test_decode_of_long_data_sets_extended_and_reencodes_identically() -> None:
    original = CommandApdu(0x00, 0xDB, 0x3F, 0xFF, b"\x33" * 1000, le=300)
    decoded = CommandApdu.decode(original.encode())
    assert (decoded.cla, decoded.ins, decoded.p1, decoded.p2) == (0x00, 0xDB, 0x3F, 0xFF)
    assert decoded.data == original.data
    assert decoded.le == 300
    assert decoded.extended is True
    assert decoded.encode() == original.encode()


@pytest.mark.parametrize("extended", [False, True])
def test_encode_le_zero_is_rejected_or_round_trips(extended: bool) -> None:
    # The constructor accepts 0 <= le <= 65536, but Le=0 has no encoding of its own: the
    # short byte 00 means 256 and the extended 0000 means 65536. A value the constructor
    # accepts must either be refused (naming "le") or survive encode/decode.
    rejected_field: str | None = None
    try:
        apdu = CommandApdu(0x00, 0xB0, 0x00, 0x00, le=0, extended=extended)
    except MalformedApdu as error:
        rejected_field = error.field
    else:
        assert CommandApdu.decode(apdu.encode()).le == apdu.le
    assert rejected_field in (None, "le")


def test_chained_is_true_for_interindustry_cla_with_bit_0x10() -> None:
    assert CommandApdu(0x10, 0xDB, 0x3F, 0xFF).chained
    assert CommandApdu(0x1C, 0xDB, 0x3F, 0xFF).chained
    assert not CommandApdu(0x00, 0xDB, 0x3F, 0xFF).chained
    assert not CommandApdu(0x0C, 0xDB, 0x3F, 0xFF).chained


def test_chained_follows_bit_5_in_proprietary_8x_9x_class() -> None:
    # CTAP's NFCCTAP_MSG chains with CLA 90 (CTAP 2.1 §11.3.6).
    assert CommandApdu(0x90, 0x10, 0x80, 0x00).chained
    assert not CommandApdu(0x80, 0x10, 0x80, 0x00).chained


def test_chained_is_false_for_other_classes_and_pcsc_pseudo_apdus() -> None:
    assert not CommandApdu(0xFF, 0xCA, 0x00, 0x00).chained
    assert not CommandApdu(0xB0, 0xDB, 0x3F, 0xFF).chained


def test_repr_shows_header_and_lengths_not_data() -> None:
    text = repr(CommandApdu(0x00, 0x20, 0x00, 0x80, b"secret!!", le=None))
    assert "00 20 00 80" in text
    assert "8 bytes" in text
    assert "secret" not in text


# --- malformed command APDUs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param(b"", "header", id="empty"),
        pytest.param(h("00"), "header", id="one-byte"),
        pytest.param(h("00 A4 04"), "header", id="three-bytes"),
        pytest.param(h("00 DB 3F FF 05 01 02"), "lc", id="short-lc-too-few-bytes"),
        pytest.param(h("00 DB 3F FF 02 01 02 03 04"), "lc", id="short-lc-too-many-bytes"),
        pytest.param(h("00 DB 3F FF FF") + bytes(10), "lc", id="short-lc-255-but-10-follow"),
        pytest.param(h("00 DB 3F FF 00 01"), "lc", id="extended-length-truncated"),
        pytest.param(h("00 DB 3F FF 00 00 00 AA"), "lc", id="extended-lc-zero"),
        pytest.param(h("00 DB 3F FF 00 00 00 00 00"), "lc", id="extended-lc-zero-with-le"),
        pytest.param(h("00 DB 3F FF 00 00 05 01 02"), "lc", id="extended-lc-too-few-bytes"),
        pytest.param(h("00 DB 3F FF 00 00 02 01 02 03"), "lc", id="extended-lc-plus-one-byte"),
        pytest.param(
            h("00 DB 3F FF 00 00 02 01 02 03 04 05"), "lc", id="extended-lc-plus-three-bytes"
        ),
    ],
)
def test_decode_raises_malformed_apdu_naming_field(raw: bytes, field: str) -> None:
    with pytest.raises(MalformedApdu) as caught:
        CommandApdu.decode(raw)
    assert caught.value.field == field


@pytest.mark.parametrize("name", ["cla", "ins", "p1", "p2"])
@pytest.mark.parametrize("value", [-1, 0x100, 1000])
def test_construct_raises_malformed_apdu_when_header_byte_out_of_range(
    name: str, value: int
) -> None:
    fields = {"cla": 0, "ins": 0xA4, "p1": 0, "p2": 0, name: value}
    with pytest.raises(MalformedApdu) as caught:
        CommandApdu(**fields)
    assert caught.value.field == name


@pytest.mark.parametrize("name", ["cla", "ins", "p1", "p2"])
@pytest.mark.parametrize("value", [0, 0xFF])
def test_construct_accepts_header_byte_at_boundaries(name: str, value: int) -> None:
    fields = {"cla": 0x00, "ins": 0xA4, "p1": 0x00, "p2": 0x00, name: value}
    assert getattr(CommandApdu(**fields), name) == value


@pytest.mark.parametrize("le", [-1, EXTENDED_MAX_LE + 1, 1 << 20])
def test_construct_raises_malformed_apdu_when_le_out_of_range(le: int) -> None:
    with pytest.raises(MalformedApdu) as caught:
        CommandApdu(0x00, 0xB0, 0x00, 0x00, le=le)
    assert caught.value.field == "le"


def test_construct_raises_malformed_apdu_when_data_exceeds_65535() -> None:
    with pytest.raises(MalformedApdu) as caught:
        CommandApdu(0x00, 0xDB, 0x3F, 0xFF, bytes(EXTENDED_MAX_DATA + 1))
    assert caught.value.field == "data"


def test_malformed_apdu_is_a_protocol_and_device_error() -> None:
    with pytest.raises(MalformedApdu) as caught:
        CommandApdu.decode(b"\x00")
    assert isinstance(caught.value, ProtocolError)
    assert isinstance(caught.value, DeviceError)
    assert not isinstance(caught.value, ApduError)


# --- response APDUs ----------------------------------------------------------------------------


def test_response_decode_splits_data_and_status_word() -> None:
    response = ResponseApdu.decode(h("01 02 03 90 00"))
    assert response.data == h("01 02 03")
    assert response.sw == 0x9000
    assert response.sw1 == 0x90
    assert response.sw2 == 0x00
    assert response.ok
    assert not response.more_data


def test_response_decode_accepts_status_word_only() -> None:
    response = ResponseApdu.decode(h("6A 82"))
    assert response.data == b""
    assert response.sw == 0x6A82
    assert not response.ok


def test_response_more_data_is_true_only_for_61xx() -> None:
    assert ResponseApdu(b"", 0x6110).more_data
    assert ResponseApdu(b"", 0x6100).more_data
    assert not ResponseApdu(b"", 0x9000).more_data
    assert not ResponseApdu(b"", 0x6C10).more_data
    assert not ResponseApdu(b"", 0x6210).more_data


@pytest.mark.parametrize("raw", [b"", h("90")])
def test_response_decode_raises_malformed_apdu_when_shorter_than_sw(raw: bytes) -> None:
    with pytest.raises(MalformedApdu) as caught:
        ResponseApdu.decode(raw)
    assert caught.value.field == "sw"


@pytest.mark.parametrize(
    "raw", [h("90 00"), h("61 00"), h("AA BB CC 63 C2"), bytes(range(256)) + h("90 00")]
)
def test_response_encode_round_trips(raw: bytes) -> None:
    assert ResponseApdu.decode(raw).encode() == raw


def test_response_check_returns_data_on_9000() -> None:
    assert ResponseApdu(h("53 01 00"), 0x9000).check() == h("53 01 00")
    assert ResponseApdu(b"", 0x9000).check() == b""


@pytest.mark.parametrize("count", [0, 1, 2, 3, 9, 15])
def test_response_check_raises_invalid_pin_with_retries_from_63cx(count: int) -> None:
    with pytest.raises(InvalidPin) as caught:
        ResponseApdu(b"", 0x63C0 | count).check()
    assert caught.value.retries_left == count
    assert caught.value.sw == 0x63C0 | count
    assert f"{count} {'try' if count == 1 else 'tries'} left" in str(caught.value)


def test_response_check_raises_pin_blocked_for_6983() -> None:
    with pytest.raises(PinBlocked) as caught:
        ResponseApdu(b"", 0x6983).check()
    assert caught.value.sw == 0x6983
    assert "PUK" in caught.value.hint


def test_response_check_raises_file_not_found_for_6a82() -> None:
    with pytest.raises(FileNotFound) as caught:
        ResponseApdu(b"", 0x6A82).check()
    assert caught.value.sw == 0x6A82


def test_response_check_raises_file_not_found_for_6a88() -> None:
    with pytest.raises(FileNotFound) as caught:
        ResponseApdu(b"", 0x6A88).check()
    assert caught.value.sw == 0x6A88


def test_response_check_raises_security_status_for_6982() -> None:
    with pytest.raises(SecurityStatusNotSatisfied) as caught:
        ResponseApdu(b"", 0x6982).check()
    assert caught.value.sw == 0x6982
    assert "PIN" in str(caught.value)


@pytest.mark.parametrize("sw", [0x6700, 0x6C00, 0x6C10, 0x6CFF])
def test_response_check_raises_wrong_length_for_6700_and_6cxx(sw: int) -> None:
    with pytest.raises(WrongLength) as caught:
        ResponseApdu(b"", sw).check()
    assert caught.value.sw == sw
    assert f"{sw:04X}" in str(caught.value)


def test_response_check_raises_conditions_not_satisfied_for_6985() -> None:
    with pytest.raises(ConditionsNotSatisfied) as caught:
        ResponseApdu(b"", 0x6985).check()
    assert caught.value.sw == 0x6985


@pytest.mark.parametrize(
    ("sw", "words"),
    [
        (0x6A80, "wrong data"),
        (0x6D00, "ins not supported"),
        (0x6A86, "incorrect p1p2"),
        (0x6F00, "no precise diagnosis"),
        (0x6F12, "status word"),
        (0x6300, "status word"),
        (0x6400, "status word"),
    ],
)
def test_response_check_raises_generic_apdu_error_with_sw(sw: int, words: str) -> None:
    with pytest.raises(ApduError) as caught:
        ResponseApdu(h("01"), sw).check()
    assert type(caught.value) is ApduError
    assert caught.value.sw == sw
    assert words in str(caught.value)
    assert f"{sw:04X}" in str(caught.value)


@pytest.mark.parametrize(
    ("sw", "kind"),
    [
        (0x63C3, InvalidPin),
        (0x6983, PinBlocked),
        (0x6A82, FileNotFound),
        (0x6A88, FileNotFound),
        (0x6982, SecurityStatusNotSatisfied),
        (0x6700, WrongLength),
        (0x6C20, WrongLength),
        (0x6985, ConditionsNotSatisfied),
        (0x6A80, ApduError),
        (0x6B00, ApduError),
    ],
)
def test_error_for_sw_returns_exact_type(sw: int, kind: type[ApduError]) -> None:
    error = error_for_sw(sw)
    assert type(error) is kind
    assert error.sw == sw


def test_error_for_sw_6983_is_not_mistaken_for_invalid_pin() -> None:
    assert not isinstance(error_for_sw(0x6983), InvalidPin)
    assert not isinstance(error_for_sw(0x63C3), PinBlocked)


def test_invalid_pin_derives_sw_from_retries_when_not_given() -> None:
    error = InvalidPin(2)
    assert error.sw == 0x63C2
    assert error.retries_left == 2
    assert str(error).startswith("wrong PIN, 2 tries left")
    assert error.hint in str(error)


# --- status-word helpers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "sw"),
    [(1, 0x6101), (0x10, 0x6110), (255, 0x61FF), (256, 0x6100), (257, 0x6100), (5000, 0x6100)],
)
def test_bytes_remaining_encodes_count_and_saturates_at_256(count: int, sw: int) -> None:
    assert bytes_remaining(count) == sw


@pytest.mark.parametrize("count", [0, 1, 15])
def test_retries_remaining_encodes_63cx(count: int) -> None:
    assert retries_remaining(count) == 0x63C0 + count
    error = error_for_sw(retries_remaining(count))
    assert isinstance(error, InvalidPin)
    assert error.retries_left == count


@pytest.mark.parametrize("count", [-1, 16])
def test_retries_remaining_rejects_count_outside_four_bits(count: int) -> None:
    with pytest.raises(ValueError, match="four bits"):
        retries_remaining(count)


def test_wrong_le_encodes_6cxx() -> None:
    assert wrong_le(0x20) == 0x6C20
    assert wrong_le(256) == 0x6C00


def test_is_success_only_for_9000() -> None:
    assert is_success(0x9000)
    assert is_success(SW.SUCCESS)
    assert not is_success(0x6100)
    assert not is_success(0x9001)


@pytest.mark.parametrize("ins", [0x20, 0x24, 0x2C, 0x01, 0x03, 0xA3])
def test_redact_for_log_hides_data_of_secret_carrying_commands(ins: int) -> None:
    from devices.protocol.apdu import redact_for_log

    raw = CommandApdu(0x00, ins, 0x00, 0x80, b"31323334353637FF").encode()
    text = redact_for_log(raw)
    assert "3132" not in text
    assert "not logged" in text


def test_redact_for_log_shows_ordinary_commands() -> None:
    from devices.protocol.apdu import redact_for_log

    raw = CommandApdu(0x00, 0xCB, 0x3F, 0xFF, bytes.fromhex("5C035FC102")).encode()
    assert redact_for_log(raw) == raw.hex()
