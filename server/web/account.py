"""Self-service pages of a signed-in citizen: their credentials, adding one (code display,
audio code reader, security key, smartcard), blocking a lost one and replacing a blocked one
(changing the password is ``account_password``). Every change goes through the services the
API uses and is audited with the citizen (``citizen:<identity id>``) as the actor.

The rule for sensitive actions (``credentials.admission``): adding a credential, replacing one
and changing the password need a login at the level that credential can lift a login to
(High for a smartcard or a security key, Substantial for the rest), capped at the identity's
own assurance (a login never exceeds it, so asking for more would lock the person out). A
session below that is refused (403, audited) with a page that says why and links to a login
at the level needed (``/account/login?level=...&next=...``), which brings the person back;
an operator can add the credential with the person present instead. Blocking a credential
needs no more than being signed in: it only takes power away, and a person who lost a
credential may have nothing stronger left.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fido2.webauthn import UserVerificationRequirement
from sqlalchemy.orm import Session
from starlette.responses import Response

from server.api.deps import ServicesDep, SessionDep
from server.domain.errors import ConflictingState, DomainError, UnknownSubject
from server.domain.model import CredentialKind, CredentialState, Level
from server.services.credentials import CredentialService
from server.services.credentials.admission import (
    AddedBy,
    LevelTooLowForCredential,
    admit,
    level_to_add,
)
from server.services.credentials.rules import LIVE_STATES, REPLACED_WHEN_BLOCKED
from server.services.identities import AuditHook, IdentityService
from server.services.lifecycle_errors import (
    ActivationCodeRejected,
    ConflictingCredential,
    CredentialLimitReached,
    InvalidTransition,
    TokenNotFound,
)
from server.services.piv.enrolment import enrolment_code
from server.storage.tables import Credential, Identity
from server.web.account_level import ADD_PAGES, level_page, login_level
from server.web.account_rows import BLOCKABLE, REPLACEABLE, TOKEN_PAGES, row
from server.web.browser import Browser, BrowserDep, CheckedForm, CitizenDep, own_origin
from server.web.credential_display import CredentialNames
from server.web.render import mark_page, page, redirect
from server.wiring import Services

router = APIRouter(dependencies=[Depends(mark_page)], include_in_schema=False)

K = CredentialKind
S = CredentialState

BLOCK_REASONS = {"lost": S.LOST, "paused": S.BLOCKED}
FIDO_STATE = "account.fido_registration"
PIV_STATE = "account.piv_enrolment"
MAX_SERIAL = 128
MAX_CODE = 64


class CredentialNotYours(UnknownSubject):
    """A credential id that is not one of the signed-in citizen's: answered as if it did not
    exist, so ids of other people's credentials cannot be probed."""

    code = "not-found"
    default_detail = "there is no such credential"


class NotReplaceable(ConflictingState):
    """Replacing a credential that is not blocked or lost, or of a kind that is added anew."""

    code = "invalid-transition"
    default_detail = "this credential cannot be replaced"


# --- wiring -----------------------------------------------------------------------------------


def actor_of(identity_id: uuid.UUID) -> str:
    """How the audit log names a citizen acting on their own account."""
    return f"citizen:{identity_id}"


@dataclass
class Account:
    """What every account route needs: the citizen's identity, the browser and the credential
    service acting as the citizen."""

    browser: Browser
    identity: Identity
    session: Session
    services: Services
    credentials: CredentialService
    audit: AuditHook

    @property
    def actor(self) -> str:
        return actor_of(self.identity.id)

    def own(self, credential_id: uuid.UUID) -> Credential:
        """The citizen's own credential ``credential_id`` (``CredentialNotYours`` otherwise)."""
        try:
            credential = self.credentials.get(credential_id)
        except DomainError:
            raise CredentialNotYours from None
        if credential.identity_id != self.identity.id:
            raise CredentialNotYours
        return credential

    def live(self) -> list[Credential]:
        return [
            c for c in self.credentials.for_identity(self.identity.id) if c.state in LIVE_STATES
        ]

    @property
    def added_by(self) -> AddedBy:
        return AddedBy.login(login_level(self.browser))

    def refused(self, kind: CredentialKind) -> LevelTooLowForCredential | None:
        """Why this session may not add (or replace, or change) a credential of ``kind``, the
        refusal audited; None if it may."""
        try:
            admit(kind, self.identity, self.added_by, self.audit)
        except LevelTooLowForCredential as refused:
            return refused
        return None

    def needs(self, kind: CredentialKind) -> Level | None:
        """The level this session lacks for ``kind`` (to say so beside it), or None."""
        required = level_to_add(kind, self.identity.identity_assurance)
        reached = login_level(self.browser)
        return None if reached is not None and reached >= required else required


