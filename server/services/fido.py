"""FIDO2 security keys (WebAuthn L2 §7.1 registration, §7.2 authentication) on python-fido2's
``Fido2Server``, with an attestation policy and signature-counter clone detection.

Nothing is kept in memory between the steps of a ceremony:

* A registration is a ceremony row of kind ``fido_registration``: ``identity_id`` the identity,
  ``state`` ``open`` (then ``completed`` or ``failed``), ``ceremony_state`` python-fido2's
  registration state as it gave it, ``expires_at`` its deadline. The row's id is the "state
  id" the client carries. The login gate never takes such a row as a login.
* An authentication's state is python-fido2's, kept on the login (``ceremony_state``) with its
  challenge in the login's one ``challenge`` column: ``fido_begin`` writes both, and every
  ``fido_check`` spends them (success or failure), so an assertion cannot be replayed, and a
  later challenge of another factor makes it stale. The UV flag of the assertion decides the
  factor (``fido2_uv`` or ``fido2``) and the level follows from it.
* No account enumeration: for a login whose person does not exist, or has no active FIDO2
  credential, ``fido_begin`` answers decoy credential descriptors (one to three, as people
  hold keys, each of a real key's length and format byte, the rest an HMAC under ``decoy_key``
  of the ``decoy_subject``), so the options look like a key holder's; the assertion then
  fails as a wrong one does, and the challenge is consumed for unknown people too.

A FIDO2 credential row: kind ``fido2``, state ``active``, ``serial`` = ``"fido2:"`` + SHA-256
of the credential id in hex (so a credential id registered anywhere is found without scanning
JSON), ``counter`` the signature counter and ``public_data`` = ``credential_data`` (websafe
base64 of the ``AttestedCredentialData``), ``aaguid``, ``fmt`` (the attestation format),
``attestation`` (``basic``, ``attca``, ``self`` or ``none``) and ``credential_id`` (websafe).

Attestation policy: only ``packed`` and ``fido-u2f`` statements whose x5c chain ends in one of
``trusted_roots`` (signatures and validity dates checked), and, if ``allowed_aaguids`` is given,
only those AAGUIDs. Self and "none" attestation are refused unless ``allow_unattested``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fido2.attestation.base import (
    AttestationResult,
    AttestationType,
    AttestationVerifier,
    InvalidAttestation,
    NoneAttestation,
    UntrustedAttestation,
)
from fido2.attestation.packed import PackedAttestation
from fido2.attestation.u2f import FidoU2FAttestation
from fido2.server import Fido2Server
from fido2.utils import websafe_encode
from fido2.webauthn import (
    AttestationConveyancePreference,
    AttestationObject,
    AttestedCredentialData,
    AuthenticatorData,
    PublicKeyCredentialDescriptor,
    PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
    RegistrationResponse,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)
from sqlalchemy.orm import Session

from server.domain.errors import (
    ConflictingState,
    DomainError,
    Expired,
    UnknownSubject,
    recorded_failures,
)
from server.domain.model import (
    STOCK_IDENTITY_ID,
    AuthenticatorKind,
    CeremonyKind,
    CredentialKind,
    CredentialState,
    IdentityStatus,
    Level,
)
from server.services.credentials.admission import (
    ADMITTED_LEVEL,
    AddedBy,
    admit,
    admitted_level,
    recorded_level,
    with_level,
)
from server.services.credentials.rules import LIMITS, LIVE_STATES
from server.services.errors import KeyMaterialRejected
from server.services.fido_login import (
    AssertionCheck,
    AssertionRejected,
    AssertionVerdict,
    assertion_verdict,
    credential_data,
)
from server.services.identities import AuditHook, no_audit
from server.services.lifecycle_errors import (
    CredentialLimitReached,
    IdentityNotActive,
    IdentityNotFound,
)
from server.services.login.decoys import NOBODY, decoy_descriptors, decoy_subject
from server.services.login.gate import (
    COMPLETED,
    FAILED,
    OPEN,
    LoginTransactions,
)
from server.services.login.record import Proof
from server.storage.repositories import CredentialRepository, TransactionRepository
from server.storage.tables import AuthTransaction, Credential, Identity

SERIAL_PREFIX = "fido2:"
REGISTRATION_LIFETIME = dt.timedelta(minutes=5)
RP_NAME = "akkreditiv"
MIN_DECOY_KEY_BYTES = 32


class RegistrationUnknown(UnknownSubject):
    code = "not-found"
    default_detail = "there is no such registration"


class RegistrationClosed(ConflictingState):
    code = "conflict"
    default_detail = "this registration is finished"


class RegistrationExpired(Expired):
    code = "transaction-expired"
    default_detail = "the registration took too long"


class RegistrationRejected(DomainError):
    """The response does not verify (origin, challenge, RP id, flags, format)."""

    code = "registration-rejected"
    default_detail = "the security key's answer was not accepted"


class AttestationRejected(DomainError):
    """The key's attestation does not satisfy the policy (untrusted, unattested, AAGUID)."""

    code = "attestation-rejected"
    default_detail = "this security key model is not accepted"


