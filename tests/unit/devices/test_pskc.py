"""PSKC key containers (devices.protocol.pskc): RFC 6030's published examples
(tests/vectors/pskc), write/parse round trips, encryption under a pre-shared key, and refusal of
malformed, tampered and entity-laden documents."""

from __future__ import annotations

import base64
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from devices.errors import PskcError
from devices.protocol import pskc
from devices.protocol.otp import HashAlg, hotp, totp
from devices.protocol.pskc import (
    ALG_HOTP,
    ALG_TOTP,
    ALG_YUBICO_OTP,
    PskcKey,
    parse_pskc,
    write_pskc,
)
from devices.protocol.yubiotp import parse_otp

VECTORS = Path(__file__).parents[2] / "vectors" / "pskc"
RFC_PSK = bytes.fromhex("12345678901234567890123456789012")
RFC_MAC_KEY = bytes.fromhex("1122334455667788990011223344556677889900")
RFC_SECRET = b"12345678901234567890"

HOTP_KEY = PskcKey(
    key_id="ak-000001",
    serial="000001",
    manufacturer="akkreditiv",
    algorithm=ALG_HOTP,
    secret=RFC_SECRET,
    digits=8,
    counter=5,
    hash_alg="SHA1",
    model="code display",
)
TOTP_KEY = PskcKey(
    key_id="ak-000002",
    serial="000002",
    manufacturer="akkreditiv",
    algorithm=ALG_TOTP,
    secret=bytes(range(32)),
    digits=6,
    time_step=30,
    time_origin=0,
    hash_alg="SHA256",
    model="audio code reader",
)
YUBICO_KEY = PskcKey(
    key_id="4711:1",
    serial="4711",
    manufacturer="Yubico",
    algorithm=ALG_YUBICO_OTP,
    secret=bytes(range(16)),
    digits=44,
    counter=3,
    public_id="vvcccbdefghi",
    private_id=bytes.fromhex("a1a2a3a4a5a6"),
    model="otp-usb",
)
KEYS = [HOTP_KEY, TOTP_KEY, YUBICO_KEY]


def document(body: str, *, version: str = "1.0") -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<KeyContainer Version="{version}" xmlns="{pskc.PSKC_NS}" xmlns:ds="{pskc.DS_NS}" '
        f'xmlns:xenc="{pskc.XENC_NS}">{body}</KeyContainer>'
    ).encode()


def key_package(
    key: str = "", data: str = "<Secret><PlainValue>MTIzNA==</PlainValue></Secret>"
) -> str:
    key_element = f'<Key Id="1" Algorithm="{ALG_HOTP}">{key}<Data>{data}</Data></Key>'
    return f"<KeyPackage>{key_element}</KeyPackage>"


def refused(data: bytes, field: str, psk: bytes | None = None) -> PskcError:
    with pytest.raises(PskcError) as caught:
        parse_pskc(data, psk=psk)
    assert caught.value.field == field, caught.value
    return caught.value


# --- RFC 6030's examples ----------------------------------------------------------------------


def test_rfc6030_figure2_minimal_container() -> None:
    keys = parse_pskc((VECTORS / "rfc6030-figure2.xml").read_bytes())
    assert keys == [
        PskcKey(key_id="12345678", serial="", manufacturer="", algorithm=ALG_HOTP, secret=b"1234")
    ]


def test_rfc6030_figure3_hotp_example() -> None:
    (key,) = parse_pskc((VECTORS / "rfc6030-figure3.xml").read_bytes())
    assert key == PskcKey(
        key_id="12345678",
        serial="987654321",
        manufacturer="Manufacturer",
        algorithm=ALG_HOTP,
        secret=RFC_SECRET,
        digits=8,
        counter=0,
    )
    # The RFC 4226 test secret: its first code at 8 digits is the low end of 1284755224.
    assert key.digits is not None
    assert key.counter is not None
    assert hotp(key.secret, key.counter, key.digits) == "84755224"


