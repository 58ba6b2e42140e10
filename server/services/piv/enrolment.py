"""PIV enrolment with a proof of possession: the card's new key signs the service's challenge,
and the service CA certifies that key."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.orm import Session

from server.domain.errors import (
    ConflictingState,
    DomainError,
    Expired,
    UnknownSubject,
    Unverified,
    recorded_failures,
)
from server.domain.model import CeremonyKind, CredentialKind, Level
from server.services.credentials import CredentialService
from server.services.credentials.admission import (
    AddedBy,
    admit,
    admitted_level,
    recorded_level,
    with_level,
)
from server.services.identities import AuditHook, no_audit
from server.services.login.gate import COMPLETED, FAILED, OPEN, normalise_pairing, readable_code
from server.services.piv.attestation import CardKeyNotAttested, verify_card_key
from server.services.piv.ca import ServiceCa, hash_for, require_card_key, serial_hex
from server.services.piv.card import CHALLENGE_SIZE, SLOT, card_serial, enrol_message
from server.services.pseudonyms import Pseudonyms
from server.storage.repositories import TransactionRepository
from server.storage.tables import AuthTransaction, Credential

ENROLMENT_CODE_DOMAIN = b"akkreditiv-piv-enrolment-code\x00"
CODE_CHALLENGE_DOMAIN = b"akkreditiv-piv-enrolment-challenge\x00"
ENROLMENT_LIFETIME = dt.timedelta(minutes=5)
# The "provider" a certificate's pseudonymous subject is derived for. It has a space, which
# no service provider name may hold, so no provider's pseudonym equals a certificate subject.
PSEUDONYM_SCOPE = "piv certificate"


class EnrolmentUnknown(UnknownSubject):
    code = "not-found"
    default_detail = "there is no such enrolment"


class EnrolmentClosed(ConflictingState):
    code = "conflict"
    default_detail = "this enrolment is finished; begin a new one"


class EnrolmentExpired(Expired):
    code = "transaction-expired"
    default_detail = "the enrolment took too long; begin a new one"


class EnrolmentRejected(DomainError):
    """The card's answer does not prove possession: an unusable key or a wrong signature."""

    code = "enrolment-rejected"
    default_detail = "the card's answer was not accepted"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EnrolmentCodeRejected(Unverified):
    """The enrolment code sent is not the one the account page showed for this enrolment."""

    code = "verification-failed"
    default_detail = "the enrolment code is not right; open the account page again for a new one"


@dataclass(frozen=True)
class EnrolmentChallenge:
    state_id: uuid.UUID
    challenge: bytes
    expires_at: dt.datetime
    code: str | None = None  # the enrolment code, when a browser's page began it


@dataclass(frozen=True)
class CardAnswer:
    """What the card's program sends to complete an enrolment: the new key (SubjectPublicKey-
    Info, DER), its signature over the enrolment message, the card's id (CHUID), and the
    card's attestation of the key (its certificate and the attestation key's, DER) with the
    vendor serial the program read from the card, when it did."""

    public_key_der: bytes
    signature: bytes
    card_id: str
    attestation: bytes | None = None
    attestation_intermediate: bytes | None = None
    card_serial: int | None = None


@dataclass(frozen=True)
class Enrolled:
    credential: Credential
    certificate: x509.Certificate


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


