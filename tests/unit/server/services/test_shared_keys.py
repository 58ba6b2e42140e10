"""Several processes serve one database only with one set of keys: on SQLite and PostgreSQL, a
service whose key files hold other keys than those the database was first served with does
not start, and says which keys differ."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.services.errors import KeyMaterialRejected
from server.settings import Settings


def _elsewhere(settings: Settings, folder: Path, *names: str) -> Settings:
    """``settings`` with the key files ``names`` in ``folder`` (made there on start)."""
    return settings.model_copy(update={name: folder / f"{name}.key" for name in names})


def test_processes_with_the_same_keys_all_serve(settings: Settings) -> None:
    for _ in range(2):
        with TestClient(create_app(settings)) as client:
            assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("names", "named"),
    [
        (("kek_file",), "kek (AKKREDITIV_KEK_FILE)"),
        (("signing_key_file", "pseudonym_key_file"), "pseudonym (AKKREDITIV_PSEUDONYM_KEY_FILE)"),
        (("keycard_pepper_file",), "keycard_pepper (AKKREDITIV_KEYCARD_PEPPER_FILE)"),
    ],
)
def test_a_process_with_keys_of_its_own_is_refused(
    settings: Settings, tmp_path: Path, names: tuple[str, ...], named: str
) -> None:
    with TestClient(create_app(settings)):
        pass  # the first process records the keys' fingerprints
    other = _elsewhere(settings, tmp_path / "other-machine", *names)
    with pytest.raises(KeyMaterialRejected) as refused, TestClient(create_app(other)):
        pass
    assert named in str(refused.value)
    assert str(refused.value).count("AKKREDITIV_") == len(names)
    # The keys of the first process still serve.
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
