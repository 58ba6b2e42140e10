"""PSKC (RFC 6030) key containers, the XML in which token issuers ship seeds: write and parse,
secrets in the clear or under a pre-shared AES key (RFC 6030 section 6.1), with no I/O.

Where each ``PskcKey`` field lives in the document (one KeyPackage per key):

    key_id, algorithm        Key/@Id, Key/@Algorithm
    manufacturer, serial     DeviceInfo/Manufacturer, DeviceInfo/SerialNo ("" when absent)
    model                    DeviceInfo/Model
    secret                   Key/Data/Secret (PlainValue, or EncryptedValue + ValueMAC)
    digits                   Key/AlgorithmParameters/ResponseFormat/@Length
    hash_alg                 Key/AlgorithmParameters/Suite, written as "HMAC-SHA256"
    counter                  Key/Data/Counter
    time_origin, time_step   Key/Data/Time, Key/Data/TimeInterval (TOTP's T0 and X)
    public_id, private_id    Key/UserId as "CN=<modhex public id>, UID=<hex private id>",
                             the form Yubico's personalization tool exports (Yubico OTP only)
"""

from __future__ import annotations

import base64
import binascii
import hmac
import importlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import NoReturn
from xml.etree import ElementTree
from xml.parsers import expat
from xml.sax.saxutils import escape

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from devices.protocol.errors import MalformedOtp, PskcError
from devices.protocol.yubiotp import modhex_decode

ALG_HOTP = "urn:ietf:params:xml:ns:keyprov:pskc:hotp"
ALG_TOTP = "urn:ietf:params:xml:ns:keyprov:pskc:totp"
ALG_YUBICO_OTP = "http://www.yubico.com/#yubikey-aes"

PSKC_NS = "urn:ietf:params:xml:ns:keyprov:pskc"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XENC_NS = "http://www.w3.org/2001/04/xmlenc#"
HMAC_SHA1 = "http://www.w3.org/2000/09/xmldsig#hmac-sha1"
PSK_KEY_NAME = "Pre-shared-key"

HASH_ALGS = ("SHA1", "SHA256", "SHA512")
OATH_DIGITS = range(6, 11)  # what devices.protocol.otp computes
PRIVATE_ID_LENGTH = 6
MAX_PUBLIC_ID_LENGTH = 16  # a YubiKey's fixed part
MAC_KEY_LENGTH = 20

_CBC_KEY_LENGTHS = {
    f"{XENC_NS}aes128-cbc": 16,
    f"{XENC_NS}aes192-cbc": 24,
    f"{XENC_NS}aes256-cbc": 32,
}
_MAC_DIGESTS = {
    HMAC_SHA1: "sha1",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256": "sha256",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha384": "sha384",
    "http://www.w3.org/2001/04/xmldsig-more#hmac-sha512": "sha512",
}
# Drafts of RFC 6030 named the OATH algorithms with '#'; issuers still ship such files.
_LEGACY_ALGORITHMS = {
    "urn:ietf:params:xml:ns:keyprov:pskc#hotp": ALG_HOTP,
    "urn:ietf:params:xml:ns:keyprov:pskc#totp": ALG_TOTP,
}
_OATH = (ALG_HOTP, ALG_TOTP)
_COUNTER_LIMIT = 1 << 64
_NOT_XML_CHARACTER = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_DECIMAL = re.compile(r"[0-9]{1,20}")


def _load_defusedxml() -> ModuleType | None:
    try:
        return importlib.import_module("defusedxml.ElementTree")
    except ImportError:
        return None


_DEFUSED = _load_defusedxml()


