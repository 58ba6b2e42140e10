"""Who may drive a migration flow, and each step of it for that caller: a flow at a bank or
citizen service centre is driven by an operator of that channel (with an API key), a
self-service flow by the person holding its id."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from server.domain.model import ProofingChannel
from server.services.access import Caller, NotAuthenticated, NotPermitted, Permission, Role
from server.services.identities import can_give_high
from server.services.identity_operations import asks_high
from server.services.migration.flow import MigrationFlows
from server.services.migration.flow_model import Authenticator, FlowView, Started
from server.services.migration.legacy_proof import Method
from server.services.proofing_approvals import ProofingApprovals
from server.storage.proofing_repositories import CustomerRepository

ASSISTED = frozenset({ProofingChannel.BANK, ProofingChannel.SERVICE_CENTRE})
# The shapes of what a step is sent (the API's request models and the console check them).
USER_ID = r"^[^\x00-\x20\x7f]{1,64}$"
CODE = r"^[0-9\s]{1,32}$"
SERIAL = r"^[\x20-\x7e]{1,128}$"
# Refusals of the caller, raised before a step runs: never answered as the step's own failure.
ACCESS_ERRORS = (NotAuthenticated, NotPermitted)


@dataclass(frozen=True)
class Start:
    """A start by legacy user id; at an assisted channel, the document the operator checked
    (``None``: no checks) and the operators present."""

    user_id: str
    channel: ProofingChannel = ProofingChannel.SELF_SERVICE
    document_kind: str | None = None
    operator_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProofCommand:
    """The legacy credentials: user id, password and the code for the key number shown."""

    user_id: str
    password: str
    code: str
    method: Method = Method.KEY_CARD


@dataclass(frozen=True)
class ActivationCommand:
    """What the activation step may need: the new password, a token's serial and its code."""

    password: str | None = None
    serial: str | None = None
    code: str | None = None


def operator_at(caller: Caller | None, channel: ProofingChannel) -> Caller:
    """The operator driving a flow at ``channel``: an API key that manages credentials there."""
    if caller is None:
        raise NotAuthenticated(
            "no API key for an assisted flow",
            detail=f"a migration at the {channel.value} channel needs an operator's API key",
        )
    caller.require(Permission.MANAGE_CREDENTIALS)
    if not caller.may_prove_on(channel):
        raise NotPermitted(
            f"{caller.actor} may not act on the {channel} channel",
            detail=f"this API key may not act on the {channel.value} channel",
        )
    return caller


class MigrationOperations:
    """The flows as ``caller`` (``None``: no API key) may drive them, from ``source`` (the
    client's address, which legacy proof failures are counted by). An assisted flow belongs to
    the organisation whose operator started it; a High proofing at its start waits for a
    second operator (``approvals``)."""

    def __init__(
        self,
        flows: MigrationFlows,
        caller: Caller | None,
        source: str,
        approvals: ProofingApprovals,
        customers: CustomerRepository,
    ) -> None:
        self._flows = flows
        self.caller = caller
        self._source = source
        self._approvals = approvals
        self._customers = customers

    def channel_of(self, flow_id: uuid.UUID) -> ProofingChannel | None:
        """The channel a flow runs on (``None`` for an id nobody has)."""
        return self._flows.channel_of(flow_id)

    def _admit(self, flow_id: uuid.UUID) -> None:
        """A flow at an assisted channel is driven by an operator of that channel; at a bank,
        by an operator of the bank that started it."""
        channel = self._flows.channel_of(flow_id)
        if channel is not None and channel in ASSISTED:
            operator = operator_at(self.caller, channel)
            if operator.serves_own_customers_only and (
                self._customers.flow_organisation(flow_id) != operator.organisation
            ):
                raise NotPermitted(
                    f"{operator.actor} is not of the organisation of flow {flow_id}",
                    detail="this flow was started at another bank",
                )

    def _check_start(self, start: Start) -> None:
        """Whether ``caller`` may start so: at a bank or service centre an operator of it, who
        records the document checked and the operators present (the caller among them); a
        self-service start records neither."""
        if start.channel in ASSISTED:
            operator = operator_at(self.caller, start.channel)
            if start.document_kind is None or not start.operator_ids:
                raise NotPermitted(
                    "assisted start without checks",
                    detail="an assisted migration records the document checked and the operators",
                )
            if Role.SUPERVISOR not in operator.roles and operator.name not in start.operator_ids:
                raise NotPermitted(
                    "operator not among operator_ids",
                    detail="the operator starting the migration must be one of operator_ids",
                )
        elif start.document_kind is not None or start.operator_ids:
            raise NotPermitted(
                "self-service start with operator checks",
                detail="checks and operators belong to a bank or service centre start",
            )

    def start(self, start: Start) -> Started:
        """Start the move (or find it again): the flow's id and the key number to show, the
        same for any user id."""
        self._check_start(start)
        started = self._flows.start(
            start.user_id,
            start.channel,
            document_kind=start.document_kind,
            operator_ids=start.operator_ids,
        )
        if start.channel in ASSISTED and self.caller is not None:
            self._served_at(started, start, self.caller)
        return started

    def _served_at(self, started: Started, start: Start, operator: Caller) -> None:
        """The flow belongs to the operator's organisation; a High proofing (two operators
        named) waits for a second operator's key. Only a service centre's flow enrols the
        person on the document checked (``FlowEnrolment``), so only there can it give High."""
        flow_id = started.view.id
        self._customers.serve_flow(flow_id, operator.organisation)
        document = start.document_kind or ""
        if (
            start.channel is ProofingChannel.SERVICE_CENTRE
            and can_give_high(start.channel, document)
            and asks_high(start.operator_ids)
            and self._flows.channel_of(flow_id) is not None  # a real flow, not the decoy
        ):
            self._approvals.request(
                operator, start.channel, document, start.operator_ids, flow_id=flow_id
            )

    def view(self, flow_id: uuid.UUID) -> FlowView:
        self._admit(flow_id)
        return self._flows.view(flow_id)

    def prove(self, flow_id: uuid.UUID, proof: ProofCommand) -> FlowView:
        self._admit(flow_id)
        return self._flows.prove(
            flow_id,
            proof.user_id,
            proof.password,
            proof.code,
            method=proof.method,
            source=self._source,
        )

    def confirm(self, flow_id: uuid.UUID, person_number: str, name: str) -> FlowView:
        self._admit(flow_id)
        return self._flows.confirm(flow_id, person_number, name)

    def choose(self, flow_id: uuid.UUID, kinds: Sequence[Authenticator] | None) -> FlowView:
        """``None`` takes the proposal."""
        self._admit(flow_id)
        return self._flows.choose(flow_id, kinds)

    def activate(self, flow_id: uuid.UUID, given: ActivationCommand) -> FlowView:
        self._admit(flow_id)
        return self._flows.activate(
            flow_id, password=given.password, serial=given.serial, code=given.code
        )

    def record_credential(self, flow_id: uuid.UUID, credential_id: uuid.UUID) -> FlowView:
        self._admit(flow_id)
        return self._flows.record_credential(flow_id, credential_id)

    def complete(self, flow_id: uuid.UUID) -> FlowView:
        self._admit(flow_id)
        return self._flows.complete(flow_id)
