"""The simulated FIDO2 key's non-volatile memory and its manufacturer: a state file that
reloads whole, holds no PIN or private key in clear, and is refused when damaged; and an
attestation CA, batch certificate and AAGUID that meet WebAuthn 8.2.1 and are made once."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from fido2.ctap2 import ClientPin, Ctap2

from firmware_sim.attach.inprocess_ctap import InProcessCtapDevice
from firmware_sim.state import StateError
from firmware_sim.tokens.attestation import HOME_ENV, OID_AAGUID, Manufacturer, default_home
from firmware_sim.tokens.ctap2 import (
    AlwaysPresent,
    FidoState,
    load_authenticator,
    new_fido_state,
)

PIN = "31415926"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "key.json"
    new_fido_state(path, manufacturer_home=tmp_path / "maker")
    return path


def document(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


# --- the state file -------------------------------------------------------------------------


def test_new_state_is_saved_as_fido_kind(path: Path, tmp_path: Path) -> None:
    saved = document(path)
    assert saved["kind"] == "fido"
    assert saved["pin_retries"] == 8
    assert saved["credentials"] == []
    assert saved["aaguid"] == Manufacturer.load_or_create(tmp_path / "maker").aaguid.hex()
    assert saved["serial"].isdigit()


def test_new_state_refuses_existing_file(path: Path) -> None:
    with pytest.raises(StateError):
        new_fido_state(path)


def test_keys_made_by_one_manufacturer_share_aaguid_not_secrets(tmp_path: Path) -> None:
    first = new_fido_state(tmp_path / "a.json", manufacturer_home=tmp_path / "maker")
    second = new_fido_state(tmp_path / "b.json", manufacturer_home=tmp_path / "maker")
    assert first.aaguid == second.aaguid
    assert first.batch_certificate == second.batch_certificate
    assert first.master_key != second.master_key
    assert first.serial != second.serial


def test_state_round_trips_through_json(path: Path) -> None:
    auth = load_authenticator(path, AlwaysPresent())
    ctap = Ctap2(InProcessCtapDevice(auth))
    ctap.make_credential(
        bytes(32),
        {"id": "example.com"},
        {"id": b"user", "name": "alice"},
        [{"type": "public-key", "alg": -8}],
        options={"rk": True},
    )
    ClientPin(ctap).set_pin(PIN)
    reloaded = load_authenticator(path, AlwaysPresent())
    assert reloaded.state.to_json() == auth.state.to_json()
    assert FidoState.from_json(auth.state.to_json()) == auth.state
    assert reloaded.state.sign_count == 1
    assert reloaded.state.pin_verifier is not None


def test_state_file_holds_no_pin_in_clear(path: Path) -> None:
    auth = load_authenticator(path, AlwaysPresent())
    ClientPin(Ctap2(InProcessCtapDevice(auth))).set_pin(PIN)
    text = path.read_text()
    pin_hash = hashlib.sha256(PIN.encode()).digest()
    for secret in (PIN, PIN.encode().hex(), pin_hash.hex(), pin_hash[:16].hex()):
        assert secret not in text
    assert document(path)["pin_verifier"] is not None


def test_discoverable_credential_stores_no_private_key(path: Path) -> None:
    auth = load_authenticator(path, AlwaysPresent())
    response = Ctap2(InProcessCtapDevice(auth)).make_credential(
        bytes(32),
        {"id": "example.com"},
        {"id": b"user", "name": "Ærø Østergård", "displayName": "Å" * 40},
        [{"type": "public-key", "alg": -7}],
        options={"rk": True},
    )
    stored = document(path)["credentials"]
    assert len(stored) == 1
    assert set(stored[0]) == {"credential_id", "rp_id", "user_id", "user_name", "display_name"}
    assert response.auth_data.credential_data is not None
    assert stored[0]["credential_id"] == response.auth_data.credential_data.credential_id.hex()
    assert stored[0]["user_name"] == "Ærø Østergård"
    assert len(stored[0]["display_name"].encode()) <= 64  # cut at a character boundary
    assert load_authenticator(path, AlwaysPresent()).state.credentials == auth.state.credentials


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("pin_retries", 9),
        ("pin_retries", -1),
        ("pin_retries", "8"),
        ("pin_retries", True),
        ("sign_count", -1),
        ("sign_count", 2**32),
        ("aaguid", "00" * 15),
        ("master_key", "zz"),
        ("master_key", "00" * 16),
        ("pin_salt", "00"),
        ("pin_verifier", "00" * 16),
        ("u2f", "yes"),
        ("serial", 12345678),
        ("serial", "../etc"),
        ("batch_key", "3000"),
        ("batch_certificate", "00"),
        ("credentials", [{"credential_id": "00", "rp_id": "x", "user_id": "01"}]),
        ("credentials", [{"rp_id": "x"}]),
        ("credentials", "none"),
    ],
)
def test_damaged_state_is_refused_at_load(path: Path, key: str, value: Any) -> None:
    saved = document(path)
    saved[key] = value
    path.write_text(json.dumps(saved))
    with pytest.raises(StateError):
        load_authenticator(path, AlwaysPresent())


def test_missing_member_is_refused_at_load(path: Path) -> None:
    saved = document(path)
    del saved["master_key"]
    path.write_text(json.dumps(saved))
    with pytest.raises(StateError):
        load_authenticator(path, AlwaysPresent())


def test_state_of_another_kind_is_refused(path: Path) -> None:
    saved = document(path)
    saved["kind"] = "piv"
    path.write_text(json.dumps(saved))
    with pytest.raises(StateError):
        load_authenticator(path, AlwaysPresent())


# --- the manufacturer -----------------------------------------------------------------------


def test_batch_certificate_meets_packed_attestation_requirements(tmp_path: Path) -> None:
    maker = Manufacturer.load_or_create(tmp_path)
    cert = maker.batch_certificate
    assert cert.version is x509.Version.v3
    subject = {attribute.oid: attribute.value for attribute in cert.subject}
    assert subject[x509.NameOID.ORGANIZATIONAL_UNIT_NAME] == "Authenticator Attestation"
    assert len(str(subject[x509.NameOID.COUNTRY_NAME])) == 2
    assert subject[x509.NameOID.ORGANIZATION_NAME]
    assert subject[x509.NameOID.COMMON_NAME]
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca is False
    aaguid = cert.extensions.get_extension_for_oid(OID_AAGUID)
    assert aaguid.critical is False
    assert isinstance(aaguid.value, x509.UnrecognizedExtension)
    assert aaguid.value.value == b"\x04\x10" + maker.aaguid  # DER OCTET STRING
    assert isinstance(maker.batch_key.curve, ec.SECP256R1)


def test_batch_certificate_is_signed_by_root(tmp_path: Path) -> None:
    maker = Manufacturer.load_or_create(tmp_path)
    root = x509.load_pem_x509_certificate(maker.root_pem())
    assert maker.batch_certificate.issuer == root.subject
    public = root.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(
        maker.batch_certificate.signature,
        maker.batch_certificate.tbs_certificate_bytes,
        ec.ECDSA(hashes.SHA256()),
    )
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True


def test_manufacturer_is_made_once_when_loaded_again(tmp_path: Path) -> None:
    first = Manufacturer.load_or_create(tmp_path)
    second = Manufacturer.load_or_create(tmp_path)
    assert first.aaguid == second.aaguid
    assert first.root_pem() == second.root_pem()
    assert first.batch_certificate == second.batch_certificate


def test_parallel_first_use_agrees_on_one_manufacturer(tmp_path: Path) -> None:
    results: list[bytes] = []
    errors: list[BaseException] = []

    def make() -> None:
        try:
            results.append(Manufacturer.load_or_create(tmp_path / "shared").aaguid)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 8
    assert len(set(results)) == 1


def test_manufacturer_home_comes_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "sim"))
    assert default_home() == tmp_path / "sim"
    maker = Manufacturer.load_or_create()
    assert (tmp_path / "sim" / "fido-manufacturer.json").exists()
    assert Manufacturer.load_or_create(tmp_path / "sim").aaguid == maker.aaguid


def test_damaged_manufacturer_file_is_refused(tmp_path: Path) -> None:
    Manufacturer.load_or_create(tmp_path)
    (tmp_path / "fido-manufacturer.json").write_text('{"aaguid": "00"}')
    with pytest.raises(StateError):
        Manufacturer.load_or_create(tmp_path)
