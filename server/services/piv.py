"""PIV smartcards: enrolment with a proof of possession (the card's new key signs the service's
challenge, and the service CA certifies that key), the PIV login factor, and the revocation
list of the cards taken out of use.

Nothing is kept in memory between steps:

* Enrolment state is an ``AuthTransaction`` row: ``service_provider`` is
  ``"piv-enrolment:<identity id>"``, ``state`` is ``"piv-enrol"`` while open (then
  ``"completed"`` or ``"failed"``: one attempt per challenge), ``challenge`` the challenge and
  ``expires_at`` its deadline. The row's id is the state id the client carries. It is never
  ``identified``, so it never counts as a login.
* An enrolment a citizen's account page begins (``enrol_begin(..., browser_binding=...)``)
  has an enrolment code, derived one way from the state id and that browser's binding, so
  only that page can show it. Its challenge is the SHA-256 digest of the code (``code_challenge``)
  rather than random bytes: the card program, given the code, knows what to sign without an
  operator's key to call ``enrol/begin``, and the service checks a code it is sent against the
  row alone, in constant time. A wrong code spends the enrolment like any refused answer, so
  a code (60 bits) cannot be guessed. An enrolment an operator began has a random challenge,
  which no code's digest matches.
* The login challenge is the login transaction's own ``challenge`` column: ``login_begin``
  writes a fresh one, and every check consumes it, accepted or not, so a signature cannot be
  replayed.

What the card signs (its driver hashes with SHA-256 for P-256 keys, SHA-384 for P-384)::

    enrolment  b"akkreditiv-piv-enrol" || state id (16 bytes) || challenge (32 bytes)
    login      b"akkreditiv-piv-login" || transaction id (16 bytes) || challenge (32 bytes)

The parts have fixed sizes, so the concatenation is unambiguous, and the two prefixes keep an
enrolment signature from ever passing as a login signature or the other way round.

A PIV credential row: kind ``piv``, state ``active``, ``serial`` = ``"piv:"`` + the certificate
serial as 40 hex digits, ``public_data`` = ``certificate`` (base64 DER), ``card_id`` (the CHUID
GUID or FASC-N in hex, as the driver reports it), ``slot`` (``"9a"``), ``algorithm``,
``issuer_key_id`` (the CA's subject key id in hex) and ``not_after``. No secret is stored: the
private key never leaves the card.

Revocation: the CRL lists the certificates of this CA whose credential is lost
(keyCompromise), revoked (cessationOfOperation), replaced (superseded) or blocked
(certificateHold: a block can be lifted, and RFC 5280 lets a held certificate leave the list
again). The revocation date is the credential's last change. The login itself does not read
the CRL: it accepts only an *active* PIV credential of the identity logging in, so a card is
refused from the moment its state changes, whatever a cached CRL says.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.domain.errors import DomainError
from server.domain.model import AuthenticatorKind, CredentialKind, CredentialState, Level
from server.services.authentication import (
    COMPLETED,
    FAILED,
    IDENTIFIED,
    TransactionClosed,
    TransactionExpired,
    TransactionUnknown,
    normalise_pairing,
    readable_code,
)
from server.services.credentials import CredentialService
from server.services.fido import REGISTRATION_PREFIX as FIDO_REGISTRATION_PREFIX
from server.services.identities import AuditHook, no_audit
from server.services.piv_ca import (
    CertificateRejected,
    Revocation,
    ServiceCa,
    hash_for,
    require_card_key,
    serial_hex,
)
from server.services.pseudonyms import Pseudonyms
from server.storage.repositories import CredentialRepository, TransactionRepository
from server.storage.tables import AuthTransaction, Credential

ENROLMENT_PREFIX = "piv-enrolment:"
_OPEN = "piv-enrol"
SERIAL_PREFIX = "piv:"
ENROL_DOMAIN = b"akkreditiv-piv-enrol"
ENROLMENT_CODE_DOMAIN = b"akkreditiv-piv-enrolment-code\x00"
CODE_CHALLENGE_DOMAIN = b"akkreditiv-piv-enrolment-challenge\x00"
LOGIN_DOMAIN = b"akkreditiv-piv-login"
CHALLENGE_SIZE = 32
ENROLMENT_LIFETIME = dt.timedelta(minutes=5)
SLOT = "9a"
# The "provider" a certificate's pseudonymous subject is derived for. It has a space, which
# no service provider name may hold, so no provider's pseudonym equals a certificate subject.
PSEUDONYM_SCOPE = "piv certificate"
MAX_CERTIFICATE_SIZE = 4096
MAX_SIGNATURE_SIZE = 160

# The CRL reason of each state that takes a card out of use.
REASONS: dict[CredentialState, x509.ReasonFlags] = {
    CredentialState.LOST: x509.ReasonFlags.key_compromise,
    CredentialState.REVOKED: x509.ReasonFlags.cessation_of_operation,
    CredentialState.REPLACED: x509.ReasonFlags.superseded,
    CredentialState.BLOCKED: x509.ReasonFlags.certificate_hold,
}


class EnrolmentUnknown(DomainError):
    code = "not-found"
    default_detail = "there is no such enrolment"


class EnrolmentClosed(DomainError):
    code = "conflict"
    default_detail = "this enrolment is finished; begin a new one"


class EnrolmentExpired(DomainError):
    code = "transaction-expired"
    default_detail = "the enrolment took too long; begin a new one"


class EnrolmentRejected(DomainError):
    """The card's answer does not prove possession: an unusable key or a wrong signature."""

    code = "enrolment-rejected"
    default_detail = "the card's answer was not accepted"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EnrolmentCodeRejected(DomainError):
    """The enrolment code sent is not the one the account page showed for this enrolment."""

    code = "verification-failed"
    default_detail = "the enrolment code is not right; open the account page again for a new one"


