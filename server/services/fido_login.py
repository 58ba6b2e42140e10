"""The FIDO2 login factor's check (a ``FactorCheck``), and the verdict on an assertion that it
may reach before the step's write transaction.

python-fido2's ``authenticate_complete`` (the client data, the RP id hash, the flags, the
signature) is the CPU-bound part of a FIDO2 step. Made ``beforehand``, the check reaches its
verdict in a read session of its own, outside any write transaction; in the step's transaction
the challenge is spent and the identity's keys read as ever, and the verdict stands only if it
was reached on that same state and those same keys (else the assertion is checked again). The
signature counter, which clone detection needs, is compared and moved in the transaction.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fido2.server import Fido2Server
from fido2.utils import websafe_decode
from fido2.webauthn import AttestedCredentialData, AuthenticationResponse
from sqlalchemy.orm import Session

from server.domain.errors import DomainError, Unverified
from server.services.login.decoys import NOBODY
from server.services.login.record import Proof
from server.storage.tables import Credential

if TYPE_CHECKING:
    from server.services.fido import FidoService


class AssertionRejected(Unverified):
    """One answer for every failed assertion; ``reason`` is for the audit log only."""

    code = "verification-failed"

    def __init__(self, reason: str) -> None:
        super().__init__(reason, detail="the login did not succeed")
        self.reason = reason


def credential_data(credential: Credential) -> AttestedCredentialData:
    """The stored public key of a FIDO2 credential row."""
    return AttestedCredentialData(websafe_decode(str(credential.public_data["credential_data"])))


def _basis(state: dict[str, Any], candidates: Sequence[Credential]) -> bytes:
    """What a verdict was reached on: the pending state (its challenge within) and each key
    offered, by id and stored public key."""
    keys = sorted((str(c.id), str(c.public_data.get("credential_data"))) for c in candidates)
    text = json.dumps([state, keys], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).digest()


@dataclass(frozen=True)
class AssertionVerdict:
    """An assertion's check: the key that made it (``credential``), its counter and UV flag,
    or why it was refused; ``basis`` what it was reached on (``_basis``)."""

    basis: bytes
    credential: uuid.UUID | None = None
    counter: int = 0
    user_verified: bool = False
    refused: str | None = None

    def holds(self, state: dict[str, Any], candidates: Sequence[Credential]) -> bool:
        return self.basis == _basis(state, candidates)


def assertion_verdict(
    server: Fido2Server,
    state: dict[str, Any],
    candidates: Sequence[Credential],
    submitted: dict[str, Any],
) -> AssertionVerdict:
    """``submitted["response"]`` checked against ``state`` and the keys ``candidates``; no
    database work."""
    basis = _basis(state, candidates)
    if not candidates:
        # A person without a key was offered decoys: the same answer as a wrong assertion.
        return AssertionVerdict(basis, refused="no-credential")
    by_id = {credential_data(c).credential_id: c for c in candidates}
    try:
        assertion = AuthenticationResponse.from_dict(submitted["response"])
        matched = server.authenticate_complete(
            state, [credential_data(c) for c in candidates], assertion
        )
    except Exception as exc:
        return AssertionVerdict(basis, refused=type(exc).__name__)
    auth_data = assertion.response.authenticator_data
    return AssertionVerdict(
        basis,
        credential=by_id[matched.credential_id].id,
        counter=auth_data.counter,
        user_verified=auth_data.is_user_verified(),
    )


def verdict_beforehand(
    sessions: Callable[[], Session],
    reader: Callable[[Session], tuple[FidoService, uuid.UUID | None]],
    transaction_id: uuid.UUID,
    submitted: dict[str, Any],
) -> AssertionVerdict | None:
    """The verdict on ``submitted`` reached now, in a read session of ``sessions``: ``reader``
    gives the FIDO2 service on it and the identity the step checks, raising as the step would
    when it is refused before any check. None where nothing is checked here (refused before
    any check, nobody, no pending challenge): the step decides in its transaction as ever."""
    with sessions() as session:
        try:
            fido, identity_id = reader(session)
            state = fido.pending_state(transaction_id)
        except DomainError:
            return None
        if identity_id is None or state is None:
            return None
        return fido.verdict(state, identity_id, submitted)


class AssertionCheck:
    """The FIDO2 login factor of one transaction: a ``FactorCheck`` whose ``on_unknown``
    consumes the challenge for a person who does not exist, as the real check does."""

    def __init__(
        self,
        service: FidoService,
        transaction_id: uuid.UUID,
        verdict: AssertionVerdict | None = None,
    ) -> None:
        self._service = service
        self._transaction_id = transaction_id
        self._verdict = verdict

    def __call__(
        self,
        session: Session,
        identity_id: uuid.UUID,
        submitted: dict[str, Any],
        proven: frozenset[uuid.UUID] = frozenset(),
    ) -> Proof:
        return self._service.verify_assertion(
            self._transaction_id, identity_id, submitted, self._verdict
        )

    def on_unknown(self, submitted: dict[str, Any]) -> None:
        self._service.take_state(self._transaction_id)
        self._service.active_credentials(NOBODY)  # the lookup a real check makes
