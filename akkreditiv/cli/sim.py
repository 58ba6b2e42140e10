"""``akkreditiv sim``: create simulated tokens, attach them where hardware would be (a vpcd
reader, the simulated USB bus), press their buttons and inject faults."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from akkreditiv.cli.common import StateOption, device_errors, fail
from devices.protocol.piv import Algorithm
from devices.transports.pcsc import PcscContext

sim_app = typer.Typer(
    help="Create simulated tokens, attach them where hardware would be, inject faults.",
    no_args_is_help=True,
)
fault_app = typer.Typer(help="Arm faults in a running simulated token.", no_args_is_help=True)
sim_app.add_typer(fault_app, name="fault")


class SimKind(StrEnum):
    piv = "piv"
    fido = "fido"
    otp_display = "otp-display"
    otp_usb = "otp-usb"
    otp_nfc = "otp-nfc"
    oath = "oath"
    audio_reader = "audio-reader"


class UsbKind(StrEnum):
    fido = "fido"
    otp_usb = "otp-usb"


class OtpAlgorithm(StrEnum):
    totp = "totp"
    hotp = "hotp"
    yubico = "yubico"


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


BusOption = Annotated[
    Path | None,
    typer.Option("--bus", help="The simulated USB bus folder (default: AKKREDITIV_USB_BUS)."),
]


UpTimeout = Annotated[
    float | None,
    typer.Option(help="Seconds the key waits for a touch before it gives up (default 30)."),
]


@sim_app.command("new")
def sim_new(
    kind: Annotated[SimKind, typer.Argument(help="Which token to make.")],
    state: StateOption,
    pin: Annotated[str, typer.Option(help="PIV: initial PIN (6-8 digits).")] = "123456",
    puk: Annotated[str, typer.Option(help="PIV: initial PUK (6-8 digits).")] = "12345678",
    provision: Annotated[
        bool, typer.Option(help="PIV: also make a key in 9A and a certificate, ready to use.")
    ] = False,
    subject: Annotated[
        str, typer.Option(help="PIV: certificate subject CN.")
    ] = "akkreditiv simulated PIV card",
    management_key: Annotated[
        str | None,
        typer.Option(help="PIV: management key as hex (default: the well-known 3DES key)."),
    ] = None,
    management_alg: Annotated[
        ManagementAlg, typer.Option(help="PIV: management key algorithm.")
    ] = ManagementAlg.tdes,
    u2f: Annotated[bool, typer.Option(help="FIDO: also speak CTAP1/U2F.")] = True,
    algorithm: Annotated[
        OtpAlgorithm | None,
        typer.Option(help="OTP: totp (display default), hotp, or yubico (USB/NFC default)."),
    ] = None,
    digits: Annotated[int, typer.Option(help="OTP: 6 or 8 digits (TOTP/HOTP).")] = 6,
    drift: Annotated[float, typer.Option(help="OTP display: seconds its clock is off.")] = 0.0,
    layout: Annotated[str, typer.Option(help="OTP USB: the keyboard layout it types for.")] = "us",
    psk: Annotated[
        str | None,
        typer.Option(help="OTP: encrypt the PSKC secrets with this pre-shared AES key (hex)."),
    ] = None,
    language: Annotated[
        str, typer.Option(help="Audio reader: the language it starts in (da or en).")
    ] = "da",
) -> None:
    """Create a simulated token and its state file. OTP tokens print their provisioning data
    as a PSKC document (RFC 6030) on standard output, as an issuer ships it to a service."""
    from devices.protocol.piv import DEFAULT_MANAGEMENT_KEY
    from firmware_sim.state import StateError

    try:
        if kind in (SimKind.otp_display, SimKind.otp_usb, SimKind.otp_nfc, SimKind.audio_reader):
            _new_otp(kind, state, algorithm, digits, drift, layout, psk, language)
            return
        if kind is SimKind.oath:
            _new_oath(state, psk)
            return
        if kind is SimKind.fido:
            from firmware_sim.tokens import ctap2

            ctap2.new_fido_state(state, u2f=u2f)
            typer.echo(f"created FIDO2 security key in {state}")
            return
        from firmware_sim.tokens import piv

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
    typer.echo(f"created PIV card {applet.serial_text()} in {state}")
    if provision:
        typer.echo("slot 9a: P-256 key and certificate")


def _new_otp(
    kind: SimKind,
    state: Path,
    algorithm: OtpAlgorithm | None,
    digits: int,
    drift: float,
    layout: str,
    psk: str | None,
    language: str,
) -> None:
    from accessibility.errors import AccessibilityError
    from accessibility.speech import Language
    from devices.protocol import pskc
    from devices.protocol.hid_keyboard import get_layout
    from firmware_sim.tokens import audio_reader, otp_token

    get_layout(layout)  # refuse an unknown layout now, not at the first touch
    try:
        spoken = Language.parse(language)
    except AccessibilityError as exc:
        raise fail(str(exc)) from exc
    model = otp_token.Model(kind.value)
    token = otp_token.new_state(
        model,
        otp_token.Algorithm(algorithm.value) if algorithm else None,
        digits=digits,
        drift=drift,
        layout=layout,
    )
    if model is otp_token.Model.AUDIO:
        if token.algorithm is not otp_token.Algorithm.TOTP:
            raise fail("an audio code reader speaks TOTP codes")
        audio_reader.new_reader(state, token, spoken)
    else:
        otp_token.create(state, token)
    key = bytes.fromhex(psk) if psk else None
    typer.echo(pskc.write_pskc([token.pskc_key()], psk=key).decode("utf-8"), nl=False)
    typer.echo(f"created {kind.value} token {token.serial} in {state}", err=True)


def _new_oath(state: Path, psk: str | None) -> None:
    from devices.protocol import pskc
    from devices.protocol.ykoath import OathType, device_id
    from firmware_sim.tokens import oath

    applet = oath.new_oath_state(state)
    keys = []
    for name, stored in applet.state.credentials.items():
        is_totp = stored.oath_type is OathType.TOTP
        keys.append(
            pskc.PskcKey(
                key_id=name.decode("utf-8", "replace"),
                serial=device_id(applet.state.salt),
                manufacturer="akkreditiv-sim",
                algorithm=pskc.ALG_TOTP if is_totp else pskc.ALG_HOTP,
                secret=stored.secret,
                digits=stored.digits,
                counter=None if is_totp else stored.counter,
                time_step=30 if is_totp else None,
                time_origin=0 if is_totp else None,
                hash_alg=stored.algorithm.name,
                model="oath",
            )
        )
    typer.echo(pskc.write_pskc(keys, psk=bytes.fromhex(psk) if psk else None).decode(), nl=False)
    typer.echo(f"created OATH card in {state}", err=True)


@sim_app.command("show")
def sim_show(
    state: StateOption,
    at: Annotated[
        float | None, typer.Option(help="Test rigs: the display's clock, as a Unix time.")
    ] = None,
) -> None:
    """Press the code display's button: print what its display shows."""
    from firmware_sim.state import StateError
    from firmware_sim.tokens import otp_token

    try:
        clock = time.time if at is None else (lambda: at)
        generator = otp_token.load_generator(state, otp_token.Model.DISPLAY, clock=clock)
        code = generator.next_code()
    except StateError as exc:
        raise fail(str(exc)) from exc
    typer.echo(code)