@dataclass(frozen=True, slots=True)
class PskcKey:
    """One key of a container, with its device; see the module docstring for where each field
    is written. ``serial`` and ``manufacturer`` are "" when the document has none."""

    key_id: str
    serial: str
    manufacturer: str
    algorithm: str
    secret: bytes
    digits: int | None = None
    counter: int | None = None
    time_step: int | None = None
    time_origin: int | None = None
    hash_alg: str | None = None
    public_id: str | None = None
    private_id: bytes | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        if not self.key_id:
            raise PskcError("a key needs an Id", field="key_id")
        if not self.algorithm:
            raise PskcError("a key needs an Algorithm", field="algorithm")
        for name in ("key_id", "serial", "manufacturer", "algorithm", "public_id", "model"):
            value = getattr(self, name)
            if value is not None and _NOT_XML_CHARACTER.search(value):
                raise PskcError(f"{name} holds a character XML cannot carry", field=name)
        if not self.secret:
            raise PskcError("the secret is empty", field="secret")
        oath = self.algorithm in _OATH
        if self.digits is not None and not (
            self.digits in OATH_DIGITS if oath else self.digits >= 1
        ):
            raise PskcError(f"{self.digits} digits is not possible here", field="digits")
        if self.counter is not None and not 0 <= self.counter < _COUNTER_LIMIT:
            raise PskcError(f"counter {self.counter} does not fit in 8 bytes", field="counter")
        if self.time_step is not None and self.time_step < 1:
            raise PskcError("the time step must be positive", field="time_step")
        if self.time_origin is not None and self.time_origin < 0:
            raise PskcError("the time origin must not be negative", field="time_origin")
        if self.hash_alg is not None and self.hash_alg not in HASH_ALGS:
            raise PskcError(f"hash {self.hash_alg!r} is not one of {HASH_ALGS}", field="hash_alg")
        if self.public_id is not None or self.private_id is not None:
            if self.algorithm != ALG_YUBICO_OTP:
                raise PskcError(
                    "only Yubico OTP keys have public and private ids", field="algorithm"
                )
            if self.public_id is not None:
                _check_public_id(self.public_id)
            if self.private_id is not None and len(self.private_id) != PRIVATE_ID_LENGTH:
                raise PskcError(
                    f"a private id has {PRIVATE_ID_LENGTH} bytes, not {len(self.private_id)}",
                    field="private_id",
                )


def _check_public_id(public_id: str) -> None:
    try:
        raw = modhex_decode(public_id)
    except MalformedOtp as exc:
        raise PskcError(f"the public id is not modhex: {exc}", field="public_id") from None
    if len(raw) > MAX_PUBLIC_ID_LENGTH:
        raise PskcError(f"a public id has at most {MAX_PUBLIC_ID_LENGTH} bytes", field="public_id")


# --- writing ----------------------------------------------------------------------------------


def _attribute(value: str) -> str:
    # Newlines and tabs in attributes would come back as spaces (attribute-value normalization).
    return escape(value, {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})


class _Writer:
    def __init__(self) -> None:
        self.lines = ['<?xml version="1.0" encoding="UTF-8"?>']
        self.depth = 0

    def _tag(self, tag: str, attributes: dict[str, str]) -> str:
        return tag + "".join(f' {name}="{_attribute(value)}"' for name, value in attributes.items())

    def open(self, tag: str, **attributes: str) -> None:
        self.lines.append("  " * self.depth + f"<{self._tag(tag, attributes)}>")
        self.depth += 1

    def close(self, tag: str) -> None:
        self.depth -= 1
        self.lines.append("  " * self.depth + f"</{tag}>")

    def leaf(self, tag: str, text: str | None = None, **attributes: str) -> None:
        start = "  " * self.depth + f"<{self._tag(tag, attributes)}"
        if text is None:
            self.lines.append(start + "/>")
        else:
            # A carriage return in text would come back as a newline (end-of-line handling).
            self.lines.append(f"{start}>{escape(text, {chr(13): '&#13;'})}</{tag}>")

    def encrypted(self, method: str, cipher_value: bytes) -> None:
        self.leaf("xenc:EncryptionMethod", Algorithm=method)
        self.open("xenc:CipherData")
        self.leaf("xenc:CipherValue", _b64(cipher_value))
        self.close("xenc:CipherData")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _cbc_encrypt(key: bytes, plaintext: bytes, iv: bytes) -> bytes:
    """IV + AES-CBC ciphertext of ``plaintext`` with PKCS#7 padding, which is one of the
    paddings XML Encryption 1.0 section 5.2 allows."""
    pad = 16 - len(plaintext) % 16
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return iv + encryptor.update(plaintext + bytes((pad,)) * pad) + encryptor.finalize()


