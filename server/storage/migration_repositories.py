"""The guided migration's SQL: a flow's row and its step events, and the sweep that marks idle
flows abandoned (set-based: two statements however many flows there are)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection
from typing import Any, cast

from sqlalchemy import String, func, literal, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.orm.attributes import flag_modified

from server.domain.model import CredentialKind, CredentialState
from server.storage.conflicts import conflicts_as as _conflicts_as
from server.storage.migration_events import COMPLETED, DROPPED, REMINDED, STARTED
from server.storage.migration_tables import MIGRATION_EVENTS as _events
from server.storage.migration_tables import MIGRATION_FLOWS as _flows
from server.storage.migration_tables import (
    LegacyUser,
    MigrationEvent,
    MigrationFlow,
    MigrationInvitation,
)
from server.storage.tables import Credential, UtcDateTime


def last_activity(column: Any) -> Any:
    """``column`` of the flow's latest event that is not a reminder (correlated to the flow
    row of the enclosing statement): the plan's reminders are not activity."""
    return (
        select(column)
        .where(_events.c.flow_id == _flows.c.id, _events.c.outcome != REMINDED)
        .order_by(_events.c.at.desc(), _events.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def record_marked_flows(
    session: Session, marked: Any, now: dt.datetime, outcome: str, kind: Any
) -> None:
    """One event of ``outcome`` at ``now`` for each flow ``marked`` selects, at the step of its
    latest activity (``started`` if none), with ``kind`` (an expression over the flow)."""
    session.execute(
        _events.insert().from_select(
            ["flow_id", "wave_id", "at", "step", "outcome", "channel", "kind"],
            select(
                _flows.c.id,
                _flows.c.wave_id,
                literal(now, UtcDateTime()),
                func.coalesce(last_activity(_events.c.step), literal(STARTED, String())),
                literal(outcome, String()),
                _flows.c.channel,
                kind,
            ).where(marked),
        )
    )


def add_unless_taken(session: Session, row: object) -> bool:
    """Add ``row`` in a savepoint (the session's transaction goes on either way); False if a
    unique key of it is taken."""
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True


class MigrationFlowRepository:
    """Migration flows and their events over one session; flushes, never commits."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, flow_id: uuid.UUID) -> MigrationFlow | None:
        return self._session.get(MigrationFlow, flow_id)

    def of_user(self, user_id: str) -> MigrationFlow | None:
        return self._session.scalar(select(MigrationFlow).where(MigrationFlow.user_id == user_id))

    def legacy_user(self, user_id: str) -> LegacyUser | None:
        return self._session.get(LegacyUser, user_id)

    def invited_wave(self, user_id: str) -> uuid.UUID | None:
        """The wave that invited the legacy user, if any."""
        return self._session.scalar(
            select(MigrationInvitation.wave_id).where(MigrationInvitation.user_id == user_id)
        )

    def add_or_existing(self, flow: MigrationFlow) -> MigrationFlow:
        """Add ``flow`` in a savepoint and return it, or, when its legacy user has a flow
        already (made concurrently: one per legacy user), return that one."""
        try:
            with self._session.begin_nested():
                self._session.add(flow)
        except IntegrityError:
            existing = self.of_user(flow.user_id)
            if existing is None:
                raise
            return existing
        return flow

    def save(self, flow_id: uuid.UUID, *, touched: MigrationFlow | None = None) -> None:
        """Flush the flow's changes (``touched``: with an UPDATE, and a new version, even when
        no column changed); ``StaleWrite`` if another writer changed it since it was read."""
        if touched is not None:
            flag_modified(touched, "updated_at")
        with _conflicts_as("migration flow", flow_id):
            self._session.flush()

    def savepoint(self) -> SessionTransaction:
        """A savepoint: what is made inside it is kept together or not at all."""
        return self._session.begin_nested()

    def add_event(
        self,
        flow: MigrationFlow,
        at: dt.datetime,
        step: str,
        outcome: str,
        kind: str | None = None,
    ) -> None:
        self._session.add(
            MigrationEvent(
                flow_id=flow.id,
                wave_id=flow.wave_id,
                at=at,
                step=step,
                outcome=outcome,
                channel=flow.channel,
                kind=kind,
            )
        )

    def active_kinds(self, credential_ids: Collection[uuid.UUID]) -> list[CredentialKind]:
        """The kinds of those of ``credential_ids`` that are active."""
        if not credential_ids:
            return []
        return list(
            self._session.scalars(
                select(Credential.kind).where(
                    Credential.id.in_(credential_ids), Credential.state == CredentialState.ACTIVE
                )
            )
        )

    def mark_abandoned(self, idle_since: dt.datetime, now: dt.datetime) -> int:
        """Mark every flow untouched since ``idle_since`` (and not completed, not marked
        before) abandoned at ``now``, each with one ``dropped`` event at the step it stopped
        at; return how many. The flows' versions move on."""
        result = self._session.execute(
            update(_flows)
            .where(
                _flows.c.state != COMPLETED,
                _flows.c.completed_at.is_(None),
                _flows.c.abandoned_at.is_(None),
                _flows.c.updated_at <= idle_since,
            )
            .values(abandoned_at=now, version=_flows.c.version + 1)
        )
        marked = cast("CursorResult[Any]", result).rowcount
        if not marked:
            return 0
        record_marked_flows(
            self._session, _flows.c.abandoned_at == now, now, DROPPED, last_activity(_events.c.kind)
        )
        return marked
