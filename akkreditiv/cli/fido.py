"""``akkreditiv devices fido``: use a FIDO2 security key over USB or NFC: info, PIN,
register with and authenticate to a relying party (verified by python-fido2's server)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from fido2.ctap import CtapDevice
from fido2.server import Fido2Server
from fido2.utils import websafe_decode, websafe_encode
from fido2.webauthn import (
    AttestedCredentialData,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from akkreditiv.cli.common import Listener, PinStdin, device_errors, fail, secret
from akkreditiv.cli.devices import usb_backends
from devices.errors import NoCard
from devices.events import DeviceEvent, Event
from devices.tokens.fido import FidoSession

fido_app = typer.Typer(
    help="Use a FIDO2 security key over USB or NFC: info, PIN, register, authenticate.",
    no_args_is_help=True,
)

DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="usb:BUS:ADDRESS:INTERFACE as 'devices list' shows it, or part of an NFC "
        "reader's name (default: the first key found, USB before NFC).",
    ),
]


def _open(device: str | None) -> CtapDevice:
    from devices.discovery import nfc_fido_devices
    from devices.transports.usb import find_fido_interfaces, open_ctap_device

    if device is None or device.startswith("usb:"):
        for interface in find_fido_interfaces(usb_backends()):
            if device is None or interface.path == device:
                return open_ctap_device(interface)
    if device is None or not device.startswith("usb:"):
        for _, nfc in nfc_fido_devices(device or ""):
            return nfc
    raise NoCard("no FIDO security key found" + (f" at {device}" if device else ""))


@contextmanager
def fido_session(device: str | None) -> Iterator[FidoSession]:
    with device_errors(device="key"):
        session = FidoSession(
            _open(device),
            on_touch=lambda: typer.echo("Touch your security key now.", err=True),
            events=Listener.emit,
        )
        try:
            yield session
        finally:
            session.close()


@fido_app.command("info")
def fido_info(device: DeviceOption = None) -> None:
    """Show what the key says about itself (authenticatorGetInfo) and its PIN state."""
    with fido_session(device) as session:
        info = session.refresh_info()
        pin_set = bool(info.options.get("clientPin"))
        typer.echo(f"versions: {', '.join(info.versions)}")
        typer.echo(f"aaguid: {info.aaguid}")
        typer.echo(f"options: {json.dumps(info.options, sort_keys=True)}")
        typer.echo(
            f"PIN: {'set, ' + str(session.pin_retries()) + ' tries left' if pin_set else 'not set'}"
        )


@fido_app.command("set-pin")
def fido_set_pin(device: DeviceOption = None, pin_stdin: PinStdin = False) -> None:
    """Set the key's first PIN (asked twice, without echo)."""
    new = secret("New PIN", pin_stdin)
    if secret("New PIN again", pin_stdin) != new:
        raise fail("the PINs differ")
    with fido_session(device) as session:
        session.set_pin(new)
    typer.echo("PIN set.")


@fido_app.command("change-pin")
def fido_change_pin(device: DeviceOption = None, pin_stdin: PinStdin = False) -> None:
    """Change the key's PIN."""
    old = secret("Current PIN", pin_stdin)
    new = secret("New PIN", pin_stdin)
    if secret("New PIN again", pin_stdin) != new:
        raise fail("the new PINs differ")
    with fido_session(device) as session:
        session.change_pin(old, new)
    typer.echo("PIN changed.")


def _server(rp_id: str) -> Fido2Server:
    return Fido2Server(PublicKeyCredentialRpEntity(name=rp_id, id=rp_id))