def test_rfc6030_figure6_decrypts_with_the_published_pre_shared_key() -> None:
    keys = parse_pskc((VECTORS / "rfc6030-figure6.xml").read_bytes(), psk=RFC_PSK)
    assert keys == [
        PskcKey(
            key_id="12345678",
            serial="987654321",
            manufacturer="Manufacturer",
            algorithm=ALG_HOTP,
            secret=RFC_SECRET,
            digits=8,
            counter=0,
        )
    ]


def test_rfc6030_figure6_ciphertexts_and_mac_are_reproduced_exactly() -> None:
    figure = (VECTORS / "rfc6030-figure6.xml").read_text()
    mac_key_value = pskc._cbc_encrypt(
        RFC_PSK, RFC_MAC_KEY, bytes.fromhex("11223344556677889900112233445566")
    )
    secret_value = pskc._cbc_encrypt(RFC_PSK, RFC_SECRET, bytes(range(16)))
    mac = pskc._value_mac(RFC_MAC_KEY, secret_value)
    assert base64.b64encode(mac_key_value).decode() in figure
    assert base64.b64encode(secret_value).decode() in figure
    assert base64.b64encode(mac).decode() == "Su+NvtQfmvfJzF6bmQiJqoLRExc="


def test_rfc6030_figure6_without_the_key_says_one_is_needed() -> None:
    error = refused((VECTORS / "rfc6030-figure6.xml").read_bytes(), "Secret")
    assert "pre-shared key" in str(error)


def test_rfc6030_figure6_with_a_wrong_key_is_refused() -> None:
    with pytest.raises(PskcError) as caught:
        parse_pskc((VECTORS / "rfc6030-figure6.xml").read_bytes(), psk=bytes(16))
    assert caught.value.field in {"MACKey", "ValueMAC"}


def test_rfc6030_figure6_with_a_key_of_another_size_is_refused() -> None:
    refused((VECTORS / "rfc6030-figure6.xml").read_bytes(), "Secret", psk=bytes(32))


# --- round trips ------------------------------------------------------------------------------


def test_plain_round_trip() -> None:
    assert parse_pskc(write_pskc(KEYS)) == KEYS


@pytest.mark.parametrize("length", [16, 24, 32])
def test_encrypted_round_trip(length: int) -> None:
    psk = bytes(range(length))
    written = write_pskc(KEYS, psk=psk)
    assert base64.b64encode(HOTP_KEY.secret) not in written
    assert f"aes{length * 8}-cbc".encode() in written
    assert parse_pskc(written, psk=psk) == KEYS


def test_encrypted_documents_differ_each_time() -> None:
    assert write_pskc(KEYS, psk=RFC_PSK) != write_pskc(KEYS, psk=RFC_PSK)


def test_empty_container_round_trips() -> None:
    assert parse_pskc(write_pskc([])) == []


def test_written_document_is_utf8_with_declaration() -> None:
    key = replace(HOTP_KEY, manufacturer="Müller & Söhne <GmbH>", serial='"7"\n\t\r')
    written = write_pskc([key])
    assert written.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert "Müller".encode() in written
    assert parse_pskc(written) == [key]


def test_special_characters_in_attributes_round_trip() -> None:
    key = replace(HOTP_KEY, key_id='<a & "b">\n\tc\r')
    assert parse_pskc(write_pskc([key])) == [key]


def test_written_codes_match_the_source_key() -> None:
    (hotp_key, totp_key, _) = parse_pskc(write_pskc(KEYS, psk=RFC_PSK), psk=RFC_PSK)
    assert hotp_key.counter is not None
    assert hotp_key.digits is not None
    assert hotp(hotp_key.secret, hotp_key.counter, hotp_key.digits) == hotp(RFC_SECRET, 5, 8)
    assert totp_key.hash_alg is not None
    assert totp_key.time_step is not None
    assert totp(
        totp_key.secret, 1e9, totp_key.time_step, digits=6, alg=HashAlg(totp_key.hash_alg)
    ) == totp(bytes(range(32)), 1e9, alg=HashAlg.SHA256)


# --- Yubico OTP keys --------------------------------------------------------------------------