class PivLoginRejected(DomainError):
    """One answer for every refused card signature; ``reason`` is for the audit log only."""

    code = "verification-failed"

    def __init__(self, reason: str) -> None:
        super().__init__(reason, detail="the login did not succeed")
        self.reason = reason


@dataclass(frozen=True)
class EnrolmentChallenge:
    state_id: uuid.UUID
    challenge: bytes
    expires_at: dt.datetime
    code: str | None = None  # the enrolment code, when a browser's page began it


@dataclass(frozen=True)
class Enrolled:
    credential: Credential
    certificate: x509.Certificate


def enrol_message(state_id: uuid.UUID, challenge: bytes) -> bytes:
    """What the card signs to enrol."""
    return ENROL_DOMAIN + state_id.bytes + challenge


def enrolment_code(state_id: uuid.UUID, binding: str) -> str:
    """The code of an enrolment begun by the browser of ``binding``: shown on that browser's
    account page and given to the card program. Derived one way (as the login's pairing
    code), so it reveals neither the binding nor the browser's cookie behind it. Grouped for
    reading, e.g. ``ABCD-EFGH-JKLM``."""
    return readable_code(
        hashlib.sha256(ENROLMENT_CODE_DOMAIN + state_id.bytes + binding.encode("utf-8")).digest()
    )


def code_challenge(code: str) -> bytes:
    """The challenge of an enrolment with ``code`` (as typed: any case, dashes and spaces
    ignored): the SHA-256 digest the service stores, and what the card signs for."""
    return hashlib.sha256(CODE_CHALLENGE_DOMAIN + normalise_pairing(code).encode("utf-8")).digest()


def login_message(transaction_id: uuid.UUID, challenge: bytes, origin: str) -> bytes:
    """What the card signs to log in: bound to the login, its challenge and the origin the
    client believes it talks to (as WebAuthn's clientData binds it), so a relaying site
    cannot pass a signature made for it on to the real service."""
    encoded = origin.encode("utf-8")
    return (
        LOGIN_DOMAIN + len(encoded).to_bytes(2, "big") + encoded + transaction_id.bytes + challenge
    )


def card_serial(certificate: x509.Certificate) -> str:
    """The credential serial of a card certificate."""
    return SERIAL_PREFIX + serial_hex(certificate.serial_number)


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