class DuplicateFidoCredential(ConflictingState):
    code = "conflict"
    default_detail = "this security key is registered already"


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _serial(credential_id: bytes) -> str:
    return SERIAL_PREFIX + hashlib.sha256(credential_id).hexdigest()


def _make_server(
    rp_id: str, origins: frozenset[str], verifier: AttestationPolicy | None
) -> Fido2Server:
    return Fido2Server(
        PublicKeyCredentialRpEntity(name=RP_NAME, id=rp_id),
        attestation=AttestationConveyancePreference.DIRECT,
        verify_origin=origins.__contains__,
        verify_attestation=verifier,
    )


@functools.lru_cache(maxsize=16)
def _shared_server(rp_id: str, origins: frozenset[str]) -> Fido2Server:
    """The relying party's ``Fido2Server`` without an attestation verifier (what logins and
    a registration's begin use), built once: a ``Fido2Server`` keeps no state after it is
    built, and building one (python-fido2 types its option objects as it makes them) took
    about a tenth of the server's CPU for a FIDO2 login. A registration's completion builds
    its own, around that request's ``AttestationPolicy`` (which records its result)."""
    return _make_server(rp_id, origins, None)


class AttestationPolicy(AttestationVerifier):
    """Trusts only ``trusted_roots`` (and, if given, only ``allowed_aaguids``); refuses self and
    "none" attestation unless ``allow_unattested``."""

    def __init__(
        self,
        trusted_roots: Sequence[x509.Certificate],
        *,
        allowed_aaguids: set[uuid.UUID] | None = None,
        allow_unattested: bool = False,
        clock: Callable[[], float],
    ) -> None:
        super().__init__([PackedAttestation(), FidoU2FAttestation(), NoneAttestation()])
        self._roots = list(trusted_roots)
        self._aaguids = allowed_aaguids
        self._allow_unattested = allow_unattested
        self._clock = clock
        self.result: AttestationResult | None = None

    def ca_lookup(
        self, attestation_result: AttestationResult, auth_data: AuthenticatorData
    ) -> bytes | None:
        if not attestation_result.trust_path:
            return None
        chain = [x509.load_der_x509_certificate(der) for der in attestation_result.trust_path]
        now = _utc(self._clock())
        top = chain[-1]
        for root in self._roots:
            if root.subject != top.issuer:
                continue
            for cert in [*chain, root]:
                if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                    raise UntrustedAttestation("a certificate is outside its validity")
            return root.public_bytes(serialization.Encoding.DER)
        return None

    def verify_attestation(
        self, attestation_object: AttestationObject, client_data_hash: bytes
    ) -> None:
        auth_data = attestation_object.auth_data
        if auth_data.credential_data is None:
            raise InvalidAttestation("no attested credential data")
        aaguid = uuid.UUID(bytes=bytes(auth_data.credential_data.aaguid))
        if self._aaguids is not None and aaguid not in self._aaguids:
            raise UntrustedAttestation(f"AAGUID {aaguid} not allowed")
        verifier = next(
            (
                a
                for a in self._attestation_types
                if getattr(a, "FORMAT", None) == attestation_object.fmt
            ),
            None,
        )
        if verifier is None:
            raise UntrustedAttestation(f"attestation format {attestation_object.fmt!r} refused")
        result = verifier.verify(attestation_object.att_stmt, auth_data, client_data_hash)
        if result.attestation_type in (AttestationType.NONE, AttestationType.SELF):
            if not self._allow_unattested:
                raise UntrustedAttestation("unattested keys are not accepted")
            self.result = result
            return
        super().verify_attestation(attestation_object, client_data_hash)
        self.result = result


