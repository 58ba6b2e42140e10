"""The guided migration from the legacy eID: one persisted flow per legacy user (the state
machine of ``flow_model``) that takes a person from the legacy proof to a new identity with
active authenticators, in the caller's transaction, with a ``migration_events`` row for every
step taken, failed or dropped.

Every step is idempotent: a step that succeeded, sent again (a retried POST whose answer was
lost, a second browser after the first finished), answers the same and changes nothing, read
from the flow's state and stored results. Steps that change the flow bump its ``version``
first, so of two concurrent attempts the second gets ``FlowChanged`` (409) before it can create
anything; the identity and its first credentials are made in one savepoint, so a failed
activation leaves no identity behind.

The flow id is the resume link's capability, and a flow is found again by its legacy user id:
a start answers the same flow id and key number for anyone who types that user id. So a start
also *re-arms* the proof (``pending_index``): until the legacy credentials are proven again,
the flow shows and accepts nothing but the proof, exactly like the flow of a user id nobody
has (a decoy id derived from the typed id, nothing stored). A flow left idle is marked
abandoned by ``flow_sweep`` and resumes, where it stopped, after a new proof.
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.orm import Session

from server.domain.errors import DomainError
from server.domain.model import CredentialState, ProofingChannel
from server.services.credentials import CredentialService
from server.services.identities import AuditHook, IdentityService, no_audit
from server.services.lifecycle_errors import (
    ActivationCodeRejected,
    ConcurrentChange,
    CredentialNotFound,
    TokenNotFound,
)
from server.services.migration.errors import LegacyError, LegacyProofFailed
from server.services.migration.flow_enrolment import FlowEnrolment
from server.services.migration.flow_errors import (
    ActivationIncomplete,
    ActivationInputMissing,
    AlreadyMigrated,
    CredentialNotUsable,
    DetailsMismatch,
    InvalidChoice,
    ProofRequired,
    StartAgain,
    StepNotAvailable,
)
from server.services.migration.flow_model import (
    DEFAULT_PROPOSAL,
    ENROLLED_APART,
    STEP_OF_STATE,
    Authenticator,
    EventOutcome,
    EventStep,
    FlowState,
    FlowView,
    Started,
    activation_inputs,
    choice_problem,
    proof_view,
)
from server.services.migration.flow_record import FlowRecord
from server.services.migration.legacy_proof import Method
from server.services.migration.store import LegacyStore
from server.services.person_number import PersonNumber
from server.storage.migration_repositories import MigrationFlowRepository
from server.storage.migration_tables import LegacyUser, LegacyUserStatus
from server.storage.tables import Credential

F = FlowState
# Wrong codes, unknown token serials or mismatched details in a row after a proof: then the
# flow wants the legacy proof again (a key-card code each), so guessing costs the guesser.
DEFAULT_MAX_STEP_FAILURES = 3


def _fold(name: str) -> bytes:
    """A name as compared: Unicode-normalised, case-folded, single spaces."""
    return unicodedata.normalize("NFC", " ".join(name.split())).casefold().encode("utf-8")


def _same(stored: str, typed: str) -> bool:
    return hmac.compare_digest(stored.encode("utf-8"), typed.encode("utf-8"))


class MigrationFlows:
    """The guided migration over one session (see the module docstring). ``decoy_key`` (32
    bytes or more) derives the flow ids shown for user ids nobody has; ``clock`` returns seconds
    since the epoch, like ``Services.clock``."""

    def __init__(
        self,
        session: Session,
        store: LegacyStore,
        identities: IdentityService,
        credentials: CredentialService,
        *,
        decoy_key: bytes,
        clock: Callable[[], float] = time.time,
        audit: AuditHook = no_audit,
        max_step_failures: int = DEFAULT_MAX_STEP_FAILURES,
    ) -> None:
        if len(decoy_key) < 32:
            raise ValueError("the decoy key has at least 32 bytes")
        if max_step_failures < 1:
            raise ValueError("max_step_failures is at least 1")
        self._flows = MigrationFlowRepository(session)
        self._store = store
        self._credentials = credentials
        self._decoy_key = decoy_key
        self._audit = audit
        self._record = FlowRecord(
            self._flows, store, clock=clock, audit=audit, max_failures=max_step_failures
        )
        self._enrolment = FlowEnrolment(session, identities, credentials, audit)

    def now(self) -> dt.datetime:
        return self._record.now()

    def decoy_id(self, user_id: str) -> uuid.UUID:
        """The flow id answered for a user id nobody has: the same every time, like a real
        user's flow id, and unguessable without the key."""
        mac = hmac.digest(self._decoy_key, b"migration-flow|" + user_id.encode("utf-8"), "sha256")
        return uuid.UUID(bytes=mac[:16], version=4)

    # --- reading ---------------------------------------------------------------------------------

    def view(self, flow_id: uuid.UUID) -> FlowView:
        """Where the flow stands; before its legacy proof, the same as for any other id."""
        flow = self._record.get(flow_id)
        if flow is None or flow.pending_index is not None:
            return proof_view(flow_id)
        return self._record.view(flow)

    def channel_of(self, flow_id: uuid.UUID) -> ProofingChannel | None:
        """The channel a flow runs on (``None`` for an id nobody has), for access checks."""
        flow = self._record.get(flow_id)
        return flow.channel if flow is not None else None

    # --- start -----------------------------------------------------------------------------------

    def start(
        self,
        user_id: str,
        channel: ProofingChannel = ProofingChannel.SELF_SERVICE,
        *,
        document_kind: str | None = None,
        operator_ids: Sequence[str] = (),
    ) -> Started:
        """Begin (or find again) the flow of ``user_id`` and pick the key number to show. The
        answer is the same whether or not the user id exists, was migrated or has a flow in
        progress: that is told only after the legacy proof. At an assisted channel the operator
        records the document checked and the operators present."""
        index = self._store.begin_proof(user_id)
        user = self._store.find(user_id)
        if user is None or user.status is LegacyUserStatus.CLOSED:
            flow_id = self.decoy_id(user_id)
            self._audit(
                "migration.flow.start",
                {"flow": str(flow_id), "legacy_user": None, "channel": channel.value},
            )
            return Started(proof_view(flow_id), index)
        checks: dict[str, Any] = {"document_kind": document_kind} if document_kind else {}
        flow = self._record.of_user(user.user_id)
        if flow is None:
            flow = self._record.create(user, channel, checks, operator_ids, index)
        else:
            self._record.rearm(flow, channel, checks, operator_ids, index)
        self._audit(
            "migration.flow.start",
            {"flow": str(flow.id), "legacy_user": user.user_id, "channel": channel.value},
        )
        return Started(proof_view(flow.id), index)

    # --- prove -----------------------------------------------------------------------------------

    def prove(
        self,
        flow_id: uuid.UUID,
        user_id: str,
        password: str,
        code: str,
        *,
        method: Method = Method.KEY_CARD,
        source: str | None = None,
    ) -> FlowView:
        """The legacy proof: password and the code for the key number shown (or the legacy
        code token's code). Failures go through the legacy store (its counters, lockout and
        per-source throttle) and are ``recorded``, with a new key number."""
        flow = self._record.get(flow_id)
        context = {"purpose": "migration", "flow": str(flow_id)}
        if flow is None or not _same(flow.user_id, user_id):
            return self._prove_for_nobody(user_id, password, code, source, context)
        if flow.pending_index is None:
            if flow.abandoned_at is not None:
                raise StartAgain
            return self._record.view(flow)  # proven before: the same answer
        try:
            if method is Method.CODE_TOKEN:
                proof = self._store.prove_with_token(
                    flow.user_id, password, code, source=source, context=context
                )
            else:
                proof = self._store.prove(
                    flow.user_id,
                    password,
                    flow.pending_index,
                    code,
                    source=source,
                    context=context,
                )
        except LegacyProofFailed as exc:
            # As legacy login does: a failed code is followed by a new key number.
            flow.pending_index = self._store.begin_proof(flow.user_id)
            self._record.failed(flow, EventStep.LEGACY_PROVEN, counts=False)
            raise exc.record(index=flow.pending_index) from None
        except LegacyError as exc:
            self._record.failed(flow, EventStep.LEGACY_PROVEN, counts=False)
            raise exc.record() from None
        flow.pending_index = None
        flow.failures = 0
        flow.updated_at = self.now()
        if F(flow.state) is F.COMPLETED or proof.user.status is LegacyUserStatus.MIGRATED:
            self._record.save(flow)
            self._audit("migration.flow.refused", {"flow": str(flow.id), "reason": "migrated"})
            raise AlreadyMigrated().record()
        if F(flow.state) is F.STARTED:
            self._record.move(flow, F.LEGACY_PROVEN)
        resumed = flow.abandoned_at is not None
        flow.abandoned_at = None
        self._record.event(flow, EventStep.LEGACY_PROVEN, EventOutcome.OK)
        self._record.save(flow)
        self._audit(
            "migration.flow.proven",
            {"flow": str(flow.id), "legacy_user": flow.user_id, "resumed": resumed},
        )
        return self._record.view(flow)

    def _prove_for_nobody(
        self,
        user_id: str,
        password: str,
        code: str,
        source: str | None,
        context: dict[str, Any],
    ) -> FlowView:
        """A proof on an id that is nobody's flow (or another user's): it runs and counts as a
        failed proof of the typed user id, as any other, against no key number at all."""
        try:
            self._store.prove(user_id, password, "", code, source=source, context=context)
        except LegacyProofFailed as exc:
            raise exc.record(index=self._store.begin_proof(user_id)) from None
        except LegacyError as exc:
            raise exc.record() from None
        raise ProofRequired  # pragma: no cover - no card has the key number ""

    # --- confirm ---------------------------------------------------------------------------------

    def confirm(self, flow_id: uuid.UUID, person_number: str, name: str) -> FlowView:
        """The person confirms who the legacy eID says they are: their person number (typed)
        and name (as shown). A mismatch creates nothing and counts as a failed step."""
        flow = self._record.proven(flow_id)
        user = self._record.user(flow)
        typed = PersonNumber.parse(person_number).formatted
        state = F(flow.state)
        if STEP_OF_STATE[state] < STEP_OF_STATE[F.LEGACY_PROVEN]:
            raise StepNotAvailable("confirm", self._record.next(flow)[0])
        mismatch = self._mismatch(user, typed, name)
        if state is not F.LEGACY_PROVEN:
            if mismatch is not None:
                raise DetailsMismatch(mismatch)
            return self._record.view(flow)  # confirmed before: the same answer
        self._record.claim(flow)
        if mismatch is not None:
            extra = self._record.failed(flow, EventStep.DETAILS_CONFIRMED, counts=True)
            raise DetailsMismatch(mismatch).record(**extra)
        self._record.move(flow, F.DETAILS_CONFIRMED)
        flow.failures = 0  # the failures counted are those in a row: a success ends the run
        self._record.event(flow, EventStep.DETAILS_CONFIRMED, EventOutcome.OK)
        self._record.save(flow)
        self._audit("migration.flow.confirmed", {"flow": str(flow.id)})
        return self._record.view(flow)

    @staticmethod
    def _mismatch(user: LegacyUser, typed_number: str, name: str) -> str | None:
        # Both compared every time, in constant time.
        number_ok = _same(user.person_number, typed_number)
        name_ok = hmac.compare_digest(_fold(user.name), _fold(name))
        if not number_ok:
            return "person_number"
        return None if name_ok else "name"

    # --- choose ----------------------------------------------------------------------------------

    def choose(self, flow_id: uuid.UUID, kinds: Sequence[Authenticator] | None = None) -> FlowView:
        """Choose the new authenticators; ``None`` takes the proposal (code display and
        password), the one decision most people need to make."""
        flow = self._record.proven(flow_id)
        chosen = tuple(kinds) if kinds is not None else DEFAULT_PROPOSAL
        problem = choice_problem(chosen)
        if problem is not None:
            raise InvalidChoice(problem)
        state = F(flow.state)
        current = tuple(Authenticator(kind) for kind in flow.chosen)
        if state in (F.AUTHENTICATOR_CHOSEN, F.ACTIVATION_PENDING, F.COMPLETED):
            if set(chosen) == set(current):
                return self._record.view(flow)  # chosen before: the same answer
        if state not in (F.DETAILS_CONFIRMED, F.AUTHENTICATOR_CHOSEN, F.ACTIVATION_PENDING):
            raise StepNotAvailable("choose", self._record.next(flow)[0])
        self._record.claim(flow)
        if state is not F.AUTHENTICATOR_CHOSEN:
            self._record.move(flow, F.AUTHENTICATOR_CHOSEN)
        flow.chosen = [kind.value for kind in chosen]
        for kind in chosen:
            self._record.event(flow, EventStep.AUTHENTICATOR_CHOSEN, EventOutcome.OK, kind)
        self._record.save(flow)
        self._audit(
            "migration.flow.chosen",
            {"flow": str(flow.id), "kinds": flow.chosen, "proposal": kinds is None},
        )
        return self._record.view(flow)

    # --- activate --------------------------------------------------------------------------------

    def activate(
        self,
        flow_id: uuid.UUID,
        *,
        password: str | None = None,
        serial: str | None = None,
        code: str | None = None,
    ) -> FlowView:
        """Create the new identity and activate what was chosen: set the password, assign the
        token ``serial`` and activate it with the ``code`` it shows. Identity and credentials
        are made together or not at all; a failure keeps the flow at activation pending, to be
        tried again with another code or another token. A security key or smartcard is
        enrolled afterwards through its own routes (``record_credential``)."""
        flow = self._record.proven(flow_id)
        state = F(flow.state)
        if state is F.COMPLETED:
            return self._record.view(flow)
        if state not in (F.AUTHENTICATOR_CHOSEN, F.ACTIVATION_PENDING):
            raise StepNotAvailable("activate", self._record.next(flow)[0])
        todo = [kind for kind in self._record.still_to_activate(flow) if kind not in ENROLLED_APART]
        if flow.identity_id is not None and not todo:
            if state is F.AUTHENTICATOR_CHOSEN:
                self._record.claim(flow)
                self._record.move(flow, F.ACTIVATION_PENDING)
                self._record.save(flow)
            return self._record.view(flow)  # activated before: the same answer
        given = {"password": password, "serial": serial, "code": code}
        missing = tuple(need for need in activation_inputs(todo) if not given[need])
        if missing:
            raise ActivationInputMissing(missing)
        self._record.claim(flow)
        if state is F.AUTHENTICATOR_CHOSEN:
            self._record.move(flow, F.ACTIVATION_PENDING)
            self._record.save(flow)
        user = self._record.user(flow)
        failing: Authenticator | None = None
        made: list[tuple[Authenticator, Credential]] = []
        try:
            with self._flows.savepoint():
                identity_id = flow.identity_id or self._enrolment.enrol(flow, user).id
                for kind in todo:
                    failing = kind
                    made.append(
                        (
                            kind,
                            self._enrolment.activate_one(identity_id, kind, password, serial, code),
                        )
                    )
        except ConcurrentChange:
            raise
        except DomainError as exc:
            guessed = isinstance(exc, ActivationCodeRejected | TokenNotFound)
            extra = self._record.failed(flow, EventStep.ACTIVATED, counts=guessed, kind=failing)
            raise exc.record(**extra) from None
        flow.identity_id = identity_id
        flow.credential_ids = [*flow.credential_ids, *(str(c.id) for _, c in made)]
        flow.failures = 0
        for kind, _ in made:
            self._record.event(flow, EventStep.ACTIVATED, EventOutcome.OK, kind)
        self._record.save(flow)
        self._audit(
            "migration.flow.activated",
            {
                "flow": str(flow.id),
                "identity": str(identity_id),
                "kinds": [kind.value for kind, _ in made],
            },
        )
        return self._record.view(flow)

    # --- devices enrolled apart, and completion ---------------------------------------------------

    def record_credential(self, flow_id: uuid.UUID, credential_id: uuid.UUID) -> FlowView:
        """Record a security key or smartcard enrolled for the new identity through its own
        routes: it must be an active credential of that identity, of a kind chosen."""
        flow = self._record.proven(flow_id)
        if str(credential_id) in flow.credential_ids:
            return self._record.view(flow)  # recorded before: the same answer
        if F(flow.state) is not F.ACTIVATION_PENDING or flow.identity_id is None:
            raise StepNotAvailable("credentials", self._record.next(flow)[0])
        try:
            credential = self._credentials.get(credential_id)
        except CredentialNotFound:
            raise CredentialNotUsable from None
        if (
            credential.identity_id != flow.identity_id
            or credential.state is not CredentialState.ACTIVE
            or credential.kind.value not in flow.chosen
        ):
            raise CredentialNotUsable
        self._record.claim(flow)
        flow.credential_ids = [*flow.credential_ids, str(credential.id)]
        self._record.event(
            flow, EventStep.ACTIVATED, EventOutcome.OK, Authenticator(credential.kind.value)
        )
        self._record.save(flow)
        self._audit(
            "migration.flow.activated",
            {
                "flow": str(flow.id),
                "identity": str(flow.identity_id),
                "kinds": [credential.kind.value],
            },
        )
        return self._record.view(flow)

    def complete(self, flow_id: uuid.UUID) -> FlowView:
        """Finish: the legacy user is marked migrated to the new identity (legacy login keeps
        working until the shutdown date). Every chosen authenticator must be active."""
        flow = self._record.proven(flow_id)
        state = F(flow.state)
        if state is F.COMPLETED:
            return self._record.view(flow)
        if state is not F.ACTIVATION_PENDING or flow.identity_id is None:
            raise StepNotAvailable("complete", self._record.next(flow)[0])
        still = self._record.still_to_activate(flow)
        if still:
            raise ActivationIncomplete(tuple(kind.value for kind in still))
        self._record.claim(flow)
        self._store.mark_migrated(flow.user_id, flow.identity_id)
        self._record.move(flow, F.COMPLETED)
        flow.completed_at = self.now()
        self._record.event(flow, EventStep.COMPLETED, EventOutcome.OK)
        self._record.save(flow)
        self._audit(
            "migration.flow.completed",
            {"flow": str(flow.id), "identity": str(flow.identity_id), "kinds": flow.chosen},
        )
        return self._record.view(flow)