class PivService:
    """PIV enrolment, the PIV login factor and the CRL, in the caller's transaction."""

    def __init__(
        self,
        session: Session,
        *,
        ca: ServiceCa,
        credentials: CredentialService,
        pseudonyms: Pseudonyms,
        crl_url: str,
        clock: Callable[[], float],
        audit: AuditHook = no_audit,
        enrolment_lifetime: dt.timedelta = ENROLMENT_LIFETIME,
    ) -> None:
        self._session = session
        self._ca = ca
        self._credentials = credentials
        self._stored = CredentialRepository(session)
        self._transactions = TransactionRepository(session)
        self._pseudonyms = pseudonyms
        self._crl_url = crl_url
        self._clock = clock
        self._audit = audit
        self._enrolment_lifetime = enrolment_lifetime

    @property
    def ca(self) -> ServiceCa:
        return self._ca

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    # --- enrolment ------------------------------------------------------------------------

    def enrol_begin(
        self, identity_id: uuid.UUID, *, browser_binding: str | None = None
    ) -> EnrolmentChallenge:
        """A challenge for a card to sign with its new key, kept in a new enrolment row. The
        identity must be active and have room for another card. With ``browser_binding`` (a
        citizen's own account page) the enrolment gets a code for that browser, and its
        challenge is the code's digest (see the module's notes)."""
        self._credentials.check_room(identity_id, CredentialKind.PIV)
        state_id = uuid.uuid4()
        code = None if browser_binding is None else enrolment_code(state_id, browser_binding)
        challenge = secrets.token_bytes(CHALLENGE_SIZE) if code is None else code_challenge(code)
        now = self.now()
        row = self._transactions.add(
            AuthTransaction(
                id=state_id,
                service_provider=ENROLMENT_PREFIX + str(identity_id),
                min_level=Level.LOW,
                state=_OPEN,
                identity_id=identity_id,
                factors=[],
                challenge=challenge,
                created_at=now,
                expires_at=now + self._enrolment_lifetime,
            )
        )
        self._audit(
            "piv.enrolment_begun", {"identity_id": str(identity_id), "state_id": str(row.id)}
        )
        return EnrolmentChallenge(row.id, challenge, row.expires_at, code)

    def enrolment_owner(self, state_id: uuid.UUID) -> uuid.UUID:
        """The identity an enrolment is for (``EnrolmentUnknown`` if there is none)."""
        return self._enrolment(state_id)[1]

    def enrolment_open(self, state_id: uuid.UUID, identity_id: uuid.UUID) -> bool:
        """Whether ``state_id`` is an enrolment of ``identity_id`` that a card may still
        complete (not answered yet, not expired)."""
        try:
            row, owner = self._enrolment(state_id)
        except EnrolmentUnknown:
            return False
        return owner == identity_id and row.state == _OPEN and self.now() < row.expires_at

    def _enrolment(self, state_id: uuid.UUID) -> tuple[AuthTransaction, uuid.UUID]:
        row = self._session.get(AuthTransaction, state_id)
        if row is None or not row.service_provider.startswith(ENROLMENT_PREFIX):
            raise EnrolmentUnknown
        if row.identity_id is None:
            raise EnrolmentUnknown
        return row, row.identity_id

    def enrol_complete(
        self,
        state_id: uuid.UUID,
        *,
        public_key_der: bytes,
        signature: bytes,
        card_id: str,
        code: str | None = None,
    ) -> Enrolled:
        """Check the card's signature over the enrolment challenge with the public key it sent,
        certify that key, and store the card as an active PIV credential. With ``code`` (a
        citizen completing the enrolment their page began) the code must be the enrolment's.
        The enrolment is closed by the first answer, accepted or not (the caller commits that
        before it answers a refusal)."""
        row, _ = self._enrolment(state_id)
        if row.state != _OPEN:
            raise EnrolmentClosed
        if self.now() >= row.expires_at or row.identity_id is None or row.challenge is None:
            raise EnrolmentExpired
        identity_id, challenge = row.identity_id, row.challenge
        row.state, row.challenge = FAILED, None
        self._transactions.update(row)
        if code is not None and not hmac.compare_digest(code_challenge(code), challenge):
            self._refused(identity_id, state_id, "code")
            raise EnrolmentCodeRejected
        try:
            public_key = require_card_key(serialization.load_der_public_key(public_key_der))
        except (ValueError, UnsupportedAlgorithm):
            self._refused(identity_id, state_id, "public-key")
            raise EnrolmentRejected("public-key") from None
        try:
            public_key.verify(
                signature, enrol_message(state_id, challenge), ec.ECDSA(hash_for(public_key))
            )
        except (InvalidSignature, ValueError):
            self._refused(identity_id, state_id, "signature")
            raise EnrolmentRejected("signature") from None
        now = self.now()
        certificate = self._ca.issue(
            public_key,
            subject_id=str(self._pseudonyms.pseudonym(identity_id, PSEUDONYM_SCOPE)),
            crl_url=self._crl_url,
            now=now,
        )
        der = certificate.public_bytes(serialization.Encoding.DER)
        credential = self._credentials.add_proven(
            identity_id,
            CredentialKind.PIV,
            serial=card_serial(certificate),
            label="PIV card",
            public_data={
                "certificate": base64.b64encode(der).decode("ascii"),
                "card_id": card_id,
                "slot": SLOT,
                "algorithm": public_key.curve.name,
                "issuer_key_id": self._ca.key_id.hex(),
                "not_after": certificate.not_valid_after_utc.isoformat(),
            },
        )
        row.state = COMPLETED
        self._transactions.update(row)
        self._audit(
            "piv.certificate_issued",
            {
                "credential_id": str(credential.id),
                "identity_id": str(identity_id),
                "certificate_serial": serial_hex(certificate.serial_number),
                "card_id": card_id,
            },
        )
        return Enrolled(credential, certificate)

    def _refused(self, identity_id: uuid.UUID, state_id: uuid.UUID, reason: str) -> None:
        self._audit(
            "piv.enrolment_refused",
            {"identity_id": str(identity_id), "state_id": str(state_id), "reason": reason},
        )

    # --- login ----------------------------------------------------------------------------

    def login_begin(self, transaction_id: uuid.UUID) -> bytes:
        """A fresh challenge for an identified login, stored on the transaction (replacing any
        earlier one). The answer is the same whether or not the person exists or has a card."""
        transaction = self._login(transaction_id)
        challenge = secrets.token_bytes(CHALLENGE_SIZE)
        transaction.challenge = challenge
        self._transactions.update(transaction)
        return challenge

    def login_check(self, transaction_id: uuid.UUID, origins: Sequence[str] = ()) -> PivLoginCheck:
        """A ``FactorCheck`` for ``{"certificate": DER, "signature": DER, "origin": str}``
        against the challenge of ``transaction_id``; the origin must be one of ``origins``."""
        return PivLoginCheck(self, transaction_id, origins)

    def take_challenge(self, transaction_id: uuid.UUID) -> bytes | None:
        """The login's current challenge, removed from it: each is good for one attempt."""
        transaction = self._login(transaction_id)
        challenge, transaction.challenge = transaction.challenge, None
        if challenge is not None:
            self._transactions.update(transaction)
        return challenge

    def card_of(self, identity_id: uuid.UUID, certificate: x509.Certificate) -> Credential:
        """The identity's PIV credential for ``certificate``, which must be active and hold
        exactly this certificate; a card in any other state is refused (and audited)."""
        credential = self._session.scalar(
            select(Credential).where(
                Credential.serial == card_serial(certificate),
                Credential.kind == CredentialKind.PIV,
                Credential.identity_id == identity_id,
            )
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

    def _login(self, transaction_id: uuid.UUID) -> AuthTransaction:
        transaction = self._session.get(AuthTransaction, transaction_id)
        if transaction is None or transaction.service_provider.startswith(
            (ENROLMENT_PREFIX, FIDO_REGISTRATION_PREFIX)
        ):
            raise TransactionUnknown("no such transaction", detail="unknown transaction")
        if transaction.state in (COMPLETED, FAILED):
            raise TransactionClosed("transaction closed", detail="this login is finished")
        if self.now() >= transaction.expires_at:
            raise TransactionExpired("transaction expired", detail="the login took too long")
        if transaction.state != IDENTIFIED:
            raise TransactionClosed("not identified", detail="say who is logging in first")
        return transaction

    # --- revocation -----------------------------------------------------------------------

    def revocations(self) -> list[Revocation]:
        """The CRL entries: this CA's cards in a state that takes them out of use."""
        rows = self._session.scalars(
            select(Credential).where(
                Credential.kind == CredentialKind.PIV,
                Credential.state.in_(list(REASONS)),
            )
        )
        issuer = self._ca.key_id.hex()
        entries = []
        for credential in rows:
            serial = credential.serial or ""
            if credential.public_data.get("issuer_key_id") != issuer:
                continue  # an order placeholder, or a card of an earlier CA
            if not serial.startswith(SERIAL_PREFIX):
                continue
            entries.append(
                Revocation(
                    serial=int(serial[len(SERIAL_PREFIX) :], 16),
                    revoked_at=credential.updated_at,
                    reason=REASONS[credential.state],
                )
            )
        return entries

    def crl_der(self) -> bytes:
        """The current CRL, DER, signed now."""
        crl = self._ca.crl(self.revocations(), now=self.now())
        return crl.public_bytes(serialization.Encoding.DER)


class PivLoginCheck:
    """The PIV login factor (a ``FactorCheck``). For a person who does not exist it does the
    same signature work, so the time taken does not tell whether an account exists."""

    def __init__(
        self, service: PivService, transaction_id: uuid.UUID, origins: Sequence[str] = ()
    ) -> None:
        self._service = service
        self._transaction_id = transaction_id
        self._origins = frozenset(origins)

    def _verified(self, submitted: dict[str, Any]) -> x509.Certificate:
        challenge = self._service.take_challenge(self._transaction_id)
        if challenge is None:
            raise PivLoginRejected("no-challenge")
        origin = str(submitted.get("origin", ""))
        if origin not in self._origins:
            raise PivLoginRejected("wrong-origin")
        return verify_card_signature(
            self._service.ca,
            bytes(submitted.get("certificate", b"")),
            bytes(submitted.get("signature", b"")),
            login_message(self._transaction_id, challenge, origin),
            self._service.now(),
        )

    def __call__(
        self, session: Session, identity_id: uuid.UUID, submitted: dict[str, Any]
    ) -> AuthenticatorKind:
        certificate = self._verified(submitted)
        self._service.card_of(identity_id, certificate)
        return AuthenticatorKind.PIV

    def on_unknown(self, submitted: dict[str, Any]) -> None:
        try:
            self._verified(submitted)
        except PivLoginRejected:
            pass
