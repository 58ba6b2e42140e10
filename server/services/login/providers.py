"""Who a login is for, as a person is told: the service provider's name where the service
knows one (its own self-service), else the provider's id (its API key's name)."""

from __future__ import annotations

# The provider of the citizen's own sign-in to self-service (``/account/login``).
SELF_SERVICE = "akkreditiv-self-service"

_DISPLAY_NAMES = {SELF_SERVICE: "akkreditiv self-service"}


def display_name(provider: str) -> str:
    """The name a person is shown for ``provider``: its display name, else the id itself."""
    return _DISPLAY_NAMES.get(provider, provider)