# The form yubikey-personalization's PSKC log writes for a Yubico OTP slot (YubiKeyLogger),
# filled with the node-yubikeyotp example's key and ids (tests/vectors/yubico_otp.json).
YUBICO_EXPORT = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">\n'
    b"<KeyPackage><DeviceInfo><Manufacturer>Yubico</Manufacturer><SerialNo>1234567</SerialNo>"
    b'</DeviceInfo><CryptoModuleInfo><Id>1</Id></CryptoModuleInfo><Key Id="1234567:1" '
    b'Algorithm="http://www.yubico.com/#yubikey-aes"><AlgorithmParameters><ResponseFormat '
    b'Length="44" Encoding="ALPHANUMERIC"/></AlgorithmParameters><Data><Secret><PlainValue>'
    + base64.b64encode(bytes.fromhex("e6cdae77f55ac1db4acd3b7fd8151334"))
    + b"</PlainValue></Secret></Data><UserId>CN=khdnrutkdend, UID=4e8308389518</UserId></Key>"
    b"</KeyPackage>\n</KeyContainer>\n"
)


def test_yubico_personalization_export_parses_and_verifies_an_otp() -> None:
    (key,) = parse_pskc(YUBICO_EXPORT)
    assert key == PskcKey(
        key_id="1234567:1",
        serial="1234567",
        manufacturer="Yubico",
        algorithm=ALG_YUBICO_OTP,
        secret=bytes.fromhex("e6cdae77f55ac1db4acd3b7fd8151334"),
        digits=44,
        public_id="khdnrutkdend",
        private_id=bytes.fromhex("4e8308389518"),
    )
    parsed = parse_otp("khdnrutkdendbrbghdjcidkhveuhbrcuublkdjfttcrk", key.secret)
    assert parsed.block.private_id == key.private_id


def test_yubico_ids_are_written_as_user_id() -> None:
    written = write_pskc([YUBICO_KEY])
    assert b"<UserId>CN=vvcccbdefghi, UID=a1a2a3a4a5a6</UserId>" in written
    assert b'Encoding="ALPHANUMERIC"' in written


@pytest.mark.parametrize(
    ("public_id", "private_id"),
    [("vvcccbdefghi", None), (None, b"\x01" * 6), ("", None)],
)
def test_yubico_ids_round_trip_one_at_a_time(
    public_id: str | None, private_id: bytes | None
) -> None:
    key = replace(YUBICO_KEY, public_id=public_id, private_id=private_id)
    assert parse_pskc(write_pskc([key])) == [key]


@pytest.mark.parametrize(
    ("user_id", "field"),
    [
        ("CN=xyz, UID=a1a2a3a4a5a6", "public_id"),
        ("CN=cccc, UID=a1a2", "UserId"),
        ("CN=cccc, UID=zz", "UserId"),
        ("jsmith", "UserId"),
        ("CN=cccc, O=Yubico", "UserId"),
    ],
)
def test_bad_yubico_user_id_is_refused(user_id: str, field: str) -> None:
    data = YUBICO_EXPORT.replace(b"CN=khdnrutkdend, UID=4e8308389518", user_id.encode())
    refused(data, field)


def test_user_id_of_other_algorithms_is_not_read_as_yubico_ids() -> None:
    # Figure 3's key has <UserId>UID=jsmith,...</UserId>, which is no Yubico private id.
    (key,) = parse_pskc((VECTORS / "rfc6030-figure3.xml").read_bytes())
    assert key.public_id is None
    assert key.private_id is None


