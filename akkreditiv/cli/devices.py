"""``akkreditiv devices``: find tokens on PC/SC readers and USB, and use them."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from akkreditiv.cli.common import Listener, device_errors, fail
from devices.events import DeviceEvent, Event
from devices.transports.pcsc import PcscContext

devices_app = typer.Typer(
    help="Find tokens on PC/SC readers and USB, and use them.", no_args_is_help=True
)


@devices_app.callback()
def devices_main(
    speak: Annotated[
        bool, typer.Option("--speak", help="Say every prompt and result aloud (and as text).")
    ] = False,
    language: Annotated[str, typer.Option(help="The language spoken: da or en.")] = "da",
    audio_dir: Annotated[
        Path | None,
        typer.Option(help="Keep the spoken prompts here as WAV files (default: a temp folder)."),
    ] = None,
    rate: Annotated[int, typer.Option(help="Speaking rate in words per minute.")] = 175,
) -> None:
    """Options that apply to every device command."""
    if not speak:
        return
    from accessibility.errors import AccessibilityError

    try:
        Listener.sink = speaker(language, audio_dir, rate)
    except AccessibilityError as exc:
        raise fail(str(exc), 2) from exc


def speaker(language: str, audio_dir: Path | None, rate: int) -> Callable[[Event], None]:
    """An event sink that offers each event as text (stderr) and speech (a WAV, played where
    the machine has a sound device)."""
    from accessibility.errors import AudioDeviceUnavailable
    from accessibility.guidance import Guide, Prompt
    from accessibility.speech import Pyttsx3Engine, play

    folder = audio_dir or Path(tempfile.mkdtemp(prefix="akkreditiv-speech-"))
    guide = Guide(
        Pyttsx3Engine(),
        folder,
        language=language,
        rate=rate,
        text_sink=lambda text: typer.echo(text, err=True),
    )

    def say(event: Event) -> None:
        path = guide.say(Prompt(event.kind.value), **event.params)
        try:
            play(path)
        except AudioDeviceUnavailable:
            pass  # no sound device here: the WAV and the text are what we offer

    return say


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
    Listener.emit(Event(DeviceEvent.DONE if tokens else DeviceEvent.TOKEN_NOT_FOUND))
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
