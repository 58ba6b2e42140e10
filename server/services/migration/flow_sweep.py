"""Flows left idle: marked abandoned once they have been untouched for the abandonment period,
with one ``dropped`` event at the step they stopped at, for the weekly report. An abandoned
flow keeps its state and resumes there after a new legacy proof (``MigrationFlows.prove``).

Set-based SQL (one ``UPDATE``, one ``INSERT ... SELECT``), never a loop over flows: a sweep
over millions of flows costs two statements.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import String, Table, func, literal, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from server.services.identities import AuditHook, no_audit
from server.services.migration.flow_model import FlowState, Outcome, Step
from server.storage.migration_tables import MigrationEvent, MigrationFlow
from server.storage.tables import UtcDateTime

_flows = cast(Table, MigrationFlow.__table__)
_events = cast(Table, MigrationEvent.__table__)
# The plan's reminders are not activity: the step a flow stopped at is that of its latest
# event of another kind.
_REMINDED = "reminded"


def _latest(column: Any) -> Any:
    """``column`` of the flow's latest event that is not a reminder (correlated to the flow
    row of the enclosing statement)."""
    return (
        select(column)
        .where(_events.c.flow_id == _flows.c.id, _events.c.outcome != _REMINDED)
        .order_by(_events.c.at.desc(), _events.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def sweep_abandoned(
    session: Session, *, idle: dt.timedelta, now: dt.datetime, audit: AuditHook = no_audit
) -> int:
    """Mark every flow untouched for ``idle`` (and not completed, not marked before) abandoned
    at ``now``, each with one ``dropped`` event; return how many. In the session's transaction
    (the caller commits). The flows' versions move on, so a step that read one before the
    sweep committed gets a conflict instead of acting on an abandoned flow."""
    if idle <= dt.timedelta(0):
        raise ValueError("idle is positive")
    if now.tzinfo is None:
        raise ValueError("now is timezone-aware")
    result = session.execute(
        update(_flows)
        .where(
            _flows.c.state != FlowState.COMPLETED.value,
            _flows.c.completed_at.is_(None),
            _flows.c.abandoned_at.is_(None),
            _flows.c.updated_at <= now - idle,
        )
        .values(abandoned_at=now, version=_flows.c.version + 1)
    )
    marked = cast("CursorResult[Any]", result).rowcount
    if not marked:
        return 0
    session.execute(
        _events.insert().from_select(
            ["flow_id", "wave_id", "at", "step", "outcome", "channel", "kind"],
            select(
                _flows.c.id,
                _flows.c.wave_id,
                literal(now, UtcDateTime()),
                func.coalesce(_latest(_events.c.step), literal(Step.STARTED.value, String())),
                literal(Outcome.DROPPED.value, String()),
                _flows.c.channel,
                _latest(_events.c.kind),
            ).where(_flows.c.abandoned_at == now),
        )
    )
    audit(
        "migration.flow.swept",
        {"dropped": marked, "idle_days": idle.days, "at": now.isoformat()},
    )
    return marked
