"""The PIV login factor: the card's key signs a fresh challenge of an identified login."""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.orm import Session

from server.domain.errors import DomainError, FactorRejected
from server.domain.model import AuthenticatorKind, CredentialKind, CredentialState, Level
from server.services.identities import AuditHook, no_audit
from server.services.login.gate import LoginTransactions
from server.services.login.providers import ProviderNames, display_name, no_names
from server.services.login.record import Proof
from server.services.piv.ca import CertificateRejected, ServiceCa, hash_for
from server.services.piv.card import CHALLENGE_SIZE, card_serial, login_message
from server.storage.repositories import CredentialRepository, TransactionRepository
from server.storage.tables import Credential

MAX_CERTIFICATE_SIZE = 4096
MAX_SIGNATURE_SIZE = 160


class PivLoginRejected(FactorRejected):
    """One answer for every refused card signature; ``reason`` is for the audit log only."""


@dataclass(frozen=True)
class LoginBegun:
    """A PIV login's fresh challenge and what the person must see before the card signs it,
    so a login someone else began (a phisher's, handed over with its pairing code) is not
    signed unseen: whom the login is for, the level it asks for, when it began and whether a
    browser opened its pages (then the caller gave that browser's pairing code). None of it
    depends on who logs in, so the answer still tells nothing of the person."""

    challenge: bytes
    provider: str
    provider_name: str
    level: Level
    begun_at: dt.datetime
    expires_at: dt.datetime
    paired_with_browser: bool


def verify_card_signature(
    ca: ServiceCa,
    certificate_der: bytes,
    signature: bytes,
    message: bytes,
    now: dt.datetime,
) -> x509.Certificate:
    """The pure part of a PIV login, with no database: the certificate parses, was issued by
    ``ca`` and is valid at ``now``, and ``signature`` (DER ECDSA) over ``message`` verifies with
    its key. Returns the certificate; raises ``PivLoginRejected``. Revocation is not checked
    here (it is the credential's state, see ``PivLoginCheck``)."""
    if len(certificate_der) > MAX_CERTIFICATE_SIZE or len(signature) > MAX_SIGNATURE_SIZE:
        raise PivLoginRejected("too-large")
    try:
        certificate = x509.load_der_x509_certificate(certificate_der)
    except ValueError:
        raise PivLoginRejected("malformed-certificate") from None
    try:
        public_key = ca.verify(certificate, now)
    except CertificateRejected as exc:
        raise PivLoginRejected(exc.reason) from None
    try:
        public_key.verify(signature, message, ec.ECDSA(hash_for(public_key)))
    except (InvalidSignature, ValueError):
        raise PivLoginRejected("bad-signature") from None
    return certificate


class PivLogin:
    """The PIV login factor, in the caller's transaction.

    The login challenge is the login transaction's own ``challenge`` column: ``login_begin``
    writes a fresh one, and every check consumes it, accepted or not, so a signature cannot be
    replayed. The login does not read the CRL: it accepts only an *active* PIV credential of
    the identity logging in, so a card is refused from the moment its state changes, whatever
    a cached CRL says.
    """

    def __init__(
        self,
        session: Session,
        *,
        ca: ServiceCa,
        clock: Callable[[], float],
        audit: AuditHook = no_audit,
        provider_names: ProviderNames = no_names,
    ) -> None:
        self._session = session
        self._ca = ca
        self._provider_names = provider_names
        self._transactions = TransactionRepository(session)
        self._clock = clock
        self._audit = audit

    @property
    def ca(self) -> ServiceCa:
        return self._ca

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    def login_begin(self, transaction_id: uuid.UUID) -> LoginBegun:
        """A fresh challenge for an identified login, stored on the transaction (replacing any
        earlier one), with the login's context. The answer is the same whether or not the
        person exists or has a card. The caller has admitted the login (a claimed one only
        with its browser's pairing code)."""
        logins = self._logins()
        transaction = logins.identified(transaction_id)
        challenge = secrets.token_bytes(CHALLENGE_SIZE)
        logins.set_pending(transaction, CredentialKind.PIV, challenge=challenge)
        return LoginBegun(
            challenge=challenge,
            provider=transaction.service_provider,
            provider_name=display_name(transaction.service_provider, self._provider_names),
            level=transaction.min_level,
            begun_at=transaction.created_at,
            expires_at=transaction.expires_at,
            paired_with_browser=transaction.browser_binding is not None,
        )

    def login_check(self, transaction_id: uuid.UUID, origins: Sequence[str] = ()) -> PivLoginCheck:
        """A ``FactorCheck`` for ``{"certificate": DER, "signature": DER, "origin": str}``
        against the challenge of ``transaction_id``; the origin must be one of ``origins``."""
        return PivLoginCheck(self, transaction_id, origins)

    def take_challenge(self, transaction_id: uuid.UUID) -> bytes | None:
        """The login's current challenge, removed from it: each is good for one attempt."""
        logins = self._logins()
        pending = logins.take_pending(logins.identified(transaction_id), CredentialKind.PIV)
        return None if pending is None else pending.challenge

    def card_of(self, identity_id: uuid.UUID, certificate: x509.Certificate) -> Credential:
        """The identity's PIV credential for ``certificate``, which must be active and hold
        exactly this certificate; a card in any other state is refused (and audited)."""
        credential = CredentialRepository(self._session).of_identity(
            identity_id, CredentialKind.PIV, card_serial(certificate)
        )
        if credential is None:
            raise PivLoginRejected("unknown-certificate")
        stored = base64.b64decode(str(credential.public_data.get("certificate", "")))
        presented = certificate.public_bytes(serialization.Encoding.DER)
        if not hmac.compare_digest(stored, presented):
            raise PivLoginRejected("unknown-certificate")
        if credential.state is not CredentialState.ACTIVE:
            self._audit(
                "piv.inactive_card_presented",
                {
                    "credential_id": str(credential.id),
                    "identity_id": str(identity_id),
                    "state": credential.state.value,
                },
            )
            raise PivLoginRejected(f"card-{credential.state.value}")
        return credential

    def _logins(self) -> LoginTransactions:
        return LoginTransactions(self._session, self.now)


