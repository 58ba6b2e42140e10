"""FIDO2 over NFC: the same simulated authenticator as an ISO 7816 applet on pcscd's vpcd
reader, used by python-fido2's own ``CtapPcscDevice`` unchanged."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2 import cbor
from fido2.ctap1 import Ctap1
from fido2.ctap2.base import Ctap2
from fido2.pcsc import CtapPcscDevice
from fido2.server import Fido2Server
from fido2.webauthn import (
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    UserVerificationRequirement,
)

from devices.protocol.apdu import CommandApdu
from devices.protocol.chaining import collect_response
from devices.tokens.fido import FidoSession
from devices.transports.pcsc import PcscContext
from firmware_sim import faults
from firmware_sim.tokens import ctap2

from .conftest import AttachedCard, CliRunner
from .fido_fixtures import ORIGIN, RP_ID

pytestmark = pytest.mark.integration


@pytest.fixture
def nfc_key(sim_home: Path, tmp_path: Path, attach: Callable[..., AttachedCard]) -> AttachedCard:
    state = tmp_path / "fido-nfc.json"
    ctap2.new_fido_state(state, manufacturer_home=sim_home)
    return attach(state, "fido")


@pytest.fixture
def device(nfc_key: AttachedCard) -> Iterator[CtapPcscDevice]:
    found = list(CtapPcscDevice.list_devices(nfc_key.reader.name))
    assert len(found) == 1, "python-fido2 did not find the key on the NFC reader"
    yield found[0]
    found[0].close()


def ceremony(device: CtapPcscDevice, pin: str | None = None) -> None:
    rp = Fido2Server(PublicKeyCredentialRpEntity(name="Example", id=RP_ID))
    uv = UserVerificationRequirement.REQUIRED if pin else UserVerificationRequirement.DISCOURAGED
    options, state = rp.register_begin(
        # A long user entity makes the request longer than one short APDU (chained, CLA 90).
        PublicKeyCredentialUserEntity(name="n" * 64, id=os.urandom(64), display_name="d" * 64),
        user_verification=uv,
    )
    session = FidoSession(device)
    registration = session.make_credential(options.public_key, origin=ORIGIN, pin=pin)
    auth_data = rp.register_complete(state, registration)
    assert auth_data.credential_data is not None
    credentials = [auth_data.credential_data]
    request, state = rp.authenticate_begin(credentials, user_verification=uv)
    assertion = session.get_assertion(request.public_key, origin=ORIGIN, pin=pin)
    rp.authenticate_complete(state, credentials, assertion)
    assert assertion.response.authenticator_data.is_user_verified() is bool(pin)


def test_ctap_pcsc_device_finds_key_and_reads_info(device: CtapPcscDevice) -> None:
    info = Ctap2(device).get_info()
    assert "FIDO_2_1" in info.versions
    assert "nfc" in info.transports


def test_register_and_authenticate_over_nfc_without_pin(device: CtapPcscDevice) -> None:
    ceremony(device)


def test_register_and_authenticate_over_nfc_with_pin(device: CtapPcscDevice) -> None:
    FidoSession(device).set_pin("246810")
    ceremony(device, pin="246810")


def test_u2f_over_nfc(device: CtapPcscDevice) -> None:
    u2f = Ctap1(device)
    assert u2f.get_version() == "U2F_V2"
    app_param, client_param = os.urandom(32), os.urandom(32)
    registration = u2f.register(client_param, app_param)
    signed = u2f.authenticate(client_param, app_param, registration.key_handle)
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), registration.public_key
    )
    message = app_param + struct.pack(">BI", signed.user_presence, signed.counter) + client_param
    public_key.verify(signed.signature, message, ec.ECDSA(hashes.SHA256()))


def test_select_and_nfcctap_getresponse_polling_byte_exact(nfc_key: AttachedCard) -> None:
    aid = bytes.fromhex("A0000006472F0001")
    with PcscContext() as context, context.connect(nfc_key.reader.name) as connection:
        selected = connection.send(CommandApdu(0x00, 0xA4, 0x04, 0x00, aid, le=256))
        assert (selected.data, selected.sw) == (b"U2F_V2", 0x9000)
        # A slow key: getInfo takes 0.4 s, so the card answers "processing" (status 01 and
        # SW 91 00) and the host polls with NFCCTAP_GETRESPONSE until the answer is ready.
        slow = faults.Fault(faults.Action.DELAY, faults.Phase.BEFORE, ins=0x10, seconds=0.4)
        faults.arm(nfc_key.state, slow)
        answer = connection.send(CommandApdu(0x80, 0x10, 0x80, 0x00, b"\x04", le=256))
        polls = 0
        while answer.sw == 0x9100:
            assert answer.data == b"\x01"
            polls += 1
            answer = connection.send(CommandApdu(0x80, 0x11, 0x00, 0x00, le=256))
        answer = collect_response(connection.send, answer)
    assert polls >= 2
    assert answer.sw == 0x9000
    assert answer.data[0] == 0x00  # CTAP2_OK
    assert "FIDO_2_1" in cbor.decode(answer.data[1:])[1]


def test_nfcctap_msg_without_polling_waits_for_the_answer(nfc_key: AttachedCard) -> None:
    aid = bytes.fromhex("A0000006472F0001")
    with PcscContext() as context, context.connect(nfc_key.reader.name) as connection:
        connection.send(CommandApdu(0x00, 0xA4, 0x04, 0x00, aid, le=256)).check()
        slow = faults.Fault(faults.Action.DELAY, faults.Phase.BEFORE, ins=0x10, seconds=0.3)
        faults.arm(nfc_key.state, slow)
        # P1 = 00: this host cannot poll, so the card holds its answer until it is ready.
        answer = collect_response(
            connection.send, connection.send(CommandApdu(0x80, 0x10, 0x00, 0x00, b"\x04", le=256))
        )
    assert answer.sw == 0x9000
    assert answer.data[0] == 0x00


def test_garbage_cbor_over_nfc_answers_invalid_cbor(nfc_key: AttachedCard) -> None:
    aid = bytes.fromhex("A0000006472F0001")
    with PcscContext() as context, context.connect(nfc_key.reader.name) as connection:
        connection.send(CommandApdu(0x00, 0xA4, 0x04, 0x00, aid, le=256)).check()
        answer = connection.send(CommandApdu(0x80, 0x10, 0x80, 0x00, b"\x01\xff\x00", le=256))
    assert answer.sw == 0x9000
    assert answer.data == bytes((0x12,))  # CTAP2_ERR_INVALID_CBOR


def test_devices_list_shows_nfc_key(nfc_key: AttachedCard, cli: CliRunner) -> None:
    result = cli("devices", "list", "--json")
    assert result.returncode == 0, result.stderr
    nfc = [
        t
        for t in json.loads(result.stdout)["tokens"]
        if t["kind"] == "fido" and t["transport"] == "nfc"
    ]
    assert [t["reader"] for t in nfc] == [nfc_key.reader.name]
    assert "FIDO_2_1" in nfc[0]["details"]["versions"]


def test_attestation_root_export_verifies_the_batch_certificate(
    sim_home: Path, cli: CliRunner, tmp_path: Path
) -> None:
    out = tmp_path / "root.pem"
    result = cli("sim", "attestation-root", "--out", str(out))
    assert result.returncode == 0, result.stderr
    root = x509.load_pem_x509_certificate(out.read_bytes())
    state = tmp_path / "key.json"
    ctap2.new_fido_state(state, manufacturer_home=sim_home)
    batch = x509.load_der_x509_certificate(
        ctap2.load_authenticator(state, ctap2.AlwaysPresent()).state.batch_certificate
    )
    batch.verify_directly_issued_by(root)
