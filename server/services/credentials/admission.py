"""Who may add a credential to a person: a login of theirs at the level the credential can
lift a login to, or an operator with the person present. So a login cannot add a credential
stronger than itself: a phished Substantial session does not mint High.

And what a credential counts toward afterwards: the level it was admitted at, recorded on it
when it becomes active (``public_data["admitted_level"]``): for the person's own login the
lower of that login's level and the identity's assurance then, for an operator with the
person present the identity's assurance then. A login counts a credential only up to that
level (``assurance.capped_level``), so a card a Substantial login added does not give High
when the identity is raised to High later; an operator admits it again with the person
present (``CredentialLifecycle.admit_in_person``). A credential with no level recorded (one
from before levels were) is not capped."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.domain.errors import Refused
from server.domain.model import CredentialKind, Level
from server.services.assurance import credential_reach
from server.services.identities import AuditHook
from server.storage.tables import Credential, Identity

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

# Where a credential keeps the level it was admitted at (a level's label), and where a
# ceremony (a security key's registration, a smartcard's enrolment) keeps it until it ends.
ADMITTED_LEVEL = "admitted_level"


def admitted_level(identity: Identity, by: AddedBy) -> Level:
    """The level a credential ``by`` adds to ``identity`` now counts toward: the identity's
    assurance for an operator with the person present, else the lower of it and the login's
    level (Low for a login of no known level, which ``admit`` refuses anyway)."""
    if by.in_person:
        return identity.identity_assurance
    return min(by.login_level or Level.LOW, identity.identity_assurance)


def recorded_level(data: Mapping[str, Any] | None) -> Level | None:
    """The admitted level ``data`` (a credential's ``public_data`` or a ceremony's state)
    records, or None where none is (a credential from before levels were recorded)."""
    value = (data or {}).get(ADMITTED_LEVEL)
    try:
        return Level.parse(value) if isinstance(value, str) else None
    except ValueError:
        return None


def with_level(data: Mapping[str, Any], level: Level | None) -> dict[str, Any]:
    """``data`` with the admitted level ``level`` recorded in it (None: left as it is)."""
    return dict(data) if level is None else {**data, ADMITTED_LEVEL: level.label}


def record(credential: Credential, identity: Identity, by: AddedBy) -> Level:
    """Record on ``credential`` (becoming active now) the level it is admitted at."""
    level = admitted_level(identity, by)
    credential.public_data = with_level(credential.public_data, level)
    return level


def could_reach(kind: CredentialKind, identity_assurance: Level) -> Level:
    """The most a credential of ``kind`` can count toward for a person of that assurance."""
    return min(credential_reach(kind), identity_assurance)


def held_back(credential: Credential, identity_assurance: Level) -> Level | None:
    """The level ``credential`` was admitted at, where that is below what it could count
    toward now (an operator's admission in person would raise it); None otherwise."""
    level = recorded_level(credential.public_data)
    if level is None or level >= could_reach(credential.kind, identity_assurance):
        return None
    return level


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
