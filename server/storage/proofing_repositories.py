"""Pending High proofings (waiting for a second operator) and who an organisation's customers
are (proofed, served, waiting or logged in at its desk): the storage side of "two operators
means two keys" and of "a bank acts only on its own customers"."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session

from server.domain.model import Level, ProofingChannel
from server.storage.errors import NotFound
from server.storage.migration_tables import MigrationFlow
from server.storage.tables import DeskLogin, PendingProofing, PendingState, ProofingRecord


class PendingProofingRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, pending: PendingProofing) -> PendingProofing:
        self._session.add(pending)
        self._session.flush()
        return pending

    def get(self, pending_id: uuid.UUID) -> PendingProofing:
        pending = self._session.get(PendingProofing, pending_id)
        if pending is None:
            raise NotFound("pending proofing", pending_id)
        return pending

    def lock(self, pending_id: uuid.UUID) -> PendingProofing:
        """The row, read again and locked for the rest of the transaction (PostgreSQL), so two
        approvals of one proofing cannot both pass."""
        pending = self._session.scalar(
            select(PendingProofing)
            .where(PendingProofing.id == pending_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if pending is None:
            raise NotFound("pending proofing", pending_id)
        return pending

    def waiting(
        self,
        now: dt.datetime,
        *,
        organisation: str | None = None,
        channels: frozenset[ProofingChannel] | None = None,
        identity_id: uuid.UUID | None = None,
    ) -> list[PendingProofing]:
        """Proofings still waiting at ``now``, of ``organisation`` on ``channels`` (``None``:
        any), or of one identity (directly, or through the flow that enrolled it)."""
        query = select(PendingProofing).where(
            PendingProofing.state == PendingState.WAITING, PendingProofing.expires_at > now
        )
        if organisation is not None:
            query = query.where(PendingProofing.organisation == organisation)
        if channels is not None:
            query = query.where(PendingProofing.channel.in_(sorted(channels)))
        if identity_id is not None:
            flows = select(MigrationFlow.id).where(MigrationFlow.identity_id == identity_id)
            query = query.where(
                or_(PendingProofing.identity_id == identity_id, PendingProofing.flow_id.in_(flows))
            )
        query = query.order_by(PendingProofing.created_at, PendingProofing.id)
        return list(self._session.scalars(query))

    def flow_identity(self, flow_id: uuid.UUID) -> uuid.UUID | None:
        """The identity the migration flow has enrolled (``None`` before it has)."""
        return self._session.scalar(
            select(MigrationFlow.identity_id).where(MigrationFlow.id == flow_id)
        )

    def decide(self, pending: PendingProofing) -> None:
        """Write what the service decided on the locked row."""
        self._session.flush()


class CustomerRepository:
    """Whether a person is an organisation's customer: proofed there, or served there in an
    assisted migration, or waiting there for a second operator, or logged in at its desk."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def is_customer(self, identity_id: uuid.UUID, organisation: str) -> bool:
        proofed = exists().where(
            ProofingRecord.identity_id == identity_id,
            ProofingRecord.organisation == organisation,
        )
        served = exists().where(
            MigrationFlow.identity_id == identity_id, MigrationFlow.organisation == organisation
        )
        waiting = exists().where(
            PendingProofing.identity_id == identity_id,
            PendingProofing.organisation == organisation,
        )
        at_desk = exists().where(
            DeskLogin.identity_id == identity_id, DeskLogin.organisation == organisation
        )
        return bool(self._session.scalar(select(or_(proofed, served, waiting, at_desk))))

    def logged_in_at_desk(
        self,
        identity_id: uuid.UUID,
        organisation: str,
        transaction_id: uuid.UUID,
        operator_key_id: str,
        level: Level,
    ) -> DeskLogin:
        """The person completed the login ``transaction_id`` the organisation's operator
        began at the desk."""
        row = DeskLogin(
            identity_id=identity_id,
            organisation=organisation,
            transaction_id=transaction_id,
            operator_key_id=operator_key_id,
            level=level,
        )
        self._session.add(row)
        self._session.flush()
        return row

    def serve_flow(self, flow_id: uuid.UUID, organisation: str) -> None:
        """The organisation whose operator started (or restarted) the flow."""
        self._session.execute(
            update(MigrationFlow)
            .where(MigrationFlow.id == flow_id)
            .values(organisation=organisation, version=MigrationFlow.version + 1)
            .execution_options(synchronize_session="fetch")
        )

    def flow_organisation(self, flow_id: uuid.UUID) -> str | None:
        return self._session.scalar(
            select(MigrationFlow.organisation).where(MigrationFlow.id == flow_id)
        )
