"""A guided migration flow's record: its row, read only once its legacy proof holds, moved
along its transitions under its version, its step events and failures, and where it stands."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from server.domain.model import ProofingChannel
from server.services.identities import AuditHook, masked_person_number
from server.services.migration.flow_errors import (
    FlowChanged,
    ProofRequired,
    StartAgain,
    StepNotAvailable,
)
from server.services.migration.flow_model import (
    DEFAULT_PROPOSAL,
    ENROLLED_APART,
    PROOF_NEEDS,
    STEP_OF_STATE,
    STEPS,
    TRANSITIONS,
    Authenticator,
    EventOutcome,
    EventStep,
    FlowState,
    FlowView,
    NextAction,
    activation_inputs,
)
from server.services.migration.store import LegacyStore
from server.storage.errors import StaleWrite
from server.storage.migration_repositories import MigrationFlowRepository
from server.storage.migration_tables import LegacyUser, MigrationFlow

F = FlowState


class FlowRecord:
    """The flows of one session. ``clock`` returns seconds since the epoch; after
    ``max_failures`` failed steps in a row a flow wants the legacy proof again."""

    def __init__(
        self,
        flows: MigrationFlowRepository,
        store: LegacyStore,
        *,
        clock: Callable[[], float],
        audit: AuditHook,
        max_failures: int,
    ) -> None:
        self._flows = flows
        self._store = store
        self._clock = clock
        self._audit = audit
        self._max_failures = max_failures

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    def get(self, flow_id: uuid.UUID) -> MigrationFlow | None:
        return self._flows.get(flow_id)

    def of_user(self, user_id: str) -> MigrationFlow | None:
        return self._flows.of_user(user_id)

    def create(
        self,
        user: LegacyUser,
        channel: ProofingChannel,
        checks: dict[str, Any],
        operator_ids: Sequence[str],
        index: str,
    ) -> MigrationFlow:
        """The new flow of ``user``, started, waiting for the proof of key number ``index``
        (or the flow a concurrent start made, re-armed)."""
        now = self.now()
        flow = MigrationFlow(
            id=uuid.uuid4(),
            user_id=user.user_id,
            wave_id=self._flows.invited_wave(user.user_id),
            channel=channel,
            state=F.STARTED.value,
            operator_ids=list(operator_ids),
            checks=checks,
            chosen=[],
            credential_ids=[],
            pending_index=index,
            failures=0,
            started_at=now,
            updated_at=now,
        )
        stored = self._flows.add_or_existing(flow)
        if stored is not flow:
            # A concurrent start made the flow first (one per legacy user): use that one.
            self.rearm(stored, channel, checks, operator_ids, index)
            return stored
        self.event(flow, EventStep.STARTED, EventOutcome.OK)
        self.save(flow)
        return flow

    def rearm(
        self,
        flow: MigrationFlow,
        channel: ProofingChannel,
        checks: dict[str, Any],
        operator_ids: Sequence[str],
        index: str,
    ) -> None:
        """A new start of an existing flow: the proof is due again (with a new key number), and
        the person may have moved to another channel (home, then the bank)."""
        if F(flow.state) is not F.COMPLETED:
            flow.channel = channel
            flow.checks = checks
            flow.operator_ids = list(operator_ids)
            flow.updated_at = self.now()
        flow.pending_index = index
        flow.failures = 0
        self.save(flow)

    def user(self, flow: MigrationFlow) -> LegacyUser:
        user = self._flows.legacy_user(flow.user_id)
        if user is None:  # pragma: no cover - a foreign key holds it
            raise ProofRequired
        return user

    def proven(self, flow_id: uuid.UUID) -> MigrationFlow:
        """The flow, if its legacy proof holds: otherwise the same answer as for an id nobody
        has (an abandoned flow, whose holder knows it exists, is told to start again)."""
        flow = self._flows.get(flow_id)
        if flow is None or flow.pending_index is not None:
            raise ProofRequired
        if flow.abandoned_at is not None:
            raise StartAgain
        return flow

    def move(self, flow: MigrationFlow, target: FlowState) -> None:
        current = F(flow.state)
        if target not in TRANSITIONS[current]:
            raise StepNotAvailable(target.value, self.next(flow)[0])
        flow.state = target.value

    def claim(self, flow: MigrationFlow) -> None:
        """Bump the flow's version before anything else changes: a concurrent attempt that read
        the same version fails here (PostgreSQL: waits for the first, then fails), before it
        could create an identity."""
        flow.updated_at = self.now()
        # An UPDATE (and a new version) even at the same time.
        self.save(flow, touched=True)

    def save(self, flow: MigrationFlow, *, touched: bool = False) -> None:
        flow_id = flow.id  # read now: after a failed flush the session needs a rollback
        try:
            self._flows.save(flow_id, touched=flow if touched else None)
        except StaleWrite:
            raise FlowChanged(f"migration flow {flow_id} changed concurrently") from None

    def event(
        self,
        flow: MigrationFlow,
        step: EventStep,
        outcome: EventOutcome,
        kind: Authenticator | None = None,
    ) -> None:
        self._flows.add_event(
            flow, self.now(), step.value, outcome.value, kind.value if kind is not None else None
        )

    def failed(
        self,
        flow: MigrationFlow,
        step: EventStep,
        *,
        counts: bool,
        kind: Authenticator | None = None,
    ) -> dict[str, Any]:
        """Record a failed step (its event; if it ``counts``, one more failure in a row: at the
        limit the flow wants the legacy proof again). Returns what the answer adds: the new key
        number, if the proof is due again."""
        flow.updated_at = self.now()
        self.event(flow, step, EventOutcome.FAILED, kind)
        extra: dict[str, Any] = {}
        if counts:
            flow.failures += 1
            if flow.failures >= self._max_failures:
                flow.failures = 0
                flow.pending_index = self._store.begin_proof(flow.user_id)
                extra = {"index": flow.pending_index, "proof_required": True}
        self.save(flow)
        self._audit(
            "migration.flow.step_failed",
            {
                "flow": str(flow.id),
                "step": step.value,
                "kind": kind.value if kind is not None else None,
                "proof_required": bool(extra),
            },
        )
        return extra

    # --- where a flow stands ---------------------------------------------------------------------

    def _active_kinds(self, flow: MigrationFlow) -> set[Authenticator]:
        kinds = self._flows.active_kinds([uuid.UUID(value) for value in flow.credential_ids])
        known = {kind.value for kind in Authenticator}
        return {Authenticator(kind.value) for kind in kinds if kind.value in known}

    def still_to_activate(self, flow: MigrationFlow) -> tuple[Authenticator, ...]:
        active = self._active_kinds(flow)
        return tuple(kind for kind in (Authenticator(k) for k in flow.chosen) if kind not in active)

    def next(
        self, flow: MigrationFlow, still: tuple[Authenticator, ...] | None = None
    ) -> tuple[NextAction | None, tuple[str, ...], int]:
        """The next action, what it needs, and the step (1..STEPS) the person is on; ``still``
        is what remains to activate, if the caller has it already."""
        state = F(flow.state)
        step = STEP_OF_STATE[state]
        if state is F.COMPLETED:
            return None, (), step
        if flow.abandoned_at is not None:
            return NextAction.START, ("user_id",), step
        if state is F.STARTED:
            return NextAction.PROVE, PROOF_NEEDS, step
        if state is F.LEGACY_PROVEN:
            return NextAction.CONFIRM, ("person_number", "name"), step
        if state is F.DETAILS_CONFIRMED:
            return NextAction.CHOOSE, (), step
        if still is None:
            still = self.still_to_activate(flow)
        in_flow = [kind for kind in still if kind not in ENROLLED_APART]
        if in_flow or flow.identity_id is None or state is F.AUTHENTICATOR_CHOSEN:
            return NextAction.ACTIVATE, activation_inputs(in_flow), step
        if still:
            return NextAction.ENROL, tuple(kind.value for kind in still), step
        return NextAction.COMPLETE, (), STEPS

    def view(self, flow: MigrationFlow) -> FlowView:
        user = self.user(flow)
        still = self.still_to_activate(flow) if flow.chosen else ()
        action, needed, step = self.next(flow, still)
        state = F(flow.state)
        return FlowView(
            id=flow.id,
            state=state,
            step=step,
            of=STEPS,
            next_action=action,
            needed=needed,
            abandoned=flow.abandoned_at is not None and state is not F.COMPLETED,
            channel=flow.channel,
            name=user.name,
            person_number=masked_person_number(user.person_number),
            proposal=DEFAULT_PROPOSAL if state is F.DETAILS_CONFIRMED else (),
            chosen=tuple(Authenticator(kind) for kind in flow.chosen),
            still_to_activate=still,
            identity_id=flow.identity_id,
            credential_ids=tuple(uuid.UUID(value) for value in flow.credential_ids),
            completed_at=flow.completed_at,
        )
