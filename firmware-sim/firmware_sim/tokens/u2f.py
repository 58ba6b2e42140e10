"""CTAP1/U2F raw messages (FIDO U2F Raw Message Formats v1.2) for the simulated FIDO2 key.

U2F never blocks for a touch: without a touch already given the key answers 6985 and the
host polls, as real U2F keys do. Key handles are CTAP2 credential IDs of ES256 credentials
bound to the application parameter, so a U2F registration is usable through CTAP2 too.
"""

from __future__ import annotations

import logging
from enum import IntEnum, unique
from typing import Protocol

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devices.protocol.sw import SW

logger = logging.getLogger(__name__)

VERSION = b"U2F_V2"


@unique
class U2fIns(IntEnum):
    REGISTER = 0x01
    AUTHENTICATE = 0x02
    VERSION = 0x03


@unique
class AuthControl(IntEnum):
    ENFORCE_USER_PRESENCE = 0x03
    CHECK_ONLY = 0x07
    DONT_ENFORCE_USER_PRESENCE = 0x08


class U2fCore(Protocol):
    """What U2F needs from the authenticator core."""

    def u2f_new_credential(self, application: bytes) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
        """A new non-discoverable ES256 credential: (key handle, private key)."""
        ...

    def u2f_key(self, key_handle: bytes, application: bytes) -> ec.EllipticCurvePrivateKey | None:
        """The private key of a key handle made by this key for ``application``, else None."""
        ...

    def u2f_next_counter(self) -> int:
        """Increment, persist and return the signature counter."""
        ...

    def u2f_user_present(self) -> bool:
        """Consume a touch already given, without waiting for one."""
        ...

    def u2f_attestation(self) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        """The batch attestation key and its DER certificate."""
        ...


class _ApduError(Exception):
    def __init__(self, sw: int) -> None:
        super().__init__(f"{sw:04X}")
        self.sw = sw


def _parse(apdu: bytes) -> tuple[int, int, int, int, bytes]:
    """CLA INS P1 P2 and the data of a short or extended APDU. python-fido2 sends
    ``00 00 00 00 00`` after the header for no data (extended Lc of zero and Le), which
    U2F raw messages allow, so this is more lenient than ISO 7816-4 there."""
    if len(apdu) < 4:
        raise _ApduError(SW.WRONG_LENGTH)
    cla, ins, p1, p2 = apdu[:4]
    body = apdu[4:]
    if len(body) <= 1:
        return cla, ins, p1, p2, b""
    if body[0] == 0:
        if len(body) == 3:  # extended Le only
            return cla, ins, p1, p2, b""
        lc = int.from_bytes(body[1:3], "big")
        rest = body[3:]
        if len(rest) in (lc, lc + 2):
            return cla, ins, p1, p2, bytes(rest[:lc])
        raise _ApduError(SW.WRONG_LENGTH)
    lc = body[0]
    if len(body) in (1 + lc, 2 + lc):
        return cla, ins, p1, p2, bytes(body[1 : 1 + lc])
    raise _ApduError(SW.WRONG_LENGTH)


def _sw(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


def process_u2f(core: U2fCore, apdu: bytes) -> bytes:
    """Response data and status word for one U2F request APDU."""
    try:
        cla, ins, p1, _p2, data = _parse(apdu)
        if cla != 0x00:
            return _sw(SW.CLA_NOT_SUPPORTED)
        if ins == U2fIns.VERSION:
            if data:
                return _sw(SW.WRONG_LENGTH)
            return VERSION + _sw(SW.SUCCESS)
        if ins == U2fIns.REGISTER:
            return _register(core, data) + _sw(SW.SUCCESS)
        if ins == U2fIns.AUTHENTICATE:
            return _authenticate(core, p1, data) + _sw(SW.SUCCESS)
        return _sw(SW.INS_NOT_SUPPORTED)
    except _ApduError as exc:
        return _sw(exc.sw)


def _public_point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _register(core: U2fCore, data: bytes) -> bytes:
    if len(data) != 64:
        raise _ApduError(SW.WRONG_LENGTH)
    challenge, application = data[:32], data[32:]
    if not core.u2f_user_present():
        raise _ApduError(SW.CONDITIONS_NOT_SATISFIED)
    key_handle, key = core.u2f_new_credential(application)
    point = _public_point(key)
    batch_key, certificate = core.u2f_attestation()
    signature = batch_key.sign(
        b"\x00" + application + challenge + key_handle + point, ec.ECDSA(hashes.SHA256())
    )
    return b"\x05" + point + bytes((len(key_handle),)) + key_handle + certificate + signature


def _authenticate(core: U2fCore, control: int, data: bytes) -> bytes:
    if len(data) < 65 or len(data) != 65 + data[64]:
        raise _ApduError(SW.WRONG_LENGTH)
    challenge, application, key_handle = data[:32], data[32:64], data[65:]
    if control not in {c.value for c in AuthControl}:
        raise _ApduError(SW.INCORRECT_P1P2)
    key = core.u2f_key(key_handle, application)
    if key is None:
        raise _ApduError(SW.WRONG_DATA)
    if control == AuthControl.CHECK_ONLY:
        # "Conditions not satisfied" is the success answer of check-only.
        raise _ApduError(SW.CONDITIONS_NOT_SATISFIED)
    flags = 0x00
    if control == AuthControl.ENFORCE_USER_PRESENCE:
        if not core.u2f_user_present():
            raise _ApduError(SW.CONDITIONS_NOT_SATISFIED)
        flags = 0x01
    counter = core.u2f_next_counter().to_bytes(4, "big")
    signature = key.sign(
        application + bytes((flags,)) + counter + challenge, ec.ECDSA(hashes.SHA256())
    )
    logger.debug("U2F authenticate, counter %s", counter.hex())
    return bytes((flags,)) + counter + signature
