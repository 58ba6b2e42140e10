"""Routes of the guided migration from the legacy eID: start (by legacy user id), see where a
flow stands, prove with the legacy credentials, confirm the details, choose and activate the
new authenticators, record a security key or smartcard enrolled apart, complete.

The flow id is the resume link's capability: the person's own steps need no API key. A flow at
a bank or a citizen service centre is driven by an operator of that channel, whose API key
every step of it needs. Failed steps that changed something (failure counters, a lock, the step
event) are answered, not raised, so that the change is committed with the answer; any other
error rolls the step back first.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from server.api.deps import (
    ServicesDep,
    SessionDep,
    actor_of,
    get_caller,
    source_of,
)
from server.api.schemas import StrictModel
from server.domain.model import ProofingChannel
from server.services.access import Caller
from server.services.identity_operations import OPERATOR_ID, TEXT
from server.services.migration.flow_model import Authenticator, FlowState, FlowView, NextAction
from server.services.migration.legacy_proof import Method
from server.services.migration_operations import (
    CODE,
    SERIAL,
    USER_ID,
    ActivationCommand,
    MigrationOperations,
    ProofCommand,
    Start,
)
from server.wiring import Services

router = APIRouter(tags=["migration"])


_bearer = HTTPBearer(
    auto_error=False, description="an operator's API key: needed for a bank or service centre"
)


async def optional_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller | None:
    """The caller, if the request carries an API key (which must then be valid)."""
    if credentials is None:
        return None
    return await get_caller(request, credentials)


MaybeCaller = Annotated[Caller | None, Depends(optional_caller)]


# --- schemas --------------------------------------------------------------------------------


class ChecksIn(StrictModel):
    """What the operator checked in person."""

    document_kind: Literal["passport", "driving_licence", "national_id_card"]


class StartIn(StrictModel):
    user_id: str = Field(pattern=USER_ID, description="the legacy user id")
    channel: ProofingChannel = ProofingChannel.SELF_SERVICE
    checks: ChecksIn | None = Field(
        default=None, description="at a bank or service centre: what the operator checked"
    )
    operator_ids: list[Annotated[str, Field(pattern=OPERATOR_ID)]] = Field(
        default_factory=list, max_length=2, description="the operators present (two for High)"
    )


class ProveIn(StrictModel):
    user_id: str = Field(pattern=USER_ID, description="the legacy user id, as at the start")
    password: str = Field(min_length=1, max_length=256)
    code: str = Field(pattern=CODE, description="the code beside the key number shown")
    method: Method = Field(
        default=Method.KEY_CARD, description="key_card, or code_token for a legacy code token"
    )


class ConfirmIn(StrictModel):
    person_number: str = Field(min_length=1, max_length=32, description="ddmmyy-ssss, typed")
    name: str = Field(min_length=1, max_length=200, pattern=TEXT, description="as shown")


class ChooseIn(StrictModel):
    kinds: list[Authenticator] | None = Field(
        default=None, max_length=5, description="leave out to take the proposal"
    )


class FlowActivateIn(StrictModel):
    password: str | None = Field(default=None, min_length=1, max_length=1024)
    serial: str | None = Field(default=None, pattern=SERIAL, description="the token's serial")
    code: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=TEXT, description="the token's code"
    )


class CredentialIn(StrictModel):
    credential_id: uuid.UUID


class FlowOut(BaseModel):
    id: uuid.UUID = Field(description="the resume link's capability")
    state: FlowState
    step: int = Field(description="the step the person is on, 1..of")
    of: int
    next_action: NextAction | None
    needed: list[str] = Field(description="what the next action needs sent")
    abandoned: bool
    channel: ProofingChannel | None
    name: str | None
    person_number: str | None = Field(description="masked: ddmmyy-****")
    proposal: list[Authenticator]
    chosen: list[Authenticator]
    still_to_activate: list[Authenticator]
    identity_id: uuid.UUID | None
    credential_ids: list[uuid.UUID]
    completed_at: dt.datetime | None


class StartOut(FlowOut):
    index: str = Field(description="the key number whose code to type (4 digits)")


# --- wiring -----------------------------------------------------------------------------------


def operations(
    session: Session, services: Services, request: Request, caller: Caller | None
) -> MigrationOperations:
    """The flows as ``caller`` may drive them, from the request's client address."""
    actor = caller.actor if caller is not None else actor_of(request)
    return services.migration_operations(session, caller, actor, source_of(request))


def _out(view: FlowView) -> dict[str, Any]:
    return {
        "id": view.id,
        "state": view.state,
        "step": view.step,
        "of": view.of,
        "next_action": view.next_action,
        "needed": list(view.needed),
        "abandoned": view.abandoned,
        "channel": view.channel,
        "name": view.name,
        "person_number": view.person_number,
        "proposal": list(view.proposal),
        "chosen": list(view.chosen),
        "still_to_activate": list(view.still_to_activate),
        "identity_id": view.identity_id,
        "credential_ids": list(view.credential_ids),
        "completed_at": view.completed_at,
    }


