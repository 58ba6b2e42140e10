"""The rules every credential follows: the lifecycle's transition table (checked at import), how
many live credentials of each kind one identity may hold, and which kinds are tokens."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from types import MappingProxyType

from server.domain.model import CredentialKind, CredentialState

K = CredentialKind
S = CredentialState

TRANSITIONS: Mapping[CredentialState, frozenset[CredentialState]] = MappingProxyType(
    {
        S.ORDERED: frozenset({S.SHIPPED, S.REVOKED}),
        S.SHIPPED: frozenset({S.ACTIVATION_PENDING, S.LOST, S.REVOKED}),
        S.ACTIVATION_PENDING: frozenset({S.ACTIVE, S.BLOCKED, S.LOST, S.REVOKED}),
        S.ACTIVE: frozenset({S.BLOCKED, S.LOST, S.REVOKED, S.REPLACED}),
        # Unblocking (blocked -> active) is refused for REPLACED_WHEN_BLOCKED kinds below.
        S.BLOCKED: frozenset({S.ACTIVE, S.LOST, S.REVOKED, S.REPLACED}),
        S.LOST: frozenset({S.REVOKED, S.REPLACED}),
        S.REVOKED: frozenset(),
        S.REPLACED: frozenset(),
    }
)
# Where a credential starts: ordered (a device to send), shipped (a token from a PSKC batch) or
# activation pending (a password, created and activated in one step).
INITIAL_STATES = frozenset({S.ORDERED, S.SHIPPED, S.ACTIVATION_PENDING})
TERMINAL_STATES = frozenset({S.REVOKED, S.REPLACED})
LIVE_STATES = frozenset(CredentialState) - TERMINAL_STATES

# A blocked code display (or audio reader, or key card) is replaced, never reused.
REPLACED_WHEN_BLOCKED = frozenset({K.CODE_DISPLAY, K.AUDIO_READER, K.KEY_CARD})

# How many live credentials of each kind one identity may hold.
LIMITS: Mapping[CredentialKind, int] = MappingProxyType(
    {
        K.PASSWORD: 1,
        K.CODE_DISPLAY: 1,
        K.AUDIO_READER: 1,
        K.OTP_TOKEN: 5,
        K.FIDO2: 5,
        K.PIV: 2,
        K.KEY_CARD: 1,
    }
)
# Kinds that come as tokens in PSKC batches and are activated with a code.
TOKEN_KINDS = frozenset({K.CODE_DISPLAY, K.AUDIO_READER, K.OTP_TOKEN})


def validate_transitions(
    table: Mapping[CredentialState, frozenset[CredentialState]],
    initial: Collection[CredentialState],
    terminal: Collection[CredentialState],
) -> None:
    """Raise ``RuntimeError`` unless every state has a row, every state is reachable from an
    initial state, terminal states have no exits and every other state has one."""
    states = set(CredentialState)
    if set(table) != states:
        raise RuntimeError(f"transition table rows missing: {sorted(states - set(table))}")
    for state, targets in table.items():
        if state in targets:
            raise RuntimeError(f"{state} transitions to itself")
        if state in terminal and targets:
            raise RuntimeError(f"terminal state {state} has exits")
        if state not in terminal and not targets:
            raise RuntimeError(f"state {state} is a dead end but not terminal")
    seen = set(initial)
    frontier = list(initial)
    while frontier:
        for target in table[frontier.pop()]:
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    if seen != states:
        raise RuntimeError(f"unreachable states: {sorted(states - seen)}")


validate_transitions(TRANSITIONS, INITIAL_STATES, TERMINAL_STATES)
if set(LIMITS) != set(CredentialKind):  # pragma: no cover - a new kind needs a limit
    raise RuntimeError("every credential kind needs a limit")
