"""The FIDO2 attestation roots the service trusts: read from the files the environment names
on each request, so a root added counts at once, and parsed again only when a file changed;
and the relying party's ``Fido2Server``, built once for logins."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from firmware_sim.tokens.attestation import Manufacturer
from server.api.fido import ROOTS_ENV, _roots_in, trusted_roots
from server.services.errors import KeyMaterialRejected
from server.services.fido import _shared_server


def _root(home: Path) -> bytes:
    return Manufacturer.load_or_create(home).root_pem()


def test_a_root_added_to_the_file_is_trusted_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = _root(tmp_path / "a"), _root(tmp_path / "b")
    roots = tmp_path / "roots.pem"
    roots.write_bytes(first)
    monkeypatch.setenv(ROOTS_ENV, str(roots))

    assert [r.public_bytes(Encoding.PEM) for r in trusted_roots()] == [first]
    with roots.open("ab") as more:
        more.write(second)
    assert [r.public_bytes(Encoding.PEM) for r in trusted_roots()] == [first, second]
    roots.write_bytes(second)  # rewritten: the first is no longer trusted
    assert [r.public_bytes(Encoding.PEM) for r in trusted_roots()] == [second]


def test_an_unchanged_file_is_not_parsed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    roots = tmp_path / "roots.pem"
    roots.write_bytes(_root(tmp_path / "a"))
    monkeypatch.setenv(ROOTS_ENV, str(roots))
    trusted_roots()
    before = _roots_in.cache_info()
    for _ in range(3):
        trusted_roots()
    after = _roots_in.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (3, 0)


def test_a_missing_or_broken_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ROOTS_ENV, str(tmp_path / "missing.pem"))
    with pytest.raises(KeyMaterialRejected):
        trusted_roots()
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv(ROOTS_ENV, str(broken))
    with pytest.raises(KeyMaterialRejected):
        trusted_roots()


def test_the_login_server_is_built_once_per_relying_party() -> None:
    origins = frozenset({"https://login.example"})
    server = _shared_server("login.example", origins)
    assert _shared_server("login.example", frozenset({"https://login.example"})) is server
    assert _shared_server("other.example", origins) is not server
    # The origin check is the relying party's own list, nothing else.
    assert server._verify("https://login.example")
    assert not server._verify("https://evil.example")
