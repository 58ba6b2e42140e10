"""The values of a ``migration_events`` row's ``step`` and ``outcome`` that the migration's SQL
selects on (the flow's own vocabulary, ``flow_model``, writes the same strings)."""

from __future__ import annotations

STARTED = "started"
COMPLETED = "completed"
# The steps whose events name an authenticator kind.
KIND_STEPS = ("authenticator_chosen", "activated")
OK = "ok"
FAILED = "failed"
DROPPED = "dropped"
# Written by the plan's reminders, not by the flow: a reminder is not activity.
REMINDED = "reminded"
