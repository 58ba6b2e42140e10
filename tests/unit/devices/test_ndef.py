"""Type 4 Tag files, NDEF messages and URI records (devices.protocol.ndef).

Published examples (tests/vectors/ndef) are checked byte for byte; the rest follows NDEF 1.0,
URI RTD 1.0 and Type 4 Tag 2.0 rule by rule.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from devices.errors import MalformedNdef, ProtocolError
from devices.protocol.ndef import (
    CC_FILE_ID,
    NDEF_AID,
    NDEF_FILE_ID,
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

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "vectors" / "ndef" / "published_examples.json").read_text()
)

YUBICO_OTP = "cccjgjgkhcbbirdrfdnlnghhfgrtnnlgedjlftrbdeut"
YUBICO_URI = f"https://my.yubico.com/yk/#{YUBICO_OTP}"


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_constants() -> None:
    assert NDEF_AID == h("D2 76 00 00 85 01 01")
    assert (CC_FILE_ID, NDEF_FILE_ID) == (0xE103, 0xE104)
    assert len(URI_PREFIXES) == 0x24


# --- capability container --------------------------------------------------------------------


@pytest.mark.parametrize(
    "vector", VECTORS["capability_containers"], ids=lambda vector: vector["name"]
)
def test_capability_container_published_example(vector: dict[str, Any]) -> None:
    cc = CapabilityContainer.decode(h(vector["hex"]))
    fields = {key: value for key, value in vector.items() if key not in {"name", "hex"}}
    assert cc == CapabilityContainer(**fields)
    assert cc.encode() == h(vector["hex"])


def test_capability_container_default_is_a_read_only_tag() -> None:
    cc = CapabilityContainer()
    assert cc.encode() == h("000F 20 00FF 00FF 04 06 E104 0400 00 FF")
    assert cc.readable
    assert not cc.writable
    assert CapabilityContainer.decode(cc.encode()) == cc


def test_capability_container_ignores_well_formed_trailing_tlvs() -> None:
    # CCLEN 0x17: a proprietary file control TLV (T=05) follows the NDEF one.
    raw = h("0017 20 003B 0034 0406E10400FF00FF 0506E10500FF00FF")
    assert CapabilityContainer.decode(raw) == CapabilityContainer(0x20, 0x3B, 0x34, 0xE104, 0xFF)


SPEC_CC = "000F 20 003B 0034 04 06 E104 00FF 00 FF"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param("", "cclen", id="empty"),
        pytest.param("00", "cclen", id="one-byte"),
        pytest.param("000E 20 003B 0034 04 06 E104 00FF 00", "cclen", id="cclen-below-15"),
        pytest.param("0010 20 003B 0034 04 06 E104 00FF 00 FF", "cclen", id="cclen-too-long"),
        pytest.param(SPEC_CC + "00", "cclen", id="bytes-beyond-cclen"),
        pytest.param(SPEC_CC[:-2], "cclen", id="truncated"),
        pytest.param("000F 20 003B 0034 05 06 E104 00FF 00 FF", "tlv", id="no-tlv-04"),
        pytest.param("0011 30 003B 0034 06 08 E104 000000FF 00 FF", "tlv", id="extended-tlv-06"),
        pytest.param("000F 20 003B 0034 04 05 E104 00FF 00 FF", "tlv_length", id="tlv-length-5"),
        pytest.param("0012 20 003B 0034 0406E10400FF00FF 05 06 E1", "tlv", id="trailing-tlv-cut"),
        pytest.param("0010 20 003B 0034 0406E10400FF00FF 05", "tlv", id="trailing-tag-only"),
        pytest.param("000F 10 003B 0034 04 06 E104 00FF 00 FF", "mapping_version", id="v1.0"),
        pytest.param("000F 40 003B 0034 04 06 E104 00FF 00 FF", "mapping_version", id="v4.0"),
        pytest.param("000F 20 000E 0034 04 06 E104 00FF 00 FF", "max_le", id="mle-below-15"),
        pytest.param("000F 20 003B 0000 04 06 E104 00FF 00 FF", "max_lc", id="mlc-zero"),
        pytest.param("000F 20 003B 0034 04 06 E103 00FF 00 FF", "ndef_file_id", id="cc-file-id"),
        pytest.param("000F 20 003B 0034 04 06 0000 00FF 00 FF", "ndef_file_id", id="id-0000"),
        pytest.param("000F 20 003B 0034 04 06 3F00 00FF 00 FF", "ndef_file_id", id="id-mf"),
        pytest.param("000F 20 003B 0034 04 06 FFFF 00FF 00 FF", "ndef_file_id", id="id-ffff"),
        pytest.param("000F 20 003B 0034 04 06 E104 0004 00 FF", "max_ndef_size", id="size-4"),
        pytest.param("000F 20 003B 0034 04 06 E104 FFFF 00 FF", "max_ndef_size", id="size-ffff"),
        pytest.param("000F 20 003B 0034 04 06 E104 00FF 01 FF", "read_access", id="read-rfu"),
        pytest.param("000F 20 003B 0034 04 06 E104 00FF 00 7F", "write_access", id="write-rfu"),
    ],
)
def test_capability_container_decode_rejects_naming_field(raw: str, field: str) -> None:
    with pytest.raises(MalformedNdef) as caught:
        CapabilityContainer.decode(h(raw))
    assert caught.value.field == field
    assert isinstance(caught.value, ProtocolError)


def test_capability_container_accepts_proprietary_access_conditions() -> None:
    cc = CapabilityContainer(read_access=0x80, write_access=0xFE)
    assert CapabilityContainer.decode(cc.encode()) == cc
    assert not cc.readable


# --- records and messages --------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["uri_messages"], ids=lambda vector: vector["name"])
def test_uri_message_published_example(vector: dict[str, Any]) -> None:
    raw = h(vector["hex"])
    [record] = decode_message(raw)
    assert record_uri(record) == vector["uri"]
    assert encode_message([uri_record(vector["uri"])]) == raw


@pytest.mark.parametrize("vector", VECTORS["uri_payloads"], ids=lambda vector: vector["name"])
def test_uri_payload_uses_the_identifier_code(vector: dict[str, Any]) -> None:
    record = uri_record(vector["uri"])
    assert (record.tnf, record.type, record.id) == (Tnf.WELL_KNOWN, b"U", b"")
    assert record.payload == h(vector["payload"])
    assert record_uri(record) == vector["uri"]


def test_yubico_otp_uri_round_trips_through_the_ndef_file() -> None:
    record = uri_record(YUBICO_URI)
    assert record.payload == b"\x04my.yubico.com/yk/#" + YUBICO_OTP.encode()
    message = encode_message([record])
    # D1: MB ME SR, TNF well-known; type length 1; payload length 0x3F (1 + 18 + 44); "U".
    assert message[:4] == h("D1 01 3F 55")
    file = ndef_file(message)
    assert file[:2] == (len(message)).to_bytes(2, "big")
    assert [record_uri(r) for r in decode_message(parse_ndef_file(file))] == [YUBICO_URI]


@pytest.mark.parametrize(
    ("uri", "code"),
    [
        ("https://www.example.org", 0x02),
        ("https://example.org", 0x04),
        ("ftp://anonymous:anonymous@host", 0x07),
        ("ftp://ftp.example.org", 0x08),
        ("ftp://example.org", 0x0D),
        ("urn:epc:id:sgtin:1", 0x1E),
        ("urn:epc:x", 0x22),
        ("urn:nfc:wkt:U", 0x23),
        ("urn:isbn:0", 0x13),
        ("HTTPS://EXAMPLE.ORG", 0x00),
        ("", 0x00),
    ],
)
def test_uri_record_picks_the_longest_prefix(uri: str, code: int) -> None:
    record = uri_record(uri)
    assert record.payload[0] == code
    assert record_uri(record) == uri


@pytest.mark.parametrize("code", range(len(URI_PREFIXES)))
def test_every_identifier_code_round_trips(code: int) -> None:
    uri = URI_PREFIXES[code] + "example"
    assert uri_record(uri).payload == bytes((code,)) + b"example"
    assert record_uri(NdefRecord(Tnf.WELL_KNOWN, b"U", bytes((code,)) + b"example")) == uri


def test_uri_record_is_utf8() -> None:
    record = uri_record("https://hääyö.example/ø")
    assert record.payload == b"\x04" + "hääyö.example/ø".encode()
    assert record_uri(record) == "https://hääyö.example/ø"


@pytest.mark.parametrize(
    ("record", "field"),
    [
        pytest.param(NdefRecord(Tnf.WELL_KNOWN, b"T", b"\x02enhi"), "type", id="text-record"),
        pytest.param(NdefRecord(Tnf.MIME_MEDIA, b"U", b"\x04x"), "type", id="mime-U"),
        pytest.param(NdefRecord(Tnf.WELL_KNOWN, b"U", b""), "payload", id="no-code"),
        pytest.param(NdefRecord(Tnf.WELL_KNOWN, b"U", b"\x24x"), "uri_code", id="rfu-24"),
        pytest.param(NdefRecord(Tnf.WELL_KNOWN, b"U", b"\xffx"), "uri_code", id="rfu-ff"),
        pytest.param(NdefRecord(Tnf.WELL_KNOWN, b"U", b"\x04\xff"), "payload", id="not-utf8"),
    ],
)
def test_record_uri_rejects_naming_field(record: NdefRecord, field: str) -> None:
    with pytest.raises(MalformedNdef) as caught:
        record_uri(record)
    assert caught.value.field == field


def test_encode_message_sets_mb_on_first_and_me_on_last() -> None:
    records = [
        NdefRecord(Tnf.WELL_KNOWN, b"U", b"\x04a"),
        NdefRecord(Tnf.MIME_MEDIA, b"text/plain", b"hi"),
        NdefRecord(Tnf.EXTERNAL, b"yubico.com:otp", b"x"),
    ]
    raw = encode_message(records)
    assert raw == (
        h("91 01 02 55 04") + b"a"
        + h("12 0A 02") + b"text/plain" + b"hi"
        + h("54 0E 01") + b"yubico.com:otp" + b"x"
    )  # fmt: skip
    assert decode_message(raw) == records


def test_encode_message_single_empty_record() -> None:
    assert encode_message([NdefRecord(Tnf.EMPTY, b"", b"")]) == h("D0 00 00")
    assert decode_message(h("D0 00 00")) == [NdefRecord(Tnf.EMPTY, b"", b"")]


def test_encode_message_long_payload_drops_short_record_flag() -> None:
    for size, header in ((255, h("D1 01 FF")), (256, h("C1 01 00000100"))):
        record = NdefRecord(Tnf.WELL_KNOWN, b"U", bytes(size))
        raw = encode_message([record])
        assert raw[: len(header)] == header
        assert len(raw) == len(header) + 1 + size
        assert decode_message(raw) == [record]


def test_encode_message_id_sets_il() -> None:
    record = NdefRecord(Tnf.MIME_MEDIA, b"a/b", b"xy", id=b"#1")
    raw = encode_message([record])
    assert raw == h("DA 03 02 02") + b"a/b" + b"#1" + b"xy"
    assert decode_message(raw) == [record]


def test_encode_message_needs_a_record() -> None:
    with pytest.raises(MalformedNdef) as caught:
        encode_message([])
    assert caught.value.field == "records"


def test_decode_message_accepts_long_form_for_short_payload() -> None:
    assert decode_message(h("C1 01 00000002 55 04") + b"a") == [
        NdefRecord(Tnf.WELL_KNOWN, b"U", b"\x04a")
    ]


def test_decode_message_accepts_il_with_zero_id_length() -> None:
    assert decode_message(h("D9 01 02 00 55 04") + b"a") == [
        NdefRecord(Tnf.WELL_KNOWN, b"U", b"\x04a")
    ]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param("", "message", id="empty"),
        pytest.param("D1", "header", id="header-only"),
        pytest.param("C1 01 0000", "header", id="long-length-cut"),
        pytest.param("D9 01 02", "header", id="id-length-missing"),
        pytest.param("D1 01 05 55 04 61", "payload_length", id="payload-truncated"),
        pytest.param("D1 02 01 55", "payload_length", id="type-truncated"),
        pytest.param("C1 01 FFFFFFFF 55 04", "payload_length", id="4gib-claimed"),
        pytest.param("91 01 02 55 04 61", "me", id="no-me"),
        pytest.param("91 01 02 55 04 61 11 01 02 55 04 61", "me", id="no-me-two-records"),
        pytest.param("51 01 02 55 04 61", "mb", id="no-mb"),
        pytest.param("91 01 02 55 04 61 D1 01 02 55 04 61", "mb", id="mb-twice"),
        pytest.param("B1 01 02 55 04 61", "cf", id="chunked-first"),
        pytest.param("91 01 02 55 04 61 71 01 02 55 04 61", "cf", id="chunked-later"),
        pytest.param("D1 01 02 55 04 61 00", "message", id="trailing-byte"),
        pytest.param("D0 01 00 55", "type", id="empty-with-type"),
        pytest.param("D0 00 01 61", "payload", id="empty-with-payload"),
        pytest.param("D8 00 00 01 61", "id", id="empty-with-id"),
        pytest.param("D1 00 01 61", "type", id="well-known-without-type"),
        pytest.param("D2 00 01 61", "type", id="mime-without-type"),
        pytest.param("D3 00 01 61", "type", id="absolute-uri-without-type"),
        pytest.param("D4 00 01 61", "type", id="external-without-type"),
        pytest.param("D5 01 01 55 61", "type", id="unknown-with-type"),
        pytest.param("D6 00 01 61", "tnf", id="unchanged"),
        pytest.param("D7 00 01 61", "tnf", id="reserved"),
    ],
)
def test_decode_message_rejects_naming_field(raw: str, field: str) -> None:
    with pytest.raises(MalformedNdef) as caught:
        decode_message(h(raw))
    assert caught.value.field == field


def test_decode_message_error_names_the_record() -> None:
    with pytest.raises(MalformedNdef, match="record 1"):
        decode_message(h("91 01 02 55 04 61 56 00 01 61"))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"tnf": 8, "type": b"U", "payload": b""}, "tnf", id="tnf-8"),
        pytest.param({"tnf": -1, "type": b"U", "payload": b""}, "tnf", id="tnf-negative"),
        pytest.param({"tnf": 6, "type": b"", "payload": b""}, "tnf", id="unchanged"),
        pytest.param({"tnf": 1, "type": b"U" * 256, "payload": b""}, "type", id="type-256"),
        pytest.param({"tnf": 1, "type": b"U", "payload": b"", "id": b"i" * 256}, "id", id="id-256"),
        pytest.param({"tnf": 0, "type": b"", "payload": b"", "id": b"i"}, "id", id="empty-id"),
        pytest.param({"tnf": 5, "type": b"x", "payload": b""}, "type", id="unknown-type"),
        pytest.param({"tnf": 2, "type": b"", "payload": b"x"}, "type", id="mime-no-type"),
    ],
)
def test_record_construction_enforces_tnf_rules(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(MalformedNdef) as caught:
        NdefRecord(**kwargs)
    assert caught.value.field == field


def test_record_repr_does_not_print_the_payload() -> None:
    # The payload is the OTP; logs get its length only.
    assert YUBICO_OTP not in repr(uri_record(YUBICO_URI))


# --- NDEF file -------------------------------------------------------------------------------


def test_ndef_file_is_nlen_then_message() -> None:
    message = h("D1 01 07 55 01") + b"st.com"
    assert ndef_file(message) == h("00 0B") + message
    assert parse_ndef_file(ndef_file(message)) == message


def test_parse_ndef_file_ignores_the_unused_rest_of_the_file() -> None:
    message = h("D0 00 00")
    assert parse_ndef_file(ndef_file(message) + bytes(100)) == message


def test_ndef_file_empty_message_gives_nlen_zero() -> None:
    assert ndef_file(b"") == h("00 00")


def test_parse_ndef_file_nlen_zero_is_an_empty_tag() -> None:
    with pytest.raises(MalformedNdef, match="empty") as caught:
        parse_ndef_file(h("00 00 D0 00 00"))
    assert caught.value.field == "nlen"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("00", id="one-byte"),
        pytest.param("00 05 D1 01 02 55", id="truncated"),
        pytest.param("FF FF" + "00" * 16, id="nlen-ffff-rfu"),
    ],
)
def test_parse_ndef_file_rejects_nlen(raw: str) -> None:
    with pytest.raises(MalformedNdef) as caught:
        parse_ndef_file(h(raw))
    assert caught.value.field == "nlen"


def test_ndef_file_rejects_message_longer_than_nlen_allows() -> None:
    with pytest.raises(MalformedNdef) as caught:
        ndef_file(bytes(0xFFFF))
    assert caught.value.field == "nlen"
    assert len(ndef_file(bytes(0xFFFE))) == 0x10000