class PivEnrolment:
    """PIV enrolment, in the caller's transaction; each step is audited. Nothing is kept in
    memory between steps:

    * An enrolment is a ceremony row of kind ``piv_enrolment``: ``identity_id`` the identity,
      ``state`` ``open`` (then ``completed`` or ``failed``: one attempt per challenge),
      ``challenge`` the challenge and ``expires_at`` its deadline. The row's id is the state id
      the client carries. The login gate never takes it for a login.
    * An enrolment a citizen's account page begins (``enrol_begin(..., browser_binding=...)``)
      has an enrolment code, derived one way from the state id and that browser's binding, so
      only that page can show it. Its challenge is the SHA-256 digest of the code
      (``code_challenge``) rather than random bytes: the card program, given the code, knows
      what to sign without an operator's key to call ``enrol/begin``, and the service checks a
      code it is sent against the row alone, in constant time. A wrong code spends the
      enrolment like any refused answer, so a code (60 bits) cannot be guessed. An enrolment an
      operator began has a random challenge, which no code's digest matches.

    The credential it makes: kind ``piv``, state ``active``, ``serial`` from ``card_serial``,
    ``public_data`` = ``certificate`` (base64 DER), ``card_id`` (the CHUID GUID or FASC-N in
    hex, as the driver reports it), ``slot`` (``"9a"``), ``algorithm``, ``issuer_key_id`` (the
    CA's subject key id in hex), ``not_after`` and ``attestation`` (the attested vendor serial,
    PIN policy and firmware). No secret is stored: the private key never leaves the card.

    A key is certified only with the card's attestation that it was generated there, chaining
    to one of ``attestation_roots()`` (the card vendors' roots), with a PIN policy level High
    accepts (``attestation.verify_card_key``): a software key is refused, none configured
    refuses every key.
    """

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
        attestation_roots: Callable[[], Sequence[x509.Certificate]] = tuple,
    ) -> None:
        self._session = session
        self._ca = ca
        self._credentials = credentials
        self._transactions = TransactionRepository(session)
        self._pseudonyms = pseudonyms
        self._crl_url = crl_url
        self._clock = clock
        self._audit = audit
        self._enrolment_lifetime = enrolment_lifetime
        # Read when a card answers, so a roots file in trouble stops enrolment, not logins.
        self._attestation_roots = attestation_roots

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    def enrol_begin(
        self,
        identity_id: uuid.UUID,
        *,
        added_by: AddedBy,
        browser_binding: str | None = None,
    ) -> EnrolmentChallenge:
        """A challenge for a card to sign with its new key, kept in a new enrolment row. The
        identity must be active and have room for another card, and a card gives High, so
        ``added_by`` must be a login at the level ``admission.level_to_add`` asks or an
        operator with the person present (only then is there an enrolment to complete). With
        ``browser_binding`` (a citizen's own account page) the enrolment gets a code for that
        browser, and its challenge is the code's digest (see the module's notes). The level the
        card is admitted at is kept with the enrolment, for ``enrol_complete`` to record."""
        identity = self._credentials.active_identity(identity_id)
        admit(CredentialKind.PIV, identity, added_by, self._audit)
        self._credentials.check_room(identity_id, CredentialKind.PIV)
        state_id = uuid.uuid4()
        code = None if browser_binding is None else enrolment_code(state_id, browser_binding)
        challenge = secrets.token_bytes(CHALLENGE_SIZE) if code is None else code_challenge(code)
        now = self._now()
        row = self._transactions.add(
            AuthTransaction(
                id=state_id,
                kind=CeremonyKind.PIV_ENROLMENT,
                service_provider="",
                min_level=Level.LOW,
                state=OPEN,
                identity_id=identity_id,
                factors=[],
                challenge=challenge,
                ceremony_state=with_level({}, admitted_level(identity, added_by)),
                created_at=now,
                expires_at=now + self._enrolment_lifetime,
            )
        )
        self._audit(
            "piv.enrolment_begun",
            {"identity_id": str(identity_id), "state_id": str(row.id), "added_by": added_by.label},
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
        return owner == identity_id and row.state == OPEN and self._now() < row.expires_at

    def _enrolment(self, state_id: uuid.UUID) -> tuple[AuthTransaction, uuid.UUID]:
        row = self._session.get(AuthTransaction, state_id)
        if row is None or row.kind is not CeremonyKind.PIV_ENROLMENT:
            raise EnrolmentUnknown
        if row.identity_id is None:
            raise EnrolmentUnknown
        return row, row.identity_id

    def enrol_complete(
        self, state_id: uuid.UUID, answer: CardAnswer, *, code: str | None = None
    ) -> Enrolled:
        """Check the card's signature over the enrolment challenge with the public key it sent
        and the card's attestation of that key, certify the key, and store the card as an
        active PIV credential. With ``code`` (a citizen completing the enrolment their page
        began) the code must be the enrolment's.
        The enrolment is closed by the first answer, accepted or not (a refusal is
        ``recorded``)."""
        row, _ = self._enrolment(state_id)
        if row.state != OPEN:
            raise EnrolmentClosed
        if self._now() >= row.expires_at or row.identity_id is None or row.challenge is None:
            raise EnrolmentExpired
        identity_id, challenge = row.identity_id, row.challenge
        # The level the card is admitted at, as its enrolment began (None: one from before).
        admitted = recorded_level(row.ceremony_state)
        roots = self._attestation_roots()  # before the row closes: a fault here spends nothing
        row.state, row.challenge, row.ceremony_state = FAILED, None, None
        self._transactions.update(row)
        # The enrolment is closed by this answer, accepted or not: a refusal outlives it.
        with recorded_failures():
            if code is not None and not hmac.compare_digest(code_challenge(code), challenge):
                self._refused(identity_id, state_id, "code")
                raise EnrolmentCodeRejected
            try:
                public_key = require_card_key(
                    serialization.load_der_public_key(answer.public_key_der)
                )
            except (ValueError, UnsupportedAlgorithm):
                self._refused(identity_id, state_id, "public-key")
                raise EnrolmentRejected("public-key") from None
            try:
                public_key.verify(
                    answer.signature,
                    enrol_message(state_id, challenge),
                    ec.ECDSA(hash_for(public_key)),
                )
            except (InvalidSignature, ValueError):
                self._refused(identity_id, state_id, "signature")
                raise EnrolmentRejected("signature") from None
            now = self._now()
            try:
                attested = verify_card_key(
                    public_key,
                    answer.attestation,
                    answer.attestation_intermediate,
                    roots,
                    card_serial=answer.card_serial,
                    now=now,
                )
            except CardKeyNotAttested as refused:
                self._refused(identity_id, state_id, f"attestation:{refused.reason}")
                raise
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
                    "card_id": answer.card_id,
                    "slot": SLOT,
                    "algorithm": public_key.curve.name,
                    "issuer_key_id": self._ca.key_id.hex(),
                    "not_after": certificate.not_valid_after_utc.isoformat(),
                    "attestation": {
                        "serial": attested.serial,
                        "pin_policy": attested.pin_policy.name.lower(),
                        "firmware": ".".join(map(str, attested.firmware)),
                    },
                },
                admitted=admitted,
            )
            row.state = COMPLETED
            self._transactions.update(row)
            self._audit(
                "piv.certificate_issued",
                {
                    "credential_id": str(credential.id),
                    "identity_id": str(identity_id),
                    "certificate_serial": serial_hex(certificate.serial_number),
                    "card_id": answer.card_id,
                    "attested_serial": attested.serial,
                },
            )
            return Enrolled(credential, certificate)

    def _refused(self, identity_id: uuid.UUID, state_id: uuid.UUID, reason: str) -> None:
        self._audit(
            "piv.enrolment_refused",
            {"identity_id": str(identity_id), "state_id": str(state_id), "reason": reason},
        )
