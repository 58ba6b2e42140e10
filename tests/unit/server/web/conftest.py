"""Fixtures of the page tests: the app on SQLite (the pages are a thin layer over services
that the API tests run on both databases), reached as a browser would, at its own origin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.settings import Settings
from tests.unit.server.conftest import ORIGIN


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite+pysqlite:///{tmp_path / 'akkreditiv.db'}"


@pytest.fixture
def browser(settings: Settings) -> Iterator[TestClient]:
    """A browser without script: it keeps cookies and follows nothing by itself."""
    with TestClient(create_app(settings), base_url=ORIGIN, raise_server_exceptions=False) as client:
        yield client
