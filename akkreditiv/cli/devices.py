"""``akkreditiv devices``: find tokens on PC/SC readers and USB, and use them."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from akkreditiv.cli.common import device_errors
from devices.transports.pcsc import PcscContext

devices_app = typer.Typer(
    help="Find tokens on PC/SC readers and USB, and use them.", no_args_is_help=True
)


def usb_backends() -> list[Any]:
    """pyusb backends to search: libusb for hardware, and the simulated bus."""
    from firmware_sim.attach.usb_backend import SimulatedBusBackend

    backends: list[Any] = [SimulatedBusBackend()]
    try:
        import usb.backend.libusb1

        hardware = usb.backend.libusb1.get_backend()
    except Exception:  # no libusb on this machine: only the simulated bus
        hardware = None
    if hardware is not None:
        backends.insert(0, hardware)
    return backends


@devices_app.command("list")
def devices_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List every token on PC/SC readers and USB (real or simulated): kind, transport,
    reader or USB path, serial, and what the token holds."""
    from devices.discovery import list_fido_tokens, list_otp_keyboards, list_pcsc_tokens

    backends = usb_backends()
    with device_errors():
        tokens, problems = list_pcsc_tokens()
    fido, fido_problems = list_fido_tokens(backends)
    tokens += fido + list_otp_keyboards(backends)
    problems += fido_problems
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "tokens": [token.as_dict() for token in tokens],
                    "problems": [vars(problem) for problem in problems],
                },
                indent=2,
            )
        )
        return
    if not tokens:
        typer.echo("No tokens found.")
    for token in tokens:
        summary = _summary(token.details)
        typer.echo(
            f"{token.kind}  {token.transport}  {token.reader}  serial {token.serial}  {summary}"
        )
    for problem in problems:
        typer.echo(f"could not read {problem.reader}: {problem.error}", err=True)


@devices_app.command("wait")
def devices_wait(
    reader: Annotated[str, typer.Option("--reader", help="The reader's exact name.")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 30.0,
    removed: Annotated[bool, typer.Option(help="Wait for the card to leave instead.")] = False,
) -> None:
    """Wait until a card is in (or out of) a reader."""
    with device_errors(), PcscContext() as context:
        event = context.wait_for(reader, present=not removed, timeout=timeout)
    typer.echo(f"{event.reader}: {'card present' if event.present else 'empty'}")


@devices_app.command("watch")
def devices_watch(
    timeout: Annotated[float, typer.Option(help="Stop after this many quiet seconds.")] = 3600.0,
) -> None:
    """Print each card insertion and removal on every reader as it happens."""
    with device_errors(), PcscContext() as context:
        for event in context.watch(context.readers(), timeout=timeout):
            state = f"card inserted (ATR {event.atr.hex()})" if event.present else "empty"
            typer.echo(f"{event.reader}: {state}", nl=True)


def _summary(details: dict[str, Any]) -> str:
    if "certificates" in details:
        certs = details["certificates"]
        text = ", ".join(f"{slot}: {subject}" for slot, subject in certs.items()) or "none"
        return f"certificates: {text}"
    if "application" in details:
        return str(details["application"])
    if "interface" in details:
        return f"{details['interface']} token"
    if "aaguid" in details:
        return f"aaguid {details['aaguid']}  PIN {'set' if details.get('pin_set') else 'not set'}"
    return ""
