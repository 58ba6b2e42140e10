"""Who may add a credential to a person: a login of theirs at the level the credential can
lift a login to, or an operator with the person present. So a login cannot add a credential
stronger than itself: a phished Substantial session does not mint High."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.domain.errors import Refused
from server.domain.model import CredentialKind, Level
from server.services.assurance import credential_reach
from server.services.identities import AuditHook
from server.storage.tables import Identity

# Adding or changing any credential is a sensitive change: never on less than Substantial.
SENSITIVE_LEVEL = Level.SUBSTANTIAL


@dataclass(frozen=True)
class AddedBy:
    """Who adds a credential: the person's own login at ``login_level`` (None when no level is
    known: refused), or an operator with the person present (``in_person``; the operator API
    and console, behind an operator's key)."""

    login_level: Level | None = None
    in_person: bool = False

    @classmethod
    def login(cls, level: Level | None) -> AddedBy:
        return cls(login_level=level)

    @property
    def label(self) -> str:
        """How the audit log says it: ``in_person`` or ``login:<level>``."""
        if self.in_person:
            return "in_person"
        return f"login:{self.login_level.label if self.login_level else 'none'}"


IN_PERSON = AddedBy(in_person=True)


def level_to_add(kind: CredentialKind, identity_assurance: Level) -> Level:
    """The login level adding (or replacing, or changing) a credential of ``kind`` needs: what
    the credential can lift a login to, at least Substantial, and never more than the
    identity's assurance (no login of that person can reach more, so asking for more would
    lock them out; a credential gives them no more than that either)."""
    return min(max(SENSITIVE_LEVEL, credential_reach(kind)), identity_assurance)


class LevelTooLowForCredential(Refused):
    """The login behind the request is below the level the credential needs: log in at that
    level first, or have an operator add it with the person present."""

    code = "level-too-low-for-credential"
    title = "Log in at a higher level first"

    def __init__(self, kind: CredentialKind, required: Level, login_level: Level | None) -> None:
        super().__init__(
            f"adding {kind.value} needs a login at {required.label}, "
            f"not {login_level.label if login_level else 'none'}",
            detail=(
                f"adding this credential needs a login at level {required.label}: log in at "
                "that level first, or have an operator at a citizen service centre or bank "
                "add it with you present"
            ),
        )
        self.kind = kind
        self.required = required
        self.login_level = login_level

    def extensions(self) -> dict[str, Any]:
        achieved = self.login_level.label if self.login_level else None
        return {"required": self.required.label, "achieved": achieved, **self.extra}


def refusal(
    kind: CredentialKind, identity: Identity, by: AddedBy
) -> LevelTooLowForCredential | None:
    """Why ``by`` may not add a credential of ``kind`` to ``identity``, or None if it may."""
    if by.in_person:
        return None
    required = level_to_add(kind, identity.identity_assurance)
    if by.login_level is not None and by.login_level >= required:
        return None
    return LevelTooLowForCredential(kind, required, by.login_level)


def admit(kind: CredentialKind, identity: Identity, by: AddedBy, audit: AuditHook) -> None:
    """Raise ``LevelTooLowForCredential`` (recorded: its audit entry outlives the answer)
    unless ``by`` may add a credential of ``kind`` to ``identity``."""
    refused = refusal(kind, identity, by)
    if refused is None:
        return
    audit(
        "credential.addition_refused",
        {
            "identity_id": str(identity.id),
            "kind": kind.value,
            "required_level": refused.required.label,
            "login_level": by.login_level.label if by.login_level else None,
        },
    )
    raise refused.record()
