"""The legacy importer's record of its runs: per file, how far its rows are committed, the
run's totals and the lines it refused, over one connection whose transaction the caller owns."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from sqlalchemy import Connection, insert, select, update

from server.storage.migration_tables import IMPORT_REJECTS as _rejects
from server.storage.migration_tables import IMPORT_RUNS as _runs
from server.storage.migration_tables import ImportStatus


class ImportRunRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def unfinished(self, fingerprint: str) -> tuple[uuid.UUID, str, int, int] | None:
        """The latest running or failed run of the file: id, format, byte offset, line."""
        found = self._connection.execute(
            select(_runs.c.id, _runs.c.format, _runs.c.byte_offset, _runs.c.line_number)
            .where(
                _runs.c.fingerprint == fingerprint,
                _runs.c.status.in_([ImportStatus.RUNNING, ImportStatus.FAILED]),
            )
            .order_by(_runs.c.started_at.desc())
            .limit(1)
        ).first()
        if found is None:
            return None
        run_id, fmt, offset, line = found
        return run_id, fmt, offset, line

    def reopen(self, run_id: uuid.UUID, now: dt.datetime) -> None:
        self._connection.execute(
            update(_runs)
            .where(_runs.c.id == run_id)
            .values(status=ImportStatus.RUNNING, updated_at=now)
        )

    def create(
        self, run_id: uuid.UUID, source: str, fingerprint: str, fmt: str, now: dt.datetime
    ) -> None:
        self._connection.execute(
            insert(_runs).values(
                id=run_id,
                source=source,
                fingerprint=fingerprint,
                format=fmt,
                byte_offset=0,
                line_number=0,
                rows_imported=0,
                rows_unchanged=0,
                rows_rejected=0,
                status=ImportStatus.RUNNING,
                started_at=now,
                updated_at=now,
            )
        )

    def claim(self, run_id: uuid.UUID, offset: int, now: dt.datetime) -> bool:
        """Write the running run's row if it is still at ``offset``; whether it was."""
        result = self._connection.execute(
            update(_runs)
            .where(
                _runs.c.id == run_id,
                _runs.c.byte_offset == offset,
                _runs.c.status == ImportStatus.RUNNING,
            )
            .values(updated_at=now)
        )
        return result.rowcount == 1

    def add_rejects(self, run_id: uuid.UUID, rejects: Sequence[tuple[int, str]]) -> None:
        """The refused lines: (line number, reason)."""
        self._connection.execute(
            insert(_rejects),
            [{"run_id": run_id, "line_number": n, "reason": r} for n, r in rejects],
        )

    def advance(
        self,
        run_id: uuid.UUID,
        offset: int,
        line: int,
        *,
        imported: int,
        unchanged: int,
        rejected: int,
        now: dt.datetime,
    ) -> None:
        """Move the run past a committed batch and add the batch's counts to its totals."""
        self._connection.execute(
            update(_runs)
            .where(_runs.c.id == run_id)
            .values(
                byte_offset=offset,
                line_number=line,
                rows_imported=_runs.c.rows_imported + imported,
                rows_unchanged=_runs.c.rows_unchanged + unchanged,
                rows_rejected=_runs.c.rows_rejected + rejected,
                updated_at=now,
            )
        )

    def complete(self, run_id: uuid.UUID, offset: int, line: int, now: dt.datetime) -> None:
        self._connection.execute(
            update(_runs)
            .where(_runs.c.id == run_id)
            .values(
                byte_offset=offset,
                line_number=line,
                status=ImportStatus.COMPLETED,
                finished_at=now,
            )
        )

    def mark_failed(self, run_id: uuid.UUID, now: dt.datetime) -> None:
        self._connection.execute(
            update(_runs)
            .where(_runs.c.id == run_id, _runs.c.status == ImportStatus.RUNNING)
            .values(status=ImportStatus.FAILED, updated_at=now)
        )

    def totals(self, run_id: uuid.UUID) -> tuple[int, int, int]:
        """The run's rows imported, unchanged and rejected."""
        imported, unchanged, rejected = self._connection.execute(
            select(_runs.c.rows_imported, _runs.c.rows_unchanged, _runs.c.rows_rejected).where(
                _runs.c.id == run_id
            )
        ).one()
        return imported, unchanged, rejected

    def first_rejects(self, run_id: uuid.UUID, count: int) -> list[tuple[int, str]]:
        return [
            (int(line), str(reason))
            for line, reason in self._connection.execute(
                select(_rejects.c.line_number, _rejects.c.reason)
                .where(_rejects.c.run_id == run_id)
                .order_by(_rejects.c.line_number)
                .limit(count)
            )
        ]