def _account(
    browser: BrowserDep, identity_id: CitizenDep, session: SessionDep, services: ServicesDep
) -> Account:
    audit = services.audit_hook(session, actor_of(identity_id))
    credentials = services.credentials(session, audit)
    identity = IdentityService(session, services.pseudonyms, audit=audit).get(identity_id)
    return Account(browser, identity, session, services, credentials, audit)


AccountDep = Annotated[Account, Depends(_account)]


def _text(form: Any, name: str, limit: int) -> str:
    value = form.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


# --- the overview -----------------------------------------------------------------------------


@router.get("/account")
def overview(request: Request, account: AccountDep) -> Response:
    browser = account.browser
    live = account.live()
    return page(
        request,
        browser,
        "account_home.html",
        title=browser.t("account.title"),
        identity=account.identity,
        login_level=browser.row.level or "",
        rows=[row(c, browser.lang, account.identity.identity_assurance) for c in live],
        has_password=any(c.kind is K.PASSWORD for c in live),
    )


@router.get("/account/add")
def choose(request: Request, account: AccountDep) -> Response:
    browser = account.browser
    live = account.live()
    return page(
        request,
        browser,
        "account_add.html",
        title=browser.t("account.add_title"),
        has_password=any(c.kind is K.PASSWORD and c.state is S.ACTIVE for c in live),
        # What this session lacks for each kind (the page says so beside it), by page.
        needs={
            path: browser.t(f"account.level_{needed.label}")
            for path, kind in ADD_PAGES.items()
            if (needed := account.needs(kind)) is not None
        },
    )


# --- security key -----------------------------------------------------------------------------


def _key_page(
    request: Request,
    account: Account,
    errors: list[tuple[str, str]] | None = None,
    status: int = 200,
) -> Response:
    """Begin a registration (its state id kept in this browser's session only) and show the
    form that runs it."""
    browser = account.browser
    service = account.services.fido(account.session, account.actor)
    options, state_id = service.register_begin(
        account.identity.id,
        added_by=account.added_by,
        user_verification=UserVerificationRequirement.PREFERRED,
    )
    browser.remember(FIDO_STATE, str(state_id))
    return page(
        request,
        browser,
        "account_security_key.html",
        title=browser.t("account.key_title"),
        options=json.dumps(options, separators=(",", ":")).replace("</", "<\\/"),
        errors=errors or [],
        status=status,
    )


@router.get("/account/add/security-key")
def key_form(request: Request, account: AccountDep) -> Response:
    if (refused := account.refused(K.FIDO2)) is not None:
        return level_page(request, account.browser, refused)
    try:
        return _key_page(request, account)
    except CredentialLimitReached:
        return page(
            request,
            account.browser,
            "account_security_key.html",
            title=account.browser.t("account.key_title"),
            options="",
            errors=[("", account.browser.t("account.key_limit"))],
            status=409,
        )


@router.post("/account/add/security-key")
def key_submit(request: Request, account: AccountDep, form: CheckedForm) -> Response:
    browser = account.browser
    if (refused := account.refused(K.FIDO2)) is not None:
        return level_page(request, account.browser, refused)
    t = browser.t
    state = browser.data(FIDO_STATE)
    browser.remember(FIDO_STATE, None)
    raw = form.get("credential")
    response: Any = None
    if isinstance(raw, str) and raw:
        try:
            response = json.loads(raw)
        except ValueError:
            response = None
    if not isinstance(state, str) or not isinstance(response, dict):
        errors = [("register-key", t("account.key_no_answer"))]
        return _key_page(request, account, errors, status=400)
    service = account.services.fido(account.session, account.actor)
    try:
        service.register_complete(uuid.UUID(state), response)
    except DomainError as exc:
        key = {
            "attestation-rejected": "account.key_model_refused",
            "conflict": "account.key_duplicate",
            "credential-limit-reached": "account.key_limit",
            "transaction-expired": "account.key_expired",
        }.get(str(exc.code), "account.key_failed")
        return _key_page(request, account, [("register-key", t(key))], status=400)
    browser.flash("account.key_added")
    return redirect(browser, "/account")


# --- smartcard ----------------------------------------------------------------------------------


