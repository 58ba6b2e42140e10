"""``akkreditiv devices otp``: read one code from an OTP token (USB keyboard or NFC tag)."""

from __future__ import annotations

from typing import Annotated

import typer

from akkreditiv.cli.common import Listener, device_errors
from akkreditiv.cli.devices import usb_backends
from devices.errors import FileNotFound, NoCard
from devices.events import DeviceEvent, Event

otp_app = typer.Typer(help="Read one-time passwords from OTP tokens.", no_args_is_help=True)


@otp_app.command("read")
def otp_read(
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="usb:BUS:ADDRESS:INTERFACE, or part of an NFC reader's name "
            "(default: the first OTP token found, USB before NFC).",
        ),
    ] = None,
    layout: Annotated[str, typer.Option(help="The keyboard layout a USB token types for.")] = "us",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a USB token's code.")] = 30.0,
) -> None:
    """Print one code: a USB token types it when touched; an NFC tag is read at once."""
    from devices.protocol.hid_keyboard import get_layout
    from devices.tokens.otp import NdefTagSession, find_keyboard_tokens, read_keyboard_otp
    from devices.transports.pcsc import PcscContext

    with device_errors():
        keyboard_layout = get_layout(layout)
        if device is None or device.startswith("usb:"):
            for token in find_keyboard_tokens(usb_backends()):
                if device is None or token.path == device:
                    typer.echo("Touch your OTP token now.", err=True)
                    code = read_keyboard_otp(token, keyboard_layout, timeout, events=Listener.emit)
                    Listener.emit(Event(DeviceEvent.CODE, {"code": code}))
                    typer.echo(code)
                    return
        if device is None or not device.startswith("usb:"):
            with PcscContext() as context:
                for reader in context.readers():
                    if (device and device not in reader) or context.card_present(reader) is None:
                        continue
                    with context.connect(reader, exclusive=False) as connection:
                        session = NdefTagSession(connection)
                        try:
                            code = session.read_otp()
                        except FileNotFound:
                            continue  # a card, but no NDEF tag
                        Listener.emit(Event(DeviceEvent.CODE, {"code": code}))
                        typer.echo(code)
                        return
        raise NoCard("no OTP token found" + (f" at {device}" if device else ""))


@otp_app.command("oath")
def otp_oath(
    reader: Annotated[
        str | None, typer.Option("--reader", help="Part of the reader's name.")
    ] = None,
) -> None:
    """Print the current code of every credential on an OATH card (TOTP now; HOTP and
    touch credentials are listed without a code, as computing one would spend it)."""
    from devices.tokens.oath import OathSession
    from devices.transports.pcsc import PcscContext

    with device_errors(), PcscContext() as context:
        for name in context.readers():
            if (reader and reader not in name) or context.card_present(name) is None:
                continue
            with context.connect(name, exclusive=False) as connection:
                session = OathSession(connection)
                try:
                    session.select()
                except FileNotFound:
                    continue
                for credential, code in session.calculate_all().items():
                    typer.echo(f"{credential}: {code if code is not None else '(on request)'}")
                return
        raise NoCard("no OATH card found" + (f" in a reader matching {reader!r}" if reader else ""))
