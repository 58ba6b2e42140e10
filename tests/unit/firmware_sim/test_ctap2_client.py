"""End to end with python-fido2's own client and server: Fido2Client registers and
authenticates on the simulated key (in process), Fido2Server verifies the packed attestation
up to the simulator's exported root and every assertion signature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fido2.attestation import (
    AttestationResult,
    AttestationVerifier,
    PackedAttestation,
    UntrustedAttestation,
    verify_x509_chain,
)
from fido2.client import (
    ClientError,
    DefaultClientDataCollector,
    Fido2Client,
    UserInteraction,
)
from fido2.ctap2 import ClientPin, Ctap2
from fido2.server import Fido2Server
from fido2.webauthn import (
    AttestedCredentialData,
    AuthenticatorData,
    PublicKeyCredentialParameters,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialType,
    PublicKeyCredentialUserEntity,
)

from firmware_sim.attach.inprocess_ctap import InProcessCtapDevice
from firmware_sim.tokens.attestation import Manufacturer
from firmware_sim.tokens.ctap2 import (
    AlwaysPresent,
    Authenticator,
    load_authenticator,
    new_fido_state,
)

ORIGIN = "https://example.com"
PIN = "2468"
ALICE = PublicKeyCredentialUserEntity(id=b"alice-id", name="alice", display_name="Alice")
BOB = PublicKeyCredentialUserEntity(id=b"bob-id", name="bob", display_name="Bob")
# python-fido2 treats "preferred" (its default) as "required" when getInfo lists clientPin,
# even as false, and then refuses a key without a PIN; say "discouraged" where no PIN is set.
NO_UV = "discouraged"


class SimulatorRoot(AttestationVerifier):
    """Trusts exactly one attestation root, as a server that imported the simulator's does."""

    def __init__(self, root_pem: bytes) -> None:
        super().__init__()
        self.root_der = x509.load_pem_x509_certificate(root_pem).public_bytes(
            serialization.Encoding.DER
        )

    def ca_lookup(self, attestation_result: AttestationResult, auth_data: Any) -> bytes:
        return self.root_der


class KnowsPin(UserInteraction):
    def request_pin(self, permissions: ClientPin.PERMISSION, rp_id: str | None) -> str:
        return PIN


def make_auth(tmp_path: Path) -> Authenticator:
    path = tmp_path / "key.json"
    new_fido_state(path, manufacturer_home=tmp_path / "maker")
    return load_authenticator(path, AlwaysPresent())


def make_server(tmp_path: Path, alg: int = -7) -> Fido2Server:
    root = Manufacturer.load_or_create(tmp_path / "maker").root_pem()
    server = Fido2Server(
        PublicKeyCredentialRpEntity(id="example.com", name="Example"),
        attestation="direct",
        verify_attestation=SimulatorRoot(root),
    )
    server.allowed_algorithms = [
        PublicKeyCredentialParameters(type=PublicKeyCredentialType.PUBLIC_KEY, alg=alg)
    ]
    return server


def make_client(auth: Authenticator) -> Fido2Client:
    return Fido2Client(InProcessCtapDevice(auth), DefaultClientDataCollector(ORIGIN), KnowsPin())


def register(
    server: Fido2Server,
    client: Fido2Client,
    user: PublicKeyCredentialUserEntity,
    **kw: Any,
) -> AuthenticatorData:
    options, state = server.register_begin(user, **kw)
    return server.register_complete(state, client.make_credential(options.public_key))


def authenticate(
    server: Fido2Server,
    client: Fido2Client,
    credentials: list[AttestedCredentialData],
    *,
    discoverable: bool,
    **kw: Any,
) -> tuple[AttestedCredentialData, Any]:
    options, state = server.authenticate_begin(None if discoverable else credentials, **kw)
    response = client.get_assertion(options.public_key).get_response(0)
    return server.authenticate_complete(state, credentials, response), response


