"""``akkreditiv devices piv``: use a PIV smartcard: PIN, PUK, signing, and enrolment and login
with the akkreditiv service."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from akkreditiv.cli.common import (
    Listener,
    PinStdin,
    call_service,
    confirmed,
    device_errors,
    fail,
    parse_id,
    secret,
    service_client,
)
from devices.errors import ApduError, DeviceError, FileNotFound, NoCard
from devices.events import DeviceEvent, Event
from devices.protocol.piv import DEFAULT_MANAGEMENT_KEY, Algorithm, Slot
from devices.tokens.piv import PivSession, key_algorithm
from devices.transports.pcsc import PcscConnection, PcscContext

if TYPE_CHECKING:
    pass

piv_app = typer.Typer(
    help="Use a PIV smartcard: PIN, PUK, signing; enrol it with the service and log in.",
    no_args_is_help=True,
)

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


# --- enrolment and login with the service -----------------------------------------------------


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


UrlOption = Annotated[
    str, typer.Option("--url", help="The akkreditiv service, e.g. http://127.0.0.1:8000.")
]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@piv_app.command("enrol")
def piv_enrol(
    url: UrlOption,
    identity: Annotated[
        str | None,
        typer.Option(
            help="The id of the identity the card is for (an operator's enrolment: needs "
            "the operator's API key in AKKREDITIV_API_KEY).",
            show_default=False,
        ),
    ] = None,
    enrolment: Annotated[
        str | None,
        typer.Option(
            help="The enrolment a citizen's account page began (its command shows it); "
            "with --code, no API key is needed.",
            show_default=False,
        ),
    ] = None,
    code: Annotated[
        str | None,
        typer.Option(
            help="The enrolment code the account page shows (e.g. ABCD-EFGH-JKLM).",
            show_default=False,
        ),
    ] = None,
    management_key: Annotated[
        str | None,
        typer.Option(help="The card's management key as hex (default: the PIV default key)."),
    ] = None,
    management_alg: Annotated[
        ManagementAlg, typer.Option(help="The management key's algorithm.")
    ] = ManagementAlg.tdes,
    reader: ReaderOption = None,
    pin_stdin: PinStdin = False,
) -> None:
    """Enrol the card with the service: a new key made on the card in slot 9A signs the
    service's challenge (after the PIN), and the certificate the service issues for it is
    written to the card. Any key and certificate in 9A are replaced. An operator names the
    identity (--identity) and the service begins the enrolment; a citizen gives the
    enrolment and code their account page shows (--enrolment, --code) instead."""
    from server.services.piv.card import enrol_message
    from server.services.piv.enrolment import code_challenge

    identity_id, begun_by_page, compact = _enrolment_target(identity, enrolment, code)
    algorithm = management_alg.algorithm
    try:
        key = bytes.fromhex(management_key) if management_key else DEFAULT_MANAGEMENT_KEY
    except ValueError:
        raise fail("--management-key takes hex digits") from None
    if len(key) != algorithm.key_length:
        raise fail(f"a {management_alg.value} management key is {algorithm.key_length} bytes")
    with service_client(url) as http, piv_session(reader) as session:
        card_id = session.chuid().serial
        session.authenticate(key, algorithm)
        if begun_by_page is None:
            begun = call_service(
                http, f"/identities/{identity_id}/piv/enrol/begin", "beginning the enrolment"
            )
            state_id = uuid.UUID(begun["state_id"])
            challenge = base64.b64decode(begun["challenge"])
        else:
            # The page began it: its challenge is the code's digest (nothing to ask for).
            state_id, challenge = begun_by_page, code_challenge(compact)
        Listener.emit(Event(DeviceEvent.ENTER_PIN))
        session.verify_pin(secret("PIN", pin_stdin))
        public_key = session.generate_key(Slot.AUTHENTICATION)
        signature = session.sign(
            Slot.AUTHENTICATION, enrol_message(state_id, challenge), key_algorithm(public_key)
        )
        proof = _attestation_fields(session)
        enrolled = call_service(
            http,
            f"/piv/enrolments/{state_id}/complete",
            "completing the enrolment",
            {
                "public_key": _b64(
                    public_key.public_bytes(
                        serialization.Encoding.DER,
                        serialization.PublicFormat.SubjectPublicKeyInfo,
                    )
                ),
                "signature": _b64(signature),
                "card_id": card_id,
                **proof,
                **({"code": compact} if begun_by_page is not None else {}),
            },
        )
        certificate = x509.load_der_x509_certificate(base64.b64decode(enrolled["certificate"]))
        credential = enrolled["credential"]["id"]
        try:
            # Authenticated again: some cards forget the management key after a signature.
            session.authenticate(key, algorithm)
            session.put_certificate(Slot.AUTHENTICATION, certificate)
        except DeviceError:
            typer.secho(
                f"The service enrolled the card as credential {credential}, but writing its "
                "certificate to the card failed: mark that credential revoked and enrol again.",
                err=True,
            )
            raise
    Listener.emit(Event(DeviceEvent.DONE))
    typer.echo(f"credential: {credential}")
    typer.echo(f"certificate serial: {certificate.serial_number:040x}")
    typer.echo(f"subject: {certificate.subject.rfc4514_string()}")
    typer.echo("The certificate is in slot 9a.")


@piv_app.command("login")
def piv_login(
    url: UrlOption,
    transaction: Annotated[str, typer.Option(help="The id of the login (identified already).")],
    reader: ReaderOption = None,
    pin_stdin: PinStdin = False,
    origin: Annotated[
        str | None,
        typer.Option(
            help="The service origin to sign for (default: the URL, with 127.0.0.1 written "
            "as localhost); a relaying site gets a signature for its own origin, which the "
            "real service refuses.",
            show_default=False,
        ),
    ] = None,
    pairing: Annotated[
        str | None,
        typer.Option(
            help="The pairing code the login's smartcard page shows (e.g. ABCD-EFGH-JKLM): "
            "needed when the login was opened in a browser, which it pairs this program with.",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="Sign without asking whom the login is for (for test rigs that began the "
            "login themselves); it is still shown.",
        ),
    ] = False,
) -> None:
    """Log in with the card: shows whom the login is for, at which level and how it was
    opened, and asks before the card signs (default no; --yes skips the question; with
    --pin-stdin the answer is the line before the PIN, y or yes). Then, after the PIN, its
    9A key signs the service's challenge for this login and the service's origin, and the
    service checks the signature, the certificate and that the card is in use. Prints the
    factors the login has proven so far."""
    from akkreditiv.cli.fido import service_origin
    from server.services.piv.card import login_message

    signed_origin = service_origin(url, origin)
    transaction_id = parse_id(transaction, "--transaction")
    paired = _pairing(pairing)
    with service_client(url) as http, piv_session(reader) as session:
        certificate = session.certificate(Slot.AUTHENTICATION)
        if certificate is None:
            raise fail("slot 9a holds no certificate: enrol the card first (devices piv enrol)")
        algorithm = key_algorithm(certificate.public_key())
        begun = call_service(
            http,
            f"/authentications/{transaction_id}/piv/begin",
            "beginning the login",
            paired or None,
        )
        challenge = base64.b64decode(begun["challenge"])
        # A login id and pairing code may be a phisher's: the person sees whom the card
        # would log them in to, and says yes, before the PIN is asked.
        if not _login_confirmed(_LoginContext.of(begun), yes=yes, pin_stdin=pin_stdin):
            raise fail("you did not confirm the login: the card signed nothing")
        Listener.emit(Event(DeviceEvent.ENTER_PIN))
        session.verify_pin(secret("PIN", pin_stdin))
        signature = session.sign(
            Slot.AUTHENTICATION,
            login_message(transaction_id, challenge, signed_origin),
            algorithm,
        )
        answer = call_service(
            http,
            f"/authentications/{transaction_id}/piv",
            "logging in",
            {
                "certificate": _b64(certificate.public_bytes(serialization.Encoding.DER)),
                "signature": _b64(signature),
                "origin": signed_origin,
                **paired,
            },
        )
    Listener.emit(Event(DeviceEvent.DONE))
    typer.echo("factors: " + " ".join(answer["factors"]))


@dataclass(frozen=True)
class _LoginContext:
    """What ``piv/begin`` says of the login the card is about to sign."""

    provider: str
    provider_id: str
    level: str
    begun_at: dt.datetime
    in_browser: bool

    @classmethod
    def of(cls, begun: dict[str, Any]) -> _LoginContext:
        try:
            return cls(
                provider=_printable(begun["service_provider_name"]),
                provider_id=_printable(begun["service_provider"]),
                level=_printable(begun["level"]),
                begun_at=dt.datetime.fromisoformat(str(begun["begun_at"])).astimezone(),
                in_browser=begun["paired_with_browser"] is True,
            )
        except (KeyError, TypeError, ValueError):
            raise fail(
                "the service did not say whom this login is for: the card signed nothing", 3
            ) from None

    @property
    def began(self) -> str:
        """The local time of day the login began, as said and shown (HH:MM)."""
        return self.begun_at.strftime("%H:%M")


def _printable(value: object) -> str:
    """A name the service sent, as shown: no control characters (no terminal escapes)."""
    return "".join(ch for ch in str(value) if ch.isprintable())


def _login_confirmed(context: _LoginContext, *, yes: bool, pin_stdin: bool) -> bool:
    """Show (and say) whom the login is for, at which level and how it was opened; then the
    person's answer, or yes with ``--yes``."""
    named = context.provider
    if context.provider_id != context.provider:
        named += f" ({context.provider_id})"
    opened = (
        "was opened in a browser, which this program is paired with by the code you gave"
        if context.in_browser
        else "no browser has opened it"
    )
    # The level by its name, as the pages and the spoken prompt write it ("level High").
    typer.echo(f"You are logging in to {named} at level {context.level.capitalize()}.")
    typer.echo(f"The login began at {context.began} and {opened}.")
    typer.echo(
        "Go on only if you began this login yourself: whoever hands you a login's id or "
        "pairing code to sign is logging in as you."
    )
    Listener.emit(
        Event(
            DeviceEvent.CONFIRM_LOGIN,
            {
                "provider": context.provider,
                "level": context.level,
                "began": context.began,
                "in_browser": context.in_browser,
            },
        )
    )
    return yes or confirmed("Sign this login with your card?", pin_stdin)