@fido_app.command("register")
def fido_register(
    rp: Annotated[str, typer.Option(help="The relying party id, e.g. example.com.")],
    user: Annotated[str, typer.Option(help="The user name to register.")],
    out: Annotated[Path, typer.Option(help="Where to keep the credential (JSON).")],
    resident: Annotated[bool, typer.Option(help="A discoverable credential.")] = False,
    with_pin: Annotated[bool, typer.Option("--pin", help="Verify the user with the PIN.")] = False,
    device: DeviceOption = None,
    pin_stdin: PinStdin = False,
) -> None:
    """Register the key with a relying party: the key makes a credential (touch it), and
    python-fido2's server checks the attestation and stores the public key in OUT."""
    server = _server(rp)
    options, state = server.register_begin(
        PublicKeyCredentialUserEntity(name=user, id=secrets.token_bytes(16), display_name=user),
        resident_key_requirement=(
            ResidentKeyRequirement.REQUIRED if resident else ResidentKeyRequirement.DISCOURAGED
        ),
        user_verification=(
            UserVerificationRequirement.REQUIRED
            if with_pin
            else UserVerificationRequirement.DISCOURAGED
        ),
    )
    pin = secret("PIN", pin_stdin) if with_pin else None
    with fido_session(device) as session:
        response = session.make_credential(options.public_key, origin=f"https://{rp}", pin=pin)
    with device_errors():
        auth_data = server.register_complete(state, response)
    credential = auth_data.credential_data
    if credential is None:
        raise fail("the key returned no credential")
    record: dict[str, Any] = {
        "rp": rp,
        "user": user,
        "credential_id": websafe_encode(credential.credential_id),
        "credential_data": websafe_encode(bytes(credential)),
        "aaguid": str(credential.aaguid),
        "counter": auth_data.counter,
    }
    out.write_text(json.dumps(record, indent=2) + "\n", "utf-8")
    Listener.emit(Event(DeviceEvent.DONE))
    typer.echo(f"registered credential {record['credential_id']} (counter {auth_data.counter})")


@fido_app.command("authenticate")
def fido_authenticate(
    credential: Annotated[Path, typer.Option(help="A credential file written by 'register'.")],
    with_pin: Annotated[bool, typer.Option("--pin", help="Verify the user with the PIN.")] = False,
    device: DeviceOption = None,
    pin_stdin: PinStdin = False,
) -> None:
    """Authenticate with a registered credential: the key signs a fresh challenge (touch it)
    and python-fido2's server verifies the signature and counter."""
    try:
        record = json.loads(credential.read_text("utf-8"))
        stored = AttestedCredentialData(websafe_decode(record["credential_data"]))
        rp = str(record["rp"])
    except (OSError, ValueError, KeyError) as exc:
        raise fail(f"unreadable credential file {credential}: {exc}") from exc
    server = _server(rp)
    options, state = server.authenticate_begin(
        [stored],
        user_verification=(
            UserVerificationRequirement.REQUIRED
            if with_pin
            else UserVerificationRequirement.DISCOURAGED
        ),
    )
    pin = secret("PIN", pin_stdin) if with_pin else None
    with fido_session(device) as session:
        response = session.get_assertion(options.public_key, origin=f"https://{rp}", pin=pin)
    with device_errors():
        server.authenticate_complete(state, [stored], response)
    counter = response.response.authenticator_data.counter
    previous = int(record.get("counter", 0))
    if counter and counter <= previous:
        raise fail(f"signature counter went from {previous} to {counter}: the key may be cloned", 3)
    record["counter"] = counter
    credential.write_text(json.dumps(record, indent=2) + "\n", "utf-8")
    Listener.emit(Event(DeviceEvent.DONE))
    typer.echo(f"authenticated: signature verified, counter {counter}")


# --- with the akkreditiv service --------------------------------------------------------------

UrlOption = Annotated[
    str, typer.Option("--url", help="The akkreditiv service, e.g. http://127.0.0.1:8000.")
]
OriginOption = Annotated[
    str | None,
    typer.Option(
        help="The web origin the browser would report (one of the service's rp_origins; "
        "default: the URL, with 127.0.0.1 written as localhost).",
        show_default=False,
    ),
]


def service_origin(url: str, origin: str | None) -> str:
    """The origin a browser on ``url`` reports: WebAuthn needs a domain, not an IP address."""
    if origin:
        return origin
    return url.rstrip("/").replace("://127.0.0.1", "://localhost")