# --- the key's own checks ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"key_id": ""}, "key_id"),
        ({"algorithm": ""}, "algorithm"),
        ({"secret": b""}, "secret"),
        ({"serial": "a\x00b"}, "serial"),
        ({"model": "\ufffe"}, "model"),
        ({"digits": 5}, "digits"),
        ({"digits": 11}, "digits"),
        ({"counter": -1}, "counter"),
        ({"counter": 1 << 64}, "counter"),
        ({"time_step": 0}, "time_step"),
        ({"time_origin": -1}, "time_origin"),
        ({"hash_alg": "sha1"}, "hash_alg"),
        ({"hash_alg": "MD5"}, "hash_alg"),
        ({"public_id": "cccccccccccc"}, "algorithm"),
        ({"private_id": bytes(6)}, "algorithm"),
    ],
)
def test_key_refuses_what_cannot_be_written(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(PskcError) as caught:
        replace(HOTP_KEY, **changes)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"public_id": "xyz"}, "public_id"),
        ({"public_id": "c" * 34}, "public_id"),
        ({"private_id": bytes(5)}, "private_id"),
        ({"digits": 0}, "digits"),
    ],
)
def test_yubico_key_refuses_bad_ids(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(PskcError) as caught:
        replace(YUBICO_KEY, **changes)
    assert caught.value.field == field


@pytest.mark.parametrize("length", [0, 8, 15, 17, 33])
def test_write_refuses_pre_shared_keys_of_other_sizes(length: int) -> None:
    with pytest.raises(ValueError, match="pre-shared"):
        write_pskc(KEYS, psk=bytes(length))


# --- malformed documents ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not xml",
        b"<KeyContainer",
        b"\xff\xfe\x00",
        b'<?xml version="1.0" encoding="x-none"?><a/>',
    ],
)
def test_non_xml_is_refused(data: bytes) -> None:
    refused(data, "xml")


def test_other_root_element_is_refused() -> None:
    refused(b'<KeyContainer Version="1.0"/>', "KeyContainer")  # no PSKC namespace
    refused(f'<Key xmlns="{pskc.PSKC_NS}"/>'.encode(), "KeyContainer")


@pytest.mark.parametrize("version", ["2.0", "1", ""])
def test_other_versions_are_refused(version: str) -> None:
    refused(document(key_package(), version=version), "Version")


def test_key_package_without_key_is_skipped() -> None:
    assert (
        parse_pskc(document("<KeyPackage><DeviceInfo/></KeyPackage>" + key_package()))[0].secret
        == b"1234"
    )


def test_prefixed_namespace_and_legacy_algorithm_names_are_read() -> None:
    data = (
        b'<p:KeyContainer xmlns:p="urn:ietf:params:xml:ns:keyprov:pskc" Version="1.0">'
        b'<p:KeyPackage><p:Key Id="k" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc#totp">'
        b"<p:AlgorithmParameters><p:Suite>hmac-sha-512</p:Suite></p:AlgorithmParameters>"
        b"<p:Data><p:Secret><p:PlainValue>\n  MTIz\n  NA==\n</p:PlainValue></p:Secret>"
        b"<p:TimeInterval><p:PlainValue> 60 </p:PlainValue></p:TimeInterval>"
        b"</p:Data></p:Key></p:KeyPackage></p:KeyContainer>"
    )
    (key,) = parse_pskc(data)
    assert (key.algorithm, key.hash_alg, key.time_step, key.secret) == (
        ALG_TOTP,
        "SHA512",
        60,
        b"1234",
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('<KeyPackage><Key Algorithm="x"><Data/></Key></KeyPackage>', "Id"),
        ('<KeyPackage><Key Id="1"><Data/></Key></KeyPackage>', "Algorithm"),
        (f'<KeyPackage><Key Id="1" Algorithm="{ALG_HOTP}"/></KeyPackage>', "Data"),
        (key_package(data=""), "Secret"),
        (key_package(data="<Secret/>"), "Secret"),
        (key_package(data="<Secret><PlainValue/></Secret>"), "Secret"),
        (key_package(data="<Secret><PlainValue>MTIzNA=</PlainValue></Secret>"), "Secret"),
        (key_package(data="<Secret><PlainValue>MT*zNA==</PlainValue></Secret>"), "Secret"),
        (
            key_package(data="<Secret><PlainValue>MTIz<b/>NA==</PlainValue></Secret>"),
            "Secret",
        ),
        (
            key_package(
                data="<Secret><PlainValue>MTIzNA==</PlainValue></Secret>"
                "<Counter><PlainValue>-1</PlainValue></Counter>"
            ),
            "Counter",
        ),
        (
            key_package(
                data="<Secret><PlainValue>MTIzNA==</PlainValue></Secret>"
                "<Counter><PlainValue>\u0663</PlainValue></Counter>"
            ),
            "Counter",
        ),
        (
            key_package(
                data="<Secret><PlainValue>MTIzNA==</PlainValue></Secret>"
                "<Counter><PlainValue>18446744073709551616</PlainValue></Counter>"
            ),
            "counter",
        ),
        (
            key_package(
                data="<Secret><PlainValue>MTIzNA==</PlainValue></Secret>"
                "<TimeInterval><PlainValue>0</PlainValue></TimeInterval>"
            ),
            "time_step",
        ),
        (
            key_package(
                "<AlgorithmParameters><ResponseFormat Length='5' Encoding='DECIMAL'/>"
                "</AlgorithmParameters>"
            ),
            "ResponseFormat",
        ),
        (
            key_package(
                "<AlgorithmParameters><ResponseFormat Length='8' Encoding='HEXADECIMAL'/>"
                "</AlgorithmParameters>"
            ),
            "ResponseFormat",
        ),
        (
            key_package("<AlgorithmParameters><ResponseFormat/></AlgorithmParameters>"),
            "ResponseFormat",
        ),
        (
            key_package("<AlgorithmParameters><Suite>HMAC-MD5</Suite></AlgorithmParameters>"),
            "Suite",
        ),
    ],
)
def test_malformed_keys_are_refused(body: str, field: str) -> None:
    refused(document(body), field)


