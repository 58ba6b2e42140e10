"""The ``akkreditiv`` command: the composition root that wires devices and the simulator."""

from __future__ import annotations

import getpass
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from devices.errors import DeviceError, FileNotFound, NoCard
from devices.protocol.piv import Algorithm, Slot
from devices.tokens.piv import PivSession, key_algorithm
from devices.transports.pcsc import PcscConnection, PcscContext

app = typer.Typer(
    help="akkreditiv: an open eID credential service built around physical credentials.\n\n"
    "Find and use tokens (devices), run the token simulator (sim).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
devices_app = typer.Typer(
    help="Find tokens on PC/SC readers and USB, and use them.", no_args_is_help=True
)
piv_app = typer.Typer(help="Use a PIV smartcard: PIN, PUK, signing.", no_args_is_help=True)
sim_app = typer.Typer(
    help="Create simulated tokens, attach them where hardware would be, inject faults.",
    no_args_is_help=True,
)
fault_app = typer.Typer(help="Arm faults in a running simulated token.", no_args_is_help=True)
app.add_typer(devices_app, name="devices")
devices_app.add_typer(piv_app, name="piv")
app.add_typer(sim_app, name="sim")
sim_app.add_typer(fault_app, name="fault")


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log device traffic (never PINs) to stderr.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


@contextmanager
def device_errors() -> Iterator[None]:
    """Every device error becomes one clear line with what to do, and exit code 2."""
    try:
        yield
    except DeviceError as exc:
        raise fail(str(exc), 2) from exc


# --- devices ---------------------------------------------------------------------------------


@devices_app.command("list")
def devices_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List every token on PC/SC readers: kind, transport, reader, serial, certificates."""
    from devices.discovery import list_pcsc_tokens

    with device_errors():
        tokens, problems = list_pcsc_tokens()
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
        certs = token.details.get("certificates", {})
        cert_text = ", ".join(f"{slot}: {subject}" for slot, subject in certs.items()) or "none"
        typer.echo(
            f"{token.kind}  {token.transport}  {token.reader}  serial {token.serial}  "
            f"certificates: {cert_text}"
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


ReaderOption = Annotated[
    str | None,
    typer.Option("--reader", help="Part of the reader's name (default: first PIV card)."),
]
PinStdin = Annotated[
    bool,
    typer.Option("--pin-stdin", help="Read the PIN (then any new PIN) from standard input lines."),
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
                session = PivSession(connection)
                try:
                    session.select()
                except FileNotFound:
                    continue
                yield session
                return
        raise NoCard("no PIV card found" + (f" in a reader matching {reader!r}" if reader else ""))


def _secret(prompt: str, from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise fail(f"standard input ended before the {prompt}")
        return line.rstrip("\r\n")
    # getpass turns echo off *before* it shows the prompt; a prompt shown first would echo
    # anything typed ahead, and turning echo off then would throw that input away.
    return getpass.getpass(f"{prompt}: ")


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
        session.verify_pin(_secret("PIN", pin_stdin))
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
        session.verify_pin(_secret("PIN", pin_stdin))
        signature = session.sign(key_slot, message, algorithm)
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise fail("the slot's certificate does not hold an EC key")
    hash_alg = hashes.SHA384() if algorithm is Algorithm.ECC_P384 else hashes.SHA256()
    try:
        public_key.verify(signature, message, ec.ECDSA(hash_alg))
    except InvalidSignature as exc:
        raise fail("the card's signature does not verify with its certificate", 3) from exc
    typer.echo(signature.hex())


@piv_app.command("change-pin")
def piv_change_pin(reader: ReaderOption = None, pin_stdin: PinStdin = False) -> None:
    """Change the PIN (asks the current PIN, then the new one twice)."""
    old = _secret("Current PIN", pin_stdin)
    new = _secret("New PIN", pin_stdin)
    if _secret("New PIN again", pin_stdin) != new:
        raise fail("the new PINs differ")
    with piv_session(reader) as session:
        session.change_pin(old, new)
        typer.echo("PIN changed.")


@piv_app.command("unblock")
def piv_unblock(reader: ReaderOption = None, pin_stdin: PinStdin = False) -> None:
    """Set a new PIN with the PUK after the PIN was blocked."""
    puk = _secret("PUK", pin_stdin)
    new = _secret("New PIN", pin_stdin)
    with piv_session(reader) as session:
        session.unblock_pin(puk, new)
        typer.echo("PIN unblocked and set.")


# --- simulator -------------------------------------------------------------------------------


class SimKind(StrEnum):
    piv = "piv"


class ManagementAlg(StrEnum):
    tdes = "3des"
    aes128 = "aes128"
    aes192 = "aes192"
    aes256 = "aes256"

    @property
    def algorithm(self) -> Algorithm:
        return {
            "3des": Algorithm.TDES,
            "aes128": Algorithm.AES128,
            "aes192": Algorithm.AES192,
            "aes256": Algorithm.AES256,
        }[self.value]


StateOption = Annotated[Path, typer.Option("--state", help="The token's state file.")]


@sim_app.command("new")
def sim_new(
    kind: Annotated[SimKind, typer.Argument(help="Which token to make.")],
    state: StateOption,
    pin: Annotated[str, typer.Option(help="Initial PIN (6-8 digits).")] = "123456",
    puk: Annotated[str, typer.Option(help="Initial PUK (6-8 digits).")] = "12345678",
    provision: Annotated[
        bool, typer.Option(help="Also make a key in 9A and a certificate, ready to use.")
    ] = False,
    subject: Annotated[
        str, typer.Option(help="Certificate subject CN.")
    ] = "akkreditiv simulated PIV card",
    management_key: Annotated[
        str | None,
        typer.Option(help="Management key as hex (default: the well-known default 3DES key)."),
    ] = None,
    management_alg: Annotated[
        ManagementAlg, typer.Option(help="Management key algorithm.")
    ] = ManagementAlg.tdes,
) -> None:
    """Create a simulated token and its state file."""
    from devices.protocol.piv import DEFAULT_MANAGEMENT_KEY
    from firmware_sim.state import StateError
    from firmware_sim.tokens import piv

    try:
        key = bytes.fromhex(management_key) if management_key else DEFAULT_MANAGEMENT_KEY
        applet = piv.new_card_state(
            state,
            pin=pin,
            puk=puk,
            provision=provision,
            subject=subject,
            management_key=key,
            management_alg=management_alg.algorithm,
        )
    except (ValueError, StateError) as exc:
        raise fail(str(exc)) from exc
    chuid_serial = applet.serial_text()
    typer.echo(f"created PIV card {chuid_serial} in {state}")
    if provision:
        typer.echo("slot 9a: P-256 key and certificate")


@sim_app.command("attach")
def sim_attach(
    kind: Annotated[SimKind, typer.Argument(help="Which token the state file holds.")],
    state: StateOption,
    vpcd: Annotated[
        str, typer.Option(help="The vpcd reader's card side, HOST:PORT.")
    ] = "127.0.0.1:35963",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the reader to appear.")] = 30.0,
) -> None:
    """Insert a simulated card into a vpcd reader; runs until stopped (SIGTERM or Ctrl-C
    pulls the card out cleanly)."""
    from firmware_sim.attach.vpcd import VpcdAttachment, parse_endpoint
    from firmware_sim.state import StateError
    from firmware_sim.tokens import piv

    try:
        host, port = parse_endpoint(vpcd)
        card = piv.make_card(piv.load_applet(state))
    except (ValueError, StateError) as exc:
        raise fail(str(exc)) from exc
    attachment = VpcdAttachment(card, host, port, state_path=state, connect_timeout=wait)
    typer.echo(f"attaching {kind.value} card from {state} to vpcd {host}:{port}", err=True)
    try:
        outcome = attachment.run()
    except ConnectionError as exc:
        raise fail(str(exc), 2) from exc
    typer.echo(f"card {outcome}", err=True)


@sim_app.command("pcscd")
def sim_pcscd() -> None:
    """Make sure pcscd runs with the vpcd virtual reader (starting it if needed) and list the
    readers' card-side ports."""
    from firmware_sim.attach.pcscd import ensure_pcscd

    with device_errors():
        for reader in ensure_pcscd():
            typer.echo(f"{reader.name}\t127.0.0.1:{reader.port}")


@sim_app.command("free-reader")
def sim_free_reader() -> None:
    """Print the card-side port and name of the first vpcd reader with no card in it."""
    from firmware_sim.attach.pcscd import ensure_pcscd

    with device_errors():
        readers = ensure_pcscd()
        with PcscContext() as context:
            for reader in readers:
                if context.card_present(reader.name) is None:
                    typer.echo(f"{reader.port} {reader.name}")
                    return
    raise fail("every vpcd reader holds a card already; stop a simulator first", 2)


class FaultWhen(StrEnum):
    before = "before"
    after = "after"


@fault_app.command("pull")
def fault_pull(
    state: StateOption,
    ins: Annotated[
        str | None, typer.Option(help="Only on this instruction byte (hex), e.g. 87.")
    ] = None,
    when: Annotated[
        FaultWhen,
        typer.Option(help="before: the command never runs; after: it runs, the answer is lost."),
    ] = FaultWhen.before,
) -> None:
    """Pull the card out at the next (matching) command."""
    from firmware_sim import faults

    try:
        ins_value = int(ins, 16) if ins is not None else None
    except ValueError as exc:
        raise fail(f"--ins takes a hex byte, got {ins!r}") from exc
    faults.arm(state, faults.Fault(faults.Action.PULL, faults.Phase(when.value), ins_value))
    typer.echo("armed")


@fault_app.command("clear")
def fault_clear(state: StateOption) -> None:
    """Disarm every fault of a token."""
    from firmware_sim import faults

    faults.clear(state)
    typer.echo("cleared")