@router.get("/account/add/smartcard")
def smartcard(request: Request, account: AccountDep) -> Response:
    """How to enrol a smartcard with the card reader program, and the cards enrolled so far.
    The page begins the enrolment itself, as the citizen, and shows the command with the
    enrolment's id and its code (derived from this browser's binding, so only this page can
    show it): the program then needs no operator's key. The enrolment's id is kept in the
    browser's session, so reloading the page (to see the card once it is enrolled) shows the
    same command while it can still be used and a fresh one after."""
    browser = account.browser
    if (refused := account.refused(K.PIV)) is not None:
        return level_page(request, account.browser, refused)
    cards = [row(c, browser.lang) for c in account.live() if c.kind is K.PIV]
    service = account.services.piv(account.session, account.actor)
    stored = browser.data(PIV_STATE)
    state_id = _uuid_or_none(stored)
    errors: list[tuple[str, str]] = []
    command = code = ""
    if state_id is None or not service.enrolment_open(state_id, account.identity.id):
        try:
            state_id = service.enrol_begin(
                account.identity.id, added_by=account.added_by, browser_binding=browser.binding
            ).state_id
        except CredentialLimitReached:
            state_id = None
            errors = [("", browser.t("account.card_limit"))]
    browser.remember(PIV_STATE, None if state_id is None else str(state_id))
    if state_id is not None:
        code = enrolment_code(state_id, browser.binding)
        command = (
            f"akkreditiv devices piv enrol --url {own_origin(request)} "
            f"--enrolment {state_id} --code {code}"
        )
    return page(
        request,
        browser,
        "account_smartcard.html",
        title=browser.t("account.card_title"),
        command=command,
        code=code,
        cards=cards,
        errors=errors,
    )


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        return None


# --- code display and audio code reader ------------------------------------------------------


def _token_page(
    request: Request,
    account: Account,
    slug: str,
    *,
    serial: str = "",
    errors: list[tuple[str, str]] | None = None,
    status: int = 200,
) -> Response:
    t = account.browser.t
    return page(
        request,
        account.browser,
        "account_token.html",
        title=t(f"account.{slug}_title"),
        slug=slug,
        serial=serial,
        errors=errors or [],
        status=status,
    )


@router.get("/account/add/{slug}")
def token_form(request: Request, slug: str, account: AccountDep, serial: str = "") -> Response:
    if slug not in TOKEN_PAGES:
        raise CredentialNotYours("no such page")
    if (refused := account.refused(TOKEN_PAGES[slug])) is not None:
        return level_page(request, account.browser, refused)
    return _token_page(request, account, slug, serial=serial[:MAX_SERIAL])


@router.post("/account/add/{slug}")
def token_submit(request: Request, slug: str, account: AccountDep, form: CheckedForm) -> Response:
    if slug not in TOKEN_PAGES:
        raise CredentialNotYours("no such page")
    if (refused := account.refused(TOKEN_PAGES[slug])) is not None:
        return level_page(request, account.browser, refused)
    kind = TOKEN_PAGES[slug]
    t = account.browser.t
    serial = _text(form, "serial", MAX_SERIAL)
    code = "".join(_text(form, "code", MAX_CODE).split())
    errors: list[tuple[str, str]] = []
    if not serial:
        errors.append(("serial", t(f"account.{slug}_serial_missing")))
    if not code:
        errors.append(("code", t(f"account.{slug}_code_missing")))
    elif not code.isdigit():
        errors.append(("code", t("account.code_not_digits")))
    if errors:
        return _token_page(request, account, slug, serial=serial, errors=errors, status=400)
    try:
        credential = _pending_token(account, kind, serial)
        account.credentials.activate(credential.id, code, added_by=account.added_by)
    except TokenNotFound:
        errors = [("serial", t(f"account.{slug}_serial_unknown"))]
    except ActivationCodeRejected as exc:
        key = "account.code_blocked" if exc.reason == "credential-blocked" else "account.code_wrong"
        errors = [("code", t(key))]
    except ConflictingCredential:
        errors = [("serial", t(f"account.{slug}_conflict"))]
    except CredentialLimitReached:
        errors = [("serial", t(f"account.{slug}_limit"))]
    if errors:
        # Wrong codes count (three in a row block the device): the request's transaction is
        # committed with the page, as the API does before it answers.
        return _token_page(request, account, slug, serial=serial, errors=errors, status=400)
    account.browser.flash(f"account.{slug}_added", serial=serial)
    return redirect(account.browser, "/account")


