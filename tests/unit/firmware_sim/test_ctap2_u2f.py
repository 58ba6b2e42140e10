"""CTAP1/U2F on the simulated FIDO2 key through python-fido2's Ctap1: registration with batch
attestation, authentication, check-only, touch handling without blocking, raw APDU errors,
and U2F key handles usable through CTAP2."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fido2 import cbor
from fido2.ctap1 import ApduError, Ctap1
from fido2.ctap2 import Ctap2
from fido2.hid import CAPABILITY, CTAPHID

from firmware_sim.attach.inprocess_ctap import InProcessCtapDevice
from firmware_sim.tokens.attestation import Manufacturer
from firmware_sim.tokens.ctap2 import (
    AlwaysPresent,
    Authenticator,
    ButtonPresence,
    UserPresence,
    load_authenticator,
    new_fido_state,
)

APP = hashlib.sha256(b"example.com").digest()
CHALLENGE = hashlib.sha256(b"client data").digest()


def make_auth(
    tmp_path: Path, presence: UserPresence | None = None, *, u2f: bool = True
) -> Authenticator:
    path = tmp_path / "key.json"
    new_fido_state(path, manufacturer_home=tmp_path / "maker", u2f=u2f)
    return load_authenticator(path, presence or AlwaysPresent())


@pytest.fixture
def auth(tmp_path: Path) -> Authenticator:
    return make_auth(tmp_path)


def ctap1(auth: Authenticator) -> Ctap1:
    return Ctap1(InProcessCtapDevice(auth))


def sw(auth: Authenticator, apdu: str) -> int:
    return int.from_bytes(auth.handle_u2f(bytes.fromhex(apdu))[-2:], "big")


def test_version_is_u2f_v2(auth: Authenticator) -> None:
    assert ctap1(auth).get_version() == "U2F_V2"


def test_register_is_attested_by_batch_certificate(auth: Authenticator, tmp_path: Path) -> None:
    registration = ctap1(auth).register(CHALLENGE, APP)
    registration.verify(APP, CHALLENGE)
    maker = Manufacturer.load_or_create(tmp_path / "maker")
    assert registration.certificate == maker.batch_certificate_der
    assert len(registration.public_key) == 65
    assert registration.public_key[0] == 0x04


def test_authenticate_signature_verifies_with_registration_key(auth: Authenticator) -> None:
    registration = ctap1(auth).register(CHALLENGE, APP)
    first = ctap1(auth).authenticate(CHALLENGE, APP, registration.key_handle)
    first.verify(APP, CHALLENGE, registration.public_key)
    second = ctap1(auth).authenticate(CHALLENGE, APP, registration.key_handle)
    second.verify(APP, CHALLENGE, registration.public_key)
    assert first.user_presence == 0x01
    assert second.counter > first.counter


def test_check_only_answers_conditions_not_satisfied_for_own_handle(auth: Authenticator) -> None:
    registration = ctap1(auth).register(CHALLENGE, APP)
    with pytest.raises(ApduError) as caught:
        ctap1(auth).authenticate(CHALLENGE, APP, registration.key_handle, check_only=True)
    assert caught.value.code == 0x6985


def test_check_only_answers_wrong_data_for_unknown_handle(auth: Authenticator) -> None:
    with pytest.raises(ApduError) as caught:
        ctap1(auth).authenticate(CHALLENGE, APP, bytes(63), check_only=True)
    assert caught.value.code == 0x6A80


def test_key_handle_of_another_application_answers_wrong_data(auth: Authenticator) -> None:
    registration = ctap1(auth).register(CHALLENGE, APP)
    other = hashlib.sha256(b"other.example").digest()
    with pytest.raises(ApduError) as caught:
        ctap1(auth).authenticate(CHALLENGE, other, registration.key_handle)
    assert caught.value.code == 0x6A80


def test_register_without_touch_answers_conditions_not_satisfied(tmp_path: Path) -> None:
    presence = ButtonPresence()
    auth = make_auth(tmp_path, presence)
    with pytest.raises(ApduError) as caught:
        ctap1(auth).register(CHALLENGE, APP)
    assert caught.value.code == 0x6985
    presence.press()  # the host polls; the user touches; the next poll succeeds
    ctap1(auth).register(CHALLENGE, APP).verify(APP, CHALLENGE)
    assert not presence.pending_press


def test_authenticate_without_touch_answers_conditions_not_satisfied(tmp_path: Path) -> None:
    presence = ButtonPresence()
    auth = make_auth(tmp_path, presence)
    presence.press()
    registration = ctap1(auth).register(CHALLENGE, APP)
    with pytest.raises(ApduError) as caught:
        ctap1(auth).authenticate(CHALLENGE, APP, registration.key_handle)
    assert caught.value.code == 0x6985


def test_dont_enforce_user_presence_signs_without_touch(tmp_path: Path) -> None:
    presence = ButtonPresence()
    auth = make_auth(tmp_path, presence)
    presence.press()
    registration = ctap1(auth).register(CHALLENGE, APP)
    data = CHALLENGE + APP + bytes((len(registration.key_handle),)) + registration.key_handle
    response = ctap1(auth).send_apdu(ins=0x02, p1=0x08, data=data)
    assert response[0] == 0x00  # user presence flag clear
    assert len(response) > 5


def test_u2f_key_handle_is_usable_through_ctap2(auth: Authenticator) -> None:
    registration = ctap1(auth).register(CHALLENGE, APP)
    assertion = Ctap2(InProcessCtapDevice(auth)).get_assertion(
        "example.com", CHALLENGE, [{"type": "public-key", "id": registration.key_handle}]
    )
    assert assertion.credential["id"] == registration.key_handle
    assert assertion.auth_data.flags == 0x01


def test_eddsa_credential_is_not_usable_through_u2f(auth: Authenticator) -> None:
    response = Ctap2(InProcessCtapDevice(auth)).make_credential(
        CHALLENGE,
        {"id": "example.com"},
        {"id": b"user"},
        [{"type": "public-key", "alg": -8}],
    )
    assert response.auth_data.credential_data is not None
    handle = response.auth_data.credential_data.credential_id
    with pytest.raises(ApduError) as caught:
        ctap1(auth).authenticate(CHALLENGE, APP, handle)
    assert caught.value.code == 0x6A80


@pytest.mark.parametrize(
    ("apdu", "status"),
    [
        pytest.param("00", 0x6700, id="no-header"),
        pytest.param("000100000000", 0x6700, id="lc-without-data"),
        pytest.param("0001000000003f" + "00" * 63, 0x6700, id="register-63-bytes"),
        pytest.param("00010000" + "41" + "00" * 65, 0x6700, id="register-65-bytes-short"),
        pytest.param("0002030000004f" + "00" * 79, 0x6700, id="authenticate-handle-length"),
        pytest.param("00020300000020" + "00" * 32, 0x6700, id="authenticate-too-short"),
        pytest.param("000300000000020102", 0x6700, id="version-with-data"),
        pytest.param("00040000", 0x6D00, id="unknown-ins"),
        pytest.param("80030000", 0x6E00, id="cla-80"),
        pytest.param("00030000", 0x9000, id="version-case-1"),
        pytest.param("0003000000", 0x9000, id="version-short-le"),
        pytest.param("00030000000000", 0x9000, id="version-extended-le"),
        pytest.param("000300000000000000", 0x9000, id="version-python-fido2-form"),
    ],
)
def test_raw_apdu_answers_status_word(auth: Authenticator, apdu: str, status: int) -> None:
    assert sw(auth, apdu) == status


def test_register_accepts_short_apdu_encoding(auth: Authenticator) -> None:
    response = auth.handle_u2f(bytes.fromhex("00010300") + b"\x40" + CHALLENGE + APP + b"\x00")
    assert response[-2:] == b"\x90\x00"
    assert response[0] == 0x05


def test_u2f_disabled_answers_ins_not_supported(tmp_path: Path) -> None:
    auth = make_auth(tmp_path, u2f=False)
    assert sw(auth, "00030000") == 0x6D00
    device = InProcessCtapDevice(auth)
    assert device.capabilities & CAPABILITY.NMSG
    assert device.capabilities & CAPABILITY.CBOR


def test_in_process_device_echoes_ping_and_passes_status_bytes(auth: Authenticator) -> None:
    device = InProcessCtapDevice(auth)
    assert device.call(CTAPHID.PING, b"hello") == b"hello"
    assert device.call(CTAPHID.CBOR, b"\x42") == b"\x01"
    assert device.call(CTAPHID.CBOR, b"\x04")[0] == 0
    assert isinstance(cbor.decode(device.call(CTAPHID.CBOR, b"\x04")[1:]), dict)
    assert not device.capabilities & CAPABILITY.NMSG
