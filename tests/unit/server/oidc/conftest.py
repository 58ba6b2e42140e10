"""The OpenID Provider's fixture (``op``: the service with registered relying parties)."""

from tests.unit.server.oidc.harness import op  # noqa: F401 - the fixture, shared by name