def _pending_token(account: Account, kind: CredentialKind, serial: str) -> Credential:
    """The citizen's device ``serial`` awaiting activation: assigned now from stock if needed.
    The assignment is kept apart (a savepoint) so a refusal leaves nothing half done."""
    for credential in account.credentials.for_identity(account.identity.id):
        if credential.serial == serial and credential.kind is kind:
            if credential.state is S.ACTIVATION_PENDING:
                return credential
    with account.session.begin_nested():
        return account.credentials.assign(account.identity.id, serial, kind=kind)


# --- block and replace --------------------------------------------------------------------------


def _block_page(
    request: Request, account: Account, credential: Credential, errors: list[tuple[str, str]]
) -> Response:
    browser = account.browser
    return page(
        request,
        browser,
        "account_block.html",
        title=browser.t("account.block_title"),
        row=row(credential, browser.lang),
        replaceable=credential.kind in REPLACEABLE,
        # Blocked for now, or for good: a blocked code display, audio reader or key card is
        # replaced, never unblocked, so its "stop it" is not offered as "for now".
        liftable=credential.kind not in REPLACED_WHEN_BLOCKED,
        errors=errors,
        status=400 if errors else 200,
    )


@router.get("/account/credentials/{credential_id}/block")
def block_form(request: Request, credential_id: uuid.UUID, account: AccountDep) -> Response:
    credential = account.own(credential_id)
    if credential.state not in BLOCKABLE or credential.kind is K.PASSWORD:
        raise InvalidTransition("credential", credential.state.value, S.BLOCKED.value)
    return _block_page(request, account, credential, [])


@router.post("/account/credentials/{credential_id}/block")
def block_submit(
    request: Request, credential_id: uuid.UUID, account: AccountDep, form: CheckedForm
) -> Response:
    credential = account.own(credential_id)
    if credential.kind is K.PASSWORD:
        raise InvalidTransition("credential", credential.state.value, S.BLOCKED.value)
    target = BLOCK_REASONS.get(_text(form, "reason", 16))
    if target is None:
        error = ("reason-lost", account.browser.t("account.block_reason_missing"))
        return _block_page(request, account, credential, [error])
    account.credentials.transition(credential.id, target)
    described = CredentialNames(account.browser.t).described(credential)
    account.browser.flash("account.blocked_" + target.value, credential=described)
    return redirect(account.browser, "/account")


def _replace_page(
    request: Request,
    account: Account,
    credential: Credential,
    errors: list[tuple[str, str]] | None = None,
    serial: str = "",
) -> Response:
    browser = account.browser
    return page(
        request,
        browser,
        "account_replace.html",
        title=browser.t("account.replace_title"),
        row=row(credential, browser.lang),
        with_serial=credential.kind in TOKEN_PAGES.values(),
        serial=serial,
        errors=errors or [],
        status=400 if errors else 200,
    )


def _replaceable(account: Account, credential_id: uuid.UUID) -> Credential:
    credential = account.own(credential_id)
    if credential.kind not in REPLACEABLE or credential.state not in (S.BLOCKED, S.LOST):
        raise NotReplaceable
    return credential


@router.get("/account/credentials/{credential_id}/replace")
def replace_form(request: Request, credential_id: uuid.UUID, account: AccountDep) -> Response:
    credential = _replaceable(account, credential_id)
    if (refused := account.refused(credential.kind)) is not None:
        return level_page(request, account.browser, refused)
    return _replace_page(request, account, credential)


@router.post("/account/credentials/{credential_id}/replace")
def replace_submit(
    request: Request, credential_id: uuid.UUID, account: AccountDep, form: CheckedForm
) -> Response:
    credential = _replaceable(account, credential_id)
    browser = account.browser
    if (refused := account.refused(credential.kind)) is not None:
        return level_page(request, account.browser, refused)
    serial = _text(form, "serial", MAX_SERIAL) if credential.kind in TOKEN_PAGES.values() else ""
    try:
        with account.session.begin_nested():
            new = account.credentials.replace(credential.id, serial or None)
    except TokenNotFound:
        error = ("serial", browser.t("account.replace_serial_unknown"))
        return _replace_page(request, account, credential, [error], serial)
    if new.state is S.ACTIVATION_PENDING:
        slug = next(s for s, k in TOKEN_PAGES.items() if k is new.kind)
        browser.flash("account.replaced_activate")
        return redirect(browser, f"/account/add/{slug}?serial={quote(serial, safe='')}")
    browser.flash("account.replaced_ordered")
    return redirect(browser, "/account")