class ReaderKey(StrEnum):
    red = "red"
    left_top = "left-top"
    left_bottom = "left-bottom"
    right_top = "right-top"
    right_bottom = "right-bottom"


@sim_app.command("press")
def sim_press(
    keys: Annotated[
        list[ReaderKey],
        typer.Argument(help="Keys pressed together: red alone speaks the code; see README."),
    ],
    state: StateOption,
    audio_dir: Annotated[Path, typer.Option(help="Where the reader's speech (WAV) goes.")],
    at: Annotated[
        float | None, typer.Option(help="Test rigs: the reader's clock, as a Unix time.")
    ] = None,
) -> None:
    """Press keys of a simulated audio code reader. It answers only with audio: the WAV file
    it spoke is printed, never the words or the code."""
    from accessibility.errors import AccessibilityError
    from accessibility.speech import Pyttsx3Engine
    from firmware_sim.state import StateError
    from firmware_sim.tokens import audio_reader

    try:
        reader = audio_reader.AudioReader(
            state, Pyttsx3Engine(), audio_dir, clock=time.time if at is None else lambda: at
        )
        utterance = reader.press({audio_reader.Key(key.value) for key in keys})
    except audio_reader.UnknownCombination as exc:
        raise fail(str(exc)) from exc
    except (StateError, AccessibilityError) as exc:
        raise fail(str(exc), 2) from exc
    typer.echo(str(utterance.path))


