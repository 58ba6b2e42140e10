"""Standard middleware accepts the simulated card through pcscd: OpenSC's pkcs15-tool lists
its certificate and OpenSC's PKCS#11 module signs with its key."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devices.protocol.piv import Slot, certificate_from_object
from firmware_sim.tokens import piv as sim_piv

from .conftest import AttachedCard, missing_component

pytestmark = pytest.mark.integration

OPENSC_PKCS11 = Path("/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so")


def opensc_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing_component(f"OpenSC's {name} is not installed (apt-get install opensc)")
        raise AssertionError  # unreachable
    return path


def pkcs11_module() -> Path:
    candidates = [OPENSC_PKCS11, *Path("/usr/lib").glob("*/opensc-pkcs11.so")]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    missing_component("OpenSC's PKCS#11 module is not installed (apt-get install opensc-pkcs11)")
    raise AssertionError  # unreachable


def pkcs11_tool(card: AttachedCard, *args: str) -> subprocess.CompletedProcess[str]:
    """OpenSC's pkcs11-tool on the card's reader (a PKCS#11 slot per reader)."""
    return subprocess.run(
        [
            opensc_tool("pkcs11-tool"),
            "--module",
            str(pkcs11_module()),
            "--slot-description",
            card.reader.name,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def card_certificate(state: Path) -> x509.Certificate:
    stored = sim_piv.load_applet(state).state.objects[Slot.AUTHENTICATION.object_id.value]
    return x509.load_der_x509_certificate(certificate_from_object(stored))


@pytest.fixture
def provisioned(tmp_path: Path, attach: Callable[[Path], AttachedCard]) -> AttachedCard:
    state = tmp_path / "piv.json"
    sim_piv.new_card_state(state, provision=True, subject="Interop Test Person")
    return attach(state)


def test_pkcs15_tool_lists_the_9a_certificate(provisioned: AttachedCard, tmp_path: Path) -> None:
    certificate = card_certificate(provisioned.state)
    exported = tmp_path / "exported.pem"
    listing = subprocess.run(
        [opensc_tool("pkcs15-tool"), "--reader", provisioned.reader.name, "--list-certificates"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listing.returncode == 0, listing.stderr
    assert "Certificate for PIV Authentication" in listing.stdout
    assert "ID             : 01" in listing.stdout

    read = subprocess.run(
        [
            opensc_tool("pkcs15-tool"),
            "--reader",
            provisioned.reader.name,
            "--read-certificate",
            "01",
            "--output",
            str(exported),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert read.returncode == 0, read.stderr
    assert x509.load_pem_x509_certificate(exported.read_bytes()) == certificate


def test_pkcs11_tool_signs_with_card_key_and_signature_verifies(
    provisioned: AttachedCard, tmp_path: Path
) -> None:
    message = tmp_path / "message.bin"
    message.write_bytes(b"a challenge from a relying party")
    signature_file = tmp_path / "signature.der"
    result = pkcs11_tool(
        provisioned,
        "--login",
        "--pin",
        "123456",
        "--sign",
        "--mechanism",
        "ECDSA-SHA256",
        "--id",
        "01",
        "--signature-format",
        "openssl",
        "--input-file",
        str(message),
        "--output-file",
        str(signature_file),
    )
    assert result.returncode == 0, result.stderr + result.stdout
    public_key = card_certificate(provisioned.state).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(signature_file.read_bytes(), message.read_bytes(), ec.ECDSA(hashes.SHA256()))


def test_pkcs11_tool_with_wrong_pin_fails_and_card_counts_it(
    provisioned: AttachedCard, tmp_path: Path
) -> None:
    result = pkcs11_tool(
        provisioned,
        "--login",
        "--pin",
        "000000",
        "--list-objects",
    )
    assert result.returncode != 0
    assert "CKR_PIN_INCORRECT" in result.stderr + result.stdout
    assert sim_piv.load_applet(provisioned.state).state.pin_tries == 2


def test_pkcs11_module_reads_public_key_matching_certificate(
    provisioned: AttachedCard, tmp_path: Path
) -> None:
    exported = tmp_path / "pub.der"
    result = pkcs11_tool(
        provisioned,
        "--read-object",
        "--type",
        "pubkey",
        "--id",
        "01",
        "--output-file",
        str(exported),
    )
    assert result.returncode == 0, result.stderr
    exported_key = serialization.load_der_public_key(exported.read_bytes())
    expected = card_certificate(provisioned.state).public_key()
    assert exported_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == expected.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
