"""The FIDO2 attestation roots the service trusts: read from the files its settings name on
each request, so a root added counts at once, and parsed again only when a file changed;
and the relying party's ``Fido2Server``, built once for logins."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from firmware_sim.tokens.attestation import Manufacturer
from server.services.errors import KeyMaterialRejected
from server.services.fido import _shared_server
from server.wiring import FidoPolicy, _roots_in


def _root(home: Path) -> bytes:
    return Manufacturer.load_or_create(home).root_pem()


def test_a_root_added_to_the_file_is_trusted_at_once(tmp_path: Path) -> None:
    first, second = _root(tmp_path / "a"), _root(tmp_path / "b")
    roots = tmp_path / "roots.pem"
    roots.write_bytes(first)
    trusted_roots = FidoPolicy(root_files=(roots,)).trusted_roots

    assert [r.public_bytes(Encoding.PEM) for r in trusted_roots()] == [first]
    with roots.open("ab") as more:
        more.write(second)
    assert [r.public_bytes(Encoding.PEM) for r in trusted_roots()] == [first, second]
    roots.write_bytes(second)  # rewritten: the first is no longer trusted
    assert [r.public_bytes(Encoding.PEM) for r in trusted_roots()] == [second]


def test_an_unchanged_file_is_not_parsed_again(tmp_path: Path) -> None:
    roots = tmp_path / "roots.pem"
    roots.write_bytes(_root(tmp_path / "a"))
    trusted_roots = FidoPolicy(root_files=(roots,)).trusted_roots
    trusted_roots()
    before = _roots_in.cache_info()
    for _ in range(3):
        trusted_roots()
    after = _roots_in.cache_info()
    assert (after.hits - before.hits, after.misses - before.misses) == (3, 0)


def test_a_missing_or_broken_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialRejected):
        FidoPolicy(root_files=(tmp_path / "missing.pem",)).trusted_roots()
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(KeyMaterialRejected):
        FidoPolicy(root_files=(broken,)).trusted_roots()


def test_the_login_server_is_built_once_per_relying_party() -> None:
    origins = frozenset({"https://login.example"})
    server = _shared_server("login.example", origins)
    assert _shared_server("login.example", frozenset({"https://login.example"})) is server
    assert _shared_server("other.example", origins) is not server
    # The origin check is the relying party's own list, nothing else.
    assert server._verify("https://login.example")
    assert not server._verify("https://evil.example")