@dataclass(frozen=True)
class SignatureVerdict:
    """``verify_card_signature``'s outcome reached before the step's write transaction, for
    the challenge the login held then: the certificate, or the reason it was refused."""

    challenge: bytes
    certificate: x509.Certificate | None
    refused: str | None = None


class PivLoginCheck:
    """The PIV login factor (a ``FactorCheck``). For a person who does not exist it does the
    same signature work, so the time taken does not tell whether an account exists.

    Made ``beforehand``, it carries the signature's verdict, reached outside any transaction on
    the challenge the login held then: in the step's transaction the challenge is taken as
    ever and the verdict used only if it is that same challenge, so the certificate's parsing
    and the two ECDSA verifications (the chain's and the card's) do not hold the writer."""

    def __init__(
        self,
        service: PivLogin,
        transaction_id: uuid.UUID,
        origins: Sequence[str] = (),
        *,
        verdict: SignatureVerdict | None = None,
    ) -> None:
        self._service = service
        self._transaction_id = transaction_id
        self._origins = frozenset(origins)
        self._verdict = verdict

    def beforehand(
        self, sessions: Callable[[], Session], submitted: dict[str, Any]
    ) -> PivLoginCheck:
        """This check with the signature verified now, on the challenge a read session of
        ``sessions`` finds (none found, or a wrong origin: nothing is verified here, and the
        step refuses as it always did)."""
        origin = str(submitted.get("origin", ""))
        with sessions() as session:  # closed before the signature work
            try:
                transaction = LoginTransactions(session, self._service.now).identified(
                    self._transaction_id
                )
            except DomainError:
                return self  # refused in the step's transaction, as ever
            pending = LoginTransactions.pending(transaction, CredentialKind.PIV)
        if pending is None or pending.challenge is None or origin not in self._origins:
            return self
        try:
            certificate = self._verify(submitted, pending.challenge, origin)
            verdict = SignatureVerdict(pending.challenge, certificate)
        except PivLoginRejected as exc:
            verdict = SignatureVerdict(pending.challenge, None, exc.reason)
        return PivLoginCheck(
            self._service, self._transaction_id, tuple(self._origins), verdict=verdict
        )

    def _verify(self, submitted: dict[str, Any], challenge: bytes, origin: str) -> x509.Certificate:
        return verify_card_signature(
            self._service.ca,
            bytes(submitted.get("certificate", b"")),
            bytes(submitted.get("signature", b"")),
            login_message(self._transaction_id, challenge, origin),
            self._service.now(),
        )

    def _verified(self, submitted: dict[str, Any]) -> x509.Certificate:
        challenge = self._service.take_challenge(self._transaction_id)
        if challenge is None:
            raise PivLoginRejected("no-challenge")
        origin = str(submitted.get("origin", ""))
        if origin not in self._origins:
            raise PivLoginRejected("wrong-origin")
        verdict = self._verdict
        if verdict is not None and hmac.compare_digest(verdict.challenge, challenge):
            if verdict.certificate is None:
                raise PivLoginRejected(verdict.refused or "bad-signature")
            return verdict.certificate
        return self._verify(submitted, challenge, origin)

    def __call__(
        self,
        session: Session,
        identity_id: uuid.UUID,
        submitted: dict[str, Any],
        proven: frozenset[uuid.UUID] = frozenset(),
    ) -> Proof:
        certificate = self._verified(submitted)
        return Proof(AuthenticatorKind.PIV, self._service.card_of(identity_id, certificate).id)

    def on_unknown(self, submitted: dict[str, Any]) -> None:
        try:
            self._verified(submitted)
        except PivLoginRejected:
            pass
