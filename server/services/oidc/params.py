"""The parameters of an authorization request that decide the login, parsed from what the
relying party sent (untrusted): the level asked for (``acr_values``, or an ``acr`` claim in
``claims``), ``prompt``, ``max_age``, ``login_hint`` and the claims asked for by name.
Anything malformed is a ``BadParameter`` naming the parameter; unknown values are ignored,
as OpenID Connect asks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from server.domain.model import Level
from server.services.errors import InvalidPersonNumber
from server.services.oidc.levels import LEVEL_OF_ACR
from server.services.person_number import PersonNumber

PROMPTS = frozenset({"none", "login", "consent", "select_account"})
MAX_CLAIMS_LENGTH = 4096
MAX_AGE_LIMIT = 10 * 365 * 24 * 3600  # beyond ten years it means "any age"
MAX_HINT_LENGTH = 64
# Where claims are asked for in the ``claims`` parameter (OpenID Connect Core 5.5).
CLAIM_TARGETS = ("id_token", "userinfo")


class BadParameter(ValueError):
    """A parameter the request cannot be read with; ``parameter`` names it."""

    def __init__(self, parameter: str, description: str) -> None:
        super().__init__(f"{parameter}: {description}")
        self.parameter = parameter
        self.description = description


@dataclass(frozen=True)
class Ask:
    """What the relying party asks of the login."""

    level: Level
    prompt: frozenset[str] = frozenset()
    max_age: int | None = None
    person_number: str | None = None  # a well-formed login_hint, to pre-fill
    claims: dict[str, list[str]] = field(default_factory=dict)  # target -> claim names

    @property
    def fresh(self) -> bool:
        """Whether the login must prove its factors anew (no earlier session counts)."""
        return "login" in self.prompt or self.max_age is not None


def _levels(values: list[Any]) -> list[Level]:
    return [
        LEVEL_OF_ACR[value] for value in values if isinstance(value, str) and value in LEVEL_OF_ACR
    ]


def parse_claims(raw: str | None) -> tuple[dict[str, list[str]], list[Level] | None, bool]:
    """The ``claims`` parameter: the names asked for per target, the levels an ``acr`` claim
    accepts (None when it names none) and whether that claim is essential."""
    if raw is None or raw == "":
        return {}, None, False
    if len(raw) > MAX_CLAIMS_LENGTH:
        raise BadParameter("claims", "too long")
    try:
        document = json.loads(raw)
    except ValueError:
        raise BadParameter("claims", "not JSON") from None
    if not isinstance(document, dict):
        raise BadParameter("claims", "not a JSON object")
    names: dict[str, list[str]] = {}
    acr_levels: list[Level] | None = None
    essential = False
    for target in CLAIM_TARGETS:
        members = document.get(target)
        if members is None:
            continue
        if not isinstance(members, dict):
            raise BadParameter("claims", f"{target} is not an object")
        for name, request in members.items():
            if request is not None and not isinstance(request, dict):
                raise BadParameter("claims", f"{target}.{name} is neither null nor an object")
        names[target] = sorted(str(name) for name in members)
        acr = members.get("acr")
        if isinstance(acr, dict):
            values = acr.get("values")
            if "value" in acr:
                values = [acr["value"]]
            if values is not None and not isinstance(values, list):
                raise BadParameter("claims", "acr values is not a list")
            essential = essential or acr.get("essential") is True
            if values:
                acr_levels = _levels(values)
    return names, acr_levels, essential


def parse_ask(params: Mapping[str, str], default: Level) -> Ask:
    """What ``params`` (the authorization request's) ask of the login. The level: the lowest
    that an essential ``acr`` claim accepts, else the lowest of the ``acr_values`` known here
    (any of them satisfies the request), else ``default``."""
    claims, claim_levels, essential = parse_claims(params.get("claims"))
    if essential and claim_levels is not None and not claim_levels:
        raise BadParameter("claims", "no acr value asked for is offered here")
    levels = claim_levels or _levels((params.get("acr_values") or "").split())
    level = min(levels) if levels else default
    prompt = frozenset((params.get("prompt") or "").split()) & PROMPTS
    if "none" in prompt and len(prompt) > 1:
        raise BadParameter("prompt", "none cannot be combined with another value")
    return Ask(
        level=level,
        prompt=prompt,
        max_age=_max_age(params.get("max_age")),
        person_number=_hint(params.get("login_hint")),
        claims=claims,
    )


def _max_age(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise BadParameter("max_age", "not a number of seconds")
    return min(int(raw), MAX_AGE_LIMIT)


def _hint(raw: str | None) -> str | None:
    """A login_hint that is a well-formed person number, formatted; anything else none."""
    if raw is None or len(raw) > MAX_HINT_LENGTH:
        return None
    try:
        return PersonNumber.parse(raw).formatted
    except InvalidPersonNumber:
        return None