def _value_mac(mac_key: bytes, cipher_value: bytes, digest: str = "sha1") -> bytes:
    """RFC 6030 section 6.1.1: the MAC is over the whole CipherValue, IV included."""
    return hmac.digest(mac_key, cipher_value, digest)


def write_pskc(keys: Sequence[PskcKey], *, psk: bytes | None = None) -> bytes:
    """A UTF-8 PSKC document with one KeyPackage per key. Secrets are base64 PlainValues, or
    with ``psk`` (16, 24 or 32 bytes) AES-CBC EncryptedValues with an HMAC-SHA1 ValueMAC whose
    random MAC key is itself encrypted under ``psk`` (RFC 6030 section 6.1)."""
    if psk is not None and len(psk) not in (16, 24, 32):
        raise ValueError(f"a pre-shared AES key is 16, 24 or 32 bytes, not {len(psk)}")
    out = _Writer()
    encryption: tuple[bytes, str, bytes] | None = None  # key, method URI, MAC key
    if psk is None:
        out.open("KeyContainer", Version="1.0", xmlns=PSKC_NS)
    else:
        method = f"{XENC_NS}aes{len(psk) * 8}-cbc"
        encryption = (psk, method, secrets.token_bytes(MAC_KEY_LENGTH))
        out.open(
            "KeyContainer",
            **{"Version": "1.0", "xmlns": PSKC_NS, "xmlns:ds": DS_NS, "xmlns:xenc": XENC_NS},
        )
        out.open("EncryptionKey")
        out.leaf("ds:KeyName", PSK_KEY_NAME)
        out.close("EncryptionKey")
        out.open("MACMethod", Algorithm=HMAC_SHA1)
        out.open("MACKey")
        out.encrypted(method, _cbc_encrypt(psk, encryption[2], secrets.token_bytes(16)))
        out.close("MACKey")
        out.close("MACMethod")
    for key in keys:
        out.open("KeyPackage")
        if key.manufacturer or key.serial or key.model is not None:
            out.open("DeviceInfo")
            if key.manufacturer:
                out.leaf("Manufacturer", key.manufacturer)
            if key.serial:
                out.leaf("SerialNo", key.serial)
            if key.model is not None:
                out.leaf("Model", key.model)
            out.close("DeviceInfo")
        out.open("Key", Id=key.key_id, Algorithm=key.algorithm)
        if key.hash_alg is not None or key.digits is not None:
            out.open("AlgorithmParameters")
            if key.hash_alg is not None:
                out.leaf("Suite", f"HMAC-{key.hash_alg}")
            if key.digits is not None:
                encoding = "ALPHANUMERIC" if key.algorithm == ALG_YUBICO_OTP else "DECIMAL"
                out.leaf("ResponseFormat", Length=str(key.digits), Encoding=encoding)
            out.close("AlgorithmParameters")
        out.open("Data")
        out.open("Secret")
        if encryption is None:
            out.leaf("PlainValue", _b64(key.secret))
        else:
            psk, method, mac_key = encryption
            cipher_value = _cbc_encrypt(psk, key.secret, secrets.token_bytes(16))
            out.open("EncryptedValue")
            out.encrypted(method, cipher_value)
            out.close("EncryptedValue")
            out.leaf("ValueMAC", _b64(_value_mac(mac_key, cipher_value)))
        out.close("Secret")
        for tag, number in (
            ("Counter", key.counter),
            ("Time", key.time_origin),
            ("TimeInterval", key.time_step),
        ):
            if number is not None:
                out.open(tag)
                out.leaf("PlainValue", str(number))
                out.close(tag)
        out.close("Data")
        if key.public_id is not None or key.private_id is not None:
            parts = [] if key.public_id is None else [f"CN={key.public_id}"]
            if key.private_id is not None:
                parts.append(f"UID={key.private_id.hex()}")
            out.leaf("UserId", ", ".join(parts))
        out.close("Key")
        out.close("KeyPackage")
    out.close("KeyContainer")
    return ("\n".join(out.lines) + "\n").encode("utf-8")


# --- parsing ----------------------------------------------------------------------------------