@sim_app.command("attach")
def sim_attach(
    kind: Annotated[SimKind, typer.Argument(help="Which token the state file holds.")],
    state: StateOption,
    vpcd: Annotated[
        str, typer.Option(help="The vpcd reader's card side, HOST:PORT.")
    ] = "127.0.0.1:35963",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the reader to appear.")] = 30.0,
) -> None:
    """Put a simulated card (PIV) or NFC security key (fido) on a vpcd reader; runs until
    stopped (SIGTERM or Ctrl-C takes it away cleanly)."""
    from firmware_sim.attach.vpcd import VpcdAttachment, parse_endpoint
    from firmware_sim.state import StateError

    try:
        host, port = parse_endpoint(vpcd)
        if kind is SimKind.fido:
            from firmware_sim.tokens import ctap2, fido_nfc

            card = fido_nfc.make_card(ctap2.load_authenticator(state, ctap2.AlwaysPresent()))
        elif kind is SimKind.otp_nfc:
            from firmware_sim.tokens import otp_nfc, otp_token

            card = otp_nfc.make_card(otp_token.load_generator(state, otp_token.Model.NFC))
        elif kind is SimKind.oath:
            from firmware_sim.tokens import oath

            card = oath.make_card(oath.load_applet(state))
        elif kind is not SimKind.piv:
            raise fail(f"a {kind.value} token does not go on a card reader")
        else:
            from firmware_sim.tokens import piv

            card = piv.make_card(piv.load_applet(state))
    except (ValueError, StateError) as exc:
        raise fail(str(exc)) from exc
    attachment = VpcdAttachment(card, host, port, state_path=state, connect_timeout=wait)
    typer.echo(f"attaching {kind.value} token from {state} to vpcd {host}:{port}", err=True)
    try:
        outcome = attachment.run()
    except ConnectionError as exc:
        raise fail(str(exc), 2) from exc
    typer.echo(f"token {outcome}", err=True)


@sim_app.command("plug")
def sim_plug(
    kind: Annotated[UsbKind, typer.Argument(help="Which USB token the state file holds.")],
    state: StateOption,
    bus: BusOption = None,
    up_timeout: UpTimeout = None,
) -> None:
    """Plug a simulated USB token into the simulated bus; it runs in the background until
    'sim unplug'."""
    from firmware_sim.attach import usb_bus

    try:
        info = usb_bus.plug(kind.value, state, bus, up_timeout=up_timeout)
    except usb_bus.BusError as exc:
        raise fail(str(exc), 2) from exc
    typer.echo(f"plugged {info.kind} {info.serial} at address {info.address}")


@sim_app.command("unplug")
def sim_unplug(state: StateOption, bus: BusOption = None) -> None:
    """Pull a simulated USB token out of the bus."""
    from firmware_sim.attach import usb_bus

    try:
        info = usb_bus.unplug(state, bus)
    except usb_bus.BusError as exc:
        raise fail(str(exc), 2) from exc
    typer.echo(f"unplugged {info.kind} {info.serial} from address {info.address}")


@sim_app.command("touch")
def sim_touch(state: StateOption, bus: BusOption = None) -> None:
    """Press the button of a simulated USB token (user presence)."""
    from firmware_sim.attach import usb_bus

    try:
        info = usb_bus.touch(state, bus)
    except usb_bus.BusError as exc:
        raise fail(str(exc), 2) from exc
    typer.echo(f"touched {info.kind} {info.serial}")


@sim_app.command("bus")
def sim_bus(bus: BusOption = None) -> None:
    """List the tokens on the simulated USB bus."""
    from firmware_sim.attach import usb_bus

    for info in usb_bus.devices(bus):
        typer.echo(f"{info.address:3d}  {info.kind}  {info.serial}  {info.state}")


@sim_app.command("usb-device", hidden=True)
def sim_usb_device(
    kind: Annotated[UsbKind, typer.Argument()],
    state: StateOption,
    bus: BusOption = None,
    ready_fd: Annotated[int | None, typer.Option(help="Write the address here when ready.")] = None,
    up_timeout: UpTimeout = None,
) -> None:
    """The process of one simulated USB token (started by 'sim plug')."""
    from firmware_sim.attach import usb_bus
    from firmware_sim.faults import FaultPlan
    from firmware_sim.state import StateError

    holder: list[usb_bus.DeviceServer] = []

    def pull() -> None:
        holder[0].pull()

    device: usb_bus.UsbFunction
    try:
        if kind is UsbKind.otp_usb:
            from firmware_sim.tokens import otp_token
            from firmware_sim.tokens.otp_usb import OtpKeyboardDevice

            generator = otp_token.load_generator(state, otp_token.Model.USB)
            device = OtpKeyboardDevice(generator, faults=FaultPlan(state), on_pull=pull)
        else:
            from firmware_sim.tokens import ctap2
            from firmware_sim.tokens.fido_hid import FidoHidDevice

            presence = ctap2.ButtonPresence()
            if up_timeout is None:
                authenticator = ctap2.load_authenticator(state, presence)
            else:
                authenticator = ctap2.load_authenticator(state, presence, up_timeout=up_timeout)
            device = FidoHidDevice(
                authenticator,
                presence,
                serial=authenticator.serial,
                faults=FaultPlan(state),
                on_pull=pull,
            )
    except StateError as exc:
        raise fail(str(exc)) from exc
    server = usb_bus.DeviceServer(device, state, bus)
    holder.append(server)
    usb_bus.run_device(device, state, bus, ready_fd=ready_fd, server=server)


