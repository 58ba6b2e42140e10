"""Find every token on every transport. For now: PIV cards on PC/SC readers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from devices.errors import DeviceError, FileNotFound, TransportError
from devices.protocol.piv import Slot
from devices.tokens.piv import PivSession
from devices.transports.pcsc import PcscContext


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


def list_pcsc_tokens() -> tuple[list[TokenInfo], list[ReaderProblem]]:
    """Every PIV card on every PC/SC reader, and the readers that could not be read."""
    tokens: list[TokenInfo] = []
    problems: list[ReaderProblem] = []
    with PcscContext() as context:
        for reader in context.readers():
            if context.card_present(reader) is None:
                continue
            try:
                with context.connect(reader, exclusive=False) as connection:
                    session = PivSession(connection)
                    try:
                        serial, details = _describe_piv(session)
                    except FileNotFound:
                        continue  # a card, but not one with a PIV application
                    details["atr"] = connection.atr.hex()
                    tokens.append(TokenInfo("piv", "pcsc", reader, serial, details))
            except TransportError as exc:
                problems.append(ReaderProblem(reader, str(exc)))
            except DeviceError as exc:
                problems.append(ReaderProblem(reader, f"unreadable card: {exc}"))
    return tokens, problems