class FidoService:
    """FIDO2 registration and the FIDO2 login factor, in the caller's transaction."""

    def __init__(
        self,
        session: Session,
        *,
        rp_id: str,
        origins: Sequence[str],
        trusted_roots: list[x509.Certificate],
        decoy_key: bytes,
        allowed_aaguids: set[uuid.UUID] | None = None,
        allow_unattested: bool = False,
        audit: AuditHook = no_audit,
        clock: Callable[[], float],
        registration_lifetime: dt.timedelta = REGISTRATION_LIFETIME,
    ) -> None:
        if len(decoy_key) < MIN_DECOY_KEY_BYTES:
            raise KeyMaterialRejected(f"a decoy key has at least {MIN_DECOY_KEY_BYTES} bytes")
        self._session = session
        self._decoy_key = decoy_key
        self._credentials = CredentialRepository(session)
        self._transactions = TransactionRepository(session)
        self._rp_id = rp_id
        self._origins = frozenset(origins)
        self._trusted_roots = list(trusted_roots)
        self._allowed_aaguids = allowed_aaguids
        self._allow_unattested = allow_unattested
        self._audit = audit
        self._clock = clock
        self._registration_lifetime = registration_lifetime

    def _server(self, verifier: AttestationPolicy | None = None) -> Fido2Server:
        if verifier is None:
            return _shared_server(self._rp_id, frozenset(self._origins))
        return _make_server(self._rp_id, frozenset(self._origins), verifier)

    def _now(self) -> dt.datetime:
        return _utc(self._clock())

    # --- registration -------------------------------------------------------------------

    def register_begin(
        self,
        identity_id: uuid.UUID,
        *,
        added_by: AddedBy,
        user_verification: UserVerificationRequirement = UserVerificationRequirement.DISCOURAGED,
        resident: bool = False,
    ) -> tuple[dict[str, Any], uuid.UUID]:
        """Creation options (JSON-ready) and the id of the persisted registration state. A key
        can give High (with a second key), so ``added_by`` must be a login at the level
        ``admission.level_to_add`` asks, or an operator with the person present; the level
        the key is admitted at is kept with the state, for ``register_complete`` to record."""
        identity = self._active_identity(identity_id)
        admit(CredentialKind.FIDO2, identity, added_by, self._audit)
        live = self._fido_credentials(identity_id, LIVE_STATES)
        if len(live) >= LIMITS[CredentialKind.FIDO2]:
            raise CredentialLimitReached(CredentialKind.FIDO2.value, LIMITS[CredentialKind.FIDO2])
        challenge = secrets.token_bytes(32)
        options, state = self._server().register_begin(
            PublicKeyCredentialUserEntity(
                name=identity.name, id=identity.id.bytes, display_name=identity.name
            ),
            credentials=[credential_data(c) for c in live],
            resident_key_requirement=(
                ResidentKeyRequirement.REQUIRED if resident else ResidentKeyRequirement.DISCOURAGED
            ),
            user_verification=user_verification,
            challenge=challenge,
        )
        now = self._now()
        row = self._transactions.add(
            AuthTransaction(
                kind=CeremonyKind.FIDO_REGISTRATION,
                service_provider="",
                min_level=Level.LOW,
                state=OPEN,
                identity_id=identity_id,
                factors=[],
                ceremony_state=with_level(state, admitted_level(identity, added_by)),
                created_at=now,
                expires_at=now + self._registration_lifetime,
            )
        )
        self._audit(
            "fido2.registration_begun",
            {
                "identity_id": str(identity_id),
                "state_id": str(row.id),
                "added_by": added_by.label,
            },
        )
        return dict(options), row.id

    def register_complete(self, state_id: uuid.UUID, response: Mapping[str, Any]) -> Credential:
        """Verify the key's answer and store the new active FIDO2 credential. A refused answer
        closes the registration (its error is ``recorded``)."""
        row = self._session.get(AuthTransaction, state_id)
        if row is None or row.kind is not CeremonyKind.FIDO_REGISTRATION:
            raise RegistrationUnknown
        if row.state != OPEN:
            raise RegistrationClosed
        state = row.ceremony_state
        if self._now() >= row.expires_at or row.identity_id is None or state is None:
            raise RegistrationExpired
        identity_id = row.identity_id
        # The level the key is admitted at, as its registration began (None: one from before).
        admitted = recorded_level(state)
        state = {key: value for key, value in state.items() if key != ADMITTED_LEVEL}
        row.state, row.ceremony_state = FAILED, None
        self._transactions.update(row)
        # The registration is closed even when refused: that outlives the error answer.
        with recorded_failures():
            policy = AttestationPolicy(
                self._trusted_roots,
                allowed_aaguids=self._allowed_aaguids,
                allow_unattested=self._allow_unattested,
                clock=self._clock,
            )
            try:
                registration = RegistrationResponse.from_dict(response)
                auth_data = self._server(policy).register_complete(state, registration)
            except InvalidAttestation as exc:
                self._refused(identity_id, "attestation", str(exc))
                raise AttestationRejected(str(exc)) from None
            except Exception as exc:
                self._refused(identity_id, "response", type(exc).__name__)
                raise RegistrationRejected(type(exc).__name__) from None
            attested = auth_data.credential_data
            if attested is None or policy.result is None:  # pragma: no cover - checked above
                raise RegistrationRejected("no credential data")
            self._active_identity(identity_id)
            serial = _serial(attested.credential_id)
            if self._credentials.serial_taken(serial):
                raise DuplicateFidoCredential
            if (
                len(self._fido_credentials(identity_id, LIVE_STATES))
                >= LIMITS[CredentialKind.FIDO2]
            ):
                raise CredentialLimitReached(
                    CredentialKind.FIDO2.value, LIMITS[CredentialKind.FIDO2]
                )
            credential = self._credentials.add(
                Credential(
                    id=uuid.uuid4(),
                    identity_id=identity_id,
                    kind=CredentialKind.FIDO2,
                    state=CredentialState.ACTIVE,
                    serial=serial,
                    public_data=with_level(
                        {
                            "credential_data": websafe_encode(bytes(attested)),
                            "credential_id": websafe_encode(attested.credential_id),
                            "aaguid": str(uuid.UUID(bytes=bytes(attested.aaguid))),
                            "fmt": registration.response.attestation_object.fmt,
                            "attestation": policy.result.attestation_type.name.lower(),
                        },
                        admitted,
                    ),
                    counter=auth_data.counter,
                )
            )
        row.state = COMPLETED
        self._transactions.update(row)
        self._audit(
            "credential.registered",
            {
                "credential_id": str(credential.id),
                "identity_id": str(identity_id),
                "kind": CredentialKind.FIDO2.value,
                "aaguid": credential.public_data["aaguid"],
                "admitted_level": admitted.label if admitted else None,
            },
        )
        return credential

    def _refused(self, identity_id: uuid.UUID, stage: str, reason: str) -> None:
        self._audit(
            "fido2.registration_refused",
            {"identity_id": str(identity_id), "stage": stage, "reason": reason[:200]},
        )

    # --- authentication -----------------------------------------------------------------

    def fido_begin(
        self,
        transaction_id: uuid.UUID,
        *,
        user_verification: UserVerificationRequirement = UserVerificationRequirement.PREFERRED,
    ) -> dict[str, Any]:
        """Request options for an identified login; the fresh challenge is stored on the
        transaction (replacing any earlier one). ``user_verification`` is a wish to the client
        only: the UV flag of the assertion decides the factor proven.

        A person who does not exist or holds no active FIDO2 credential gets decoy descriptors
        (see the module docstring): an empty ``allowCredentials`` would tell who has a key."""
        transaction = LoginTransactions(self._session, self._now).identified(transaction_id)
        challenge = secrets.token_bytes(32)
        credentials: list[AttestedCredentialData | PublicKeyCredentialDescriptor] = [
            credential_data(c)
            for c in self._fido_credentials(
                transaction.identity_id or NOBODY, {CredentialState.ACTIVE}
            )
        ]
        if not credentials:
            credentials.extend(decoy_descriptors(self._decoy_key, decoy_subject(transaction)))
        options, state = self._server().authenticate_begin(
            credentials,
            user_verification=user_verification,
            challenge=challenge,
        )
        LoginTransactions(self._session, self._now).set_pending(
            transaction, CredentialKind.FIDO2, challenge=challenge, state=state
        )
        return dict(options)

    def fido_check(
        self, transaction_id: uuid.UUID, verdict: AssertionVerdict | None = None
    ) -> AssertionCheck:
        """A ``FactorCheck`` for ``{"response": <AuthenticationResponse JSON>}`` against the
        challenge of ``transaction_id`` (consumed whatever the outcome); ``verdict``, one
        reached before the transaction (``fido_login.verdict_beforehand``), if any."""
        return AssertionCheck(self, transaction_id, verdict)

    def take_state(self, transaction_id: uuid.UUID) -> dict[str, Any] | None:
        """The login's pending authentication state, spent in the same step (one try per
        challenge); None when there is none, or another factor's challenge came after it."""
        logins = LoginTransactions(self._session, self._now)
        pending = logins.take_pending(logins.identified(transaction_id), CredentialKind.FIDO2)
        return None if pending is None or pending.challenge is None else pending.state

    def pending_state(self, transaction_id: uuid.UUID) -> dict[str, Any] | None:
        """Read only: the login's pending authentication state, not spent (for a verdict
        reached before the step's transaction, ``AssertionCheck.beforehand``)."""
        transaction = LoginTransactions(self._session, self._now).identified(transaction_id)
        pending = LoginTransactions.pending(transaction, CredentialKind.FIDO2)
        return None if pending is None or pending.challenge is None else pending.state

    def verdict(
        self, state: dict[str, Any], identity_id: uuid.UUID, submitted: dict[str, Any]
    ) -> AssertionVerdict:
        """Read only: the assertion checked against ``state`` and the identity's active keys
        as this session reads them (python-fido2's ``authenticate_complete``: the client data,
        the RP id hash, the flags and the signature)."""
        candidates = self._fido_credentials(identity_id, {CredentialState.ACTIVE})
        return assertion_verdict(self._server(), state, candidates, submitted)

    def verify_assertion(
        self,
        transaction_id: uuid.UUID,
        identity_id: uuid.UUID,
        submitted: dict[str, Any],
        verdict: AssertionVerdict | None = None,
    ) -> Proof:
        """Check an assertion against the login's challenge (consumed) and the identity's
        active credentials; raises ``AssertionRejected`` whatever the reason. ``verdict``, one
        reached beforehand, stands only if it was reached on this state and these keys."""
        state = self.take_state(transaction_id)
        if state is None:
            raise AssertionRejected("no-challenge")
        candidates = self._fido_credentials(identity_id, {CredentialState.ACTIVE})
        if verdict is None or not verdict.holds(state, candidates):
            verdict = assertion_verdict(self._server(), state, candidates, submitted)
        if verdict.refused is not None or verdict.credential is None:
            raise AssertionRejected(verdict.refused or "no-credential")
        credential = next(c for c in candidates if c.id == verdict.credential)
        self._check_counter(credential, verdict.counter)
        kind = AuthenticatorKind.FIDO2_UV if verdict.user_verified else AuthenticatorKind.FIDO2
        return Proof(kind, credential.id)

    def _check_counter(self, credential: Credential, counter: int) -> None:
        """WebAuthn L2 §7.2 step 21: a counter that does not grow means a possible clone."""
        stored = credential.counter
        if (counter or stored) and counter <= stored:
            credential.state = CredentialState.BLOCKED
            self._credentials.update(credential)
            self._audit(
                "credential.clone_suspected",
                {
                    "credential_id": str(credential.id),
                    "identity_id": str(credential.identity_id),
                    "stored_counter": stored,
                    "received_counter": counter,
                },
            )
            raise AssertionRejected("counter-regression")
        credential.counter = counter
        self._credentials.update(credential)

    # --- reading ------------------------------------------------------------------------

    def active_credentials(self, identity_id: uuid.UUID) -> list[Credential]:
        return self._fido_credentials(identity_id, {CredentialState.ACTIVE})

    def _fido_credentials(
        self, identity_id: uuid.UUID, states: set[CredentialState] | frozenset[CredentialState]
    ) -> list[Credential]:
        return [
            c
            for c in self._credentials.for_identity(identity_id, states)
            if c.kind is CredentialKind.FIDO2
        ]

    def _active_identity(self, identity_id: uuid.UUID) -> Identity:
        identity = (
            None if identity_id == STOCK_IDENTITY_ID else self._session.get(Identity, identity_id)
        )
        if identity is None:
            raise IdentityNotFound
        if identity.status is not IdentityStatus.ACTIVE:
            raise IdentityNotActive
        return identity
