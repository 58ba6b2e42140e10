"""Who a login is for, as a person is told: the service provider's display name (the
service's own for its self-service, else the one its API key carries, ``akkreditiv keys add
--display-name``), or the provider's id (its API key's name) where it has none."""

from __future__ import annotations

from collections.abc import Callable

# The provider of the citizen's own sign-in to self-service (``/account/login``).
SELF_SERVICE = "akkreditiv-self-service"

_DISPLAY_NAMES = {SELF_SERVICE: "akkreditiv self-service"}

# Where the display names of providers come from: their API keys (``ApiKeys.display_name``).
ProviderNames = Callable[[str], str | None]


def no_names(provider: str) -> str | None:
    return None


def display_name(provider: str, names: ProviderNames = no_names) -> str:
    """The name a person is shown for ``provider``: its display name, else the id itself."""
    return _DISPLAY_NAMES.get(provider) or names(provider) or provider
