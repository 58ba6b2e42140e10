"""Every CTAP failure a person can act on becomes its own typed error."""

from __future__ import annotations

import pytest
from fido2.client import ClientError, PinRequiredError
from fido2.ctap import CtapError

from devices.errors import (
    CredentialExcluded,
    DeviceRemoved,
    FidoError,
    FidoPinBlocked,
    FidoPinInvalid,
    NoCredentials,
    NotSupported,
    OperationCancelled,
    PinAuthBlocked,
    PinError,
    PinNotSet,
    PinRequired,
    TouchTimeout,
)
from devices.tokens.fido import fido_error

ERR = CtapError.ERR


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (ERR.PIN_BLOCKED, FidoPinBlocked),
        (ERR.PIN_AUTH_BLOCKED, PinAuthBlocked),
        (ERR.PUAT_REQUIRED, PinRequired),
        (ERR.PIN_NOT_SET, PinNotSet),
        (ERR.USER_ACTION_TIMEOUT, TouchTimeout),
        (ERR.KEEPALIVE_CANCEL, OperationCancelled),
        (ERR.NO_CREDENTIALS, NoCredentials),
        (ERR.CREDENTIAL_EXCLUDED, CredentialExcluded),
        (ERR.UNSUPPORTED_OPTION, NotSupported),
        (ERR.UNSUPPORTED_ALGORITHM, NotSupported),
        (ERR.INVALID_COMMAND, NotSupported),
    ],
)
def test_fido_error_maps_ctap_status_to_type(code: int, kind: type[FidoError]) -> None:
    error = fido_error(CtapError(code))
    assert type(error) is kind
    assert isinstance(error, FidoError)
    assert error.code == code
    assert error.hint or str(error)


def test_fido_error_pin_invalid_asks_for_tries_left() -> None:
    error = fido_error(CtapError(ERR.PIN_INVALID), retries=lambda: 5)
    assert isinstance(error, FidoPinInvalid)
    assert isinstance(error, PinError)
    assert error.retries_left == 5
    assert "5 tries left" in str(error)


def test_fido_error_pin_invalid_without_retry_count_still_typed() -> None:
    def broken() -> int:
        raise CtapError(ERR.OTHER)

    error = fido_error(CtapError(ERR.PIN_INVALID), retries=broken)
    assert isinstance(error, FidoPinInvalid)
    assert error.retries_left is None


def test_fido_error_unwraps_client_error_cause() -> None:
    wrapped = ClientError(ClientError.ERR.DEVICE_INELIGIBLE, CtapError(ERR.NO_CREDENTIALS))
    assert isinstance(fido_error(wrapped), NoCredentials)


def test_fido_error_keeps_device_errors_from_the_transport() -> None:
    removed = DeviceRemoved("the token was unplugged")
    assert fido_error(ClientError(ClientError.ERR.OTHER_ERROR, removed)) is removed


def test_fido_error_pin_required_error_from_client() -> None:
    assert isinstance(fido_error(PinRequiredError()), PinRequired)


def test_fido_error_client_timeout_without_cause_is_touch_timeout() -> None:
    assert isinstance(fido_error(ClientError(ClientError.ERR.TIMEOUT)), TouchTimeout)


def test_fido_error_unknown_status_keeps_code() -> None:
    error = fido_error(CtapError(ERR.INVALID_PARAMETER))
    assert type(error) is FidoError
    assert error.code == ERR.INVALID_PARAMETER