class AttestationKind(StrEnum):
    fido = "fido"
    piv = "piv"


@sim_app.command("attestation-root")
def sim_attestation_root(
    out: Annotated[Path | None, typer.Option(help="Write the PEM here instead of stdout.")] = None,
    kind: Annotated[
        AttestationKind,
        typer.Option(
            help="fido: the security keys' root (AKKREDITIV_FIDO_TRUSTED_ROOTS); piv: the PIV "
            "cards' attestation root (AKKREDITIV_PIV_ATTESTATION_ROOTS)."
        ),
    ] = AttestationKind.fido,
) -> None:
    """Export the simulator's FIDO or PIV attestation root certificate (PEM), so a server can
    trust (or refuse) simulated keys and cards."""
    from firmware_sim.tokens.attestation import Manufacturer
    from firmware_sim.tokens.piv_attestation import PivManufacturer

    maker = Manufacturer if kind is AttestationKind.fido else PivManufacturer
    pem = maker.load_or_create().root_pem()
    if out is None:
        typer.echo(pem.decode("ascii"), nl=False)
    else:
        out.write_bytes(pem)


@sim_app.command("pcscd")
def sim_pcscd() -> None:
    """Make sure pcscd runs with the vpcd virtual reader (starting it if needed) and list the
    readers' card-side ports."""
    from akkreditiv.cli.pcscd import ensure_pcscd

    with device_errors():
        for reader in ensure_pcscd():
            typer.echo(f"{reader.name}\t127.0.0.1:{reader.port}")


@sim_app.command("free-reader")
def sim_free_reader() -> None:
    """Print the card-side port and name of the first vpcd reader with no card in it."""
    from akkreditiv.cli.pcscd import ensure_pcscd

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


InsOption = Annotated[
    str | None,
    typer.Option(
        help="Only on this command (hex): an APDU's INS, or a CTAP2 command byte on USB "
        "(01 makeCredential, 02 getAssertion, 06 clientPIN ...)."
    ),
]


def _parse_ins(ins: str | None) -> int | None:
    try:
        return int(ins, 16) if ins is not None else None
    except ValueError as exc:
        raise fail(f"--ins takes a hex byte, got {ins!r}") from exc


@fault_app.command("pull")
def fault_pull(
    state: StateOption,
    ins: InsOption = None,
    when: Annotated[
        FaultWhen,
        typer.Option(help="before: the command never runs; after: it runs, the answer is lost."),
    ] = FaultWhen.before,
) -> None:
    """Pull the token out at the next (matching) command."""
    from firmware_sim import faults

    fault = faults.Fault(faults.Action.PULL, faults.Phase(when.value), _parse_ins(ins))
    faults.arm(state, fault)
    typer.echo("armed")


@fault_app.command("delay")
def fault_delay(
    state: StateOption,
    seconds: Annotated[float, typer.Option(help="How much longer the token works.")],
    ins: InsOption = None,
) -> None:
    """Make the token slow on the next (matching) command."""
    from firmware_sim import faults

    fault = faults.Fault(faults.Action.DELAY, faults.Phase.BEFORE, _parse_ins(ins), seconds)
    faults.arm(state, fault)
    typer.echo("armed")


@fault_app.command("corrupt")
def fault_corrupt(state: StateOption, ins: InsOption = None) -> None:
    """Cut the data of the token's next (matching) answer in half, status word intact (a card
    or NFC tag on a vpcd reader)."""
    from firmware_sim import faults

    fault = faults.Fault(faults.Action.CORRUPT, faults.Phase.AFTER, _parse_ins(ins))
    faults.arm(state, fault)
    typer.echo("armed")


@fault_app.command("clear")
def fault_clear(state: StateOption) -> None:
    """Disarm every fault of a token."""
    from firmware_sim import faults

    faults.clear(state)
    typer.echo("cleared")
