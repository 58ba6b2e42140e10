"""The simulator's "manufacturer": an attestation root CA, one batch key and certificate, and
the AAGUID of the simulated security key model, made once per machine and shared by every
simulated token, as a real vendor ships one batch certificate in many keys.

The directory is ``AKKREDITIV_SIM_HOME`` (default ``~/.local/share/akkreditiv/sim``). The
first process to need it creates it under an exclusive lock, so parallel test workers agree.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware_sim import state as state_store

HOME_ENV = "AKKREDITIV_SIM_HOME"
FILE_NAME = "fido-manufacturer.json"
# id-fido-gen-ce-aaguid (WebAuthn 8.2.1): the AAGUID as an OCTET STRING, never critical.
OID_AAGUID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")
VENDOR = "akkreditiv simulator"
COUNTRY = "DK"
VALIDITY = dt.timedelta(days=20 * 365)
Made = TypeVar("Made")


def default_home() -> Path:
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".local" / "share" / "akkreditiv" / "sim"


def load_or_create(
    home: Path | None,
    file_name: str,
    load: Callable[[Path], Made],
    create: Callable[[], Made],
    dump: Callable[[Made], bytes],
) -> Made:
    """The vendor data in ``home``/``file_name``, made by the first process that needs it,
    under an exclusive lock, so parallel test workers agree on one."""
    home = Path(home) if home is not None else default_home()
    home.mkdir(parents=True, exist_ok=True)
    path = home / file_name
    with open(home / f".{file_name}.lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if path.exists():
                return load(path)
            made = create()
            state_store.write_atomic(path, dump(made))
            return made
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def load_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise state_store.StateError("attestation key is not a P-256 key")
    return key


def root_authority(
    common_name: str, *, path_length: int | None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A vendor's self-signed root CA: its key and certificate, valid for 20 years."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, VENDOR),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


@dataclass(frozen=True)
class Manufacturer:
    root_certificate: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    batch_key: ec.EllipticCurvePrivateKey
    batch_certificate: x509.Certificate
    aaguid: bytes

    @classmethod
    def load_or_create(cls, home: Path | None = None) -> Manufacturer:
        return load_or_create(home, FILE_NAME, cls._load, cls._create, cls._dump)

    def root_pem(self) -> bytes:
        return self.root_certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def batch_certificate_der(self) -> bytes:
        return self.batch_certificate.public_bytes(serialization.Encoding.DER)

    # --- storage --------------------------------------------------------------------------

    def _dump(self) -> bytes:
        document = {
            "aaguid": self.aaguid.hex(),
            "root_key": pem_key(self.root_key),
            "root_certificate": self.root_pem().decode("ascii"),
            "batch_key": pem_key(self.batch_key),
            "batch_certificate": self.batch_certificate.public_bytes(
                serialization.Encoding.PEM
            ).decode("ascii"),
        }
        return json.dumps(document, indent=1, sort_keys=True).encode("utf-8")

    @classmethod
    def _load(cls, path: Path) -> Manufacturer:
        try:
            document = json.loads(path.read_bytes())
            aaguid = bytes.fromhex(document["aaguid"])
            made = cls(
                root_certificate=x509.load_pem_x509_certificate(
                    document["root_certificate"].encode("ascii")
                ),
                root_key=load_key(document["root_key"]),
                batch_key=load_key(document["batch_key"]),
                batch_certificate=x509.load_pem_x509_certificate(
                    document["batch_certificate"].encode("ascii")
                ),
                aaguid=aaguid,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise state_store.StateError(f"manufacturer data {path} is damaged: {exc!r}") from exc
        if len(aaguid) != 16:
            raise state_store.StateError(f"manufacturer data {path}: AAGUID is not 16 bytes")
        return made

    # --- the factory ----------------------------------------------------------------------

    @classmethod
    def _create(cls) -> Manufacturer:
        aaguid = secrets.token_bytes(16)
        now = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        root_key, root = root_authority("akkreditiv simulator attestation root", path_length=0)
        root_name = root.subject
        root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
        batch_key = ec.generate_private_key(ec.SECP256R1())
        batch_name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, COUNTRY),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, VENDOR),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
                x509.NameAttribute(NameOID.COMMON_NAME, "akkreditiv simulated security key"),
            ]
        )
        batch = (
            x509.CertificateBuilder()
            .subject_name(batch_name)
            .issuer_name(root_name)
            .public_key(batch_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
                critical=False,
            )
            .add_extension(
                x509.UnrecognizedExtension(OID_AAGUID, b"\x04\x10" + aaguid), critical=False
            )
            .sign(root_key, hashes.SHA256())
        )
        return cls(
            root_certificate=root,
            root_key=root_key,
            batch_key=batch_key,
            batch_certificate=batch,
            aaguid=aaguid,
        )
