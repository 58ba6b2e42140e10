"""Pseudonyms: one stable version 8 UUID per identity and service provider, keyed by HMAC."""

from __future__ import annotations

import hashlib
import hmac
import stat
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.services.errors import KeyMaterialRejected
from server.services.pseudonyms import Pseudonyms

KEY = bytes(range(32))
IDENTITY = uuid.UUID("6f1c2b1e-4a0b-4c41-9e7c-3c1d2f0e8a11")


@pytest.fixture
def pseudonyms() -> Pseudonyms:
    return Pseudonyms(KEY)


def test_pseudonym_matches_hmac_sha256_formatted_as_uuid_v8(pseudonyms: Pseudonyms) -> None:
    digest = hmac.new(KEY, IDENTITY.bytes + b"https://sp.example", hashlib.sha256).digest()
    value = int.from_bytes(digest[:16], "big")
    value &= ~(0xF << 76)
    value |= 0x8 << 76
    value &= ~(0x3 << 62)
    value |= 0x2 << 62
    assert pseudonyms.pseudonym(IDENTITY, "https://sp.example") == uuid.UUID(int=value)


@given(identity=st.uuids(), provider=st.text(min_size=1))
def test_pseudonym_is_a_version_8_rfc_uuid(identity: uuid.UUID, provider: str) -> None:
    pseudonym = Pseudonyms(KEY).pseudonym(identity, provider)
    assert pseudonym.version == 8
    assert pseudonym.variant == uuid.RFC_4122
    assert pseudonym == Pseudonyms(KEY).pseudonym(identity, provider)


def test_pseudonym_differs_between_providers(pseudonyms: Pseudonyms) -> None:
    assert pseudonyms.pseudonym(IDENTITY, "sp-a") != pseudonyms.pseudonym(IDENTITY, "sp-b")


def test_pseudonym_differs_between_identities(pseudonyms: Pseudonyms) -> None:
    assert pseudonyms.pseudonym(IDENTITY, "sp-a") != pseudonyms.pseudonym(uuid.uuid4(), "sp-a")


def test_pseudonym_differs_between_keys() -> None:
    other = Pseudonyms(bytes(range(1, 33)))
    assert Pseudonyms(KEY).pseudonym(IDENTITY, "sp") != other.pseudonym(IDENTITY, "sp")


def test_pseudonym_is_not_the_identity_id(pseudonyms: Pseudonyms) -> None:
    assert pseudonyms.pseudonym(IDENTITY, "sp") != IDENTITY


def test_empty_provider_is_refused(pseudonyms: Pseudonyms) -> None:
    with pytest.raises(ValueError, match="provider"):
        pseudonyms.pseudonym(IDENTITY, "")


def test_short_key_is_refused() -> None:
    with pytest.raises(KeyMaterialRejected):
        Pseudonyms(b"k" * 31)


def test_repr_hides_the_key(pseudonyms: Pseudonyms) -> None:
    assert KEY.hex() not in repr(pseudonyms)
    assert repr(KEY) not in repr(pseudonyms)


def test_from_file_create_is_stable(tmp_path: Path) -> None:
    path = tmp_path / "pseudonym.key"
    first = Pseudonyms.from_file(path, create=True).pseudonym(IDENTITY, "sp")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Pseudonyms.from_file(path).pseudonym(IDENTITY, "sp") == first


def test_subject_digest_is_stable_keyed_and_hides_the_number() -> None:
    one, other = Pseudonyms(b"k" * 32), Pseudonyms(b"q" * 32)
    digest = one.subject_digest("311299-9999")
    assert digest == one.subject_digest("311299-9999")
    assert digest != one.subject_digest("301299-9999")
    assert digest != other.subject_digest("311299-9999")
    assert "311299" not in digest
    assert len(digest) == 64
