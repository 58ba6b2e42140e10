"""Routes for High proofings waiting for a second operator: the operators of the channel and
organisation list them, and one who is not the first approves (or either cancels) with their
own API key."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from server.api.deps import ServicesDep, SessionDep, require
from server.api.identities import IdentityOut, PendingProofingOut, identity_out, pending_out
from server.services.access import Caller, Permission

router = APIRouter(tags=["identities"])

Enroller = Annotated[Caller, Depends(require(Permission.ENROL))]


@router.get("/proofings")
def waiting(
    session: SessionDep,
    services: ServicesDep,
    caller: Enroller,
    identity_id: Annotated[uuid.UUID | None, Query()] = None,
) -> list[PendingProofingOut]:
    """The High proofings waiting now that this key may approve (of its channel and
    organisation; a supervisor: all), its own among them (to cancel); with ``identity_id``,
    that person's only. A High proofing (``POST /identities`` or
    ``/identities/{id}/proofing`` naming two operators, or an assisted migration at a service
    centre) waits here: one key never makes an identity High."""
    ops = services.identity_operations(session, caller)
    return [pending_out(pending) for pending in ops.waiting_proofings(identity_id)]


@router.post("/proofings/{proofing_id}/approve")
def approve(
    proofing_id: uuid.UUID, session: SessionDep, services: ServicesDep, caller: Enroller
) -> IdentityOut:
    """A second operator approves with their own key: the identity gets the High proofing with
    both operators. The first operator's key (or another key of the same name) answers 403;
    another channel's or organisation's answers 404, as an unknown id; one approved,
    cancelled or expired answers 409."""
    return identity_out(services.identity_operations(session, caller).approve(proofing_id))


@router.post("/proofings/{proofing_id}/cancel")
def cancel(
    proofing_id: uuid.UUID, session: SessionDep, services: ServicesDep, caller: Enroller
) -> PendingProofingOut:
    """Drop a waiting proofing (the person left the desk); the identity stays as it is."""
    return pending_out(services.identity_operations(session, caller).cancel_proofing(proofing_id))
