"""Host-side FIDO2 session over any python-fido2 ``CtapDevice`` (USB HID through pyusb, or NFC
through pcscd): authenticator info, PIN management, registration and authentication, with
every CTAP failure turned into a typed error a person can act on."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from fido2.client import (
    ClientError,
    DefaultClientDataCollector,
    Fido2Client,
    PinRequiredError,
    UserInteraction,
)
from fido2.ctap import CtapDevice, CtapError
from fido2.ctap2.base import Ctap2, Info
from fido2.ctap2.pin import ClientPin
from fido2.webauthn import (
    AuthenticationResponse,
    AuthenticatorAttestationResponse,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialCreationOptions,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialParameters,
    PublicKeyCredentialRequestOptions,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialType,
    PublicKeyCredentialUserEntity,
    RegistrationResponse,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from devices.errors import (
    CredentialExcluded,
    DeviceError,
    FidoError,
    FidoPinBlocked,
    FidoPinInvalid,
    NoCredentials,
    NotSupported,
    OperationCancelled,
    PinAuthBlocked,
    PinNotSet,
    PinRequired,
    TouchTimeout,
)
from devices.events import DeviceEvent, Event, EventSink, event_for_error, ignore

log = logging.getLogger(__name__)
ERR = CtapError.ERR

_SIMPLE: dict[int, type[FidoError]] = {
    ERR.PIN_BLOCKED: FidoPinBlocked,
    ERR.PIN_AUTH_BLOCKED: PinAuthBlocked,
    ERR.PUAT_REQUIRED: PinRequired,
    ERR.PIN_NOT_SET: PinNotSet,
    ERR.USER_ACTION_TIMEOUT: TouchTimeout,
    ERR.ACTION_TIMEOUT: TouchTimeout,
    ERR.KEEPALIVE_CANCEL: OperationCancelled,
    ERR.NO_CREDENTIALS: NoCredentials,
    ERR.CREDENTIAL_EXCLUDED: CredentialExcluded,
    ERR.UNSUPPORTED_OPTION: NotSupported,
    ERR.UNSUPPORTED_ALGORITHM: NotSupported,
    ERR.INVALID_COMMAND: NotSupported,
}

_MESSAGES: dict[int, str] = {
    ERR.PIN_BLOCKED: "the PIN is blocked",
    ERR.PIN_AUTH_BLOCKED: "three wrong PINs in a row",
    ERR.PUAT_REQUIRED: "this key needs its PIN",
    ERR.PIN_NOT_SET: "the key has no PIN",
    ERR.USER_ACTION_TIMEOUT: "nobody touched the key in time",
    ERR.ACTION_TIMEOUT: "nobody touched the key in time",
    ERR.KEEPALIVE_CANCEL: "cancelled",
    ERR.NO_CREDENTIALS: "the key holds no credential for this service",
    ERR.CREDENTIAL_EXCLUDED: "the key is registered already",
    ERR.UNSUPPORTED_OPTION: "the key does not support this option",
    ERR.UNSUPPORTED_ALGORITHM: "the key supports none of the algorithms asked for",
    ERR.INVALID_COMMAND: "the key does not support this command",
}


def fido_error(exc: BaseException, retries: Callable[[], int | None] | None = None) -> DeviceError:
    """The typed error for a python-fido2 exception (CtapError, or ClientError wrapping one)."""
    cause: BaseException | None = exc
    if isinstance(exc, PinRequiredError):
        return PinRequired(ERR.PUAT_REQUIRED, "this key needs its PIN")
    if isinstance(exc, ClientError):
        cause = exc.cause if isinstance(exc.cause, BaseException) else None
        if cause is None:
            if exc.code == ClientError.ERR.TIMEOUT:
                return TouchTimeout(ERR.USER_ACTION_TIMEOUT, "nobody touched the key in time")
            if exc.code == ClientError.ERR.DEVICE_INELIGIBLE:
                return NoCredentials(ERR.NO_CREDENTIALS, f"the key cannot do this: {exc}")
            return FidoError(ERR.OTHER, f"the request was refused: {exc}")
    if isinstance(cause, DeviceError):
        return cause
    if isinstance(cause, CtapError):
        code = int(cause.code)
        if code == ERR.PIN_INVALID:
            left = None
            if retries is not None:
                with contextlib.suppress(Exception):
                    left = retries()
            return FidoPinInvalid(left)
        kind = _SIMPLE.get(code)
        if kind is not None:
            return kind(code, _MESSAGES[code])
        return FidoError(code, f"the security key answered {cause.code!s}")
    return FidoError(ERR.OTHER, f"the security key failed: {cause!r}")


@dataclass
class Interaction(UserInteraction):
    """What the client asks of the person: touch the key, enter the PIN. ``on_touch`` lets a
    caller (the speech layer) say 'touch your key now'."""

    pin: str | None = None
    on_touch: Callable[[], None] | None = None

    def prompt_up(self) -> None:
        if self.on_touch is not None:
            self.on_touch()

    def request_pin(self, permissions: Any, rp_id: str | None) -> str | None:
        return self.pin

    def request_uv(self, permissions: Any, rp_id: str | None) -> bool:
        return True


@dataclass(frozen=True)
class Registration:
    credential_id: bytes
    response: RegistrationResponse

    @property
    def attestation(self) -> AuthenticatorAttestationResponse:
        return self.response.response


class FidoSession:
    """One conversation with a FIDO2 authenticator."""

    def __init__(
        self,
        device: CtapDevice,
        *,
        on_touch: Callable[[], None] | None = None,
        events: EventSink = ignore,
    ) -> None:
        self.device = device
        self._events = events
        self._on_touch = on_touch
        try:
            self._ctap2 = Ctap2(device)
        except (CtapError, ValueError) as exc:
            raise NotSupported(ERR.INVALID_COMMAND, "this key speaks only U2F (CTAP1)") from exc

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (CtapError, ClientError) as exc:
            error = fido_error(exc, self._retries_or_none)
            self._events(event_for_error(error, device="key"))
            error.announced = True
            raise error from exc

    def _retries_or_none(self) -> int | None:
        return self.pin_retries()

    @property
    def info(self) -> Info:
        return self._ctap2.info

    def refresh_info(self) -> Info:
        with self._errors():
            return self._ctap2.get_info()

    @property
    def pin_is_set(self) -> bool:
        return bool(self.refresh_info().options.get("clientPin"))

    def _client_pin(self) -> ClientPin:
        return ClientPin(self._ctap2)

    def pin_retries(self) -> int:
        with self._errors():
            retries, _ = self._client_pin().get_pin_retries()
            return int(retries)

    def set_pin(self, pin: str) -> None:
        with self._errors():
            self._client_pin().set_pin(pin)

    def change_pin(self, old: str, new: str) -> None:
        with self._errors():
            self._client_pin().change_pin(old, new)

    def on_touch(self) -> None:
        """The key waits for a touch (it said so with a KEEPALIVE)."""
        self._events(Event(DeviceEvent.TOUCH_KEY))
        if self._on_touch is not None:
            self._on_touch()

    def _client(self, origin: str, pin: str | None) -> Fido2Client:
        return Fido2Client(
            self.device,
            DefaultClientDataCollector(origin),
            user_interaction=Interaction(pin, self.on_touch),
        )

    def register(
        self,
        rp_id: str,
        user_name: str,
        user_id: bytes,
        challenge: bytes,
        *,
        origin: str | None = None,
        pin: str | None = None,
        resident: bool = False,
        exclude: Iterable[bytes] = (),
        algorithms: Sequence[int] = (-7, -8),
    ) -> Registration:
        """Make a credential for ``rp_id``; the key asks for a touch."""
        options = PublicKeyCredentialCreationOptions(
            rp=PublicKeyCredentialRpEntity(name=rp_id, id=rp_id),
            user=PublicKeyCredentialUserEntity(name=user_name, id=user_id, display_name=user_name),
            challenge=challenge,
            pub_key_cred_params=[
                PublicKeyCredentialParameters(type=PublicKeyCredentialType.PUBLIC_KEY, alg=alg)
                for alg in algorithms
            ],
            exclude_credentials=[
                PublicKeyCredentialDescriptor(type=PublicKeyCredentialType.PUBLIC_KEY, id=cid)
                for cid in exclude
            ],
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=(
                    ResidentKeyRequirement.REQUIRED
                    if resident
                    else ResidentKeyRequirement.DISCOURAGED
                ),
                user_verification=(
                    UserVerificationRequirement.REQUIRED
                    if pin
                    else UserVerificationRequirement.DISCOURAGED
                ),
            ),
        )
        response = self.make_credential(options, origin=origin or f"https://{rp_id}", pin=pin)
        return Registration(response.raw_id, response)

    def make_credential(
        self, options: PublicKeyCredentialCreationOptions, *, origin: str, pin: str | None = None
    ) -> RegistrationResponse:
        """WebAuthn create() with the given options, as a browser would call it."""
        with self._errors():
            return self._client(origin, pin).make_credential(options)

    def get_assertion(
        self, options: PublicKeyCredentialRequestOptions, *, origin: str, pin: str | None = None
    ) -> AuthenticationResponse:
        """WebAuthn get() with the given options; the first assertion if several match."""
        with self._errors():
            return self._client(origin, pin).get_assertion(options).get_response(0)

    def authenticate(
        self,
        rp_id: str,
        challenge: bytes,
        credential_ids: Iterable[bytes] = (),
        *,
        origin: str | None = None,
        pin: str | None = None,
    ) -> AuthenticationResponse:
        """Get an assertion for ``rp_id``; with no credential IDs, discoverable credentials."""
        options = PublicKeyCredentialRequestOptions(
            challenge=challenge,
            rp_id=rp_id,
            allow_credentials=[
                PublicKeyCredentialDescriptor(type=PublicKeyCredentialType.PUBLIC_KEY, id=cid)
                for cid in credential_ids
            ],
            user_verification=(
                UserVerificationRequirement.REQUIRED
                if pin
                else UserVerificationRequirement.DISCOURAGED
            ),
        )
        return self.get_assertion(options, origin=origin or f"https://{rp_id}", pin=pin)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.device.close()