def test_unknown_suite_of_another_algorithm_is_kept_as_no_hash() -> None:
    body = (
        key_package()
        .replace(ALG_HOTP, "urn:example:ocra")
        .replace(
            "<Data>",
            "<AlgorithmParameters><Suite>OCRA-1:HOTP-SHA1-6:QN08</Suite></AlgorithmParameters><Data>",
        )
    )
    (key,) = parse_pskc(document(body))
    assert (key.algorithm, key.hash_alg) == ("urn:example:ocra", None)


# --- encrypted documents that are wrong -------------------------------------------------------


def encrypted_document() -> str:
    return write_pskc([HOTP_KEY], psk=RFC_PSK).decode()


def test_tampered_ciphertext_fails_the_mac() -> None:
    text = encrypted_document()
    start = text.index("<xenc:CipherValue>", text.index("<Secret>")) + len("<xenc:CipherValue>")
    flipped = "B" if text[start + 30] != "B" else "C"
    tampered = text[: start + 30] + flipped + text[start + 31 :]
    refused(tampered.encode(), "ValueMAC", psk=RFC_PSK)


def test_missing_value_mac_is_refused() -> None:
    text = encrypted_document()
    start = text.index("<ValueMAC>")
    tampered = text[:start] + text[text.index("</ValueMAC>") + len("</ValueMAC>") :]
    refused(tampered.encode(), "ValueMAC", psk=RFC_PSK)


def test_missing_mac_method_is_refused() -> None:
    text = encrypted_document()
    tampered = text[: text.index("<MACMethod")] + text[text.index("</MACMethod>") + 12 :]
    refused(tampered.encode(), "MACMethod", psk=RFC_PSK)


def test_unsupported_mac_algorithm_is_refused() -> None:
    tampered = encrypted_document().replace(pskc.HMAC_SHA1, "urn:example:mac")
    refused(tampered.encode(), "MACMethod", psk=RFC_PSK)


def test_unsupported_cipher_is_refused() -> None:
    tampered = encrypted_document().replace("aes128-cbc", "tripledes-cbc")
    with pytest.raises(PskcError) as caught:
        parse_pskc(tampered.encode(), psk=RFC_PSK)
    assert "unsupported encryption" in str(caught.value)


def test_password_derived_keys_are_refused_as_unsupported() -> None:
    tampered = encrypted_document().replace(
        "<ds:KeyName>Pre-shared-key</ds:KeyName>", "<DerivedKey/>"
    )
    refused(tampered.encode(), "EncryptionKey", psk=RFC_PSK)


def test_truncated_cipher_value_fails_the_mac_before_any_decryption() -> None:
    text = encrypted_document()
    start = text.index("<xenc:CipherValue>", text.index("<Secret>")) + len("<xenc:CipherValue>")
    end = text.index("</xenc:CipherValue>", start)
    short = base64.b64encode(base64.b64decode(text[start:end])[:16]).decode()
    refused((text[:start] + short + text[end:]).encode(), "ValueMAC", psk=RFC_PSK)


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_cipher_values_that_are_not_iv_and_blocks_are_refused(length: int) -> None:
    with pytest.raises(PskcError) as caught:
        pskc._cbc_decrypt(RFC_PSK, bytes(length), "Secret")
    assert caught.value.field == "Secret"


