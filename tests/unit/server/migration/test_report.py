"""Progress against the migration plan and the weekly report, on a crafted data set whose
every number is worked out by hand; on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from akkreditiv.cli import app
from server.domain.model import ProofingChannel
from server.services.migration.report import (
    OUTSIDE_WAVES,
    Forecast,
    ForecastStatus,
    InvalidWeek,
    IsoWeek,
    Progress,
    StepProgress,
    WaveProgress,
    forecast,
    progress,
    write_report,
)
from server.services.migration.waves import MigrationPlan
from tests.unit.server.migration.test_waves import Clock, add_flow, add_users, user_row

SELF = ProofingChannel.SELF_SERVICE
BANK = ProofingChannel.BANK
CENTRE = ProofingChannel.SERVICE_CENTRE
W12 = IsoWeek(2026, 12)  # Monday 16 to Sunday 22 March 2026


def at(day: int, hour: int = 10, minute: int = 0) -> dt.datetime:
    """A moment in March 2026 (UTC)."""
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=dt.UTC)


def whole_flow(
    day: int, kinds: Sequence[str], *, activation: str = "ok", completed: bool = True
) -> list[tuple[dt.datetime, str, str, str | None]]:
    """The events of a flow that goes through every step on ``day``."""
    events: list[tuple[dt.datetime, str, str, str | None]] = [
        (at(day, 10, 0), "started", "ok", None),
        (at(day, 10, 5), "legacy_proven", "ok", None),
        (at(day, 10, 6), "details_confirmed", "ok", None),
    ]
    events += [(at(day, 10, 7), "authenticator_chosen", "ok", kind) for kind in kinds]
    events += [(at(day, 10, 10), "activated", activation, kind) for kind in kinds]
    if completed:
        events.append((at(day, 10, 11), "completed", "ok", None))
    return events


@dataclass
class DataSet:
    waves: dict[str, uuid.UUID]


@pytest.fixture
def data(session: Session) -> DataSet:
    """Waves "1940s" (late), "Zero rate" (nobody moves), "Nordbank" (quota reached) and
    "Spring" (starts after the reported week), and one flow outside waves."""
    clock = Clock(at(2, 9))
    plan = MigrationPlan(session, clock=clock)
    add_users(
        session,
        [user_row(f"u{i}", 1945) for i in (1, 2, 3, 4, 5, 6, 8)]
        + [user_row("b1", 1970, "Nordbank"), user_row("b2", 1971, "Nordbank")]
        + [user_row("h1", 1990)],
    )
    ids = {}
    for name, cohort, start, deadline, quota in (
        ("1940s", {"birth_year": [1940, 1949]}, 2, dt.date(2026, 4, 26), 10),
        ("Zero rate", {"birth_year": [1900, 1901]}, 2, dt.date(2026, 9, 30), 5),
        ("Nordbank", {"bank": "Nordbank"}, 16, dt.date(2026, 12, 31), 2),
        ("Spring", {"birth_year": [1980, 1989]}, 30, dt.date(2026, 12, 31), 100),
    ):
        ids[name] = plan.create(name, cohort, dt.date(2026, 3, start), deadline, quota).id
    session.commit()
    plan.invite("1940s")  # 7 on Monday of W10
    plan.invite("Zero rate")  # nobody is in its cohort
    add_users(session, [user_row("u7", 1945), user_row("u9", 1945)])
    clock.at = at(9, 9)
    plan.invite("1940s")  # 2 more on Monday of W11
    clock.at = at(16, 9)
    plan.invite("Nordbank")

    a, b = ids["1940s"], ids["Nordbank"]
    add_flow(session, "u1", a, SELF, whole_flow(3, ["code_display"]))
    add_flow(session, "u2", a, BANK, whole_flow(10, ["fido2"]))
    add_flow(  # stopped after proving itself on 5 March: dropped by W12 (14 days idle)
        session,
        "u3",
        a,
        SELF,
        [
            (at(5), "started", "ok", None),
            (at(5, 10, 5), "legacy_proven", "ok", None),
            (at(20), "legacy_proven", "reminded", None),  # a reminder is not activity
        ],
    )
    add_flow(  # its audio reader failed on 20 March; it completes only in W13
        session,
        "u4",
        a,
        CENTRE,
        [
            *whole_flow(20, ["audio_reader"], activation="failed", completed=False),
            (at(24), "activated", "ok", "audio_reader"),
            (at(24, 10, 1), "completed", "ok", None),
        ],
    )
    add_flow(  # abandoned explicitly on 11 March
        session,
        "u5",
        a,
        SELF,
        [
            (at(11), "started", "ok", None),
            (at(11, 10, 5), "legacy_proven", "ok", None),
            (at(11, 10, 6), "details_confirmed", "dropped", None),
        ],
    )
    add_flow(session, "u6", a, SELF, whole_flow(17, ["password"]))
    add_flow(session, "u7", a, BANK, [(at(24), "started", "ok", None)])  # W13: not counted
    add_flow(  # its OTP token failed to activate on 4 March: dropped there
        session,
        "u8",
        a,
        SELF,
        whole_flow(4, ["otp_token"], activation="failed", completed=False),
    )
    add_flow(session, "b1", b, BANK, whole_flow(17, ["piv"]))
    add_flow(session, "b2", b, CENTRE, whole_flow(18, ["piv", "code_display"]))
    add_flow(session, "h1", None, SELF, [(at(19), "started", "ok", None)])
    return DataSet(ids)


def by_name(report: Progress) -> dict[str, WaveProgress]:
    return {wave.name: wave for wave in report.waves}


# --- progress -----------------------------------------------------------------------------------


def test_progress_counts_each_wave_as_of_the_end_of_the_week(
    session: Session, data: DataSet
) -> None:
    report = progress(session, W12)

    assert report.as_of == dt.datetime(2026, 3, 22, 23, 0, tzinfo=dt.UTC)  # midnight in Denmark
    assert [w.name for w in report.waves] == ["1940s", "Zero rate", "Nordbank", OUTSIDE_WAVES]
    totals = {
        w.name: (w.invited, w.started, w.completed, w.dropped, w.in_progress) for w in report.waves
    }
    assert totals == {
        "1940s": (9, 7, 3, 3, 1),
        "Zero rate": (0, 0, 0, 0, 0),
        "Nordbank": (2, 2, 2, 0, 0),
        OUTSIDE_WAVES: (0, 1, 0, 0, 1),
    }


def test_progress_per_step_channel_and_kind(session: Session, data: DataSet) -> None:
    waves = by_name(progress(session, W12))
    forties = waves["1940s"]

    assert [(s.step, s.reached, s.failed, s.dropped) for s in forties.steps] == [
        ("started", 7, 0, 0),
        ("legacy_proven", 7, 0, 1),
        ("details_confirmed", 5, 0, 1),
        ("authenticator_chosen", 5, 0, 0),
        ("activated", 3, 2, 1),
        ("completed", 3, 0, 0),
    ]
    assert [(c.channel, c.started, c.completed, c.dropped) for c in forties.channels] == [
        ("self_service", 5, 2, 3),
        ("bank", 1, 1, 0),
        ("service_centre", 1, 0, 0),
    ]
    assert [
        (k.kind, k.chosen, k.activated, k.activation_failures, k.dropped) for k in forties.kinds
    ] == [
        ("password", 1, 1, 0, 0),
        ("code_display", 1, 1, 0, 0),
        ("audio_reader", 1, 0, 1, 0),
        ("otp_token", 1, 0, 1, 1),
        ("fido2", 1, 1, 0, 0),
        ("piv", 0, 0, 0, 0),
    ]
    nordbank = waves["Nordbank"]
    # Two kinds chosen in one flow: the step is reached by one flow, each kind counts it.
    assert nordbank.steps[3] == StepProgress("authenticator_chosen", 2, 0, 0)
    kinds = {k.kind: (k.chosen, k.activated) for k in nordbank.kinds}
    assert (kinds["piv"], kinds["code_display"]) == ((2, 2), (1, 1))
    assert [(c.channel, c.started, c.completed) for c in nordbank.channels] == [
        ("self_service", 0, 0),
        ("bank", 1, 1),
        ("service_centre", 1, 1),
    ]


def test_progress_week_by_week_against_the_plan_and_the_forecast(
    session: Session, data: DataSet
) -> None:
    waves = by_name(progress(session, W12))
    forties = waves["1940s"]

    assert [
        (str(w.week), w.invited, w.started, w.completed, w.completed_to_date, w.planned_to_date)
        for w in forties.weeks
    ] == [
        ("2026-W10", 7, 3, 1, 1, 1),
        ("2026-W11", 2, 2, 1, 2, 2),
        ("2026-W12", 0, 2, 1, 3, 3),
    ]
    assert forties.planned_to_date == 3  # 10 over 56 days, 21 of them gone
    # 7 to go at 1 a week: 49 days after Sunday 22 March, 14 days after the deadline.
    assert forties.forecast == Forecast(
        ForecastStatus.LATE, Fraction(1), dt.date(2026, 5, 10), late_by_days=14
    )
    assert waves["Nordbank"].forecast == Forecast(ForecastStatus.COMPLETE, Fraction(2))
    assert [str(w.week) for w in waves["Nordbank"].weeks] == ["2026-W12"]
    zero = waves["Zero rate"]
    assert zero.forecast == Forecast(ForecastStatus.NEVER, Fraction(0))
    assert [w.completed for w in zero.weeks] == [0, 0, 0]
    assert waves[OUTSIDE_WAVES].forecast is None
    assert waves[OUTSIDE_WAVES].weeks == []


def test_a_past_week_counts_only_what_had_happened_by_its_end(
    session: Session, data: DataSet
) -> None:
    waves = by_name(progress(session, IsoWeek(2026, 11)))
    assert list(waves) == ["1940s", "Zero rate"]  # Nordbank starts in W12
    forties = waves["1940s"]
    # u3 and u8 were idle for 10 and 11 days then: in progress, not yet dropped.
    assert (forties.invited, forties.started, forties.completed, forties.dropped) == (9, 5, 2, 1)
    assert forties.in_progress == 2


def test_the_abandonment_threshold_decides_who_dropped(session: Session, data: DataSet) -> None:
    strict = by_name(progress(session, W12, abandon_after=dt.timedelta(days=7)))["1940s"]
    lenient = by_name(progress(session, W12, abandon_after=dt.timedelta(days=20)))["1940s"]
    assert (strict.dropped, strict.in_progress) == (3, 1)
    assert (lenient.dropped, lenient.in_progress) == (1, 3)  # only the explicit drop-out
    assert [s.dropped for s in lenient.steps] == [0, 0, 1, 0, 0, 0]


def test_progress_with_no_waves_and_no_flows_is_empty(session: Session) -> None:
    report = progress(session, W12)
    assert report.waves == []


# --- the forecast -----------------------------------------------------------------------------

SUNDAY = dt.date(2026, 3, 22)


@pytest.mark.parametrize(
    ("completed", "weekly", "deadline", "expected"),
    [
        # 60 to go at 10 a week: 42 days.
        (
            40,
            [10, 10, 10, 10, 10],
            dt.date(2026, 6, 30),
            Forecast(ForecastStatus.ON_TRACK, Fraction(10), dt.date(2026, 5, 3)),
        ),
        (
            40,
            [10, 10, 10, 10, 10],
            dt.date(2026, 5, 3),  # finishing on the deadline day is on time
            Forecast(ForecastStatus.ON_TRACK, Fraction(10), dt.date(2026, 5, 3)),
        ),
        (
            40,
            [10, 10, 10, 10, 10],
            dt.date(2026, 4, 30),
            Forecast(ForecastStatus.LATE, Fraction(10), dt.date(2026, 5, 3), 3),
        ),
        # Only the last four weeks count: a good start does not hide a stop.
        (40, [40, 0, 0, 0, 0], dt.date(2026, 6, 30), Forecast(ForecastStatus.NEVER, Fraction(0))),
        # 97 to go at 3/4 a week: 905.33 days, rounded up.
        (
            3,
            [0, 1, 2, 0, 0],
            dt.date(2026, 6, 30),
            Forecast(
                ForecastStatus.LATE,
                Fraction(3, 4),
                SUNDAY + dt.timedelta(days=906),
                906 - (dt.date(2026, 6, 30) - SUNDAY).days,
            ),
        ),
        # A wave one week old: its one week is the rate.
        (
            7,
            [7],
            dt.date(2026, 6, 30),
            Forecast(ForecastStatus.ON_TRACK, Fraction(7), SUNDAY + dt.timedelta(days=93)),
        ),
        (100, [50, 50], dt.date(2026, 6, 30), Forecast(ForecastStatus.COMPLETE, Fraction(50))),
        (0, [], dt.date(2026, 6, 30), Forecast(ForecastStatus.NEVER, Fraction(0))),
    ],
)
def test_the_forecast_finishes_the_quota_at_the_rate_of_the_last_four_weeks(
    completed: int, weekly: list[int], deadline: dt.date, expected: Forecast
) -> None:
    assert forecast(100, completed, weekly, SUNDAY, deadline) == expected


def test_the_forecast_says_in_words_whether_a_wave_is_late() -> None:
    deadline = dt.date(2026, 4, 26)
    late = Forecast(ForecastStatus.LATE, Fraction(1), dt.date(2026, 5, 10), 14)
    assert late.describe(deadline) == "late by 14 days: forecast 2026-05-10, deadline 2026-04-26"
    on_track = Forecast(ForecastStatus.ON_TRACK, Fraction(1), dt.date(2026, 4, 1))
    assert on_track.describe(deadline) == "on track: forecast 2026-04-01, deadline 2026-04-26"
    never = Forecast(ForecastStatus.NEVER, Fraction(0)).describe(deadline)
    assert never == "never at the current rate (no completions in the last 4 weeks)"


# --- ISO weeks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("2026-W54", "2026-W54 does not exist: 2026 has 53 ISO weeks"),
        ("2025-W53", "2025-W53 does not exist: 2025 has 52 ISO weeks"),
        ("2026-W00", "2026-W00 does not exist: 2026 has 53 ISO weeks"),
        ("2026-10", "expected an ISO week such as 2026-W09"),
        ("2026-W1", "expected an ISO week such as 2026-W09"),
        ("26-W10", "expected an ISO week such as 2026-W09"),
        ("2026W10", "expected an ISO week such as 2026-W09"),
        ("", "expected an ISO week such as 2026-W09"),
    ],
)
def test_a_week_that_is_not_an_iso_week_is_refused_with_a_clear_reason(
    text: str, detail: str
) -> None:
    with pytest.raises(InvalidWeek) as raised:
        IsoWeek.parse(text)
    assert raised.value.detail == detail


def test_weeks_run_monday_to_sunday_in_danish_time_across_daylight_saving() -> None:
    assert str(IsoWeek.parse("2026-W53")) == "2026-W53"
    assert IsoWeek.parse("2026-W53").next() == IsoWeek(2027, 1)
    week = IsoWeek(2026, 13)  # summer time begins on Sunday 29 March
    assert (week.monday, week.sunday) == (dt.date(2026, 3, 23), dt.date(2026, 3, 29))
    assert week.start() == dt.datetime(2026, 3, 22, 23, 0, tzinfo=dt.UTC)
    assert week.end() == dt.datetime(2026, 3, 29, 22, 0, tzinfo=dt.UTC)
    assert week.next().start() == week.end()


# --- the files ----------------------------------------------------------------------------------


class _Page(HTMLParser):
    """What the accessibility checks need from the page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lang: str | None = None
        self.headings: list[tuple[str, str]] = []
        self.tables = 0
        self.captions = 0
        self.header_scopes: list[str | None] = []
        self.images: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self._heading: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "html":
            self.lang = attributes.get("lang")
        elif tag in ("h1", "h2", "h3"):
            self._heading = tag
            self.headings.append((tag, ""))
        elif tag == "table":
            self.tables += 1
        elif tag == "caption":
            self.captions += 1
        elif tag == "th":
            self.header_scopes.append(attributes.get("scope"))
        elif tag == "img":
            self.images.append(attributes)
        elif tag == "a":
            self.links.append(attributes.get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == self._heading:
            self._heading = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._heading is not None:
            tag, text = self.headings[-1]
            self.headings[-1] = (tag, text + data)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def test_the_report_files_hold_the_progress_numbers(
    session: Session, data: DataSet, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    report = progress(session, W12)
    files = write_report(report, out)

    assert files.html == out / "report-2026-W12.html"
    assert sorted(p.name for p in out.iterdir()) == [
        "channels-2026-W12.csv",
        "dropoff-2026-W12.png",
        "kinds-2026-W12.csv",
        "report-2026-W12.html",
        "steps-2026-W12.csv",
        "wave-1-2026-W12.png",
        "wave-2-2026-W12.png",
        "wave-3-2026-W12.png",
        "waves-2026-W12.csv",
        "weekly-2026-W12.csv",
    ]
    waves = _read_csv(files.tables["waves"])
    assert [row["wave"] for row in waves] == [w.name for w in report.waves]
    assert waves[0] == {
        "wave": "1940s",
        "cohort": "born 1940-1949",
        "starts_on": "2026-03-02",
        "deadline": "2026-04-26",
        "quota": "10",
        "invited": "9",
        "started": "7",
        "completed": "3",
        "dropped": "3",
        "in_progress": "1",
        "planned_to_date": "3",
        "completed_per_week": "1.0",
        "forecast": "2026-05-10",
        "late_by_days": "14",
        "status": "late",
    }
    assert (waves[1]["forecast"], waves[2]["status"]) == ("never", "complete")
    assert waves[3]["wave"] == OUTSIDE_WAVES
    assert (waves[3]["quota"], waves[3]["started"], waves[3]["forecast"]) == ("", "1", "")
    for wave, row in zip(report.waves, waves, strict=True):
        counts = (wave.invited, wave.started, wave.completed, wave.dropped, wave.in_progress)
        assert (
            tuple(
                int(row[k]) for k in ("invited", "started", "completed", "dropped", "in_progress")
            )
            == counts
        )

    steps = _read_csv(files.tables["steps"])
    assert len(steps) == 6 * len(report.waves)
    for wave in report.waves:
        rows = [r for r in steps if r["wave"] == wave.name]
        assert [
            (r["step"], int(r["reached"]), int(r["failed"]), int(r["dropped"])) for r in rows
        ] == [(s.step, s.reached, s.failed, s.dropped) for s in wave.steps]
    channels = [r for r in _read_csv(files.tables["channels"]) if r["wave"] == "1940s"]
    assert [(r["channel"], r["started"], r["completed"], r["dropped"]) for r in channels] == [
        ("self_service", "5", "2", "3"),
        ("bank", "1", "1", "0"),
        ("service_centre", "1", "0", "0"),
    ]
    kinds = {r["kind"]: r for r in _read_csv(files.tables["kinds"]) if r["wave"] == "1940s"}
    assert kinds["otp_token"] == {
        "wave": "1940s",
        "kind": "otp_token",
        "chosen": "1",
        "activated": "0",
        "activation_failures": "1",
        "dropped": "1",
    }
    weekly = [r for r in _read_csv(files.tables["weekly"]) if r["wave"] == "1940s"]
    assert [
        (
            r["week"],
            r["invited"],
            r["started"],
            r["completed"],
            r["completed_to_date"],
            r["planned_to_date"],
        )
        for r in weekly
    ] == [
        ("2026-W10", "7", "3", "1", "1", "1"),
        ("2026-W11", "2", "2", "1", "2", "2"),
        ("2026-W12", "0", "2", "1", "3", "3"),
    ]


def test_the_report_page_is_accessible_on_its_own_terms(
    session: Session, data: DataSet, tmp_path: Path
) -> None:
    files = write_report(progress(session, W12), tmp_path / "out")
    page = _Page()
    page.feed(files.html.read_text(encoding="utf-8"))
    page.close()

    assert page.lang == "en"
    assert [h for h in page.headings if h[0] == "h1"] == [
        ("h1", "Migration from the legacy eID: week 2026-W12")
    ]
    assert [text for tag, text in page.headings if tag == "h2"] == [
        "Waves against the plan",
        "Where people drop out",
        "Wave 1940s",
        "Wave Zero rate",
        "Wave Nordbank",
        "Flows outside waves",
        "Data files",
    ]
    # One plan table, then steps, channels, kinds and weeks per wave (no weeks outside waves).
    assert page.tables == page.captions == 1 + 3 * 4 + 3
    assert page.header_scopes
    assert set(page.header_scopes) == {"col", "row"}
    assert len(page.images) == 4
    for image in page.images:
        source = files.html.parent / str(image["src"])
        assert source.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert image["alt"]
    dropoff, forties = page.images[0]["alt"] or "", page.images[1]["alt"] or ""
    assert "Proved with the legacy eID 1; Confirmed identity details 1" in dropoff
    assert "Activated the authenticator 1; Completed 0" in dropoff
    assert "2026-W10 1 completed, 1 planned" in forties
    assert "2026-W12 3 completed, 3 planned" in forties
    assert "quota 10 by 2026-04-26" in forties
    text = " ".join("".join(page.text).split())
    # The status is said in words, not shown by colour.
    assert "late by 14 days: forecast 2026-05-10, deadline 2026-04-26" in text
    assert "never at the current rate" in text
    assert "quota reached" in text
    assert sorted(page.links) == sorted(p.name for p in files.tables.values())


def test_the_report_of_a_past_week_is_the_same_after_later_events(
    session: Session, data: DataSet, tmp_path: Path
) -> None:
    first = write_report(progress(session, W12), tmp_path / "first")
    add_users(session, [user_row("late", 1946)])
    late_plan = MigrationPlan(session, clock=Clock(at(25)))
    late_plan.invite("1940s")
    add_flow(session, "late", data.waves["1940s"], SELF, whole_flow(26, ["fido2"]))

    again = write_report(progress(session, W12), tmp_path / "again")

    for path in first.html.parent.iterdir():
        assert (again.html.parent / path.name).read_bytes() == path.read_bytes(), path.name
    later = by_name(progress(session, IsoWeek(2026, 13)))["1940s"]
    assert (later.invited, later.completed) == (10, 5)  # u4 and the late one finished in W13


# --- the command ---------------------------------------------------------------------------------


def test_the_report_command_writes_the_files_for_the_week(
    engine: Engine, database_url: str, data: DataSet, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    result = CliRunner().invoke(
        app,
        [
            "migration",
            "report",
            "--week",
            "2026-W12",
            "--out",
            str(out),
            "--database-url",
            database_url,
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == str(out / "report-2026-W12.html")
    assert len(lines) == 1 + 5 + 4
    assert all(Path(line).is_file() for line in lines)
    waves = _read_csv(out / "waves-2026-W12.csv")
    assert (waves[0]["wave"], waves[0]["completed"], waves[0]["status"]) == ("1940s", "3", "late")


@pytest.mark.parametrize(
    ("week", "message"),
    [
        ("2026-W54", "2026-W54 does not exist: 2026 has 53 ISO weeks"),
        ("2026-54", "expected an ISO week such as 2026-W09"),
    ],
)
def test_the_report_command_refuses_a_week_that_does_not_exist(
    week: str, message: str, tmp_path: Path
) -> None:
    database = tmp_path / "never-made.db"
    result = CliRunner().invoke(
        app,
        [
            "migration",
            "report",
            "--week",
            week,
            "--out",
            str(tmp_path / "out"),
            "--database-url",
            f"sqlite+pysqlite:///{database}",
        ],
    )
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()
    assert not database.exists()