class _EndOfProlog(Exception):
    """The root element started: no DOCTYPE can follow, so the guard has seen enough."""


def _refuse_dtd(*_: object) -> NoReturn:
    raise PskcError(
        "the document has a DOCTYPE or entity declaration, which PSKC never needs; refused so "
        "that entity expansion and external entities cannot be used against the parser",
        field="DOCTYPE",
    )


def _end_of_prolog(*_: object) -> NoReturn:
    raise _EndOfProlog


def _guard(data: bytes) -> None:
    """Refuse any DOCTYPE before a tree is built. expat reports the DOCTYPE's start before it
    reads the internal subset, so no entity is ever declared, let alone expanded; a DOCTYPE
    can only come before the root element, so reading stops there."""
    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.UnparsedEntityDeclHandler = _refuse_dtd
    parser.ExternalEntityRefHandler = _refuse_dtd
    parser.StartElementHandler = _end_of_prolog
    try:
        parser.Parse(data, True)
    except _EndOfProlog:
        return
    except (expat.ExpatError, ValueError, LookupError) as exc:
        raise PskcError(f"not well-formed XML: {exc}", field="xml") from None
    raise PskcError("the document has no root element", field="xml")


def _parse_xml(data: bytes) -> ElementTree.Element:
    _guard(data)
    try:
        if _DEFUSED is not None:
            root: ElementTree.Element = _DEFUSED.fromstring(data, forbid_dtd=True)
            return root
        return ElementTree.fromstring(data)  # noqa: S314 -- _guard refused any DOCTYPE
    except (ElementTree.ParseError, ValueError, LookupError) as exc:
        raise PskcError(f"not well-formed XML: {exc}", field="xml") from None


def _q(tag: str, namespace: str = PSKC_NS) -> str:
    return f"{{{namespace}}}{tag}"


def _text(element: ElementTree.Element, field: str) -> str:
    if len(element):
        raise PskcError(f"{field} holds elements where text belongs", field=field)
    return element.text or ""


def _base64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error:
        raise PskcError(f"{field} is not base64", field=field) from None


def _integer(text: str, field: str) -> int:
    digits = text.strip()
    if not _DECIMAL.fullmatch(digits):
        raise PskcError(f"{field} is not a non-negative integer: {text!r}", field=field)
    return int(digits)


def _cbc_decrypt(key: bytes, cipher_value: bytes, field: str) -> bytes:
    if len(cipher_value) < 32 or len(cipher_value) % 16:
        raise PskcError(f"{field}: IV and AES-CBC blocks expected", field=field)
    decryptor = Cipher(algorithms.AES(key), modes.CBC(cipher_value[:16])).decryptor()
    plain = decryptor.update(cipher_value[16:]) + decryptor.finalize()
    # XML Encryption padding: the last byte counts the padding, the others may be anything.
    pad = plain[-1]
    if not 1 <= pad <= 16:
        raise PskcError(f"{field} does not decrypt: wrong pre-shared key?", field=field)
    return plain[:-pad]


