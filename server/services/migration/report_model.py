"""The weekly migration report's figures: per wave, its plan, steps, channels, authenticator
kinds and weeks, as ``report.progress`` computes them."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

from server.domain.model import ProofingChannel
from server.services.migration.report_forecast import Forecast
from server.services.migration.report_weeks import IsoWeek
from server.services.migration.wave_values import Cohort

# The steps a flow goes through, in order.
STEPS = (
    "started",
    "legacy_proven",
    "details_confirmed",
    "authenticator_chosen",
    "activated",
    "completed",
)
KINDS = ("password", "code_display", "audio_reader", "otp_token", "fido2", "piv")
CHANNELS = tuple(channel.value for channel in ProofingChannel)
DEFAULT_ABANDON = dt.timedelta(days=14)
OUTSIDE_WAVES = "(outside waves)"

STEP_NAMES = {
    "started": "Started",
    "legacy_proven": "Proved with the legacy eID",
    "details_confirmed": "Confirmed identity details",
    "authenticator_chosen": "Chose an authenticator",
    "activated": "Activated the authenticator",
    "completed": "Completed",
}
CHANNEL_NAMES = {
    "self_service": "Self-service",
    "bank": "Bank",
    "service_centre": "Citizen service centre",
}
KIND_NAMES = {
    "password": "Password",
    "code_display": "Code display",
    "audio_reader": "Audio code reader",
    "otp_token": "OTP token",
    "fido2": "FIDO2 security key",
    "piv": "PIV smartcard",
}


@dataclass(frozen=True)
class StepProgress:
    step: str
    reached: int  # flows with an ``ok`` event for this step
    failed: int  # failed attempts (events), e.g. a token that did not activate
    dropped: int  # dropped flows whose last event was this step


@dataclass(frozen=True)
class ChannelProgress:
    channel: str
    started: int  # by the channel of the flow's first event
    completed: int  # by the channel it completed in
    dropped: int  # by the channel of its last event


@dataclass(frozen=True)
class KindProgress:
    kind: str
    chosen: int
    activated: int
    activation_failures: int
    dropped: int  # dropped flows whose last event was about this kind


@dataclass(frozen=True)
class WeekProgress:
    week: IsoWeek
    invited: int
    started: int
    completed: int
    completed_to_date: int
    planned_to_date: int


@dataclass(frozen=True)
class WavePlan:
    id: uuid.UUID
    name: str
    cohort: Cohort
    starts_on: dt.date
    deadline: dt.date
    quota: int

    def planned_by(self, day: dt.date) -> int:
        """Completions the plan expects by the end of ``day``: the quota spread evenly from
        the start date to the deadline (both days included)."""
        total = (self.deadline - self.starts_on).days + 1
        elapsed = min(max((day - self.starts_on).days + 1, 0), total)
        return self.quota * elapsed // total


@dataclass(frozen=True)
class WaveProgress:
    """One wave's progress, or (``plan`` None) that of flows that belong to no wave."""

    plan: WavePlan | None
    invited: int
    started: int
    completed: int
    dropped: int
    steps: list[StepProgress]
    channels: list[ChannelProgress]
    kinds: list[KindProgress]
    weeks: list[WeekProgress] = field(default_factory=list)
    planned_to_date: int | None = None
    forecast: Forecast | None = None

    @property
    def name(self) -> str:
        return self.plan.name if self.plan is not None else OUTSIDE_WAVES

    @property
    def in_progress(self) -> int:
        return self.started - self.completed - self.dropped


@dataclass(frozen=True)
class Progress:
    week: IsoWeek
    as_of: dt.datetime
    abandon_after: dt.timedelta
    waves: list[WaveProgress]

    def dropped_by_step(self) -> dict[str, int]:
        totals = dict.fromkeys(STEPS, 0)
        for wave in self.waves:
            for step in wave.steps:
                totals[step.step] += step.dropped
        return totals
