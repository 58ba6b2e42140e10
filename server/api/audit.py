"""The audit log's signed checkpoints for download: each checkpoint and the public key that
verifies them, so a supervisor can keep copies where the service cannot rewrite them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from server.api.deps import ServicesDep, get_caller
from server.services.access import Caller, NotPermitted, Role

router = APIRouter(tags=["audit"])


class ChainHeadOut(BaseModel):
    chain: int
    seq: int
    hash: str


class CheckpointOut(BaseModel):
    heads: list[ChainHeadOut]
    entries: int
    at: str
    kid: str
    jws: str


class CheckpointsOut(BaseModel):
    keys: list[dict[str, str]]
    checkpoints: list[CheckpointOut]


async def _supervisor(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    if Role.SUPERVISOR not in caller.roles:
        raise NotPermitted(f"{caller.actor} is no supervisor")
    return caller


@router.get("/audit/checkpoints")
def checkpoints(
    services: ServicesDep,
    caller: Annotated[Caller, Depends(_supervisor)],
    after: Annotated[
        int, Query(ge=0, description="only checkpoints of a log with more entries than this")
    ] = 0,
) -> CheckpointsOut:
    """The signed checkpoints of the audit log (compact JWS, ES256), each with the head of
    every chain the log held then and the number of entries in all, and their public key (a
    JWK set): ``akkreditiv audit verify --checkpoints FILE --public-key FILE`` checks a
    database against copies of them. Supervisors only."""
    checkpointer = services.audit_checkpoints
    return CheckpointsOut(
        keys=[checkpointer.key.jwk()],
        checkpoints=[
            CheckpointOut(**checkpoint.as_json())
            for checkpoint in checkpointer.checkpoints()
            if checkpoint.entries > after
        ],
    )
