"""Single sign-on: one session per browser and SSO group. A provider of the group asking for a
level the session reached gets its code without factors; asking for more, the person steps
up (a new login, whose level the session then takes). A provider outside the group, or of
none, never sees the session. Logging out ends the browser's session and makes the logout
tokens of back-channel logout for every provider it served."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from server.domain.model import CredentialState, IdentityStatus, Level
from server.services.pseudonyms import Pseudonyms
from server.storage.oidc_repositories import ClientRepository, SsoRepository
from server.storage.oidc_tables import OidcClient, OidcSsoSession
from server.storage.repositories import CredentialRepository, IdentityRepository

SSO_LIFETIME = dt.timedelta(hours=8)
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_LIFETIME = dt.timedelta(minutes=2)

Audit = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Authenticated:
    """Who logged in, how, when, and the session (``sid``) a code is issued in."""

    identity_id: uuid.UUID
    transaction_id: uuid.UUID
    level: Level
    amr: list[str]
    auth_time: dt.datetime
    sid: str
    credentials: tuple[uuid.UUID, ...] = ()


@dataclass(frozen=True)
class Delivery:
    """A logout token to POST to a provider's back-channel logout URI."""

    client_id: str
    uri: str
    claims: dict[str, Any]


def new_sid() -> str:
    return secrets.token_hex(16)


class SingleSignOn:
    """The SSO sessions of one database session."""

    def __init__(
        self,
        session: Session,
        clock: Callable[[], dt.datetime],
        pseudonyms: Pseudonyms,
        audit: Audit = lambda event, details: None,
    ) -> None:
        self._pseudonyms = pseudonyms
        self._sessions = SsoRepository(session)
        self._clients = ClientRepository(session)
        self._identities = IdentityRepository(session)
        self._credentials = CredentialRepository(session)
        self._clock = clock
        self._audit = audit

    def current(self, binding: str, group: str | None) -> OidcSsoSession | None:
        """The browser's session in ``group`` (none without a group), while its person is
        active and every credential its logins were proven with still is: a key or device
        blocked, lost or revoked since ends what it proved (the next provider gets a login)."""
        if group is None:
            return None
        for sso in self._sessions.of_browser(binding, self._clock()):
            if sso.sso_group != group:
                continue
            if self._identities.get(sso.identity_id).status is not IdentityStatus.ACTIVE:
                return None
            active = self._credentials.for_identity(sso.identity_id, {CredentialState.ACTIVE})
            if not set(sso.credentials) <= {str(credential.id) for credential in active}:
                continue
            return sso
        return None

    def recorded(self, binding: str, client: OidcClient, done: Authenticated) -> Authenticated:
        """After a login for ``client``: the browser's session in its group takes the login's
        level and time (a new one for another person); ``done`` with the session's sid. A
        client without a group gets a session id of the login alone."""
        if client.sso_group is None:
            return done
        now = self._clock()
        sso = self.current(binding, client.sso_group)
        if sso is not None and sso.identity_id != done.identity_id:
            self._end(sso, now, "another-person")
            sso = None
        if sso is None:
            sso = OidcSsoSession(
                sid=done.sid,
                browser_binding=binding,
                sso_group=client.sso_group,
                identity_id=done.identity_id,
                level=done.level.label,
                amr=list(done.amr),
                credentials=sorted({str(credential) for credential in done.credentials}),
                auth_time=done.auth_time,
                clients=[],
                created_at=now,
                expires_at=now + SSO_LIFETIME,
            )
            self._sessions.add(sso)
            self._audit(
                "oidc.sso_started",
                {"sid": sso.sid, "sso_group": sso.sso_group, "identity": str(done.identity_id)},
            )
        else:
            sso.level = max(Level.parse(sso.level), done.level).label
            sso.amr = sorted(set(sso.amr) | set(done.amr))
            sso.credentials = sorted(set(sso.credentials) | {str(c) for c in done.credentials})
            sso.auth_time = done.auth_time
        self.served(sso, client.client_id)
        return Authenticated(
            done.identity_id,
            done.transaction_id,
            Level.parse(sso.level),
            list(sso.amr),
            sso.auth_time,
            sso.sid,
            tuple(uuid.UUID(credential) for credential in sso.credentials),
        )

    def served(self, sso: OidcSsoSession, client_id: str) -> None:
        if client_id not in sso.clients:
            sso.clients = [*sso.clients, client_id]
            self._sessions.flush()

    @staticmethod
    def reuse(sso: OidcSsoSession, transaction_id: uuid.UUID) -> Authenticated:
        return Authenticated(
            sso.identity_id,
            transaction_id,
            Level.parse(sso.level),
            list(sso.amr),
            sso.auth_time,
            sso.sid,
            tuple(uuid.UUID(credential) for credential in sso.credentials),
        )

    def end(self, binding: str, sid: str | None = None) -> list[Delivery]:
        """Log the browser out (of the session ``sid``, or of all of its sessions): the
        logout tokens' contents for every provider each session served that takes them."""
        now = self._clock()
        deliveries: list[Delivery] = []
        for sso in self._sessions.of_browser(binding, now):
            if sid is not None and sso.sid != sid:
                continue
            deliveries.extend(self._end(sso, now, "logout"))
        return deliveries

    def _end(self, sso: OidcSsoSession, now: dt.datetime, reason: str) -> list[Delivery]:
        sso.ended_at = now
        self._sessions.flush()
        self._audit("oidc.sso_ended", {"sid": sso.sid, "reason": reason})
        deliveries = []
        for client_id in sso.clients:
            client = self._clients.find(client_id)
            if client is None or client.backchannel_logout_uri is None:
                continue
            claims = {
                "sub": str(self._pseudonyms.pseudonym(sso.identity_id, client_id)),
                "aud": client_id,
                "iat": int(now.timestamp()),
                "exp": int((now + LOGOUT_TOKEN_LIFETIME).timestamp()),
                "jti": secrets.token_urlsafe(16),
                "sid": sso.sid,
                "events": {BACKCHANNEL_EVENT: {}},
            }
            deliveries.append(Delivery(client_id, client.backchannel_logout_uri, claims))
        return deliveries
