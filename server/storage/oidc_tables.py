"""Tables of the OpenID Provider: the registered relying parties (one agreement each), the
authorization requests waiting for their login, the codes and access tokens issued, and the
client assertion ids already seen. Same metadata as ``tables``; created only by migrations.

Codes and tokens are kept as the SHA-256 digests of their values, so a database dump holds
nothing a client could present."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from server.storage.tables import Base, Json, UtcDateTime, utcnow


class OidcClient(Base):
    """A service provider registered as a relying party; ``client_id`` is its provider id (the
    name of its API keys, the audience of its tokens, what its pseudonyms are derived for)."""

    __tablename__ = "oidc_clients"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    redirect_uris: Mapped[list[str]] = mapped_column(Json, default=list)
    # The client's public keys for private_key_jwt: inline (a JWK set) or where to fetch them.
    jwks: Mapped[dict[str, Any] | None] = mapped_column(Json)
    jwks_uri: Mapped[str | None] = mapped_column(String(2048))
    # client_secret_basic (development only): the SHA-256 of the secret, never the secret.
    secret_digest: Mapped[str | None] = mapped_column(String(64))
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(Json, default=list)
    backchannel_logout_uri: Mapped[str | None] = mapped_column(String(2048))
    # What the provider may receive beyond the pseudonym: "cpr", "name".
    entitled: Mapped[list[str]] = mapped_column(Json, default=list)
    sso_group: Mapped[str | None] = mapped_column(String(64))
    # How its ID tokens are signed: ES256 (the service's assertion key) or RS256.
    id_token_alg: Mapped[str] = mapped_column(String(8), default="ES256", server_default="ES256")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class OidcRequest(Base):
    """An authorization request waiting for its login (``transaction_id``): the parameters as
    validated, so the answer is made from them and not from anything the browser sends later."""

    __tablename__ = "oidc_requests"

    transaction_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)


class OidcCode(Base):
    """An authorization code: what the login proved and what the request asked, for one use."""

    __tablename__ = "oidc_codes"

    code_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    transaction_id: Mapped[uuid.UUID] = mapped_column()
    identity_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("identities.id"))
    redirect_uri: Mapped[str] = mapped_column(String(2048))
    scope: Mapped[str] = mapped_column(String(1024))
    nonce: Mapped[str | None] = mapped_column(String(255))
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(16))
    acr: Mapped[str] = mapped_column(String(128))
    amr: Mapped[list[str]] = mapped_column(Json, default=list)
    auth_time: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    sid: Mapped[str] = mapped_column(String(64))
    # The claims the request asked for by name (the "claims" parameter's members).
    claims: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())


class OidcToken(Base):
    """An access token for the userinfo endpoint, from the code it was issued for."""

    __tablename__ = "oidc_tokens"

    token_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    code_digest: Mapped[str] = mapped_column(String(64), index=True)
    client_id: Mapped[str] = mapped_column(String(128))
    identity_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("identities.id"))
    scope: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())


class OidcAssertionId(Base):
    """A client assertion's ``jti``, kept until the assertion expires: seen twice, refused."""

    __tablename__ = "oidc_assertion_ids"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)


class OidcSsoSession(Base):
    """A browser's single sign-on session within one SSO group: who logged in, at which level
    and when, and the providers it served (for back-channel logout). ``browser_binding`` is
    the keyed digest of the browser's session token, as a login's."""

    __tablename__ = "oidc_sso_sessions"

    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    browser_binding: Mapped[str] = mapped_column(String(64), index=True)
    sso_group: Mapped[str] = mapped_column(String(64))
    identity_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("identities.id"))
    level: Mapped[str] = mapped_column(String(16))
    amr: Mapped[list[str]] = mapped_column(Json, default=list)
    # The credentials the session's logins were proven with: a session one of them no longer
    # backs (blocked, lost, revoked) answers no provider.
    credentials: Mapped[list[str]] = mapped_column(Json, default=list)
    auth_time: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    clients: Mapped[list[str]] = mapped_column(Json, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
