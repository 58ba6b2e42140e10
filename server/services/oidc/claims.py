"""The claims a relying party receives: in the ID token the per-provider pseudonym as ``sub``,
the level as its NSIS ``acr`` URI, ``amr``, ``auth_time``, ``nonce`` and ``sid``; the national
person number and the name only where the provider is entitled to them *and* asked for them
by scope (``cpr``, ``profile``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from server.services.pseudonyms import Pseudonyms
from server.storage.oidc_tables import OidcClient, OidcCode
from server.storage.tables import Identity

CPR_CLAIM = "https://data.gov.dk/model/core/eid/cprNumber"
# Scope -> (entitlement, claims it releases).
SCOPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "cpr": ("cpr", (CPR_CLAIM,)),
    "profile": ("name", ("name",)),
}
SUPPORTED_SCOPES = ("openid", *SCOPES)
CLAIMS_SUPPORTED = (
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "sid",
    "at_hash",
    "name",
    CPR_CLAIM,
)


def allowed_scope(client: OidcClient, requested: str | None) -> str:
    """The scopes of ``requested`` this client gets: ``openid`` and what it is entitled to
    (others are ignored, as unknown scopes are)."""
    wanted = (requested or "").split()
    kept = [
        scope
        for scope in SUPPORTED_SCOPES
        if scope in wanted and (scope == "openid" or SCOPES[scope][0] in client.entitled)
    ]
    return " ".join(kept)


def person_claims(client: OidcClient, identity: Identity, scope: str) -> dict[str, Any]:
    """The person's own data for ``scope`` (already cut to what ``client`` is entitled to)."""
    found: dict[str, Any] = {}
    granted = set(scope.split())
    for name, (entitlement, released) in SCOPES.items():
        if name not in granted or entitlement not in client.entitled:
            continue
        for claim in released:
            found[claim] = identity.person_number if claim == CPR_CLAIM else identity.name
    return found


def subject(pseudonyms: Pseudonyms, identity: Identity, client: OidcClient) -> str:
    return str(pseudonyms.pseudonym(identity.id, client.client_id))


def id_token_claims(
    *,
    issuer: str,
    client: OidcClient,
    identity: Identity,
    code: OidcCode,
    pseudonyms: Pseudonyms,
    now: dt.datetime,
    lifetime: dt.timedelta,
) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject(pseudonyms, identity, client),
        "aud": client.client_id,
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
        "auth_time": int(code.auth_time.timestamp()),
        "acr": code.acr,
        "amr": list(code.amr),
        "sid": code.sid,
    }
    if code.nonce:
        claims["nonce"] = code.nonce
    claims.update(person_claims(client, identity, code.scope))
    return claims