def as_json(value: Any) -> dict[str, Any]:
    """A python-fido2 response as the plain JSON a browser would post."""
    result: dict[str, Any] = json.loads(json.dumps(dict(value)))
    return result


def enrol_with_service(
    http: Any, session: FidoSession, identity: str, origin: str, pin: str | None
) -> dict[str, Any]:
    """Register the key for ``identity`` through the service's routes; the new credential."""
    from fido2.webauthn import CredentialCreationOptions

    from akkreditiv.cli.common import call_service

    verification = "required" if pin else "discouraged"
    begun = call_service(
        http,
        f"/identities/{identity}/fido2/register/begin",
        "beginning the registration",
        {"user_verification": verification},
    )
    options = CredentialCreationOptions.from_dict(begun["options"]).public_key
    made = session.make_credential(options, origin=origin, pin=pin)
    credential: dict[str, Any] = call_service(
        http,
        f"/fido2/registrations/{begun['state_id']}/complete",
        "completing the registration",
        {"response": as_json(made)},
    )
    return credential


def login_with_service(
    http: Any, session: FidoSession, transaction: str, origin: str, pin: str | None
) -> list[str]:
    """The FIDO2 factor of an identified login; the factors proven so far."""
    from fido2.webauthn import CredentialRequestOptions

    from akkreditiv.cli.common import call_service

    verification = "required" if pin else "discouraged"
    begun = call_service(
        http,
        f"/authentications/{transaction}/fido2/begin",
        "beginning the login",
        {"user_verification": verification},
    )
    options = CredentialRequestOptions.from_dict(begun["options"]).public_key
    signed = session.get_assertion(options, origin=origin, pin=pin)
    answer = call_service(
        http, f"/authentications/{transaction}/fido2", "logging in", {"response": as_json(signed)}
    )
    return list(answer["factors"])


@fido_app.command("enrol")
def fido_enrol(
    url: UrlOption,
    identity: Annotated[str, typer.Option(help="The id of the identity the key is for.")],
    with_pin: Annotated[bool, typer.Option("--pin", help="Verify the user with the PIN.")] = False,
    origin: OriginOption = None,
    device: DeviceOption = None,
    pin_stdin: PinStdin = False,
) -> None:
    """Register the key with the akkreditiv service for a person (an operator's API key in
    AKKREDITIV_API_KEY or AKKREDITIV_API_KEY_FILE): touch the key when asked."""
    from akkreditiv.cli.common import parse_id, service_client

    identity_id = parse_id(identity, "--identity")
    pin = secret("PIN", pin_stdin) if with_pin else None
    with service_client(url) as http, fido_session(device) as session:
        credential = enrol_with_service(
            http, session, str(identity_id), service_origin(url, origin), pin
        )
    Listener.emit(Event(DeviceEvent.DONE))
    typer.echo(f"credential: {credential['id']} ({credential['state']})")


@fido_app.command("login")
def fido_login(
    url: UrlOption,
    transaction: Annotated[str, typer.Option(help="The id of the login (identified already).")],
    with_pin: Annotated[bool, typer.Option("--pin", help="Verify the user with the PIN.")] = False,
    origin: OriginOption = None,
    device: DeviceOption = None,
    pin_stdin: PinStdin = False,
) -> None:
    """Prove the FIDO2 factor of a login with the key (touch it when asked); prints the
    factors the login has proven so far."""
    from akkreditiv.cli.common import parse_id, service_client

    transaction_id = parse_id(transaction, "--transaction")
    pin = secret("PIN", pin_stdin) if with_pin else None
    with service_client(url) as http, fido_session(device) as session:
        factors = login_with_service(
            http, session, str(transaction_id), service_origin(url, origin), pin
        )
    Listener.emit(Event(DeviceEvent.DONE))
    typer.echo("factors: " + " ".join(factors))
