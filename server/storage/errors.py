"""Typed storage errors; repositories convert database driver exceptions into these."""

from __future__ import annotations

import uuid

from server.domain.errors import Unavailable

# How long a client is asked to wait before it tries again when the database was too busy.
RETRY_AFTER_S = 2


class StorageError(Exception):
    """Base class for every error the storage layer raises."""


class UnsupportedDatabase(StorageError):
    """The database URL names a backend or driver the storage layer does not support."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"unsupported database URL {url!r}: {reason}")
        self.url = url
        self.reason = reason


class DuplicatePersonNumber(StorageError):
    """An identity with this person number already exists."""

    def __init__(self) -> None:
        # The person number is personal data: it stays out of the message and the logs.
        super().__init__("an identity with this person number already exists")


class NotFound(StorageError):
    """No row of this kind has this key."""

    def __init__(self, kind: str, key: uuid.UUID | str) -> None:
        super().__init__(f"{kind} {key} not found")
        self.kind = kind
        self.key = key


class StaleWrite(StorageError):
    """Another writer changed the row (or the audit chain) since it was read; re-read and retry."""

    def __init__(self, kind: str, key: uuid.UUID | str | int | None = None) -> None:
        where = f"{kind} {key}" if key is not None else kind
        super().__init__(f"{where} was changed by another writer; re-read and retry")
        self.kind = kind
        self.key = key


class DatabaseUnavailable(Unavailable, StorageError):
    """The database could not take the request now: SQLite's write lock, a connection from the
    pool or a PostgreSQL lock was not had in time (the service is overloaded), or PostgreSQL
    cannot be reached. The request's transaction never began or is rolled back, so nothing of
    it was written; it may be sent again after ``retry_after`` seconds. A domain error of kind
    ``Unavailable`` too, so it is answered 503 like one."""

    code = "temporarily-unavailable"
    title = "Temporarily unavailable"
    default_detail = "the service is busy; try again shortly"
    retry_after = RETRY_AFTER_S
