"""PIV codecs (devices.protocol.piv): PIN padding, slot names, CHUID and certificate objects."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devices.errors import MalformedTlv
from devices.protocol import tlv
from devices.protocol.piv import (
    DEFAULT_PIN,
    DEFAULT_PUK,
    TAG_CERT_INFO,
    TAG_CERTIFICATE,
    TAG_ERROR_DETECTION,
    Chuid,
    ObjectId,
    Slot,
    certificate_from_object,
    certificate_object,
    pad_pin,
    unpad_pin,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- PIN padding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pin", "padded"),
    [
        ("123456", b"123456\xff\xff"),
        ("1234567", b"1234567\xff"),
        ("12345678", b"12345678"),
        ("000000", b"000000\xff\xff"),
    ],
)
def test_pad_pin_pads_digits_with_ff_to_8_bytes(pin: str, padded: bytes) -> None:
    assert pad_pin(pin) == padded
    assert len(pad_pin(pin)) == 8


def test_pad_pin_pads_default_pin_and_puk() -> None:
    assert pad_pin(DEFAULT_PIN) == h("31 32 33 34 35 36 FF FF")
    assert pad_pin(DEFAULT_PUK) == h("31 32 33 34 35 36 37 38")


@pytest.mark.parametrize(
    "pin",
    [
        "",
        "12345",
        "123456789",
        "12345a",
        "123 456",
        " 123456",
        "-123456",
        "12345.6",
        "\u0661\u0662\u0663\u0664\u0665\u0666",  # Arabic-Indic digits: isdigit() but not ASCII
        "\u00b9\u00b2\u00b3456",  # superscript digits
    ],
)
def test_pad_pin_rejects_anything_but_6_to_8_ascii_digits(pin: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - UnicodeEncodeError is a ValueError too
        pad_pin(pin)


@pytest.mark.parametrize("pin", ["123456", "1234567", "12345678", "987654", "00000000"])
def test_unpad_pin_inverts_pad_pin(pin: str) -> None:
    assert unpad_pin(pad_pin(pin)) == pin


@pytest.mark.parametrize(
    "padded",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"123456\xff", id="seven-bytes"),
        pytest.param(b"123456\xff\xff\xff", id="nine-bytes"),
        pytest.param(b"12345\xff\xff\xff", id="five-digits"),
        pytest.param(b"\xff" * 8, id="all-padding"),
        pytest.param(b"1234\xff567", id="padding-inside"),
        pytest.param(b"\xff\xff123456", id="padding-first"),
        pytest.param(b"12345a\xff\xff", id="letter"),
        pytest.param(b"123456\x00\x00", id="zero-padding"),
        pytest.param(b"123456\xff\xfe", id="fe-padding"),
    ],
)
def test_unpad_pin_returns_none_for_malformed_reference_data(padded: bytes) -> None:
    assert unpad_pin(padded) is None


# --- slots -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "slot"),
    [
        ("9a", Slot.AUTHENTICATION),
        ("9A", Slot.AUTHENTICATION),
        ("0x9a", Slot.AUTHENTICATION),
        ("0X9A", Slot.AUTHENTICATION),
        ("  9c\n", Slot.SIGNATURE),
        ("9d", Slot.KEY_MANAGEMENT),
        ("9e", Slot.CARD_AUTHENTICATION),
        ("authentication", Slot.AUTHENTICATION),
        ("Signature", Slot.SIGNATURE),
        ("key-management", Slot.KEY_MANAGEMENT),
        ("CARD-AUTHENTICATION", Slot.CARD_AUTHENTICATION),
    ],
)
def test_slot_parse_accepts_hex_and_names(text: str, slot: Slot) -> None:
    assert Slot.parse(text) is slot


@pytest.mark.parametrize("text", ["", "9b", "9f", "0x", "82", "auth", "9a9a", "0x0x9a", "154"])
def test_slot_parse_rejects_unknown_text(text: str) -> None:
    with pytest.raises(ValueError, match="unknown PIV slot"):
        Slot.parse(text)


@pytest.mark.parametrize(
    ("slot", "object_id", "tag"),
    [
        (Slot.AUTHENTICATION, ObjectId.CERT_9A, h("5F C1 05")),
        (Slot.SIGNATURE, ObjectId.CERT_9C, h("5F C1 0A")),
        (Slot.KEY_MANAGEMENT, ObjectId.CERT_9D, h("5F C1 0B")),
        (Slot.CARD_AUTHENTICATION, ObjectId.CERT_9E, h("5F C1 01")),
    ],
)
def test_slot_object_id_names_certificate_object(
    slot: Slot, object_id: ObjectId, tag: bytes
) -> None:
    assert slot.object_id is object_id
    assert slot.object_id.value == tag


def test_slot_parse_round_trips_every_slot() -> None:
    for slot in Slot:
        assert Slot.parse(f"{slot.value:02x}") is slot
        assert Slot.parse(f"0x{slot.value:02X}") is slot
        assert Slot.parse(slot.name.lower().replace("_", "-")) is slot


# --- CHUID -------------------------------------------------------------------------------------

FASCN = h("D4 E7 39 DA 73 9C ED 39 CE 73 9D 83 68 58 21 08 42 10 84 21 C8 42 10 C3 EB")
GUID = h("00112233445566778899AABBCCDDEEFF")


def test_chuid_encode_lays_out_fields_in_order() -> None:
    raw = Chuid(fascn=FASCN, guid=GUID, expiry="20301231").encode()
    assert raw == (
        h("30 19") + FASCN + h("34 10") + GUID + h("35 08") + b"20301231" + h("3E 00 FE 00")
    )


def test_chuid_decode_inverts_encode() -> None:
    chuid = Chuid(fascn=FASCN, guid=GUID, expiry="20301231")
    assert Chuid.decode(chuid.encode()) == chuid


def test_chuid_decode_ignores_unknown_tags_and_order() -> None:
    raw = tlv.encode_all(
        [(0xEE, h("01")), (0x35, b"20291231"), (0x34, GUID), (0x36, h("AA")), (0x30, FASCN)]
    )
    assert Chuid.decode(raw) == Chuid(fascn=FASCN, guid=GUID, expiry="20291231")


def test_chuid_decode_accepts_guid_without_fascn() -> None:
    chuid = Chuid.decode(tlv.encode_all([(0x34, GUID)]))
    assert chuid == Chuid(fascn=b"", guid=GUID, expiry="")


def test_chuid_decode_accepts_fascn_without_guid() -> None:
    chuid = Chuid.decode(tlv.encode_all([(0x30, FASCN), (0x35, b"20301231")]))
    assert chuid.guid == b""
    assert chuid.fascn == FASCN


@pytest.mark.parametrize("raw", [b"", h("35 08") + b"20301231", h("3E 00 FE 00")])
def test_chuid_decode_raises_without_guid_or_fascn(raw: bytes) -> None:
    with pytest.raises(MalformedTlv) as caught:
        Chuid.decode(raw)
    assert caught.value.field == "guid"


def test_chuid_decode_raises_on_truncated_content() -> None:
    with pytest.raises(MalformedTlv) as caught:
        Chuid.decode(Chuid(FASCN, GUID, "20301231").encode()[:30])
    assert caught.value.field == "value"


def test_chuid_decode_replaces_undecodable_expiry_bytes() -> None:
    chuid = Chuid.decode(tlv.encode_all([(0x34, GUID), (0x35, b"2030\xff231")]))
    assert chuid.expiry == "2030\ufffd231"


def test_chuid_serial_is_guid_hex() -> None:
    assert Chuid(FASCN, GUID, "20301231").serial == "00112233445566778899aabbccddeeff"


def test_chuid_serial_falls_back_to_fascn_when_guid_is_zero() -> None:
    assert Chuid(FASCN, bytes(16), "20301231").serial == FASCN.hex()


def test_chuid_serial_falls_back_to_fascn_when_guid_is_empty() -> None:
    assert Chuid(FASCN, b"", "20301231").serial == FASCN.hex()


def test_chuid_serial_of_decoded_object_matches_guid() -> None:
    raw = Chuid(FASCN, GUID, "20301231").encode()
    assert Chuid.decode(raw).serial == GUID.hex()


# --- certificate objects -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate_der() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "akkreditiv test")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x1234)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


def test_certificate_object_lays_out_70_71_fe(certificate_der: bytes) -> None:
    content = certificate_object(certificate_der)
    items = tlv.parse_all(content)
    assert [item.tag for item in items] == [TAG_CERTIFICATE, TAG_CERT_INFO, TAG_ERROR_DETECTION]
    assert items[0].value == certificate_der
    assert items[1].value == h("00")
    assert items[2].value == b""


def test_certificate_object_round_trips_real_certificate(certificate_der: bytes) -> None:
    der = certificate_from_object(certificate_object(certificate_der))
    assert der == certificate_der
    assert x509.load_der_x509_certificate(der).serial_number == 0x1234


@pytest.mark.parametrize("length", [0, 1, 127, 128, 255, 256, 2000, 65536])
def test_certificate_object_round_trips_any_length(length: int) -> None:
    der = bytes((i * 13) & 0xFF for i in range(length))
    assert certificate_from_object(certificate_object(der)) == der


def test_certificate_from_object_accepts_missing_cert_info() -> None:
    content = tlv.encode_all([(TAG_CERTIFICATE, h("30 00"))])
    assert certificate_from_object(content) == h("30 00")


def test_certificate_from_object_accepts_empty_cert_info() -> None:
    content = tlv.encode_all([(TAG_CERTIFICATE, h("30 00")), (TAG_CERT_INFO, b"")])
    assert certificate_from_object(content) == h("30 00")


def test_certificate_from_object_raises_without_tag_70() -> None:
    content = tlv.encode_all([(TAG_CERT_INFO, h("00")), (TAG_ERROR_DETECTION, b"")])
    with pytest.raises(MalformedTlv) as caught:
        certificate_from_object(content)
    assert caught.value.field == "certificate"


@pytest.mark.parametrize("cert_info", [h("01"), h("01 00"), h("80")])
def test_certificate_from_object_rejects_compressed_certificate(cert_info: bytes) -> None:
    content = tlv.encode_all([(TAG_CERTIFICATE, h("1F 8B 08 00")), (TAG_CERT_INFO, cert_info)])
    with pytest.raises(MalformedTlv) as caught:
        certificate_from_object(content)
    assert caught.value.field == "cert_info"


def test_certificate_from_object_raises_on_truncated_content(certificate_der: bytes) -> None:
    with pytest.raises(MalformedTlv) as caught:
        certificate_from_object(certificate_object(certificate_der)[:50])
    assert caught.value.field == "value"
