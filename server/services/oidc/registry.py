"""Registered relying parties, one agreement each: ``providers add`` records a service
provider's client id (its provider id: the name of its API keys, the audience of its tokens,
what its pseudonyms are derived for), name, redirect URIs, keys, logout URIs, what it is
entitled to and its SSO group. Every change is audited."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.orm import Session

from server.domain.errors import ConflictingState, DomainError, UnknownSubject
from server.services.access import OWN_PROVIDER_PREFIX, valid_display_name
from server.storage.oidc_repositories import ClientRepository
from server.storage.oidc_tables import OidcClient

ENTITLEMENTS = frozenset({"cpr", "name"})
ID_TOKEN_ALGS = ("ES256", "RS256")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:/@-]{1,128}$")  # as an API key's name
_GROUP = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}
PUBLIC_KEY_TYPES = frozenset({"EC", "RSA"})

Audit = Callable[[str, dict[str, Any]], None]


class ProviderRejected(DomainError):
    """A registration that cannot be recorded as given (a bad URI, a key that is not public)."""

    code = "provider-rejected"


class ProviderExists(ConflictingState):
    code = "provider-exists"


class ProviderUnknown(UnknownSubject):
    code = "not-found"


def check_uri(value: str, what: str) -> str:
    """An absolute https URI without a fragment or user information (plain http only on this
    machine, for development)."""
    parts = urlsplit(value)
    bad = not parts.hostname or "@" in parts.netloc or parts.fragment
    if bad or any(ord(ch) <= 32 for ch in value) or len(value) > 2048:
        raise ProviderRejected(f"bad {what}", detail=f"{what} must be an absolute URI: {value}")
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return value
    raise ProviderRejected(f"bad {what}", detail=f"{what} must be https (http on localhost)")


def public_key_set(document: Any) -> dict[str, Any]:
    """A JWK set of public EC or RSA keys (no private members), as given."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ProviderRejected("bad jwks", detail='a JWK set is {"keys": [...]}')
    if not document["keys"]:
        raise ProviderRejected("bad jwks", detail="the JWK set holds no key")
    for key in document["keys"]:
        if not isinstance(key, dict) or key.get("kty") not in PUBLIC_KEY_TYPES:
            raise ProviderRejected("bad jwks", detail="only EC and RSA keys are accepted")
        if "d" in key:
            raise ProviderRejected("private key", detail="the JWK set holds a private key")
    try:
        KeySet.import_key_set(document)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError) as exc:
        raise ProviderRejected("bad jwks", detail=f"the JWK set cannot be read: {exc}") from None
    return {"keys": list(document["keys"])}


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secret_matches(client: OidcClient, secret: str) -> bool:
    """Whether ``secret`` is the client's development secret (in constant time)."""
    if client.secret_digest is None:
        return False
    return hmac.compare_digest(secret_digest(secret), client.secret_digest)


@dataclass(frozen=True)
class Registration:
    """What ``providers add`` records."""

    client_id: str
    name: str
    redirect_uris: Sequence[str]
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    dev_secret: bool = False
    post_logout_redirect_uris: Sequence[str] = ()
    backchannel_logout_uri: str | None = None
    entitled: Iterable[str] = ()
    sso_group: str | None = None
    id_token_alg: str = "ES256"  # noqa: S105 - an algorithm's name


class ProviderRegistry:
    """The registered relying parties of one session."""

    def __init__(self, session: Session, audit: Audit = lambda event, details: None) -> None:
        self._clients = ClientRepository(session)
        self._audit = audit

    def find(self, client_id: str) -> OidcClient | None:
        return self._clients.find(client_id)

    def name(self, client_id: str) -> str | None:
        client = self._clients.find(client_id)
        return None if client is None else client.name

    def all(self) -> list[OidcClient]:
        return self._clients.all()

    def add(self, registration: Registration) -> tuple[OidcClient, str | None]:
        """Record ``registration``; the client and, for a development client, its secret
        (shown once, only its digest is kept)."""
        r = registration
        if not _CLIENT_ID.fullmatch(r.client_id) or r.client_id.startswith(OWN_PROVIDER_PREFIX):
            raise ProviderRejected(
                "bad client id",
                detail="a client id is 1-128 characters of A-Z a-z 0-9 . _ : / @ - "
                f"(not beginning {OWN_PROVIDER_PREFIX!r})",
            )
        if not valid_display_name(r.name):
            raise ProviderRejected("bad name", detail="a name is 1-100 printable characters")
        if not r.redirect_uris:
            raise ProviderRejected("no redirect uri", detail="give at least one redirect URI")
        ways = [r.jwks is not None, r.jwks_uri is not None, r.dev_secret]
        if sum(ways) != 1:
            raise ProviderRejected(
                "client authentication",
                detail="give exactly one of a JWK set, a JWKS URI or a development secret",
            )
        entitled = sorted(set(r.entitled))
        if not set(entitled) <= ENTITLEMENTS:
            raise ProviderRejected(
                "bad entitlement", detail=f"entitlements are {', '.join(sorted(ENTITLEMENTS))}"
            )
        if r.sso_group is not None and not _GROUP.fullmatch(r.sso_group):
            raise ProviderRejected("bad sso group", detail="an SSO group is a-z 0-9 . _ -")
        if r.id_token_alg not in ID_TOKEN_ALGS:
            raise ProviderRejected("bad id token alg", detail="ID tokens are ES256 or RS256")
        if self._clients.find(r.client_id) is not None:
            raise ProviderExists("provider exists", detail=f"{r.client_id} is registered")
        secret = secrets.token_urlsafe(32) if r.dev_secret else None
        client = OidcClient(
            client_id=r.client_id,
            name=r.name,
            redirect_uris=[check_uri(uri, "redirect URI") for uri in r.redirect_uris],
            jwks=None if r.jwks is None else public_key_set(r.jwks),
            jwks_uri=None if r.jwks_uri is None else check_uri(r.jwks_uri, "JWKS URI"),
            secret_digest=None if secret is None else secret_digest(secret),
            post_logout_redirect_uris=[
                check_uri(uri, "post-logout redirect URI") for uri in r.post_logout_redirect_uris
            ],
            backchannel_logout_uri=(
                None
                if r.backchannel_logout_uri is None
                else check_uri(r.backchannel_logout_uri, "back-channel logout URI")
            ),
            entitled=entitled,
            sso_group=r.sso_group,
            id_token_alg=r.id_token_alg,
            created_at=dt.datetime.now(dt.UTC),
        )
        self._clients.add(client)
        self._audit(
            "provider.registered",
            {
                "provider": client.client_id,
                "name": client.name,
                "redirect_uris": client.redirect_uris,
                "authentication": "private_key_jwt" if secret is None else "client_secret_basic",
                "entitled": entitled,
                "sso_group": client.sso_group,
                "id_token_alg": client.id_token_alg,
            },
        )
        return client, secret

    def remove(self, client_id: str) -> None:
        if not self._clients.remove(client_id):
            raise ProviderUnknown("no such provider", detail=f"{client_id} is not registered")
        self._audit("provider.removed", {"provider": client_id})
