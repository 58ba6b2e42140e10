"""A person becomes a bank's customer by logging in at its desk: the bank's operator begins a
login of the desk's own (its provider id names the organisation), the person completes it
through the ordinary login pages at Substantial or above (on the operator's screen or their
own device), and the operator's console finishes it: the person is recorded as served at the
organisation, audited with the operator as actor."""

from __future__ import annotations

import uuid

from server.domain.model import Level
from server.services.access import OWN_PROVIDER_PREFIX, Caller, Permission
from server.services.authentication import AuthenticationService
from server.services.identities import AuditHook
from server.services.login.errors import StepUpRequired
from server.storage.proofing_repositories import CustomerRepository
from server.storage.tables import AuthTransaction

# The provider id of a desk login: the prefix and the organisation whose desk it is, so only
# that organisation's operators can finish it (another's is answered as an unknown login).
DESK_PREFIX = f"{OWN_PROVIDER_PREFIX}desk:"
DESK_LEVEL = Level.SUBSTANTIAL


def desk_provider(organisation: str) -> str:
    return f"{DESK_PREFIX}{organisation}"


def desk_of(provider: str) -> str | None:
    """The organisation whose desk a login's provider id names (``None``: not a desk login)."""
    return provider.removeprefix(DESK_PREFIX) if provider.startswith(DESK_PREFIX) else None


class DeskLogins:
    """The desk logins of ``caller``, an operator; the login steps are ``authentication``'s."""

    def __init__(
        self,
        caller: Caller,
        authentication: AuthenticationService,
        customers: CustomerRepository,
        audit: AuditHook,
    ) -> None:
        self._caller = caller
        self._authentication = authentication
        self._customers = customers
        self._audit = audit

    def begin(self) -> AuthTransaction:
        """A login at this operator's desk, at Substantial or above, for the person in front
        of them to complete."""
        caller = self._caller
        caller.require(Permission.VIEW_IDENTITY)
        transaction = self._authentication.begin(desk_provider(caller.organisation), DESK_LEVEL)
        self._audit(
            "desk_login.begun",
            {"transaction": str(transaction.id), "organisation": caller.organisation},
        )
        return transaction

    def finish(self, transaction_id: uuid.UUID) -> uuid.UUID:
        """The person who completed the desk login ``transaction_id``, now served at the
        caller's organisation. Another organisation's desk login answers as an unknown login;
        one the person has not completed yet, ``StepUpRequired``."""
        caller = self._caller
        caller.require(Permission.VIEW_IDENTITY)
        outcome = self._authentication.complete(
            transaction_id, provider=desk_provider(caller.organisation)
        )
        identity_id = outcome.transaction.identity_id
        if identity_id is None or outcome.level < DESK_LEVEL:  # complete checks both already
            raise StepUpRequired(outcome.level, DESK_LEVEL)
        self._customers.logged_in_at_desk(
            identity_id, caller.organisation, transaction_id, caller.key_id, outcome.level
        )
        self._audit(
            "customer.logged_in_at_desk",
            {
                "identity_id": str(identity_id),
                "transaction": str(transaction_id),
                "organisation": caller.organisation,
                "level": outcome.level.label,
            },
        )
        return identity_id
