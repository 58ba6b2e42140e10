"""Authentication transactions: begin -> identify -> factors -> complete, persisted between
steps, with the assurance level computed from the factor set, step-up when it is too low,
rate limits, and the signed assertion a service provider receives."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from server.domain.errors import (
    DomainError,
    FactorRejected,
)
from server.domain.model import AuthenticatorKind, CredentialState, IdentityStatus, Level
from server.services.assurance import capped_level, loa
from server.services.credentials.admission import recorded_level
from server.services.errors import InvalidPersonNumber
from server.services.login.errors import (
    IdentitySuspended,
    LoginNoLongerValid,
    NoMoreTime,
    StepUpRequired,
    TemporarilyBlocked,
    TransactionClosed,
    TransactionUnknown,
)
from server.services.login.gate import (
    COMPLETED,
    FAILED,
    IDENTIFIED,
    STARTED,
    TRANSITIONS,
    LoginTransactions,
)
from server.services.login.record import (
    FactorCheck,
    Proof,
    by_authenticator,
    credentials,
    kinds,
    last_proven,
    proofs,
    with_nonce,
    with_proof,
)
from server.services.login.record import nonce as provider_nonce
from server.services.person_number import PersonNumber
from server.services.pseudonyms import Pseudonyms
from server.services.throttles import Standing as ThrottleStanding
from server.services.throttles import Throttles, network_of
from server.services.tokens_jwt import AssertionSigner
from server.storage.errors import NotFound
from server.storage.repositories import (
    CredentialRepository,
    IdentityRepository,
    LoginContext,
    TransactionRepository,
    account_limit_key,
)
from server.storage.tables import AuthTransaction, Credential, Identity

# A person who needs more time may extend a login this many times, each by its lifetime:
# WCAG 2.2.1 asks for at least ten, so a login stays open at most (1 + MAX_EXTENSIONS)
# lifetimes (110 minutes at the default 10), long enough for anyone, short of forever.
MAX_EXTENSIONS = 10


def _subject(transaction: AuthTransaction) -> str:
    """Whom a login's failures are counted against from its network: the keyed digest of the
    number typed (the same for a number nobody has), else the identity's account key."""
    if transaction.subject_digest:
        return transaction.subject_digest
    if transaction.identity_id is not None:
        return account_limit_key(transaction.identity_id)
    return "nobody"


@dataclass(frozen=True)
class Standing:
    """Where a login stands: the level its factors reach so far (None before the first
    factor) and the level its service provider asked for."""

    transaction: AuthTransaction
    achieved: Level | None
    required: Level
    extensions_left: int = 0

    @property
    def reached(self) -> bool:
        return self.achieved is not None and self.achieved >= self.required


@dataclass(frozen=True)
class Conclusion:
    """A completed login: who, the level reached (and its identity and authenticator
    assurance), when the last factor was proven, and one kind per authenticator used."""

    transaction: AuthTransaction
    identity: Identity
    level: Level
    ial: Level
    aal: Level
    auth_time: dt.datetime
    authenticators: list[AuthenticatorKind]