def test_bad_padding_is_refused() -> None:
    # IV and one block that decrypts to a last byte of 0, which counts no padding.
    forged = pskc._cbc_encrypt(RFC_PSK, b"y" * 15 + b"\x00", bytes(16))[:32]
    with pytest.raises(PskcError, match="does not decrypt"):
        pskc._cbc_decrypt(RFC_PSK, forged, "Secret")


def test_encrypted_counter_is_read_as_big_endian() -> None:
    text = encrypted_document()
    cipher_value = pskc._cbc_encrypt(RFC_PSK, (7).to_bytes(8, "big"), bytes(16))
    mac_start = text.index("<xenc:CipherValue>") + len("<xenc:CipherValue>")
    mac_key = pskc._cbc_decrypt(
        RFC_PSK, base64.b64decode(text[mac_start : text.index("</xenc", mac_start)]), "MACKey"
    )
    counter = (
        "<Counter><EncryptedValue><xenc:EncryptionMethod "
        'Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/><xenc:CipherData>'
        f"<xenc:CipherValue>{base64.b64encode(cipher_value).decode()}</xenc:CipherValue>"
        "</xenc:CipherData></EncryptedValue>"
        f"<ValueMAC>{base64.b64encode(pskc._value_mac(mac_key, cipher_value)).decode()}"
        "</ValueMAC></Counter>"
    )
    start = text.index("<Counter>")
    end = text.index("</Counter>") + len("</Counter>")
    (key,) = parse_pskc((text[:start] + counter + text[end:]).encode(), psk=RFC_PSK)
    assert key.counter == 7


# --- entities and DOCTYPEs --------------------------------------------------------------------

BILLION_LAUGHS = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<!DOCTYPE KeyContainer [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">\n'
        for i in range(1, 10)
    )
    + "]>\n"
    + document(key_package().replace('Id="1"', 'Id="&lol9;"')).decode().split("\n", 1)[1]
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?>\n<!DOCTYPE KeyContainer [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    + document(key_package().replace('Id="1"', 'Id="&xxe;"')).decode().split("\n", 1)[1]
)
PLAIN_DOCTYPE = (
    '<?xml version="1.0"?>\n<!DOCTYPE KeyContainer>\n'
    + document(key_package()).decode().split("\n", 1)[1]
)


@pytest.fixture(params=["defusedxml", "xml.etree"])
def xml_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the guarded tree is built: defusedxml when installed, the standard library."""
    if request.param == "xml.etree":
        monkeypatch.setattr(pskc, "_DEFUSED", None)
    else:
        pytest.importorskip("defusedxml")
    return str(request.param)


@pytest.mark.parametrize(
    "data",
    [
        BILLION_LAUGHS.encode(),
        BILLION_LAUGHS.replace("UTF-8", "UTF-16").encode("utf-16"),
        EXTERNAL_ENTITY.encode(),
        PLAIN_DOCTYPE.encode(),
    ],
    ids=["billion-laughs", "billion-laughs-utf16", "external-entity", "doctype"],
)
def test_doctypes_are_refused_unread(data: bytes, xml_backend: str) -> None:
    started = time.perf_counter()
    refused(data, "DOCTYPE")
    assert time.perf_counter() - started < 1.0


def test_defusedxml_refuses_a_doctype_even_past_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("defusedxml")
    monkeypatch.setattr(pskc, "_guard", lambda data: None)
    refused(BILLION_LAUGHS.encode(), "xml")


def test_undeclared_entity_is_refused(xml_backend: str) -> None:
    data = document(key_package().replace('Id="1"', 'Id="&lol;"'))
    refused(data, "xml")


def test_character_references_are_fine(xml_backend: str) -> None:
    data = document(key_package().replace('Id="1"', 'Id="&#65;&amp;&lt;"'))
    assert parse_pskc(data)[0].key_id == "A&<"
