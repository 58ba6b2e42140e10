"""Flows left idle: marked abandoned once they have been untouched for the abandonment period,
with one ``dropped`` event at the step they stopped at, for the weekly report. An abandoned
flow keeps its state and resumes there after a new legacy proof (``MigrationFlows.prove``).

Set-based SQL (``MigrationFlowRepository.mark_abandoned``), never a loop over flows: a sweep
over millions of flows costs two statements.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from server.services.identities import AuditHook, no_audit
from server.storage.migration_repositories import MigrationFlowRepository


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
    marked = MigrationFlowRepository(session).mark_abandoned(now - idle, now)
    if not marked:
        return 0
    audit(
        "migration.flow.swept",
        {"dropped": marked, "idle_days": idle.days, "at": now.isoformat()},
    )
    return marked
