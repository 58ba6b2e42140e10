"""Yubico OTP (devices.protocol.yubiotp): modhex, CRC, token blocks and whole OTPs, against the
published examples in tests/vectors/yubico_otp.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devices.errors import InvalidOtp, MalformedOtp
from devices.protocol.yubiotp import (
    CRC_RESIDUAL,
    MODHEX_ALPHABET,
    OtpBlock,
    ParsedOtp,
    crc16,
    encrypt_block,
    generate_otp,
    modhex_decode,
    modhex_encode,
    parse_otp,
)

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "yubico_otp.json").read_text())
KEY = bytes(range(16))
BLOCK = OtpBlock(
    private_id=bytes.fromhex("a1a2a3a4a5a6"),
    usage_counter=0x0102,
    timestamp=0x030405,
    session_counter=6,
    random=0x0708,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def name(vector: dict[str, Any]) -> str:
    return f"{vector['source']}-{vector.get('modhex', vector.get('otp', ''))[:8]}"


# --- modhex -----------------------------------------------------------------------------------


def test_modhex_alphabet_encodes_the_hex_digits_in_order() -> None:
    assert MODHEX_ALPHABET == "cbdefghijklnrtuv"
    assert modhex_encode(h("0123456789abcdef")) == "cbdefghijklnrtuv"
    assert modhex_decode("cbdefghijklnrtuv") == h("0123456789abcdef")


@pytest.mark.parametrize("vector", VECTORS["modhex"], ids=name)
def test_modhex_matches_published_examples(vector: dict[str, str]) -> None:
    assert modhex_encode(h(vector["hex"])) == vector["modhex"]
    assert modhex_decode(vector["modhex"]) == h(vector["hex"])


def test_modhex_decode_ignores_case() -> None:
    assert modhex_decode("CBDEfghiJKLNrtuv") == h("0123456789abcdef")


def test_modhex_of_nothing_is_nothing() -> None:
    assert modhex_encode(b"") == ""
    assert modhex_decode("") == b""


@pytest.mark.parametrize(
    "text",
    [
        "cbd",  # odd length
        "ca",  # 'a' is hex, not modhex
        "c0",
        "cb ",
        " cbd",
        "\u212a\u212a",  # KELVIN SIGN lower-cases to ASCII 'k'
        "cé",
    ],
)
def test_modhex_decode_refuses_other_text(text: str) -> None:
    with pytest.raises(MalformedOtp) as caught:
        modhex_decode(text)
    assert caught.value.field == "modhex"


# --- CRC --------------------------------------------------------------------------------------


def test_crc16_is_iso13239_without_final_complement() -> None:
    # CRC-16/IBM-SDLC (X.25) has check value 0x906E for "123456789" after its final
    # complement, and residue 0xF0B8; Yubico keeps the register uncomplemented.
    assert crc16(b"123456789") == 0x906E ^ 0xFFFF
    assert crc16(b"") == 0xFFFF


def test_crc_over_a_whole_block_is_the_residual() -> None:
    assert crc16(BLOCK.encode()) == CRC_RESIDUAL == 0xF0B8
    plaintext = h(VECTORS["otps"][0]["plaintext"])
    assert crc16(plaintext) == CRC_RESIDUAL


# --- blocks -----------------------------------------------------------------------------------


def test_block_layout_is_little_endian_with_complemented_crc() -> None:
    raw = BLOCK.encode()
    assert raw[:14] == h("a1a2a3a4a5a60201050403060807")
    assert int.from_bytes(raw[14:], "little") == ~crc16(raw[:14]) & 0xFFFF
    assert OtpBlock.decode(raw) == BLOCK


def test_block_decodes_the_published_plaintext() -> None:
    vector = VECTORS["otps"][0]
    block = OtpBlock.decode(h(vector["plaintext"]))
    assert block == OtpBlock(
        private_id=h(vector["private_id"]),
        usage_counter=vector["usage_counter"],
        timestamp=vector["timestamp"],
        session_counter=vector["session_counter"],
        random=vector["random"],
    )
    assert block.encode() == h(vector["plaintext"])


def test_block_with_a_changed_byte_fails_its_crc() -> None:
    raw = bytearray(BLOCK.encode())
    for position in range(16):
        changed = raw.copy()
        changed[position] ^= 0x01
        with pytest.raises(InvalidOtp) as caught:
            OtpBlock.decode(bytes(changed))
        assert caught.value.field == "crc"


@pytest.mark.parametrize("length", [0, 15, 17, 32])
def test_block_decode_refuses_other_lengths(length: int) -> None:
    with pytest.raises(MalformedOtp) as caught:
        OtpBlock.decode(bytes(length))
    assert caught.value.field == "block"


def test_block_decode_drops_the_caps_lock_flag() -> None:
    # A YubiKey sets the usage counter's top bit when the OTP was triggered by caps lock.
    body = BLOCK.encode()[:6] + (0x8000 | 0x0102).to_bytes(2, "little") + BLOCK.encode()[8:14]
    raw = body + (~crc16(body) & 0xFFFF).to_bytes(2, "little")
    assert OtpBlock.decode(raw).usage_counter == 0x0102


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("private_id", b"12345"),
        ("private_id", b"1234567"),
        ("usage_counter", 0x8000),
        ("usage_counter", -1),
        ("timestamp", 1 << 24),
        ("session_counter", 256),
        ("random", 0x10000),
    ],
)
def test_block_refuses_out_of_range_fields(field: str, value: object) -> None:
    fields: dict[str, Any] = {
        "private_id": BLOCK.private_id,
        "usage_counter": 1,
        "timestamp": 1,
        "session_counter": 1,
        "random": 1,
        field: value,
    }
    with pytest.raises(MalformedOtp) as caught:
        OtpBlock(**fields)
    assert caught.value.field == field


# --- encryption and whole OTPs ----------------------------------------------------------------


def test_encrypt_block_matches_yubico_c_aes_ecb_example() -> None:
    vector = VECTORS["aes_ecb"][0]
    block = OtpBlock.decode(h(vector["plaintext"]))
    assert encrypt_block(h(vector["key"]), block) == h(vector["ciphertext"])


def test_yubico_c_selftest_aes_answer_is_not_a_token() -> None:
    # yubico-c's AES known answer decrypts to bytes whose CRC is not valid: parsing refuses it.
    vector = VECTORS["aes_ecb"][1]
    otp = modhex_encode(h(vector["ciphertext"]))
    with pytest.raises(InvalidOtp) as caught:
        parse_otp(otp, h(vector["key"]), public_id_length=0)
    assert caught.value.field == "crc"


@pytest.mark.parametrize("vector", VECTORS["otps"], ids=name)
def test_parse_otp_decodes_published_otps(vector: dict[str, Any]) -> None:
    public_id = h(vector["public_id"])
    parsed = parse_otp(vector["otp"], h(vector["aes_key"]), public_id_length=len(public_id))
    expected = OtpBlock(
        private_id=h(vector["private_id"]),
        usage_counter=vector["usage_counter"],
        timestamp=vector["timestamp"],
        session_counter=vector["session_counter"],
        random=vector["random"],
    )
    assert parsed == ParsedOtp(public_id=public_id, block=expected)
    if "crc" in vector:
        assert int.from_bytes(expected.encode()[14:], "little") == vector["crc"]
    if "plaintext" in vector:
        assert expected.encode() == h(vector["plaintext"])


@pytest.mark.parametrize("vector", VECTORS["otps"], ids=name)
def test_generate_otp_reproduces_published_otps(vector: dict[str, Any]) -> None:
    block = OtpBlock(
        private_id=h(vector["private_id"]),
        usage_counter=vector["usage_counter"],
        timestamp=vector["timestamp"],
        session_counter=vector["session_counter"],
        random=vector["random"],
    )
    otp = generate_otp(h(vector["public_id"]), h(vector["aes_key"]), block)
    assert otp == vector["otp"]


def test_generated_otp_is_44_characters_for_a_6_byte_public_id() -> None:
    otp = generate_otp(b"\x00\x01\x02\x03\x04\x05", KEY, BLOCK)
    assert len(otp) == 44
    assert otp.startswith("cccbcdcecfcg")
    assert parse_otp(otp, KEY) == ParsedOtp(b"\x00\x01\x02\x03\x04\x05", BLOCK)


def test_parse_otp_takes_upper_case() -> None:
    otp = generate_otp(b"abcdef", KEY, BLOCK)
    assert parse_otp(otp.upper(), KEY).block == BLOCK


def test_parse_otp_without_public_id() -> None:
    otp = generate_otp(b"", KEY, BLOCK)
    assert len(otp) == 32
    assert parse_otp(otp, KEY, public_id_length=0) == ParsedOtp(b"", BLOCK)


def test_parse_otp_with_the_wrong_key_fails_the_crc() -> None:
    otp = generate_otp(b"abcdef", KEY, BLOCK)
    with pytest.raises(InvalidOtp) as caught:
        parse_otp(otp, bytes(16))
    assert caught.value.field == "crc"
    assert caught.value.hint


@pytest.mark.parametrize(
    ("otp", "public_id_length"),
    [
        ("", 6),
        ("c" * 43, 6),
        ("c" * 45, 6),
        ("c" * 44, 5),  # a 5-byte public id makes 42 characters
        ("c" * 30, 0),
        ("c" * 50, 8),
    ],
)
def test_parse_otp_refuses_wrong_lengths(otp: str, public_id_length: int) -> None:
    with pytest.raises(MalformedOtp) as caught:
        parse_otp(otp, KEY, public_id_length=public_id_length)
    assert caught.value.field == "length"


def test_parse_otp_refuses_non_modhex() -> None:
    otp = generate_otp(b"abcdef", KEY, BLOCK)
    with pytest.raises(MalformedOtp) as caught:
        parse_otp(otp[:-1] + "a", KEY)
    assert caught.value.field == "modhex"


def test_parse_otp_does_not_strip_the_enter_key() -> None:
    otp = generate_otp(b"abcdef", KEY, BLOCK)
    with pytest.raises(MalformedOtp):
        parse_otp(otp + "\n", KEY)


@pytest.mark.parametrize("length", [0, 15, 24, 32])
def test_keys_other_than_aes128_are_refused(length: int) -> None:
    with pytest.raises(ValueError, match="AES-128"):
        encrypt_block(bytes(length), BLOCK)
    with pytest.raises(ValueError, match="AES-128"):
        parse_otp("c" * 44, bytes(length))


def test_public_ids_longer_than_8_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match="public id"):
        generate_otp(bytes(9), KEY, BLOCK)
    with pytest.raises(ValueError, match="public id"):
        parse_otp("c" * 50, KEY, public_id_length=9)