def _attestation_fields(session: PivSession) -> dict[str, Any]:
    """The card's proof that it generated the key in 9A (its attestation, the attestation
    key's certificate, its serial), as the enrolment sends it. A card that cannot attest sends
    none, and the service refuses the key as not generated on a card."""
    try:
        attestation = session.attest(Slot.AUTHENTICATION)
    except ApduError:
        return {}
    der = serialization.Encoding.DER
    serial = session.serial()
    return {
        "attestation": _b64(attestation.certificate.public_bytes(der)),
        "attestation_intermediate": _b64(attestation.intermediate.public_bytes(der)),
        **({"card_serial": serial} if serial is not None else {}),
    }


def _enrolment_target(
    identity: str | None, enrolment: str | None, code: str | None
) -> tuple[uuid.UUID | None, uuid.UUID | None, str]:
    """Who or what ``enrol`` enrols: ``(identity, None, "")`` for an operator's enrolment,
    ``(None, enrolment, code)`` for one a citizen's page began; checked before the card is
    touched."""
    if identity is not None:
        if enrolment is not None or code is not None:
            raise fail("give either --identity, or --enrolment and --code, not both")
        return parse_id(identity, "--identity"), None, ""
    if enrolment is None or code is None:
        raise fail("give --identity (an operator), or --enrolment and --code from the account page")
    state_id = parse_id(enrolment, "--enrolment")
    return None, state_id, _code(code, "--code")


def _code(code: str, option: str) -> str:
    """A code the page shows, as sent: normalised, and checked to be the 12 base32 letters
    and digits so a mistyped code costs no PIN try."""
    from server.services.login.gate import PAIRING_LENGTH, normalise_pairing

    compact = normalise_pairing(code)
    if len(compact) != PAIRING_LENGTH or not set(compact) <= _BASE32:
        raise fail(f"{option} takes the {PAIRING_LENGTH} letters and digits the page shows")
    return compact


def _pairing(code: str | None) -> dict[str, str]:
    """The pairing member of the login's requests (none without ``--pairing``), checked
    before the card is touched so a mistyped code costs no PIN try."""
    if code is None:
        return {}
    return {"pairing": _code(code, "--pairing")}


_BASE32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