@dataclass(frozen=True)
class Outcome:
    transaction: AuthTransaction
    level: Level
    assertion: str | None = None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AuthenticationService:
    def __init__(
        self,
        session: Session,
        *,
        signer: AssertionSigner,
        pseudonyms: Pseudonyms,
        issuer: str,
        transaction_lifetime: dt.timedelta = dt.timedelta(minutes=10),
        assertion_lifetime: dt.timedelta = dt.timedelta(minutes=5),
        audit: Callable[[str, dict[str, Any]], None] = lambda event, details: None,
        clock: Callable[[], dt.datetime] = _now,
        name_providers: frozenset[str] = frozenset(),
    ) -> None:
        self.session = session
        self.transactions = TransactionRepository(session)
        self.logins = LoginTransactions(session, clock)
        self.identities = IdentityRepository(session)
        self.throttles = Throttles(session, audit)
        self.signer = signer
        self.pseudonyms = pseudonyms
        self.issuer = issuer
        self.transaction_lifetime = transaction_lifetime
        self.assertion_lifetime = assertion_lifetime
        self.audit = audit
        self.clock = clock
        # The providers entitled to the person's name in the assertion (others get none).
        self.name_providers = name_providers

    # --- steps ----------------------------------------------------------------------------

    def begin(
        self,
        provider: str,
        min_level: Level,
        return_url: str | None = None,
        nonce: str | None = None,
    ) -> AuthTransaction:
        """A new login; ``return_url`` is where the pages send the browser when it is done,
        ``nonce`` what the assertion echoes (the provider ties it to its own session)."""
        now = self.clock()
        transaction = AuthTransaction(
            service_provider=provider,
            min_level=min_level,
            state=STARTED,
            factors=with_nonce(nonce),
            challenge=secrets.token_bytes(32),
            created_at=now,
            expires_at=now + self.transaction_lifetime,
            return_url=return_url,
        )
        self.transactions.add(transaction)
        self.audit(
            "authentication.begin", {"transaction": str(transaction.id), "provider": provider}
        )
        return transaction

    def claim(self, transaction_id: uuid.UUID, binding: str) -> AuthTransaction:
        """The browser session ``binding`` (a digest the pages derive from its cookie) takes
        the login: the first browser to open its pages keeps it; any other is refused."""
        transaction = self.logins.open(transaction_id)
        if transaction.browser_binding is None:
            transaction.browser_binding = binding
            self.transactions.update(transaction)
            self.audit("authentication.claimed", {"transaction": str(transaction.id)})
        self.logins.check_bound(transaction, binding)
        return transaction

    def admit(
        self, transaction_id: uuid.UUID, *, binding: str | None = None, pairing: str | None = None
    ) -> AuthTransaction:
        """The open login, if the caller may go on with it: anyone while no browser claimed
        it, else that browser (``binding``) or a program it paired with (``pairing``). For
        the steps before a factor that change the login (a device's fresh challenge)."""
        transaction = self.logins.open(transaction_id)
        self.logins.check_bound(transaction, binding, pairing)
        return transaction

    def standing(self, transaction_id: uuid.UUID, binding: str | None = None) -> Standing:
        """Where an open login stands (for the pages: whether to offer another factor)."""
        transaction = self.logins.open(transaction_id)
        self.logins.check_bound(transaction, binding)
        required = transaction.min_level
        left = MAX_EXTENSIONS - self._extensions(transaction)
        if transaction.identity_id is None or not proofs(transaction.factors):
            return Standing(transaction, None, required, left)
        active = CredentialRepository(self.session).for_identity(
            transaction.identity_id, {CredentialState.ACTIVE}
        )
        return Standing(transaction, self._achieved(transaction, active)[2], required, left)

    def _extensions(self, transaction: AuthTransaction) -> int:
        """How often the login was extended, from its lifetime (so no column is needed)."""
        lifetime = transaction.expires_at - transaction.created_at
        return max(0, round(lifetime / self.transaction_lifetime) - 1)

    def extend(self, transaction_id: uuid.UUID, binding: str | None = None) -> AuthTransaction:
        """More time for an open login: its expiry moves on by its lifetime, at most
        ``MAX_EXTENSIONS`` times."""
        transaction = self.logins.open(transaction_id)
        self.logins.check_bound(transaction, binding)
        if self._extensions(transaction) >= MAX_EXTENSIONS:
            raise NoMoreTime("extended too often", detail="the login cannot be extended again")
        transaction.expires_at = transaction.expires_at + self.transaction_lifetime
        self.transactions.update(transaction)
        self.audit(
            "authentication.extended",
            {"transaction": str(transaction.id), "expires_at": transaction.expires_at.isoformat()},
        )
        return transaction

    def _achieved(
        self, transaction: AuthTransaction, active: Iterable[Credential]
    ) -> tuple[Level, Level, Level]:
        """The identity assurance, the authenticator assurance and the login's level. Each
        credential proven counts only up to the level it was admitted at (``active``: the
        identity's active credentials, as the caller read them; one not among them, or from
        before levels were recorded, is not capped; see ``assurance.capped_level``)."""
        assert transaction.identity_id is not None  # noqa: S101 - callers check it first
        identity = self.identities.get(transaction.identity_id)
        admitted = {credential.id: recorded_level(credential.public_data) for credential in active}
        aal = capped_level(
            [
                (kind, None if credential is None else admitted.get(credential))
                for kind, credential in by_authenticator(proofs(transaction.factors))
            ]
        )
        ial = identity.identity_assurance
        return ial, aal, loa(ial, aal)

    def _move(self, transaction: AuthTransaction, state: str) -> None:
        if state not in TRANSITIONS[transaction.state]:
            raise TransactionClosed(f"{transaction.state} -> {state}", detail="not now")
        transaction.state = state

    def identify_person(
        self, transaction_id: uuid.UUID, person_number: str, *, binding: str | None = None
    ) -> None:
        """Say who logs in, by the number typed: the same work and answer whether or not the
        person exists (an unknown or malformed number still gets a subject digest, so its
        decoys are the same in every login)."""
        identity_id, digest = self.who_is(person_number)
        self.identify(transaction_id, identity_id, digest, binding=binding)

    def who_is(self, person_number: str) -> tuple[uuid.UUID | None, str]:
        """Read only: the identity a typed number names (None: nobody, or not a number) and
        the keyed digest of the number as typed. A step may run it in a read session of its
        own before its write transaction begins (``Services.who_is``)."""
        identity_id = None
        typed = " ".join(person_number.split())
        try:
            number = PersonNumber.parse(person_number)
        except InvalidPersonNumber:
            number = None
        if number is not None:
            typed = number.formatted
            try:
                identity_id = self.identities.by_person_number(number.formatted).id
            except NotFound:
                identity_id = None
        return identity_id, self.pseudonyms.subject_digest(typed)

    def identify(
        self,
        transaction_id: uuid.UUID,
        identity_id: uuid.UUID | None,
        subject_digest: str | None = None,
        *,
        binding: str | None = None,
    ) -> None:
        """Bind the transaction to the person logging in. ``None`` (no such person) is
        accepted the same way, so the answer never tells whether an account exists; every
        factor will then fail. ``subject_digest`` (a keyed digest of the number typed) lets
        decoy answers be the same in every login for the same unknown number."""
        transaction = self.logins.open(transaction_id)
        self.logins.check_bound(transaction, binding)
        if proofs(transaction.factors):
            raise TransactionClosed("identified already", detail="the login has begun")
        transaction.identity_id = identity_id
        transaction.subject_digest = subject_digest
        self._move(transaction, IDENTIFIED)
        self.transactions.update(transaction)

    def _step(
        self,
        transaction_id: uuid.UUID,
        network: str,
        binding: str | None,
        pairing: str | None,
    ) -> tuple[LoginContext, ThrottleStanding, dt.datetime]:
        """What a factor's step starts from, read only; raises when the step is refused before
        any check (no such login, not usable, bound elsewhere, not identified, throttled)."""
        try:
            context = self.transactions.login_context(transaction_id, network)
        except NotFound as exc:
            raise TransactionUnknown("no such transaction", detail="unknown transaction") from exc
        transaction = context.transaction
        self.logins.usable(transaction)
        self.logins.check_bound(transaction, binding, pairing)
        self.logins.require_identified(transaction)
        now = self.clock()
        # Refused before any check while this network, or this person from this network, is
        # throttled; the same for a number nobody has (its subject is throttled alike).
        standing = ThrottleStanding(
            context.network_limit,
            context.subject_limit,
            context.everywhere_limit,
            context.familiar_until_ms is not None
            and context.familiar_until_ms > now.timestamp() * 1000,
        )
        self.throttles.guard(standing, now)
        return context, standing, now

    def factor_subject(
        self, transaction_id: uuid.UUID, *, source: str, binding: str | None = None
    ) -> uuid.UUID | None:
        """Read only, for work done before a factor's step (``PasswordCheck.beforehand``):
        the identity the step would check (None: nobody), raising as the step would when it
        is refused before any check."""
        context, _standing, _now = self._step(transaction_id, network_of(source), binding, None)
        return context.transaction.identity_id

    def verify_factor(
        self,
        transaction_id: uuid.UUID,
        check: FactorCheck,
        submitted: dict[str, Any],
        *,
        source: str,
        binding: str | None = None,
        pairing: str | None = None,
    ) -> list[str]:
        """Check one factor: the factors proven so far, or ``FactorRejected`` (``recorded``:
        the unit of work commits the counters and the audit entry the failure wrote).

        Every login factor comes through here, so it reads what it needs in few statements:
        the transaction with its identity's status and both rate-limit rows (source and
        account) in one; the check reads and writes its credential; the audit entry ends it.
        A login a browser claimed takes the step from that browser (``binding``) or from a
        program it paired with (``pairing``; the routes of device factors alone pass it).
        """
        network = network_of(source)
        context, standing, now = self._step(transaction_id, network, binding, pairing)
        transaction, status = context.transaction, context.identity_status
        identity_id = transaction.identity_id
        subject = _subject(transaction)
        before = credentials(proofs(transaction.factors))
        try:
            if identity_id is None:
                # Not checked, and failed as a wrong factor is, after the same work: the
                # answer must not tell whether the person exists.
                on_unknown = getattr(check, "on_unknown", None)
                if on_unknown is not None:
                    on_unknown(submitted)
                raise FactorRejected("no such identity")
            # A person who is not active is checked as anyone is (the same work), and is
            # told of a suspension only once the factor is proven.
            proven = check(self.session, identity_id, submitted, frozenset(before))
            if status is IdentityStatus.SUSPENDED:
                raise IdentitySuspended("identity suspended")
            if status is not IdentityStatus.ACTIVE:
                raise FactorRejected("identity not active")
        except DomainError as exc:
            person = None if identity_id is None else str(identity_id)
            self.throttles.failed(network=network, subject=subject, now=now, identity=person)
            self._failure(transaction, type(exc).__name__)
            if isinstance(exc, TemporarilyBlocked | IdentitySuspended):
                raise exc.record() from None  # told only after a factor was proven
            raise FactorRejected(str(exc)) from None
        self.throttles.succeeded(network=network, subject=subject, now=now, standing=standing)
        # Each proof is kept with its credential and time: levels count distinct credentials,
        # ``complete`` re-checks them, and ``auth_time`` is the last one's time.
        factors = with_proof(transaction.factors, Proof(proven.kind, proven.credential, now))
        if factors != transaction.factors:
            transaction.factors = factors
            self.transactions.update(transaction)
        self.audit(
            "authentication.factor",
            {"transaction": str(transaction.id), "factor": proven.kind.value, "result": "ok"},
        )
        return kinds(transaction.factors)

    def complete(self, transaction_id: uuid.UUID, provider: str | None = None) -> Outcome:
        """The assertion, when the factors reach the level the provider asked for. With
        ``provider``, only that service provider's own login completes (another's is
        answered as unknown, so providers cannot probe each other's logins)."""
        done = self.conclude(transaction_id, provider)
        transaction, identity = done.transaction, done.identity
        now = self.clock()
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": str(self.pseudonyms.pseudonym(identity.id, transaction.service_provider)),
            "aud": transaction.service_provider,
            "iat": int(now.timestamp()),
            "exp": int((now + self.assertion_lifetime).timestamp()),
            "auth_time": int(done.auth_time.timestamp()),
            "loa": done.level.name.lower(),
            "ial": done.ial.name.lower(),
            "aal": done.aal.name.lower(),
            "amr": kinds(transaction.factors),
            "txn": str(transaction.id),
        }
        if transaction.service_provider in self.name_providers:
            claims["name"] = identity.name
        sent = provider_nonce(transaction.factors)
        if sent is not None:
            claims["nonce"] = sent
        return Outcome(transaction, done.level, self.signer.sign(claims))

    def conclude(self, transaction_id: uuid.UUID, provider: str | None = None) -> Conclusion:
        """Close a login whose factors reach its level (``complete`` without the assertion,
        for the OpenID Provider, which issues its own tokens): who logged in, at which level,
        with which authenticators and when. ``StepUpRequired`` while the level is not
        reached; ``provider`` as for ``complete``."""
        transaction = self.logins.open(transaction_id)
        if provider is not None and transaction.service_provider != provider:
            raise TransactionUnknown("another provider's login", detail="unknown transaction")
        proven = proofs(transaction.factors)
        if transaction.identity_id is None or not proven:
            raise StepUpRequired(Level.LOW, transaction.min_level)
        identity = self.identities.get(transaction.identity_id)
        active = self._still_valid(transaction, identity.status, credentials(proven))
        ial, aal, level = self._achieved(transaction, active)
        required = transaction.min_level
        if level < required:
            raise StepUpRequired(level, required)
        authenticated = last_proven(proven) or self.clock()
        self._move(transaction, COMPLETED)
        self.transactions.update(transaction)
        self.audit(
            "authentication.complete",
            {"transaction": str(transaction.id), "level": level.name.lower()},
        )
        used = by_authenticator(proven)
        return Conclusion(
            transaction, identity, level, ial, aal, authenticated, [kind for kind, _ in used]
        )

    def _still_valid(
        self, transaction: AuthTransaction, status: IdentityStatus, used: set[uuid.UUID]
    ) -> list[Credential]:
        """Refuse (and close) a login whose identity, or a credential it was proven with, is
        no longer active: a suspension or a block between a factor and ``complete`` counts.
        The identity's active credentials, when it is not refused."""
        assert transaction.identity_id is not None  # noqa: S101 - callers check it first
        active = CredentialRepository(self.session).for_identity(
            transaction.identity_id, {CredentialState.ACTIVE}
        )
        if status is IdentityStatus.ACTIVE and used <= {credential.id for credential in active}:
            return active
        self._move(transaction, FAILED)
        self.transactions.update(transaction)
        self.audit(
            "authentication.refused",
            {"transaction": str(transaction.id), "reason": "no-longer-active"},
        )
        raise LoginNoLongerValid("identity or credential no longer active").record()

    # --- failures -------------------------------------------------------------------------

    def _failure(self, transaction: AuthTransaction, reason: str) -> None:
        self.audit(
            "authentication.factor",
            {"transaction": str(transaction.id), "result": "failed", "reason": reason},
        )
