"""The errors of identity and credential lifecycles: each has a stable ``code`` (the problem+json
type) and a ``detail`` safe to show the public: never a person number, secret or code."""

from __future__ import annotations

from server.domain.errors import ConflictingState, DomainError, UnknownSubject, Unprocessable


class DuplicateIdentity(ConflictingState):
    """A person who already has an identity was enrolled again."""

    code = "duplicate-person-number"
    default_detail = "an identity with this person number already exists"


class IdentityNotFound(UnknownSubject):
    code = "identity-not-found"
    default_detail = "there is no such identity"


class CredentialNotFound(UnknownSubject):
    code = "credential-not-found"
    default_detail = "there is no such credential"


class TokenNotFound(UnknownSubject):
    """No unassigned token in stock has this serial."""

    code = "token-not-found"
    default_detail = "there is no unassigned token with this serial number"


class InvalidTransition(ConflictingState):
    """A lifecycle step the transition table (or a kind's rule) does not allow from the current
    state; ``current`` and ``target`` are state names, never personal data."""

    code = "invalid-transition"

    def __init__(self, subject: str, current: str, target: str, *, reason: str = "") -> None:
        self.subject = subject
        self.current = current
        self.target = target
        why = f": {reason}" if reason else ""
        super().__init__(
            f"{subject} cannot go from {current} to {target}{why}",
            detail=f"a {subject} that is {current} cannot become {target}{why}",
        )


class IdentityNotActive(ConflictingState):
    """Credentials of a suspended or closed identity cannot be issued or activated."""

    code = "identity-not-active"
    default_detail = "the identity is suspended or closed"


class CredentialLimitReached(ConflictingState):
    code = "credential-limit-reached"

    def __init__(self, kind: str, limit: int) -> None:
        self.kind = kind
        self.limit = limit
        super().__init__(
            detail=f"an identity may hold at most {limit} credential(s) of kind {kind}"
        )


class ConflictingCredential(ConflictingState):
    """An exclusivity rule: one active code display; a code display and an audio reader are
    never active together."""

    code = "conflicting-credential"

    def __init__(self, detail: str) -> None:
        super().__init__(detail=detail)


class InsufficientProofing(Unprocessable):
    """The proofing given does not reach the identity assurance level asked for (High needs two
    different staff members, in person, at an assisted channel)."""

    code = "insufficient-proofing"

    def __init__(self, detail: str) -> None:
        super().__init__(detail=detail)


class InvalidTokenBatch(DomainError):
    """A PSKC token batch that does not parse, fails its MAC or holds unusable keys; ``field``
    names the element at fault (never a value from it)."""

    code = "invalid-token-batch"

    def __init__(self, field: str | None, reason: str = "") -> None:
        self.field = field
        where = f" (at {field})" if field else ""
        super().__init__(
            f"token batch refused{where}: {reason}" if reason else None,
            detail=f"the token batch is not a usable PSKC document{where}",
        )


class DuplicateSerial(ConflictingState):
    code = "duplicate-serial"
    default_detail = "a token with this serial number is already registered"


class ActivationCodeRejected(DomainError):
    """The code typed to activate a token was not accepted; ``reason`` is the verifier's code
    (wrong-code, malformed-code, code-replayed, credential-blocked, wrong-token)."""

    code = "activation-code-rejected"
    recorded = True  # the spent turn, the failure count and a block outlive the refusal

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"activation code rejected: {reason}", detail=detail)


class ConcurrentChange(ConflictingState):
    """Someone else changed the same record at the same time; read it again and retry."""

    code = "concurrent-change"
    default_detail = "the record was changed at the same time by someone else; try again"


class UnsupportedCredential(Unprocessable):
    """A request that this credential kind does not take (e.g. a code for a security key)."""

    code = "unsupported-credential"

    def __init__(self, detail: str) -> None:
        super().__init__(detail=detail)