def _run(step: Callable[[], FlowView]) -> FlowOut:
    # A refused step raises: the unit of work keeps what a recorded failure wrote (counters,
    # a lock, the step's event) and rolls back the rest; the problem answer carries its members.
    return FlowOut(**_out(step()))


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "the legacy proof failed (the same answer for every reason)"},
    409: {"description": "a step out of order, a concurrent change, or moved already"},
    422: {"description": "the request or a typed detail is not right"},
    423: {"description": "too many failed legacy logins: locked for a while"},
    429: {"description": "too many failures from this address"},
}


# --- routes -----------------------------------------------------------------------------------


@router.post("/migrations", status_code=201, response_model=StartOut, responses=_ERRORS)
def start(
    body: StartIn,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
    caller: MaybeCaller,
) -> StartOut:
    """Start the move to the new eID (or find it again) by legacy user id: the answer is the
    flow's id and the key number to show, the same for any user id. At a bank or citizen
    service centre an operator starts it, recording the document checked and the operators
    present (the caller among them)."""
    ops = operations(session, services, request, caller)
    command = Start(
        body.user_id,
        body.channel,
        document_kind=body.checks.document_kind if body.checks else None,
        operator_ids=tuple(body.operator_ids),
    )
    started = ops.start(command)
    return StartOut(**_out(started.view), index=started.index)


@router.get("/migrations/{flow_id}", response_model=FlowOut)
def get_flow(
    flow_id: uuid.UUID,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
    caller: MaybeCaller,
) -> FlowOut:
    """Where the person is: the state, step k of n, the next action and what it needs. Before
    the legacy proof every id answers the same."""
    ops = operations(session, services, request, caller)
    return _run(lambda: ops.view(flow_id))


@router.post("/migrations/{flow_id}/prove", response_model=FlowOut, responses=_ERRORS)
def prove(
    flow_id: uuid.UUID,
    body: ProveIn,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
    caller: MaybeCaller,
) -> FlowOut:
    """The legacy proof: user id, password and the code for the key number shown. A failure
    is one answer for every reason, with a new key number (``index``)."""
    ops = operations(session, services, request, caller)
    proof = ProofCommand(body.user_id, body.password, body.code, body.method)
    return _run(lambda: ops.prove(flow_id, proof))


@router.post("/migrations/{flow_id}/confirm", response_model=FlowOut, responses=_ERRORS)
def confirm(
    flow_id: uuid.UUID,
    body: ConfirmIn,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
    caller: MaybeCaller,
) -> FlowOut:
    """Confirm the person number (typed) and the name (as shown) the legacy eID holds."""
    ops = operations(session, services, request, caller)
    return _run(lambda: ops.confirm(flow_id, body.person_number, body.name))


@router.post("/migrations/{flow_id}/choose", response_model=FlowOut, responses=_ERRORS)
def choose(
    flow_id: uuid.UUID,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
    caller: MaybeCaller,
    body: ChooseIn | None = None,
) -> FlowOut:
    """Choose the new authenticators; an empty body takes the proposal (code display and
    password)."""
    ops = operations(session, services, request, caller)
    kinds = body.kinds if body is not None else None
    return _run(lambda: ops.choose(flow_id, kinds))


@router.post("/migrations/{flow_id}/activate", response_model=FlowOut, responses=_ERRORS)
def activate(
    flow_id: uuid.UUID,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
    caller: MaybeCaller,
    body: FlowActivateIn | None = None,
) -> FlowOut:
    """Create the new identity and activate what was chosen: the password, and the token by
    its serial with the code it shows now. All or nothing; after a failure, try again (another
    code, another token)."""
    ops = operations(session, services, request, caller)
    given = body or FlowActivateIn()
    activation = ActivationCommand(given.password, given.serial, given.code)
    return _run(lambda: ops.activate(flow_id, activation))


@router.post("/migrations/{flow_id}/credentials", response_model=FlowOut, responses=_ERRORS)
def record_credential(
    flow_id: uuid.UUID,
    body: CredentialIn,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
    caller: MaybeCaller,
) -> FlowOut:
    """Record a security key or smartcard enrolled for the new identity through its own
    enrolment routes (it must be active)."""
    ops = operations(session, services, request, caller)
    return _run(lambda: ops.record_credential(flow_id, body.credential_id))


@router.post("/migrations/{flow_id}/complete", response_model=FlowOut, responses=_ERRORS)
def complete(
    flow_id: uuid.UUID,
    session: SessionDep,
    services: ServicesDep,
    request: Request,
    caller: MaybeCaller,
) -> FlowOut:
    """Finish: the legacy user is marked as moved to the new identity."""
    ops = operations(session, services, request, caller)
    return _run(lambda: ops.complete(flow_id))
