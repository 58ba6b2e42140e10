"""The errors of the server's domain logic: each has a stable ``code`` for problem+json types and a
``detail`` that is safe to show the public."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum, unique

from server.domain.errors import DomainError, ServiceFault, Unverified


class KeyMaterialRejected(ServiceFault):
    """A key file or key value the server will not use (wrong size, mode, curve or format)."""

    code = "key-material-rejected"
    default_detail = "the service is not configured correctly"


class SecretUnreadable(ServiceFault):
    """A sealed secret failed authentication: tampered, moved to another context or unknown key."""

    code = "secret-unreadable"
    default_detail = "a stored secret could not be read"


class WrongPassword(Unverified):
    """The password does not match the stored hash."""

    code = "wrong-password"
    default_detail = "the user ID or password is wrong"


class PasswordHashUnreadable(ServiceFault):
    """The stored password hash is not a hash this service can check (corrupt or foreign)."""

    code = "password-hash-unreadable"
    default_detail = "the password could not be checked"


@unique
class PasswordProblem(StrEnum):
    """Why a new password was refused."""

    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    REPEATED_CHARACTER = "repeated_character"
    BLOCKLISTED = "blocklisted"


class WeakPassword(DomainError):
    """A new password breaks the policy; ``reason`` says which rule."""

    code = "weak-password"

    def __init__(self, reason: PasswordProblem, detail: str) -> None:
        self.reason = reason
        super().__init__(f"password refused: {reason}", detail=detail)


class InvalidPersonNumber(DomainError):
    """A person number that does not parse; ``field`` is the part that is wrong.

    ``field`` is one of ``"format"`` (not ddmmyy-ssss), ``"month"`` or ``"day"`` (no such date).
    Neither the message nor the detail repeats the input: it is personal data.
    """

    code = "invalid-person-number"

    def __init__(self, field: str, detail: str) -> None:
        self.field = field
        super().__init__(f"invalid person number ({field}): {detail}", detail=detail)


class NoAuthenticator(DomainError):
    """An assurance level was asked for a login that used no authenticator."""

    code = "no-authenticator"
    default_detail = "no authenticator was used"


@unique
class Breakage(StrEnum):
    """How an audit chain is broken."""

    ALTERED = "altered"
    REMOVED = "removed"
    REORDERED = "reordered"
    DUPLICATED = "duplicated"


class AuditChainBroken(ServiceFault):
    """The audit log fails verification at entry ``seq`` of its chain ``chain`` (the log is
    several chains, ``audit.AuditPartitions``); ``reason`` tells the kind of breakage."""

    code = "audit-chain-broken"
    default_detail = "the audit log failed verification"

    def __init__(self, seq: int, reason: Breakage, *, chain: int = 0) -> None:
        self.seq = seq
        self.reason = reason
        self.chain = chain
        super().__init__(f"audit chain {chain} broken at seq {seq}: entry {reason}")


class AuditDetailsRefused(DomainError):
    """Audit details that must not be logged: a key that looks secret, or a value that is not
    plain JSON. ``key`` is the dotted path of the offending key (never its value)."""

    code = "audit-details-refused"
    default_detail = "the event could not be recorded"

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"audit details refused at {key!r}: {reason}")


class IncompleteAssertion(DomainError):
    """An assertion to a service provider is missing claims every assertion must carry."""

    code = "incomplete-assertion"
    default_detail = "the login could not be completed"

    def __init__(self, missing: Iterable[str]) -> None:
        self.missing = tuple(sorted(missing))
        super().__init__(f"assertion lacks required claims: {', '.join(self.missing)}")