class _Decrypter:
    """Reads EncryptedValues under the pre-shared key, MAC first (RFC 6030 section 6.1.1)."""

    def __init__(self, root: ElementTree.Element, psk: bytes | None) -> None:
        self._root = root
        self._psk = psk
        self._mac: tuple[str, bytes] | None = None

    def _cipher_value(self, psk: bytes, parent: ElementTree.Element, field: str) -> bytes:
        method = parent.find(_q("EncryptionMethod", XENC_NS))
        if method is None:
            raise PskcError(f"{field} names no EncryptionMethod", field=field)
        algorithm = method.get("Algorithm", "")
        if algorithm not in _CBC_KEY_LENGTHS:
            raise PskcError(f"{field}: unsupported encryption {algorithm!r}", field=field)
        if _CBC_KEY_LENGTHS[algorithm] != len(psk):
            raise PskcError(
                f"{field} is encrypted with {algorithm.rsplit('#', 1)[-1]}, but the pre-shared "
                f"key has {len(psk)} bytes",
                field=field,
            )
        value = parent.find(f"{_q('CipherData', XENC_NS)}/{_q('CipherValue', XENC_NS)}")
        if value is None:
            raise PskcError(f"{field} has no CipherValue", field=field)
        return _base64(_text(value, field), field)

    def _check_key_source(self) -> None:
        source = self._root.find(_q("EncryptionKey"))
        if source is not None and any(child.tag != _q("KeyName", DS_NS) for child in source):
            raise PskcError(
                "only pre-shared keys are supported, not derived or certificate keys",
                field="EncryptionKey",
            )

    def _mac_key(self, psk: bytes) -> tuple[str, bytes]:
        if self._mac is None:
            method = self._root.find(_q("MACMethod"))
            if method is None:
                raise PskcError("encrypted values need a MACMethod", field="MACMethod")
            digest = _MAC_DIGESTS.get(method.get("Algorithm", ""))
            if digest is None:
                raise PskcError("unsupported MAC algorithm", field="MACMethod")
            mac_key = method.find(_q("MACKey"))
            if mac_key is None:
                raise PskcError("the MACMethod has no MACKey", field="MACKey")
            key = _cbc_decrypt(psk, self._cipher_value(psk, mac_key, "MACKey"), "MACKey")
            if not key:
                raise PskcError("the MAC key is empty", field="MACKey")
            self._mac = (digest, key)
        return self._mac

    def value(
        self, container: ElementTree.Element, encrypted: ElementTree.Element, field: str
    ) -> bytes:
        """The plaintext of ``encrypted``, checked against ``container``'s ValueMAC."""
        psk = self._psk
        if psk is None:
            raise PskcError(f"{field} is encrypted: a pre-shared key is needed", field=field)
        self._check_key_source()
        cipher_value = self._cipher_value(psk, encrypted, field)
        digest, mac_key = self._mac_key(psk)
        mac = container.find(_q("ValueMAC"))
        if mac is None:
            raise PskcError(f"{field} is encrypted but has no ValueMAC", field="ValueMAC")
        expected = _value_mac(mac_key, cipher_value, digest)
        if not hmac.compare_digest(expected, _base64(_text(mac, "ValueMAC"), "ValueMAC")):
            raise PskcError(
                f"the MAC of {field} does not match: wrong pre-shared key, or altered",
                field="ValueMAC",
            )
        return _cbc_decrypt(psk, cipher_value, field)


def _data_value(
    data: ElementTree.Element, tag: str, decrypter: _Decrypter
) -> tuple[str | None, bytes | None]:
    """A Data child as (plain text, None) or (None, decrypted bytes); (None, None) if absent."""
    container = data.find(_q(tag))
    if container is None:
        return None, None
    plain = container.find(_q("PlainValue"))
    if plain is not None:
        return _text(plain, tag), None
    encrypted = container.find(_q("EncryptedValue"))
    if encrypted is not None:
        return None, decrypter.value(container, encrypted, tag)
    raise PskcError(f"{tag} has neither PlainValue nor EncryptedValue", field=tag)


def _data_integer(data: ElementTree.Element, tag: str, decrypter: _Decrypter) -> int | None:
    text, raw = _data_value(data, tag, decrypter)
    if raw is not None:  # encrypted integers are big-endian bytes
        if len(raw) > 8:
            raise PskcError(f"{tag} does not fit in 8 bytes", field=tag)
        return int.from_bytes(raw, "big")
    return None if text is None else _integer(text, tag)


def _hash_alg(suite: str, algorithm: str) -> str | None:
    name = suite.strip().upper().removeprefix("HMAC-").replace("-", "")
    if name in HASH_ALGS:
        return name
    if algorithm in _OATH:
        raise PskcError(f"unsupported hash Suite {suite!r}", field="Suite")
    return None  # another algorithm's suite, such as OCRA's, says more than a hash


