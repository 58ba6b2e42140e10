"""The guided migration's state machine: its states and transition table (checked at import),
the authenticators a person may choose and the default proposal, the step events the weekly
report reads, and where a flow stands (step k of n, the next action, what is still needed).

Abandonment is a mark on a flow (``abandoned_at``), not a state of its own: an abandoned flow
keeps the state it stopped in, so after a new legacy proof it continues exactly there.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum, unique
from types import MappingProxyType

from server.domain.model import ProofingChannel


@unique
class FlowState(StrEnum):
    STARTED = "started"  # the key number is shown; the legacy proof is next
    LEGACY_PROVEN = "legacy_proven"
    DETAILS_CONFIRMED = "details_confirmed"
    AUTHENTICATOR_CHOSEN = "authenticator_chosen"
    # Activation has begun: it may have failed (a wrong code: try again), or the identity
    # exists and a security key or smartcard is still to be enrolled, or all is done.
    ACTIVATION_PENDING = "activation_pending"
    COMPLETED = "completed"


F = FlowState

TRANSITIONS: Mapping[FlowState, frozenset[FlowState]] = MappingProxyType(
    {
        F.STARTED: frozenset({F.LEGACY_PROVEN}),
        F.LEGACY_PROVEN: frozenset({F.DETAILS_CONFIRMED}),
        F.DETAILS_CONFIRMED: frozenset({F.AUTHENTICATOR_CHOSEN}),
        F.AUTHENTICATOR_CHOSEN: frozenset({F.ACTIVATION_PENDING}),
        # Choosing again (no audio reader after all) goes back a step.
        F.ACTIVATION_PENDING: frozenset({F.AUTHENTICATOR_CHOSEN, F.COMPLETED}),
        F.COMPLETED: frozenset(),
    }
)
INITIAL_STATES = frozenset({F.STARTED})
TERMINAL_STATES = frozenset({F.COMPLETED})


def validate_flow_transitions(
    table: Mapping[FlowState, frozenset[FlowState]],
    initial: Collection[FlowState],
    terminal: Collection[FlowState],
) -> None:
    """Raise ``RuntimeError`` unless every state has a row, no state moves to itself, terminal
    states have no exits, every state is reachable from an initial one, and a terminal state is
    reachable from every state (no flow can get stuck)."""
    states = set(FlowState)
    if set(table) != states:
        raise RuntimeError(f"flow transition rows missing: {sorted(states - set(table))}")
    for state, targets in table.items():
        if state in targets:
            raise RuntimeError(f"flow state {state} transitions to itself")
        if state in terminal and targets:
            raise RuntimeError(f"terminal flow state {state} has exits")

    def reachable(start: Iterable[FlowState]) -> set[FlowState]:
        seen = set(start)
        frontier = list(seen)
        while frontier:
            for target in table[frontier.pop()]:
                if target not in seen:
                    seen.add(target)
                    frontier.append(target)
        return seen

    if reachable(initial) != states:
        raise RuntimeError(f"unreachable flow states: {sorted(states - reachable(initial))}")
    for state in states:
        if not reachable({state}) & set(terminal):
            raise RuntimeError(f"flow state {state} cannot reach the end")


validate_flow_transitions(TRANSITIONS, INITIAL_STATES, TERMINAL_STATES)


# --- authenticators -----------------------------------------------------------------------------


@unique
class Authenticator(StrEnum):
    """What a person may choose; the values are the credential kinds they become."""

    CODE_DISPLAY = "code_display"
    AUDIO_READER = "audio_reader"
    FIDO2 = "fido2"
    PIV = "piv"
    PASSWORD = "password"  # noqa: S105 - a kind name, not a secret


A = Authenticator
# The fewest decisions: a person who just confirms gets these.
DEFAULT_PROPOSAL: tuple[Authenticator, ...] = (A.CODE_DISPLAY, A.PASSWORD)
# Activated inside the flow's own activation step: a token by serial and its current code.
TOKENS = frozenset({A.CODE_DISPLAY, A.AUDIO_READER})
# Enrolled by their own routes once the identity exists; the flow records the credential.
ENROLLED_APART = frozenset({A.FIDO2, A.PIV})
# The credential service refuses a code display and an audio reader active together.
EXCLUSIVE = frozenset({A.CODE_DISPLAY, A.AUDIO_READER})


def choice_problem(kinds: Collection[Authenticator]) -> str | None:
    """Why ``kinds`` cannot be chosen, or ``None``. The legacy eID had a possession factor (the
    key card), so the new identity gets one too: a password alone is not enough."""
    if not kinds:
        return "choose at least one authenticator"
    if len(set(kinds)) != len(kinds):
        return "each authenticator is chosen once"
    if set(kinds) >= EXCLUSIVE:
        return "a code display and an audio code reader cannot be used together; choose one"
    if set(kinds) <= {A.PASSWORD}:
        return "a password alone is not enough: choose a device as well"
    return None


# --- the events the weekly report reads ---------------------------------------------------------


@unique
class EventStep(StrEnum):
    """The ``step`` of a ``migration_events`` row."""

    STARTED = "started"
    LEGACY_PROVEN = "legacy_proven"
    DETAILS_CONFIRMED = "details_confirmed"
    AUTHENTICATOR_CHOSEN = "authenticator_chosen"
    ACTIVATED = "activated"
    COMPLETED = "completed"


@unique
class EventOutcome(StrEnum):
    """The ``outcome`` of a ``migration_events`` row (``reminded`` is written by the plan)."""

    OK = "ok"
    FAILED = "failed"
    DROPPED = "dropped"


# --- where a flow stands ------------------------------------------------------------------------


@unique
class NextAction(StrEnum):
    START = "start"  # abandoned: start again with the user id (a new legacy proof)
    PROVE = "prove"
    CONFIRM = "confirm"
    CHOOSE = "choose"
    ACTIVATE = "activate"
    ENROL = "enrol"  # a security key or smartcard, through its enrolment routes
    COMPLETE = "complete"


STEPS = 5  # prove, confirm, choose, activate, finish
STEP_OF_STATE: Mapping[FlowState, int] = MappingProxyType(
    {
        F.STARTED: 1,
        F.LEGACY_PROVEN: 2,
        F.DETAILS_CONFIRMED: 3,
        F.AUTHENTICATOR_CHOSEN: 4,
        F.ACTIVATION_PENDING: 4,
        F.COMPLETED: 5,
    }
)
if set(STEP_OF_STATE) != set(FlowState):  # pragma: no cover - checked at import
    raise RuntimeError("every flow state needs its place in the progress")

PROOF_NEEDS = ("user_id", "password", "key_card_code")


def activation_inputs(kinds: Iterable[Authenticator]) -> tuple[str, ...]:
    """What the activation step needs sent for ``kinds`` (those not active yet)."""
    needs: list[str] = []
    for kind in kinds:
        if kind is A.PASSWORD:
            needs.append("password")
        elif kind in TOKENS:
            needs.extend(("serial", "code"))
    return tuple(needs)


@dataclass(frozen=True)
class FlowView:
    """Where a person is: what the resume link shows. Before the legacy proof every flow looks
    the same (whether or not the user id exists), so only ``id`` and the proof step show."""

    id: uuid.UUID
    state: FlowState
    step: int
    of: int
    next_action: NextAction | None
    needed: tuple[str, ...]
    abandoned: bool = False
    channel: ProofingChannel | None = None
    name: str | None = None
    person_number: str | None = None  # masked: ddmmyy-****
    proposal: tuple[Authenticator, ...] = ()
    chosen: tuple[Authenticator, ...] = ()
    still_to_activate: tuple[Authenticator, ...] = ()
    identity_id: uuid.UUID | None = None
    credential_ids: tuple[uuid.UUID, ...] = ()
    completed_at: dt.datetime | None = None


def proof_view(flow_id: uuid.UUID) -> FlowView:
    """The view of a flow waiting for the legacy proof (and of an id nobody has)."""
    return FlowView(flow_id, F.STARTED, 1, STEPS, NextAction.PROVE, PROOF_NEEDS)


@dataclass(frozen=True)
class Started:
    """The answer to a start: the flow's id (the resume link's capability) and the key number
    whose code the person types."""

    view: FlowView
    index: str
