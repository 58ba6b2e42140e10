"""A probe of SQLite's write lock while Argon2id runs: the real ``Passwords``, subclassed only
to try, at each verification, whether another connection could take the write lock then."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy.engine import make_url

from server.services.passwords import Passwords, argon2id_parameters
from server.settings import Settings


class LockProbe(Passwords):
    """At each ``verify_password``, before hashing, a connection of its own to the database
    file runs ``BEGIN IMMEDIATE`` without waiting (timeout 0) and rolls back: ``outcomes``
    gets "free" when it could, else SQLite's error ("database is locked")."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            argon2id_parameters(
                settings.password_hash_time_cost,
                settings.password_hash_memory_kib,
                settings.password_hash_parallelism,
            )
        )
        self.database = str(make_url(settings.database_url).database)
        self.outcomes: list[str] = []

    def lock_state(self) -> str:
        """Whether a connection of its own takes the write lock at once: "free", else
        SQLite's error ("database is locked")."""
        connection = sqlite3.connect(self.database, timeout=0, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
            return "free"
        except sqlite3.OperationalError as exc:
            return str(exc)
        finally:
            connection.close()

    def verify_password(self, password_hash: str, password: str) -> None:
        self.outcomes.append(self.lock_state())
        super().verify_password(password_hash, password)


def install(app: Any, settings: Settings) -> LockProbe:
    """Give the app's services the probe as their ``Passwords``."""
    probe = LockProbe(settings)
    app.state.services.passwords = probe
    return probe
