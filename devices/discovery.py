"""Find every token on every transport. For now: PIV cards on PC/SC readers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from devices.errors import DeviceError, FileNotFound, TransportError
from devices.protocol.piv import Slot
from devices.tokens.piv import ApduTransport, PivSession
from devices.transports.pcsc import PcscContext

if TYPE_CHECKING:
    from fido2.ctap import CtapDevice

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenInfo:
    kind: str
    transport: str
    reader: str
    serial: str | None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReaderProblem:
    reader: str
    error: str


def _describe_piv(session: PivSession) -> tuple[str | None, dict[str, Any]]:
    info = session.select()
    try:
        serial: str | None = session.chuid().serial
    except FileNotFound:
        serial = None
    certificates = {}
    for slot in Slot:
        certificate = session.certificate(slot)
        if certificate is not None:
            certificates[f"{slot.value:02x}"] = certificate.subject.rfc4514_string()
    _, tries = session.pin_status()
    return serial, {
        "label": info.label,
        "certificates": certificates,
        "pin_tries_left": tries,
    }


def _describe_ndef_tag(connection: ApduTransport) -> tuple[str | None, dict[str, Any]]:
    from devices.tokens.otp import NdefTagSession

    NdefTagSession(connection).select()  # FileNotFound when the card is no NDEF tag
    # Reading the tag would spend a one-time password, so listing only says what it is.
    return None, {"application": "NFC Forum Type 4 Tag (NDEF)"}


def _describe_oath(connection: ApduTransport) -> tuple[str | None, dict[str, Any]]:
    from devices.tokens.oath import OathSession

    session = OathSession(connection)
    info = session.select()
    details: dict[str, Any] = {"application": "OATH (YKOATH)", "version": list(info.version)}
    if not info.locked:
        details["credentials"] = [credential.name for credential in session.list()]
    return info.device_id, details


# Smartcard applications by the kind of token they make a card: tried in this order.
_PCSC_PROBES: list[tuple[str, Callable[[Any], tuple[str | None, dict[str, Any]]]]] = [
    ("piv", lambda connection: _describe_piv(PivSession(connection))),
    ("otp-nfc", _describe_ndef_tag),
    ("oath", _describe_oath),
]


def list_pcsc_tokens() -> tuple[list[TokenInfo], list[ReaderProblem]]:
    """Every PIV card and NFC OTP tag on every PC/SC reader, and the readers that could not
    be read. (FIDO keys on NFC readers are listed by ``list_fido_tokens``.)"""
    tokens: list[TokenInfo] = []
    problems: list[ReaderProblem] = []
    with PcscContext() as context:
        for reader in context.readers():
            if context.card_present(reader) is None:
                continue
            try:
                with context.connect(reader, exclusive=False) as connection:
                    for kind, describe in _PCSC_PROBES:
                        try:
                            serial, details = describe(connection)
                        except FileNotFound:
                            continue  # not this application
                        details["atr"] = connection.atr.hex()
                        tokens.append(TokenInfo(kind, "pcsc", reader, serial, details))
                        break
            except TransportError as exc:
                problems.append(ReaderProblem(reader, str(exc)))
            except DeviceError as exc:
                problems.append(ReaderProblem(reader, f"unreadable card: {exc}"))
    return tokens, problems


def list_otp_keyboards(usb_backends: list[Any]) -> list[TokenInfo]:
    """USB OTP tokens (keyboard interfaces of known OTP token vendors)."""
    from devices.tokens.otp import find_keyboard_tokens

    return [
        TokenInfo("otp-usb", "usb", token.path, token.serial_number, {"interface": "keyboard"})
        for token in find_keyboard_tokens(usb_backends)
    ]


def _fido_details(device: object) -> dict[str, Any]:
    from fido2.ctap2.base import Ctap2

    info = Ctap2(device).info  # type: ignore[arg-type]
    return {
        "aaguid": str(info.aaguid),
        "versions": list(info.versions),
        "pin_set": bool(info.options.get("clientPin")),
        "resident_keys": bool(info.options.get("rk")),
    }


def list_fido_tokens(usb_backends: list[Any]) -> tuple[list[TokenInfo], list[ReaderProblem]]:
    """FIDO2 keys on USB (through the given pyusb backends) and on NFC readers."""
    from devices.transports.usb import find_fido_interfaces, open_ctap_device

    tokens: list[TokenInfo] = []
    problems: list[ReaderProblem] = []
    for interface in find_fido_interfaces(usb_backends):
        try:
            device = open_ctap_device(interface)
        except Exception as exc:  # one broken key must not hide the others
            problems.append(ReaderProblem(interface.path, f"unusable FIDO key: {exc}"))
            continue
        try:
            details = _fido_details(device)
        except Exception as exc:
            problems.append(ReaderProblem(interface.path, f"unusable FIDO key: {exc}"))
            continue
        finally:
            device.close()
        details["product"] = interface.product_name
        tokens.append(TokenInfo("fido", "usb", interface.path, interface.serial_number, details))
    try:
        nfc_devices = nfc_fido_devices()
    except Exception as exc:  # no pcscd: USB keys are still worth listing
        problems.append(ReaderProblem("pcsc", f"NFC readers not available: {exc}"))
        nfc_devices = []
    for reader, nfc in nfc_devices:
        try:
            details = _fido_details(nfc)
        except Exception as exc:
            problems.append(ReaderProblem(reader, f"unusable FIDO key: {exc}"))
            continue
        finally:
            nfc.close()
        tokens.append(TokenInfo("fido", "nfc", reader, None, details))
    return tokens, problems


def nfc_fido_devices(name: str = "") -> list[tuple[str, CtapDevice]]:
    """(reader name, python-fido2 ``CtapPcscDevice``) for every FIDO key on a PC/SC reader
    whose name contains ``name``; readers whose card has no FIDO applet are passed over."""
    from fido2.pcsc import CtapPcscDevice
    from smartcard.System import readers

    found: list[tuple[str, CtapDevice]] = []
    for reader in readers():
        if name not in reader.name:
            continue
        try:
            found.append((reader.name, CtapPcscDevice(reader.createConnection(), reader.name)))
        except Exception as exc:  # no card, or a card without the FIDO applet
            log.debug("no FIDO key on %s: %s", reader.name, exc)
    return found