def _yubico_ids(text: str) -> tuple[str | None, bytes | None]:
    public_id: str | None = None
    private_id: bytes | None = None
    for part in text.split(","):
        name, equals, value = part.strip().partition("=")
        value = value.strip()
        if name.upper() == "CN" and equals:
            _check_public_id(value)
            public_id = value
        elif name.upper() == "UID" and equals:
            try:
                private_id = bytes.fromhex(value)
            except ValueError:
                raise PskcError("the UID is not hex", field="UserId") from None
            if len(private_id) != PRIVATE_ID_LENGTH:
                raise PskcError(f"the UID is not {PRIVATE_ID_LENGTH} bytes", field="UserId")
        else:
            raise PskcError(
                f"expected 'CN=<public id>, UID=<private id>': {text!r}", field="UserId"
            )
    return public_id, private_id


def _parse_key(
    package: ElementTree.Element, key: ElementTree.Element, decrypter: _Decrypter
) -> PskcKey:
    key_id = key.get("Id")
    if not key_id:
        raise PskcError("a Key has no Id", field="Id")
    algorithm = key.get("Algorithm")
    if not algorithm:
        raise PskcError(f"key {key_id!r} has no Algorithm", field="Algorithm")
    algorithm = _LEGACY_ALGORITHMS.get(algorithm, algorithm)
    oath = algorithm in _OATH

    device: dict[str, str] = {}
    device_info = package.find(_q("DeviceInfo"))
    if device_info is not None:
        for tag in ("Manufacturer", "SerialNo", "Model"):
            element = device_info.find(_q(tag))
            if element is not None:
                device[tag] = _text(element, tag)

    digits = hash_alg = None
    parameters = key.find(_q("AlgorithmParameters"))
    if parameters is not None:
        suite = parameters.find(_q("Suite"))
        if suite is not None:
            hash_alg = _hash_alg(_text(suite, "Suite"), algorithm)
        response = parameters.find(_q("ResponseFormat"))
        if response is not None:
            digits = _integer(response.get("Length", ""), "ResponseFormat")
            if oath and (
                digits not in OATH_DIGITS or response.get("Encoding", "DECIMAL") != "DECIMAL"
            ):
                raise PskcError("OATH codes are 6 to 10 decimal digits", field="ResponseFormat")

    data = key.find(_q("Data"))
    if data is None:
        raise PskcError(f"key {key_id!r} has no Data", field="Data")
    text, secret = _data_value(data, "Secret", decrypter)
    if text is not None:
        secret = _base64(text, "Secret")
    if not secret:
        raise PskcError(f"key {key_id!r} has no secret", field="Secret")

    public_id = private_id = None
    user_id = key.find(_q("UserId"))
    if user_id is not None and algorithm == ALG_YUBICO_OTP:
        public_id, private_id = _yubico_ids(_text(user_id, "UserId"))

    try:
        return PskcKey(
            key_id=key_id,
            serial=device.get("SerialNo", ""),
            manufacturer=device.get("Manufacturer", ""),
            algorithm=algorithm,
            secret=secret,
            digits=digits,
            counter=_data_integer(data, "Counter", decrypter),
            time_step=_data_integer(data, "TimeInterval", decrypter),
            time_origin=_data_integer(data, "Time", decrypter),
            hash_alg=hash_alg,
            public_id=public_id,
            private_id=private_id,
            model=device.get("Model"),
        )
    except PskcError as exc:
        raise PskcError(f"key {key_id!r}: {exc}", field=exc.field) from None


def parse_pskc(data: bytes, *, psk: bytes | None = None) -> list[PskcKey]:
    """The keys of a PSKC document, in document order; KeyPackages without a Key are skipped.

    Encrypted values need ``psk`` and a matching MAC (RFC 6030 section 6.1). Raises
    ``PskcError`` naming the element at fault for anything malformed, unsupported or failing
    its MAC, and for any DOCTYPE: documents with entity declarations are refused unread.
    """
    root = _parse_xml(data)
    if root.tag != _q("KeyContainer"):
        raise PskcError(f"the root is {root.tag!r}, not a PSKC KeyContainer", field="KeyContainer")
    if root.get("Version") != "1.0":
        raise PskcError(f"unsupported PSKC version {root.get('Version')!r}", field="Version")
    decrypter = _Decrypter(root, psk)
    keys = []
    for package in root.findall(_q("KeyPackage")):
        key = package.find(_q("Key"))
        if key is not None:
            keys.append(_parse_key(package, key, decrypter))
    return keys
