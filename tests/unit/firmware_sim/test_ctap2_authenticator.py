"""The simulated FIDO2 key through python-fido2's Ctap2 and ClientPin: getInfo, PIN retries
and blocking (8 total, 3 per power cycle, persisted), both PIN/UV auth protocols, tokens and
their permissions, credentials, signature counters, reset, touch, timeout and cancel."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.cose import CoseKey
from fido2.ctap import CtapError
from fido2.ctap2 import ClientPin, Ctap2
from fido2.ctap2.pin import PinProtocol, PinProtocolV1, PinProtocolV2

from firmware_sim.attach.inprocess_ctap import InProcessCtapDevice
from firmware_sim.tokens.attestation import Manufacturer
from firmware_sim.tokens.ctap2 import (
    MAX_DISCOVERABLE_CREDENTIALS,
    AlwaysPresent,
    Authenticator,
    ButtonPresence,
    FidoState,
    UserPresence,
    load_authenticator,
    new_fido_state,
)

RP = {"id": "example.com", "name": "Example"}
USER = {"id": b"user-1", "name": "alice", "displayName": "Alice"}
ES256 = [{"type": "public-key", "alg": -7}]
CDH = hashlib.sha256(b"client data").digest()
PIN = "1234"
ERR = CtapError.ERR
MC_GA = ClientPin.PERMISSION.MAKE_CREDENTIAL | ClientPin.PERMISSION.GET_ASSERTION
PROTOCOLS = [pytest.param(PinProtocolV1, id="protocol1"), pytest.param(PinProtocolV2, id="v2")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Key:
    path: Path
    presence: UserPresence
    clock: Clock
    auth: Authenticator

    @property
    def ctap(self) -> Ctap2:
        return Ctap2(InProcessCtapDevice(self.auth))

    def pin(self, protocol: type[PinProtocol] = PinProtocolV2) -> ClientPin:
        return ClientPin(self.ctap, protocol())

    def replug(self) -> None:
        """Unplug and plug in again: a new power cycle, state read back from the file."""
        self.auth = load_authenticator(self.path, self.presence, clock=self.clock, up_timeout=0)

    def raw(self, command: int, params: dict[Any, Any] | None = None) -> tuple[int, Any]:
        request = bytes((command,)) + (b"" if params is None else cbor.encode(params))
        response = self.auth.handle_cbor(request)
        return response[0], cbor.decode(response[1:]) if len(response) > 1 else None


def make_key(tmp_path: Path, presence: UserPresence | None = None, **kw: Any) -> Key:
    path = tmp_path / "key.json"
    new_fido_state(path, manufacturer_home=tmp_path / "maker", **kw)
    clock = Clock()
    presence = presence or AlwaysPresent()
    return Key(path, presence, clock, load_authenticator(path, presence, clock=clock, up_timeout=0))


@pytest.fixture
def key(tmp_path: Path) -> Key:
    return make_key(tmp_path)


def token(key: Key, protocol: type[PinProtocol] = PinProtocolV2, **kw: Any) -> bytes:
    permissions = kw.get("permissions", MC_GA)
    return key.pin(protocol).get_pin_token(PIN, permissions, kw.get("rp_id", "example.com"))


def register(key: Key, **kw: Any) -> bytes:
    response = key.ctap.make_credential(
        CDH, kw.pop("rp", RP), kw.pop("user", USER), kw.pop("params", ES256), **kw
    )
    assert response.auth_data.credential_data is not None
    return response.auth_data.credential_data.credential_id


def expect(code: ERR, call: Callable[[], object]) -> None:
    with pytest.raises(CtapError) as caught:
        call()
    assert caught.value.code == code


# --- getInfo --------------------------------------------------------------------------------


def test_get_info_reports_ctap21_capabilities_when_new(key: Key, tmp_path: Path) -> None:
    info = key.ctap.info
    assert info.versions == ["U2F_V2", "FIDO_2_0", "FIDO_2_1"]
    assert info.extensions == []
    assert bytes(info.aaguid) == Manufacturer.load_or_create(tmp_path / "maker").aaguid
    assert info.options == {
        "rk": True,
        "up": True,
        "plat": False,
        "clientPin": False,
        "pinUvAuthToken": True,
        "makeCredUvNotRqd": True,
    }
    assert info.max_msg_size == 1200
    assert info.pin_uv_protocols == [2, 1]
    assert info.max_creds_in_list == 8
    assert info.max_cred_id_length == len(register(key))
    assert info.transports == ["nfc", "usb"]
    assert info.algorithms == [
        {"alg": -7, "type": "public-key"},
        {"alg": -8, "type": "public-key"},
    ]
    assert info.min_pin_length == 4
    assert info.firmware_version > 0
    assert info.remaining_disc_creds == MAX_DISCOVERABLE_CREDENTIALS


def test_get_info_reports_client_pin_when_pin_set(key: Key) -> None:
    key.pin().set_pin(PIN)
    assert key.ctap.info.options["clientPin"] is True


def test_get_info_leaves_out_u2f_when_disabled(tmp_path: Path) -> None:
    key = make_key(tmp_path, u2f=False)
    assert key.ctap.info.versions == ["FIDO_2_0", "FIDO_2_1"]
    assert not key.auth.u2f_enabled


def test_remaining_discoverable_credentials_count_down_when_stored(key: Key) -> None:
    register(key, options={"rk": True})
    assert key.ctap.info.remaining_disc_creds == MAX_DISCOVERABLE_CREDENTIALS - 1


# --- PIN ------------------------------------------------------------------------------------


def test_pin_retries_are_eight_when_new(key: Key) -> None:
    assert key.pin().get_pin_retries() == (8, False)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pin_token_gives_user_verification_with_either_protocol(
    key: Key, protocol: type[PinProtocol]
) -> None:
    key.pin(protocol).set_pin(PIN)
    pin_token = token(key, protocol)
    response = key.ctap.make_credential(
        CDH,
        RP,
        USER,
        ES256,
        options={"rk": True},
        pin_uv_param=protocol().authenticate(pin_token, CDH),
        pin_uv_protocol=protocol.VERSION,
    )
    assert response.auth_data.flags == 0x45  # UP, UV, AT


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_legacy_get_pin_token_works_with_either_protocol(
    key: Key, protocol: type[PinProtocol]
) -> None:
    key.pin(protocol).set_pin(PIN)
    pin_token = key.pin(protocol).get_pin_token(PIN)  # subcommand 0x05, no permissions
    credential_id = register(key)
    response = key.ctap.get_assertion(
        "example.com",
        CDH,
        [{"type": "public-key", "id": credential_id}],
        pin_uv_param=protocol().authenticate(pin_token, CDH),
        pin_uv_protocol=protocol.VERSION,
    )
    assert response.auth_data.flags == 0x05


def test_wrong_pin_three_times_blocks_until_power_up(key: Key) -> None:
    key.pin().set_pin(PIN)
    for _ in range(2):
        expect(ERR.PIN_INVALID, lambda: key.pin().get_pin_token("9999"))
    expect(ERR.PIN_AUTH_BLOCKED, lambda: key.pin().get_pin_token("9999"))
    expect(ERR.PIN_AUTH_BLOCKED, lambda: key.pin().get_pin_token(PIN))
    assert key.pin().get_pin_retries() == (5, True)
    key.auth.power_up()
    assert key.pin().get_pin_token(PIN)
    assert key.pin().get_pin_retries() == (8, False)


def test_eight_wrong_pins_block_pin_even_after_reload(key: Key) -> None:
    key.pin().set_pin(PIN)
    for attempt in range(1, 9):
        expected = ERR.PIN_AUTH_BLOCKED if attempt % 3 == 0 else ERR.PIN_INVALID
        if attempt == 8:
            expected = ERR.PIN_BLOCKED
        expect(expected, lambda: key.pin().get_pin_token("9999"))
        if attempt % 3 == 0:
            key.replug()
    key.replug()
    assert key.pin().get_pin_retries()[0] == 0
    expect(ERR.PIN_BLOCKED, lambda: key.pin().get_pin_token(PIN))
    expect(ERR.PIN_BLOCKED, lambda: key.pin().change_pin(PIN, "5678"))


def test_pin_try_is_saved_before_comparison_when_pin_correct(tmp_path: Path) -> None:
    key = make_key(tmp_path)
    key.pin().set_pin(PIN)
    saved: list[int] = []
    state = key.auth.state

    def persist(state: FidoState) -> None:
        saved.append(state.pin_retries)

    key.auth = Authenticator(state, persist, key.presence, clock=key.clock)
    key.pin().get_pin_token(PIN)
    assert saved == [7, 8]


def test_wrong_pin_is_counted_in_state_file(key: Key) -> None:
    key.pin().set_pin(PIN)
    expect(ERR.PIN_INVALID, lambda: key.pin().get_pin_token("0000"))
    assert json.loads(key.path.read_text())["pin_retries"] == 7


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_change_pin_replaces_old_pin(key: Key, protocol: type[PinProtocol]) -> None:
    key.pin(protocol).set_pin(PIN)
    key.pin(protocol).change_pin(PIN, "new pin")
    expect(ERR.PIN_INVALID, lambda: key.pin(protocol).get_pin_token(PIN))
    assert key.pin(protocol).get_pin_token("new pin")


def test_change_pin_with_wrong_old_pin_counts_a_try(key: Key) -> None:
    key.pin().set_pin(PIN)
    expect(ERR.PIN_INVALID, lambda: key.pin().change_pin("0000", "5678"))
    assert key.pin().get_pin_retries()[0] == 7
    assert key.pin().get_pin_token(PIN)


def test_change_pin_without_pin_answers_pin_not_set(key: Key) -> None:
    expect(ERR.PIN_NOT_SET, lambda: key.pin().change_pin(PIN, "5678"))


def test_set_pin_twice_answers_pin_auth_invalid(key: Key) -> None:
    key.pin().set_pin(PIN)
    expect(ERR.PIN_AUTH_INVALID, lambda: key.pin().set_pin("5678"))


def _set_padded_pin(key: Key, padded: bytes) -> int:
    protocol = PinProtocolV2()
    ctap = key.ctap
    agreement, shared = protocol.encapsulate(ctap.client_pin(2, ClientPin.CMD.GET_KEY_AGREEMENT)[1])
    new_pin_enc = protocol.encrypt(shared, padded)
    status, _ = key.raw(
        0x06,
        {
            1: 2,
            2: ClientPin.CMD.SET_PIN,
            3: dict(agreement),
            4: protocol.authenticate(shared, new_pin_enc),
            5: new_pin_enc,
        },
    )
    return status


@pytest.mark.parametrize(
    ("padded", "status"),
    [
        pytest.param(b"123".ljust(64, b"\0"), ERR.PIN_POLICY_VIOLATION, id="three-digits"),
        pytest.param("ææø".encode().ljust(64, b"\0"), ERR.PIN_POLICY_VIOLATION, id="3-chars"),
        pytest.param(b"7" * 64, ERR.PIN_POLICY_VIOLATION, id="64-bytes"),
        pytest.param(b"1234".ljust(80, b"\0"), ERR.INVALID_PARAMETER, id="80-byte-padding"),
        pytest.param(b"\xff\xfe\xfd\xfc".ljust(64, b"\0"), ERR.PIN_POLICY_VIOLATION, id="utf8"),
        pytest.param(b"7" * 63 + b"\0", ERR.SUCCESS, id="63-bytes"),
        pytest.param("æøåæ".encode().ljust(64, b"\0"), ERR.SUCCESS, id="4-code-points"),
    ],
)
def test_set_pin_applies_policy_when_pin_out_of_bounds(
    key: Key, padded: bytes, status: int
) -> None:
    assert _set_padded_pin(key, padded) == status
    assert key.ctap.get_info().options["clientPin"] is (status == ERR.SUCCESS)


def test_set_pin_with_bad_auth_param_answers_pin_auth_invalid(key: Key) -> None:
    protocol = PinProtocolV1()
    agreement, shared = protocol.encapsulate(
        key.ctap.client_pin(1, ClientPin.CMD.GET_KEY_AGREEMENT)[1]
    )
    new_pin_enc = protocol.encrypt(shared, PIN.encode().ljust(64, b"\0"))
    status, _ = key.raw(0x06, {1: 1, 2: 3, 3: dict(agreement), 4: bytes(16), 5: new_pin_enc})
    assert status == ERR.PIN_AUTH_INVALID


def test_key_agreement_point_off_curve_answers_invalid_parameter(key: Key) -> None:
    bogus = {1: 2, 3: -25, -1: 1, -2: bytes(32), -3: bytes(31) + b"\x01"}
    key.pin().set_pin(PIN)
    status, _ = key.raw(0x06, {1: 2, 2: 5, 3: bogus, 6: bytes(32)})
    assert status == ERR.INVALID_PARAMETER


def test_unsupported_protocol_answers_invalid_parameter(key: Key) -> None:
    assert key.raw(0x06, {1: 3, 2: ClientPin.CMD.GET_KEY_AGREEMENT})[0] == ERR.INVALID_PARAMETER


def test_uv_subcommands_are_invalid_without_builtin_uv(key: Key) -> None:
    assert key.raw(0x06, {1: 2, 2: ClientPin.CMD.GET_UV_RETRIES})[0] == ERR.INVALID_SUBCOMMAND
    assert key.raw(0x06, {1: 2, 2: 0x42})[0] == ERR.INVALID_SUBCOMMAND


@pytest.mark.parametrize(
    "permission",
    [
        ClientPin.PERMISSION.CREDENTIAL_MGMT,
        ClientPin.PERMISSION.BIO_ENROLL,
        ClientPin.PERMISSION.LARGE_BLOB_WRITE,
        ClientPin.PERMISSION.AUTHENTICATOR_CFG,
    ],
)
def test_unsupported_permission_answers_unauthorized_permission(
    key: Key, permission: ClientPin.PERMISSION
) -> None:
    key.pin().set_pin(PIN)
    expect(
        ERR.UNAUTHORIZED_PERMISSION,
        lambda: key.pin().get_pin_token(PIN, permission | ClientPin.PERMISSION.GET_ASSERTION),
    )


def test_zero_permissions_answer_invalid_parameter(key: Key) -> None:
    key.pin().set_pin(PIN)
    expect(ERR.INVALID_PARAMETER, lambda: key.pin().get_pin_token(PIN, ClientPin.PERMISSION(0)))


# --- pinUvAuthToken use ---------------------------------------------------------------------


def _mc_with_token(key: Key, pin_token: bytes, rp: dict[str, str] = RP) -> Any:
    return key.ctap.make_credential(
        CDH,
        rp,
        USER,
        ES256,
        pin_uv_param=PinProtocolV2().authenticate(pin_token, CDH),
        pin_uv_protocol=2,
    )


def test_pin_token_for_another_rp_is_refused(key: Key) -> None:
    key.pin().set_pin(PIN)
    pin_token = token(key)
    expect(ERR.PIN_AUTH_INVALID, lambda: _mc_with_token(key, pin_token, {"id": "other.example"}))


def test_pin_token_without_mc_permission_is_refused_for_make_credential(key: Key) -> None:
    key.pin().set_pin(PIN)
    pin_token = token(key, permissions=ClientPin.PERMISSION.GET_ASSERTION)
    expect(ERR.PIN_AUTH_INVALID, lambda: _mc_with_token(key, pin_token))


def test_pin_token_is_spent_when_operation_collected_touch(key: Key) -> None:
    key.pin().set_pin(PIN)
    pin_token = token(key)
    _mc_with_token(key, pin_token)
    expect(ERR.PIN_AUTH_INVALID, lambda: _mc_with_token(key, pin_token))


def test_pin_token_survives_preflight_without_touch(key: Key) -> None:
    key.pin().set_pin(PIN)
    credential_id = register(key)
    pin_token = token(key)
    key.ctap.get_assertion(
        "example.com",
        bytes(32),
        [{"type": "public-key", "id": credential_id}],
        options={"up": False},
        pin_uv_param=PinProtocolV2().authenticate(pin_token, bytes(32)),
        pin_uv_protocol=2,
    )
    assert _mc_with_token(key, pin_token).auth_data.flags & 0x04


def test_pin_token_expires_when_unused_for_thirty_seconds(key: Key) -> None:
    key.pin().set_pin(PIN)
    pin_token = token(key)
    key.clock.now += 31
    expect(ERR.PIN_AUTH_INVALID, lambda: _mc_with_token(key, pin_token))


def test_pin_token_is_forgotten_when_power_cycled(key: Key) -> None:
    key.pin().set_pin(PIN)
    pin_token = token(key)
    key.auth.power_up()
    expect(ERR.PIN_AUTH_INVALID, lambda: _mc_with_token(key, pin_token))


def test_pin_auth_param_without_protocol_answers_missing_parameter(key: Key) -> None:
    status, _ = key.raw(0x01, {1: CDH, 2: RP, 3: USER, 4: ES256, 8: bytes(32)})
    assert status == ERR.MISSING_PARAMETER


@pytest.mark.parametrize(("pin_set", "status"), [(False, ERR.PIN_NOT_SET), (True, ERR.PIN_INVALID)])
def test_zero_length_pin_auth_answers_pin_state_after_touch(
    tmp_path: Path, pin_set: bool, status: int
) -> None:
    presence = ButtonPresence()
    key = make_key(tmp_path, presence)
    if pin_set:
        key.pin().set_pin(PIN)
    presence.press()
    assert key.raw(0x01, {1: CDH, 2: RP, 3: USER, 4: ES256, 8: b"", 9: 2})[0] == status
    assert not presence.pending_press  # the touch was taken
    assert key.raw(0x02, {1: "example.com", 2: CDH, 6: b"", 7: 2})[0] == ERR.OPERATION_DENIED


# --- makeCredential and getAssertion --------------------------------------------------------


def test_discoverable_credential_without_token_when_pin_set_answers_puat_required(key: Key) -> None:
    key.pin().set_pin(PIN)
    expect(ERR.PUAT_REQUIRED, lambda: register(key, options={"rk": True}))


def test_non_discoverable_credential_needs_no_token_when_pin_set(key: Key) -> None:
    key.pin().set_pin(PIN)
    response = key.ctap.make_credential(CDH, RP, USER, ES256)
    assert response.auth_data.flags == 0x41  # UP and AT, no UV


def test_uv_option_answers_invalid_option_without_builtin_uv(key: Key) -> None:
    expect(ERR.INVALID_OPTION, lambda: register(key, options={"uv": True}))
    expect(
        ERR.INVALID_OPTION, lambda: key.ctap.get_assertion("example.com", CDH, options={"uv": True})
    )


def test_up_false_in_make_credential_answers_invalid_option(key: Key) -> None:
    expect(ERR.INVALID_OPTION, lambda: register(key, options={"up": False}))


def test_rk_option_in_get_assertion_answers_unsupported_option(key: Key) -> None:
    register(key, options={"rk": True})
    expect(
        ERR.UNSUPPORTED_OPTION,
        lambda: key.ctap.get_assertion("example.com", CDH, options={"rk": True}),
    )


def test_unsupported_algorithm_answers_unsupported_algorithm(key: Key) -> None:
    expect(
        ERR.UNSUPPORTED_ALGORITHM,
        lambda: register(key, params=[{"type": "public-key", "alg": -257}]),
    )


def test_first_supported_algorithm_is_chosen_when_several_offered(key: Key) -> None:
    params = [
        {"type": "public-key", "alg": -257},
        {"type": "public-key", "alg": -8},
        {"type": "public-key", "alg": -7},
    ]
    response = key.ctap.make_credential(CDH, RP, USER, params)
    assert response.auth_data.credential_data is not None
    assert response.auth_data.credential_data.public_key[3] == -8


def test_exclude_list_answers_credential_excluded_after_touch(tmp_path: Path) -> None:
    presence = ButtonPresence()
    key = make_key(tmp_path, presence)
    presence.press()
    credential_id = register(key)
    presence.press()
    expect(
        ERR.CREDENTIAL_EXCLUDED,
        lambda: register(key, exclude_list=[{"type": "public-key", "id": credential_id}]),
    )
    assert not presence.pending_press
    # The touch is asked for even when it does not come: still excluded, not a timeout.
    expect(
        ERR.CREDENTIAL_EXCLUDED,
        lambda: register(key, exclude_list=[{"type": "public-key", "id": credential_id}]),
    )


def test_exclude_list_of_another_rp_does_not_exclude(key: Key) -> None:
    other = register(key, rp={"id": "other.example"})
    assert register(key, exclude_list=[{"type": "public-key", "id": other}])


def test_get_assertion_without_credentials_answers_no_credentials(key: Key) -> None:
    expect(ERR.NO_CREDENTIALS, lambda: key.ctap.get_assertion("example.com", CDH))
    unknown = [{"type": "public-key", "id": b"\0" * 63}]
    expect(ERR.NO_CREDENTIALS, lambda: key.ctap.get_assertion("example.com", CDH, unknown))


def test_allow_list_of_unknown_types_finds_no_discoverable_credential(key: Key) -> None:
    register(key, options={"rk": True})
    unknown = [{"type": "future-type", "id": b"1234"}]
    expect(ERR.NO_CREDENTIALS, lambda: key.ctap.get_assertion("example.com", CDH, unknown))


def test_credential_id_of_another_rp_is_refused(key: Key) -> None:
    credential_id = register(key)
    allow = [{"type": "public-key", "id": credential_id}]
    expect(ERR.NO_CREDENTIALS, lambda: key.ctap.get_assertion("other.example", CDH, allow))


def test_credential_id_of_another_key_is_refused(key: Key, tmp_path: Path) -> None:
    other = make_key(tmp_path / "other")
    credential_id = register(other)
    allow = [{"type": "public-key", "id": credential_id}]
    expect(ERR.NO_CREDENTIALS, lambda: key.ctap.get_assertion("example.com", CDH, allow))


def test_assertion_signature_verifies_with_registered_key(key: Key) -> None:
    response = key.ctap.make_credential(CDH, RP, USER, ES256)
    credential = response.auth_data.credential_data
    assert credential is not None
    allow = [{"type": "public-key", "id": credential.credential_id}]
    assertion = key.ctap.get_assertion("example.com", CDH, allow)
    CoseKey.parse(credential.public_key).verify(assertion.auth_data + CDH, assertion.signature)
    assert assertion.auth_data.rp_id_hash == hashlib.sha256(b"example.com").digest()
    assert assertion.auth_data.flags == 0x01
    assert assertion.user is None  # a non-discoverable credential has no stored user


def test_sign_counter_increases_and_survives_reload(key: Key) -> None:
    credential_id = register(key)
    allow = [{"type": "public-key", "id": credential_id}]
    counters = [key.ctap.get_assertion("example.com", CDH, allow).auth_data.counter]
    counters.append(key.ctap.get_assertion("example.com", CDH, allow).auth_data.counter)
    key.replug()
    counters.append(key.ctap.get_assertion("example.com", CDH, allow).auth_data.counter)
    assert counters[0] < counters[1] < counters[2]


def test_up_false_assertion_has_no_up_flag(tmp_path: Path) -> None:
    presence = ButtonPresence()
    key = make_key(tmp_path, presence)
    presence.press()
    credential_id = register(key)
    allow = [{"type": "public-key", "id": credential_id}]
    assertion = key.ctap.get_assertion("example.com", CDH, allow, options={"up": False})
    assert assertion.auth_data.flags == 0x00


def test_discoverable_credentials_are_listed_most_recent_first(key: Key) -> None:
    for name in ("first", "second", "third"):
        register(key, user={"id": name.encode(), "name": name}, options={"rk": True})
    register(key, rp={"id": "other.example"}, options={"rk": True})
    ctap = key.ctap  # one session: a new Ctap2 would send getInfo in between
    first = ctap.get_assertion("example.com", CDH)
    assert first.number_of_credentials == 3
    rest = [ctap.get_next_assertion() for _ in range(2)]
    assert [a.user["id"] for a in [first, *rest]] == [b"third", b"second", b"first"]
    assert all("name" not in a.user for a in [first, *rest])  # no UV, no names
    assert rest[0].number_of_credentials is None
    expect(ERR.NOT_ALLOWED, ctap.get_next_assertion)


def test_user_names_are_returned_when_user_verified(key: Key) -> None:
    key.pin().set_pin(PIN)
    for name in ("first", "second"):
        pin_token = token(key)
        key.ctap.make_credential(
            CDH,
            RP,
            {"id": name.encode(), "name": name, "displayName": name.title()},
            ES256,
            options={"rk": True},
            pin_uv_param=PinProtocolV2().authenticate(pin_token, CDH),
            pin_uv_protocol=2,
        )
    pin_token = token(key)
    ctap = key.ctap
    assertions = ctap.get_assertions(
        "example.com",
        CDH,
        pin_uv_param=PinProtocolV2().authenticate(pin_token, CDH),
        pin_uv_protocol=2,
    )
    assert [a.user for a in assertions] == [
        {"id": b"second", "name": "second", "displayName": "Second"},
        {"id": b"first", "name": "first", "displayName": "First"},
    ]
    assert all(a.auth_data.flags == 0x05 for a in assertions)


def test_get_next_assertion_without_get_assertion_answers_not_allowed(key: Key) -> None:
    expect(ERR.NOT_ALLOWED, key.ctap.get_next_assertion)


def test_get_next_assertion_after_another_command_answers_not_allowed(key: Key) -> None:
    for name in ("first", "second"):
        register(key, user={"id": name.encode()}, options={"rk": True})
    ctap = key.ctap
    ctap.get_assertion("example.com", CDH)
    ctap.get_info()
    expect(ERR.NOT_ALLOWED, ctap.get_next_assertion)


def test_get_next_assertion_after_thirty_seconds_answers_not_allowed(key: Key) -> None:
    for name in ("first", "second"):
        register(key, user={"id": name.encode()}, options={"rk": True})
    ctap = key.ctap
    ctap.get_assertion("example.com", CDH)
    key.clock.now += 31
    expect(ERR.NOT_ALLOWED, ctap.get_next_assertion)


def test_discoverable_credential_is_replaced_when_same_user_registers(key: Key) -> None:
    old = register(key, options={"rk": True})
    new = register(key, options={"rk": True})
    assertion = key.ctap.get_assertion("example.com", CDH)
    assert assertion.credential["id"] == new
    assert assertion.number_of_credentials is None
    allow = [{"type": "public-key", "id": old}]
    expect(ERR.NO_CREDENTIALS, lambda: key.ctap.get_assertion("example.com", CDH, allow))


def test_key_store_full_when_every_slot_used(key: Key) -> None:
    for n in range(MAX_DISCOVERABLE_CREDENTIALS):
        register(key, user={"id": b"user-%d" % n}, options={"rk": True})
    assert key.ctap.get_info().remaining_disc_creds == 0
    expect(
        ERR.KEY_STORE_FULL, lambda: register(key, user={"id": b"one more"}, options={"rk": True})
    )
    assert register(key, options={"rk": True})  # replacing needs no new slot


def test_eddsa_credential_signs_assertions(key: Key) -> None:
    response = key.ctap.make_credential(CDH, RP, USER, [{"type": "public-key", "alg": -8}])
    credential = response.auth_data.credential_data
    assert credential is not None
    assert credential.public_key[3] == -8
    allow = [{"type": "public-key", "id": credential.credential_id}]
    assertion = key.ctap.get_assertion("example.com", CDH, allow)
    CoseKey.parse(credential.public_key).verify(assertion.auth_data + CDH, assertion.signature)


def test_attestation_is_signed_by_batch_key(key: Key, tmp_path: Path) -> None:
    response = key.ctap.make_credential(CDH, RP, USER, ES256)
    maker = Manufacturer.load_or_create(tmp_path / "maker")
    assert response.fmt == "packed"
    assert response.att_stmt["alg"] == -7
    assert response.att_stmt["x5c"] == [maker.batch_certificate_der]
    maker.batch_key.public_key().verify(
        response.att_stmt["sig"], response.auth_data + CDH, ec.ECDSA(hashes.SHA256())
    )


# --- reset ----------------------------------------------------------------------------------


def test_reset_within_ten_seconds_erases_credentials_and_pin(key: Key) -> None:
    key.pin().set_pin(PIN)
    credential_id = register(key)
    key.clock.now += 9.5
    key.ctap.reset()
    info = key.ctap.get_info()
    assert info.options["clientPin"] is False
    assert info.remaining_disc_creds == MAX_DISCOVERABLE_CREDENTIALS
    allow = [{"type": "public-key", "id": credential_id}]
    expect(ERR.NO_CREDENTIALS, lambda: key.ctap.get_assertion("example.com", CDH, allow))
    saved = json.loads(key.path.read_text())
    assert saved["pin_verifier"] is None
    assert saved["sign_count"] == 0


def test_reset_after_ten_seconds_answers_not_allowed(key: Key) -> None:
    key.pin().set_pin(PIN)
    key.clock.now += 10.5
    expect(ERR.NOT_ALLOWED, key.ctap.reset)
    assert key.ctap.get_info().options["clientPin"] is True
    key.auth.power_up()
    key.ctap.reset()
    assert key.ctap.get_info().options["clientPin"] is False


def test_reset_without_touch_answers_user_action_timeout(tmp_path: Path) -> None:
    key = make_key(tmp_path, ButtonPresence())
    expect(ERR.USER_ACTION_TIMEOUT, key.ctap.reset)


# --- touch ----------------------------------------------------------------------------------


def test_touch_timeout_answers_user_action_timeout(tmp_path: Path) -> None:
    key = make_key(tmp_path, ButtonPresence())
    expect(ERR.USER_ACTION_TIMEOUT, lambda: register(key))
    expect(ERR.USER_ACTION_TIMEOUT, key.ctap.selection)


def test_keepalive_reports_up_needed_while_waiting_for_touch(tmp_path: Path) -> None:
    presence = ButtonPresence()
    path = tmp_path / "key.json"
    new_fido_state(path, manufacturer_home=tmp_path / "maker")
    auth = load_authenticator(path, presence, up_timeout=30.0)
    statuses: list[int] = []

    def keepalive(status: int) -> None:
        statuses.append(status)
        if status == 2:
            presence.press()  # the user touches the key once it blinks

    request = b"\x01" + cbor.encode({1: CDH, 2: RP, 3: USER, 4: ES256})
    assert auth.handle_cbor(request, keepalive)[0] == 0
    assert statuses == [2, 1]  # waiting for the touch, then working on the key


def test_cancel_while_waiting_answers_keepalive_cancel(tmp_path: Path) -> None:
    presence = ButtonPresence()
    path = tmp_path / "key.json"
    new_fido_state(path, manufacturer_home=tmp_path / "maker")
    auth = load_authenticator(path, presence, up_timeout=30.0)
    request = b"\x01" + cbor.encode({1: CDH, 2: RP, 3: USER, 4: ES256})
    assert auth.handle_cbor(request, lambda status: presence.cancel()) == b"\x2d"
    # The cancel belonged to that request; the next one waits for a touch again.
    presence.press()
    assert auth.handle_cbor(request)[0] == 0


def test_cancel_event_of_ctap_device_ends_touch_wait(tmp_path: Path) -> None:
    import threading

    presence = ButtonPresence()
    path = tmp_path / "key.json"
    new_fido_state(path, manufacturer_home=tmp_path / "maker")
    auth = load_authenticator(path, presence, up_timeout=30.0)
    event = threading.Event()
    event.set()
    ctap = Ctap2(InProcessCtapDevice(auth))
    with pytest.raises(CtapError) as caught:
        ctap.selection(event=event)
    assert caught.value.code == ERR.KEEPALIVE_CANCEL


def test_selection_succeeds_when_touched(tmp_path: Path) -> None:
    presence = ButtonPresence()
    key = make_key(tmp_path, presence)
    presence.press()
    key.ctap.selection()
    assert not presence.pending_press
