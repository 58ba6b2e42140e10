"""SecretBox: AES-256-GCM sealing of token secrets, bound to their context, with key rotation."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from server.services.errors import KeyMaterialRejected, SecretUnreadable
from server.services.secretbox import HEADER_SIZE, SecretBox, key_id, read_private_file

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
CONTEXT = "credential:6f1c2b1e-4a0b-4c41-9e7c-3c1d2f0e8a11"
SEED = b"\x13" * 20


@pytest.fixture
def box() -> SecretBox:
    return SecretBox([KEY])


def test_seal_then_open_returns_the_plaintext(box: SecretBox) -> None:
    assert box.open(box.seal(SEED, context=CONTEXT), context=CONTEXT) == SEED


def test_seal_empty_plaintext_round_trips(box: SecretBox) -> None:
    assert box.open(box.seal(b"", context=CONTEXT), context=CONTEXT) == b""


def test_seal_layout_is_version_key_id_nonce_ciphertext_tag(box: SecretBox) -> None:
    blob = box.seal(SEED, context=CONTEXT)
    assert blob[0] == 1
    assert blob[1:9] == hashlib.sha256(KEY).digest()[:8] == box.key_id
    assert len(blob) == 1 + 8 + 12 + len(SEED) + 16


def test_seal_uses_a_fresh_nonce_each_time(box: SecretBox) -> None:
    first, second = box.seal(SEED, context=CONTEXT), box.seal(SEED, context=CONTEXT)
    assert first[9:HEADER_SIZE] != second[9:HEADER_SIZE]
    assert first != second


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_open_flipped_byte_anywhere_raises_secret_unreadable(box: SecretBox, mask: int) -> None:
    blob = box.seal(SEED, context=CONTEXT)
    for index in range(len(blob)):
        tampered = bytearray(blob)
        tampered[index] ^= mask
        with pytest.raises(SecretUnreadable):
            box.open(bytes(tampered), context=CONTEXT)


@pytest.mark.parametrize("length", [0, 1, HEADER_SIZE, HEADER_SIZE + 15])
def test_open_truncated_blob_raises_secret_unreadable(box: SecretBox, length: int) -> None:
    blob = box.seal(SEED, context=CONTEXT)
    with pytest.raises(SecretUnreadable):
        box.open(blob[:length], context=CONTEXT)


def test_open_with_appended_bytes_raises_secret_unreadable(box: SecretBox) -> None:
    with pytest.raises(SecretUnreadable):
        box.open(box.seal(SEED, context=CONTEXT) + b"\x00", context=CONTEXT)


def test_open_in_another_context_raises_secret_unreadable(box: SecretBox) -> None:
    blob = box.seal(SEED, context=CONTEXT)
    with pytest.raises(SecretUnreadable):
        box.open(blob, context="credential:00000000-0000-0000-0000-000000000000")


def test_open_under_an_unknown_key_raises_secret_unreadable(box: SecretBox) -> None:
    blob = box.seal(SEED, context=CONTEXT)
    with pytest.raises(SecretUnreadable, match="unknown key"):
        SecretBox([OTHER_KEY]).open(blob, context=CONTEXT)


def test_open_with_forged_key_id_raises_secret_unreadable(box: SecretBox) -> None:
    # A blob sealed under another key but relabelled with our key id must still fail.
    blob = bytearray(SecretBox([OTHER_KEY]).seal(SEED, context=CONTEXT))
    blob[1:9] = key_id(KEY)
    with pytest.raises(SecretUnreadable):
        box.open(bytes(blob), context=CONTEXT)


def test_empty_context_is_refused(box: SecretBox) -> None:
    with pytest.raises(ValueError, match="context"):
        box.seal(SEED, context="")


def test_rotation_opens_old_blobs_and_seals_with_the_new_key() -> None:
    old_blob = SecretBox([KEY]).seal(SEED, context=CONTEXT)
    rotated = SecretBox([OTHER_KEY, KEY])
    assert rotated.open(old_blob, context=CONTEXT) == SEED
    assert rotated.needs_reseal(old_blob)
    new_blob = rotated.seal(SEED, context=CONTEXT)
    assert new_blob[1:9] == key_id(OTHER_KEY)
    assert not rotated.needs_reseal(new_blob)
    with pytest.raises(SecretUnreadable):
        SecretBox([KEY]).open(new_blob, context=CONTEXT)


@pytest.mark.parametrize("keys", [[], [b"short"], [KEY + b"x"], [KEY, KEY]])
def test_constructor_refuses_bad_keys(keys: list[bytes]) -> None:
    with pytest.raises(KeyMaterialRejected):
        SecretBox(keys)


def test_repr_shows_key_ids_only(box: SecretBox) -> None:
    text = repr(box)
    assert key_id(KEY).hex() in text
    assert KEY.hex() not in text
    assert repr(KEY) not in text


def test_from_file_create_writes_a_random_owner_only_key(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    box = SecretBox.from_file(path, create=True)
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_size == 32
    assert box.key_id == key_id(path.read_bytes())
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_from_file_create_keeps_an_existing_key(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    blob = SecretBox.from_file(path, create=True).seal(SEED, context=CONTEXT)
    assert SecretBox.from_file(path, create=True).open(blob, context=CONTEXT) == SEED
    assert SecretBox.from_file(path).open(blob, context=CONTEXT) == SEED


def test_from_file_missing_without_create_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialRejected, match="no key file"):
        SecretBox.from_file(tmp_path / "missing")


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_from_file_wrong_size_is_refused(tmp_path: Path, size: int) -> None:
    path = tmp_path / "kek"
    path.write_bytes(os.urandom(size))
    path.chmod(0o600)
    with pytest.raises(KeyMaterialRejected, match="exactly 32"):
        SecretBox.from_file(path)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660])
def test_from_file_group_or_world_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "kek"
    path.write_bytes(KEY)
    path.chmod(mode)
    with pytest.raises(KeyMaterialRejected, match="chmod 600"):
        SecretBox.from_file(path)


def test_from_file_owner_read_only_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "kek"
    path.write_bytes(KEY)
    path.chmod(0o400)
    assert SecretBox.from_file(path).key_id == key_id(KEY)


def test_read_private_file_refuses_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyMaterialRejected):
        read_private_file(directory)