@pytest.mark.parametrize("alg", [-7, -8], ids=["ES256", "EdDSA"])
@pytest.mark.parametrize("discoverable", [False, True], ids=["server-side", "discoverable"])
@pytest.mark.parametrize("with_pin", [False, True], ids=["no-pin", "pin"])
def test_fido2_client_registers_and_authenticates_with_server(
    tmp_path: Path, alg: int, discoverable: bool, with_pin: bool
) -> None:
    auth = make_auth(tmp_path)
    if with_pin:
        ClientPin(Ctap2(InProcessCtapDevice(auth))).set_pin(PIN)
    server, client = make_server(tmp_path, alg), make_client(auth)
    uv = "required" if with_pin else NO_UV
    rk = "required" if discoverable else "discouraged"
    auth_data = register(server, client, ALICE, user_verification=uv, resident_key_requirement=rk)
    credential = auth_data.credential_data
    assert credential is not None
    assert credential.public_key[3] == alg
    assert auth_data.is_user_verified() is with_pin
    assert bytes(credential.aaguid) == auth.aaguid

    matched, response = authenticate(
        server, client, [credential], discoverable=discoverable, user_verification=uv
    )
    assert matched.credential_id == credential.credential_id
    assert response.response.authenticator_data.is_user_verified() is with_pin
    if discoverable:
        assert response.response.user_handle == ALICE.id
    _, again = authenticate(
        server, client, [credential], discoverable=discoverable, user_verification=uv
    )
    assert again.response.authenticator_data.counter > response.response.authenticator_data.counter


def test_discoverable_login_offers_every_account_of_the_rp(tmp_path: Path) -> None:
    auth = make_auth(tmp_path)
    server, client = make_server(tmp_path), make_client(auth)
    credentials = [
        register(
            server, client, user, resident_key_requirement="required", user_verification=NO_UV
        ).credential_data
        for user in (ALICE, BOB)
    ]
    options, state = server.authenticate_begin(user_verification=NO_UV)
    selection = client.get_assertion(options.public_key)
    responses = [selection.get_response(n) for n in range(len(selection.get_assertions()))]
    assert [r.response.user_handle for r in responses] == [BOB.id, ALICE.id]
    known = [c for c in credentials if c is not None]
    assert server.authenticate_complete(state, known, responses[1]).credential_id == (
        known[0].credential_id
    )


def test_registering_twice_is_refused_when_credential_excluded(tmp_path: Path) -> None:
    auth = make_auth(tmp_path)
    server, client = make_server(tmp_path), make_client(auth)
    first = register(server, client, ALICE, user_verification=NO_UV).credential_data
    assert first is not None
    options, _ = server.register_begin(ALICE, credentials=[first], user_verification=NO_UV)
    with pytest.raises(ClientError) as caught:
        client.make_credential(options.public_key)
    assert caught.value.code == ClientError.ERR.DEVICE_INELIGIBLE


def test_packed_attestation_chains_to_exported_root(tmp_path: Path) -> None:
    auth = make_auth(tmp_path)
    options, _ = make_server(tmp_path).register_begin(ALICE, user_verification=NO_UV)
    response = make_client(auth).make_credential(options.public_key).response
    maker = Manufacturer.load_or_create(tmp_path / "maker")
    assert response.attestation_object.fmt == "packed"
    result = PackedAttestation().verify(
        response.attestation_object.att_stmt,
        response.attestation_object.auth_data,
        response.client_data.hash,
    )
    assert result.trust_path == [maker.batch_certificate_der]
    root_der = x509.load_pem_x509_certificate(maker.root_pem()).public_bytes(
        serialization.Encoding.DER
    )
    verify_x509_chain([*result.trust_path, root_der])


def test_attestation_from_another_manufacturer_is_untrusted(tmp_path: Path) -> None:
    auth = make_auth(tmp_path)
    stranger = Manufacturer.load_or_create(tmp_path / "someone-else").root_pem()
    server = Fido2Server(
        PublicKeyCredentialRpEntity(id="example.com", name="Example"),
        attestation="direct",
        verify_attestation=SimulatorRoot(stranger),
    )
    options, state = server.register_begin(ALICE, user_verification=NO_UV)
    response = make_client(auth).make_credential(options.public_key)
    with pytest.raises(UntrustedAttestation):
        server.register_complete(state, response)
