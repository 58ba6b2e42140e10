"""``PivService``: PIV enrolment, the PIV login factor and the CRL, as the API and the pages use
them. Nothing is kept in memory between steps (see ``enrolment`` and ``login``)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.orm import Session

from server.services.credentials.admission import AddedBy
from server.services.piv.ca import Revocation, ServiceCa
from server.services.piv.enrolment import (
    CardAnswer,
    Enrolled,
    EnrolmentChallenge,
    PivEnrolment,
)
from server.services.piv.login import LoginBegun, PivLogin, PivLoginCheck
from server.services.piv.revocation import revocations
from server.storage.tables import Credential


class PivService:
    """PIV enrolment, the PIV login factor and the CRL, in the caller's transaction."""

    def __init__(
        self, session: Session, *, ca: ServiceCa, enrolment: PivEnrolment, login: PivLogin
    ) -> None:
        self._session = session
        self._ca = ca
        self._enrolment = enrolment
        self._login = login

    @property
    def ca(self) -> ServiceCa:
        return self._ca

    def now(self) -> dt.datetime:
        return self._login.now()

    # --- enrolment (see ``PivEnrolment``) -------------------------------------------------

    def enrol_begin(
        self, identity_id: uuid.UUID, *, added_by: AddedBy, browser_binding: str | None = None
    ) -> EnrolmentChallenge:
        return self._enrolment.enrol_begin(
            identity_id, added_by=added_by, browser_binding=browser_binding
        )

    def enrolment_owner(self, state_id: uuid.UUID) -> uuid.UUID:
        return self._enrolment.enrolment_owner(state_id)

    def enrolment_open(self, state_id: uuid.UUID, identity_id: uuid.UUID) -> bool:
        return self._enrolment.enrolment_open(state_id, identity_id)

    def enrol_complete(
        self, state_id: uuid.UUID, answer: CardAnswer, *, code: str | None = None
    ) -> Enrolled:
        return self._enrolment.enrol_complete(state_id, answer, code=code)

    # --- login (see ``PivLogin``) ---------------------------------------------------------

    def login_begin(self, transaction_id: uuid.UUID) -> LoginBegun:
        return self._login.login_begin(transaction_id)

    def login_check(self, transaction_id: uuid.UUID, origins: Sequence[str] = ()) -> PivLoginCheck:
        return self._login.login_check(transaction_id, origins)

    def take_challenge(self, transaction_id: uuid.UUID) -> bytes | None:
        return self._login.take_challenge(transaction_id)

    def card_of(self, identity_id: uuid.UUID, certificate: x509.Certificate) -> Credential:
        return self._login.card_of(identity_id, certificate)

    # --- revocation -----------------------------------------------------------------------

    def revocations(self) -> list[Revocation]:
        """The CRL entries: this CA's cards in a state that takes them out of use."""
        return revocations(self._session, self._ca)

    def crl_der(self) -> bytes:
        """The current CRL, DER, signed now."""
        crl = self._ca.crl(self.revocations(), now=self.now())
        return crl.public_bytes(serialization.Encoding.DER)
