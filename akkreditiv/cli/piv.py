"""``akkreditiv devices piv``: use a PIV smartcard: PIN, PUK, signing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from akkreditiv.cli.common import Listener, PinStdin, device_errors, fail, secret
from devices.errors import FileNotFound, NoCard
from devices.events import DeviceEvent, Event
from devices.protocol.piv import Algorithm, Slot
from devices.tokens.piv import PivSession, key_algorithm
from devices.transports.pcsc import PcscConnection, PcscContext

piv_app = typer.Typer(help="Use a PIV smartcard: PIN, PUK, signing.", no_args_is_help=True)

ReaderOption = Annotated[
    str | None,
    typer.Option("--reader", help="Part of the reader's name (default: first PIV card)."),
]


@contextmanager
def piv_session(reader: str | None) -> Iterator[PivSession]:
    with device_errors(), PcscContext() as context:
        names = [name for name in context.readers() if reader is None or reader in name]
        for name in names:
            if context.card_present(name) is None:
                continue
            connection: PcscConnection = context.connect(name)
            with connection:
                session = PivSession(connection, events=Listener.emit)
                try:
                    session.select()
                except FileNotFound:
                    continue
                yield session
                return
        raise NoCard("no PIV card found" + (f" in a reader matching {reader!r}" if reader else ""))


@piv_app.command("status")
def piv_status(reader: ReaderOption = None) -> None:
    """Show the card's serial, PIN tries left and the certificates it holds."""
    with piv_session(reader) as session:
        chuid = session.chuid()
        _, tries = session.pin_status()
        typer.echo(f"serial: {chuid.serial}")
        typer.echo(f"PIN tries left: {tries}" if tries is not None else "PIN: verified")
        for slot in Slot:
            cert = session.certificate(slot)
            typer.echo(f"slot {slot.value:02x}: {cert.subject.rfc4514_string() if cert else '-'}")


@piv_app.command("verify-pin")
def piv_verify_pin(reader: ReaderOption = None, pin_stdin: PinStdin = False) -> None:
    """Check the PIN on the card (asked without echo). Wrong PINs count against the card."""
    with piv_session(reader) as session:
        Listener.emit(Event(DeviceEvent.ENTER_PIN))
        session.verify_pin(secret("PIN", pin_stdin))
        Listener.emit(Event(DeviceEvent.DONE))
        typer.echo("PIN correct.")


@piv_app.command("sign")
def piv_sign(
    challenge: Annotated[str, typer.Option(help="The challenge to sign, as hex.")],
    slot: Annotated[str, typer.Option(help="Key slot: 9a, 9c, 9d or 9e.")] = "9a",
    reader: ReaderOption = None,
    pin_stdin: PinStdin = False,
) -> None:
    """Verify the PIN, then sign a challenge with a key on the card. Prints the DER signature
    as hex, after checking it against the slot's certificate."""
    try:
        message = bytes.fromhex(challenge)
        key_slot = Slot.parse(slot)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    with piv_session(reader) as session:
        certificate = session.certificate(key_slot)
        if certificate is None:
            raise fail(f"slot {key_slot.value:02x} holds no certificate")
        public_key = certificate.public_key()
        algorithm = key_algorithm(public_key)
        Listener.emit(Event(DeviceEvent.ENTER_PIN))
        session.verify_pin(secret("PIN", pin_stdin))
        signature = session.sign(key_slot, message, algorithm)
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise fail("the slot's certificate does not hold an EC key")
    hash_alg = hashes.SHA384() if algorithm is Algorithm.ECC_P384 else hashes.SHA256()
    try:
        public_key.verify(signature, message, ec.ECDSA(hash_alg))
    except InvalidSignature as exc:
        raise fail("the card's signature does not verify with its certificate", 3) from exc
    Listener.emit(Event(DeviceEvent.DONE))
    typer.echo(signature.hex())


@piv_app.command("change-pin")
def piv_change_pin(reader: ReaderOption = None, pin_stdin: PinStdin = False) -> None:
    """Change the PIN (asks the current PIN, then the new one twice)."""
    old = secret("Current PIN", pin_stdin)
    new = secret("New PIN", pin_stdin)
    if secret("New PIN again", pin_stdin) != new:
        raise fail("the new PINs differ")
    with piv_session(reader) as session:
        session.change_pin(old, new)
        typer.echo("PIN changed.")


@piv_app.command("unblock")
def piv_unblock(reader: ReaderOption = None, pin_stdin: PinStdin = False) -> None:
    """Set a new PIN with the PUK after the PIN was blocked."""
    puk = secret("PUK", pin_stdin)
    new = secret("New PIN", pin_stdin)
    with piv_session(reader) as session:
        session.unblock_pin(puk, new)
        typer.echo("PIN unblocked and set.")
