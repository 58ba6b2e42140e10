"""What a login proved, as its ``factors`` JSON column keeps it: each factor with the credential
behind it and when ({kind, credential, at}), and the provider's nonce ({nonce}). Rows written
before credentials were recorded hold bare kind names; they are read too."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from server.domain.model import AuthenticatorKind

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# Kinds one credential can prove: a security key proves ``fido2`` or, with its PIN, ``fido2_uv``.
_FAMILY = {AuthenticatorKind.FIDO2_UV: AuthenticatorKind.FIDO2}


@dataclass(frozen=True)
class Proof:
    """One factor proven: its kind, the credential that proved it (None in an old row) and
    when (None until recorded, and in an old row)."""

    kind: AuthenticatorKind
    credential: uuid.UUID | None
    at: dt.datetime | None = None

    @property
    def authenticator(self) -> str:
        """What makes two proofs one authenticator: the same credential (an old row's proof,
        without one, is taken as its kind's one credential)."""
        if self.credential is not None:
            return str(self.credential)
        return _FAMILY.get(self.kind, self.kind).value

    def stored(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "credential": None if self.credential is None else str(self.credential),
            "at": None if self.at is None else self.at.isoformat(),
        }


def proofs(factors: Iterable[Any]) -> list[Proof]:
    """The proofs of a login's ``factors`` column, in the order they were made."""
    found = []
    for entry in factors:
        if isinstance(entry, str):
            found.append(Proof(AuthenticatorKind(entry), None))
        elif isinstance(entry, dict) and "kind" in entry:
            credential, at = entry.get("credential"), entry.get("at")
            found.append(
                Proof(
                    AuthenticatorKind(entry["kind"]),
                    None if credential is None else uuid.UUID(credential),
                    None if at is None else dt.datetime.fromisoformat(at),
                )
            )
    return found


def kinds(factors: Iterable[Any]) -> list[str]:
    """The kinds proven (what ``amr`` and the factor routes answer), sorted, once each."""
    return sorted({proof.kind.value for proof in proofs(factors)})


def nonce(factors: Iterable[Any]) -> str | None:
    """The nonce the provider sent when it began the login, if it sent one."""
    for entry in factors:
        if isinstance(entry, dict) and "nonce" in entry:
            return str(entry["nonce"])
    return None


def with_proof(factors: Sequence[Any], proof: Proof) -> list[Any]:
    """``factors`` with ``proof`` recorded (an old row's bare kinds kept as they are). The
    same kind proven again by the same credential keeps its first time: the older time is
    the cautious ``auth_time``, and the login's row need not be written again."""
    if any(
        (earlier.kind, earlier.credential) == (proof.kind, proof.credential)
        for earlier in proofs(factors)
    ):
        return list(factors)
    return [*factors, proof.stored()]


def with_nonce(value: str | None) -> list[Any]:
    """A new login's ``factors``: nothing proven yet, and the provider's nonce if any."""
    return [] if value is None else [{"nonce": value}]


def authenticators(found: Iterable[Proof]) -> list[AuthenticatorKind]:
    """One kind per distinct authenticator (NSIS counts authenticators, not proofs): a
    credential that proved several kinds counts once, as the strongest (a key's ``fido2_uv``
    over its ``fido2``)."""
    return [kind for kind, _ in by_authenticator(found)]


def by_authenticator(found: Iterable[Proof]) -> list[tuple[AuthenticatorKind, uuid.UUID | None]]:
    """As ``authenticators``, each kind with the credential that proved it (None in an old
    row), for what is known of the credential (the level it was admitted at)."""
    strongest: dict[str, tuple[AuthenticatorKind, uuid.UUID | None]] = {}
    for proof in found:
        kept = strongest.get(proof.authenticator)
        if kept is None or (kept[0] in _FAMILY.values() and proof.kind in _FAMILY):
            strongest[proof.authenticator] = (proof.kind, proof.credential)
    return list(strongest.values())


def last_proven(found: Iterable[Proof]) -> dt.datetime | None:
    """When the last factor was proven (None if no proof says)."""
    times = [proof.at for proof in found if proof.at is not None]
    return max(times) if times else None


def credentials(found: Iterable[Proof]) -> set[uuid.UUID]:
    return {proof.credential for proof in found if proof.credential is not None}


class FactorCheck(Protocol):
    """Verifies one factor for an identity: raises a DomainError, or returns what it proved
    (the kind and the credential that proved it). ``proven``: the credentials this login has
    proven already (a code token counts wrong codes only once another one was)."""

    def __call__(
        self,
        session: Session,
        identity_id: uuid.UUID,
        submitted: dict[str, Any],
        proven: frozenset[uuid.UUID] = ...,
        /,
    ) -> Proof: ...
