"""``CredentialService``: the one object the API, the pages and the other services change
credentials through, the lifecycle joined with token batches, activation and passwords."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy.orm import Session

from server.domain.model import CredentialKind
from server.services.credentials.activation import Activation
from server.services.credentials.admission import AddedBy
from server.services.credentials.batches import TokenBatches
from server.services.credentials.lifecycle import CredentialLifecycle
from server.services.credentials.passwords import PasswordCredentials, PasswordVerdict
from server.services.identities import AuditHook, no_audit
from server.services.passwords import Passwords
from server.services.secretbox import SecretBox
from server.storage.tables import Credential


class CredentialService(CredentialLifecycle):
    """Every credential change, in the caller's transaction; each change is audited. The
    lifecycle is its own; the other parts are delegated to, each with this lifecycle."""

    def __init__(
        self,
        session: Session,
        secrets: SecretBox,
        passwords: Passwords,
        *,
        clock: Callable[[], float],
        audit: AuditHook = no_audit,
    ) -> None:
        super().__init__(session, audit=audit)
        self._batches = TokenBatches(session, self, secrets, audit=audit)
        self._activation = Activation(self, secrets, clock=clock, audit=audit)
        self._passwords = PasswordCredentials(
            session, self, secrets, passwords, audit=audit, clock=clock
        )

    def import_batch(
        self, document: bytes, *, psk: bytes | None = None, kind: CredentialKind | None = None
    ) -> list[Credential]:
        """See ``TokenBatches.import_batch``."""
        return self._batches.import_batch(document, psk=psk, kind=kind)

    def activate(self, credential_id: uuid.UUID, code: str, *, added_by: AddedBy) -> Credential:
        """See ``Activation.activate``."""
        return self._activation.activate(credential_id, code, added_by=added_by)

    def activate_proven(self, credential_id: uuid.UUID, *, added_by: AddedBy) -> Credential:
        """See ``Activation.activate_proven``."""
        return self._activation.activate_proven(credential_id, added_by=added_by)

    def set_password(
        self,
        identity_id: uuid.UUID,
        password: str,
        *,
        added_by: AddedBy,
        current_password: str | None = None,
    ) -> Credential:
        """See ``PasswordCredentials.set_password``."""
        return self._passwords.set_password(
            identity_id, password, added_by=added_by, current_password=current_password
        )

    def check_password(
        self,
        identity_id: uuid.UUID,
        password: str,
        *,
        record_use: bool = True,
        verdict: PasswordVerdict | None = None,
    ) -> Credential:
        """See ``PasswordCredentials.check_password``."""
        return self._passwords.check_password(
            identity_id, password, record_use=record_use, verdict=verdict
        )

    def stored_password(self, identity_id: uuid.UUID) -> tuple[Credential, str] | None:
        """See ``PasswordCredentials.stored_password``."""
        return self._passwords.stored_password(identity_id)
