"""The fingerprints of the service's keys as the database first saw them (``key_fingerprints``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from server.storage.tables import KeyFingerprint
from server.storage.upserts import upsert_insert

_fingerprints = cast(Table, KeyFingerprint.__table__)


class KeyFingerprintRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def claim(self, fingerprints: Mapping[str, str], now: dt.datetime) -> dict[str, str]:
        """Record each of ``fingerprints`` the database has no fingerprint of yet (the first
        process to start wins, of several at once), and answer what the database holds for
        each of them."""
        if fingerprints:
            self._session.execute(
                upsert_insert(self._session, KeyFingerprint)
                .values(
                    [
                        {"name": name, "fingerprint": fingerprint, "since": now}
                        for name, fingerprint in fingerprints.items()
                    ]
                )
                .on_conflict_do_nothing(index_elements=[_fingerprints.c.name])
            )
        rows = self._session.execute(
            select(_fingerprints.c.name, _fingerprints.c.fingerprint).where(
                _fingerprints.c.name.in_(list(fingerprints))
            )
        )
        return {str(row.name): str(row.fingerprint) for row in rows}
