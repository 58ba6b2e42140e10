"""``akkreditiv migration``: the migration plan (waves, invitations, reminders) and the weekly
report of progress against it."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from akkreditiv.cli.common import DatabaseUrl, database_session, fail

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from server.services.identities import AuditHook
    from server.services.migration.report import IsoWeek
    from server.settings import Settings

migration_app = typer.Typer(
    help="The move from the legacy eID: plan waves, invite and remind, report weekly.",
    no_args_is_help=True,
)
waves_app = typer.Typer(
    help="Migration waves: who is invited when, how many, by which deadline.",
    no_args_is_help=True,
)
migration_app.add_typer(waves_app, name="waves")

_YEARS = re.compile(r"(\d{4})(?:-(\d{4}))?")


def _settings(database_url: str | None) -> Settings:
    from server.settings import Settings

    return Settings() if database_url is None else Settings(database_url=database_url)


def _session(settings: Settings) -> AbstractContextManager[Session]:
    """A session on the configured database; database errors become one line and exit 1."""
    return database_session(settings, "database error")


def _audit(session: Session) -> AuditHook:
    """Plan changes go to the audit log as the operating-system user who ran the command."""
    from server.services.audit import AuditLog

    log = AuditLog(session)
    try:
        actor = f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        actor = "cli"

    def record(event: str, details: dict[str, Any]) -> None:
        log.append(event, actor=actor, subject=str(details.get("wave", "-")), details=details)

    return record


def _parse_years(text: str) -> tuple[int, int]:
    match = _YEARS.fullmatch(text.strip())
    if match is None:
        raise typer.BadParameter("expected a year or a range FIRST-LAST, e.g. 1940-1949")
    first = int(match[1])
    return first, int(match[2] or first)


def _parse_week(text: str) -> IsoWeek:
    from server.services.migration.report import InvalidWeek, IsoWeek

    try:
        return IsoWeek.parse(text)
    except InvalidWeek as exc:
        raise typer.BadParameter(exc.detail) from None


# --- waves ---------------------------------------------------------------------------------------


@waves_app.command("add")
def add(
    name: Annotated[str, typer.Option(help="The wave's name (unique).")],
    start: Annotated[
        dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="First day of invitations.")
    ],
    deadline: Annotated[
        dt.datetime,
        typer.Option(formats=["%Y-%m-%d"], help="The day by which the quota should be done."),
    ],
    quota: Annotated[int, typer.Option(help="How many people to invite in this wave.")],
    birth_years: Annotated[
        str | None,
        typer.Option(
            "--birth-years", help="Born in this year or range, e.g. 1940-1949.", show_default=False
        ),
    ] = None,
    bank: Annotated[
        str | None, typer.Option(help="Customers of this bank.", show_default=False)
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Plan a wave: its cohort (birth years, bank or both), start, deadline and quota."""
    from server.services.migration.wave_values import Cohort, InvalidWave, WaveError
    from server.services.migration.waves import MigrationPlan

    years = _parse_years(birth_years) if birth_years is not None else None
    try:
        cohort = Cohort(birth_years=years, bank=bank)
    except InvalidWave as exc:
        raise fail(exc.detail, 2) from None
    with _session(_settings(database_url)) as session:
        plan = MigrationPlan(session, audit=_audit(session))
        try:
            wave = plan.create(name, cohort, start.date(), deadline.date(), quota)
        except WaveError as exc:
            raise fail(exc.detail, 2) from None
        session.commit()
    typer.echo(
        f"wave {wave.name}: {cohort.describe()}, quota {wave.quota}, "
        f"{wave.starts_on.isoformat()} to {wave.deadline.isoformat()}"
    )


@waves_app.command("list")
def list_waves(
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Every wave with its plan and how many were invited so far."""
    from server.services.migration.waves import MigrationPlan

    with _session(_settings(database_url)) as session:
        waves = MigrationPlan(session).list()
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {
                        "name": wave.name,
                        "cohort": wave.cohort.to_json(),
                        "starts_on": wave.starts_on.isoformat(),
                        "deadline": wave.deadline.isoformat(),
                        "quota": wave.quota,
                        "invited": wave.invited,
                    }
                    for wave in waves
                ],
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    if not waves:
        typer.echo("no waves are planned", err=True)
    for wave in waves:
        typer.echo(
            f"{wave.name}  {wave.cohort.describe()}  {wave.starts_on.isoformat()}"
            f"..{wave.deadline.isoformat()}  invited {wave.invited} of {wave.quota}"
        )


@waves_app.command("invite")
def invite(
    name: Annotated[str, typer.Argument(help="The wave.")],
    batch_size: Annotated[
        int, typer.Option(min=1, help="Legacy users read per transaction.")
    ] = 50_000,
    database_url: DatabaseUrl = None,
) -> None:
    """Invite the wave's cohort up to its quota (again: only those not invited yet)."""
    from server.services.migration.wave_values import WaveError
    from server.services.migration.waves import MigrationPlan

    with _session(_settings(database_url)) as session:
        plan = MigrationPlan(session, audit=_audit(session))
        try:
            run = plan.invite(name, batch_size=batch_size)
        except WaveError as exc:
            raise fail(exc.detail, 2) from None
    typer.echo(f"wave {run.wave}: invited {run.invited} now, {run.total} of {run.quota} in all")


@waves_app.command("remind")
def remind(
    out: Annotated[
        Path, typer.Option(help="The mailing list to write (CSV, mode 0600: it names people).")
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Remind people invited long ago who have not started, and those whose flow stopped;
    write them as CSV for the mailing system. They count as reminded only once the file is
    safely written."""
    from server.services.migration.wave_values import ReminderPolicy
    from server.services.migration.waves import MigrationPlan

    settings = _settings(database_url)
    policy = ReminderPolicy(
        after_invitation=dt.timedelta(days=settings.migration_reminder_after_days),
        idle=dt.timedelta(days=settings.migration_idle_reminder_days),
        interval=dt.timedelta(days=settings.migration_reminder_interval_days),
        max_reminders=settings.migration_max_reminders,
    )
    with _session(settings) as session:
        plan = MigrationPlan(session, audit=_audit(session))
        run = plan.remind(policy)
        try:
            written = _write_reminders(out, plan, run.at)
        except OSError as exc:
            session.rollback()
            raise fail(
                f"could not write {out}: {exc.strerror or exc}; nobody was reminded"
            ) from exc
        session.commit()
    typer.echo(
        f"{written} reminders written to {out}: {run.not_started} not started, "
        f"{run.idle} stopped on the way"
    )


def _write_reminders(out: Path, plan: Any, at: dt.datetime) -> int:
    """Write the list beside its final name, sync it, then move it there: a crash leaves the
    old file or the complete new one."""
    import csv

    from server.services.migration.wave_values import REMINDER_COLUMNS

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    count = 0
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(descriptor, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(REMINDER_COLUMNS)
        for reminder in plan.reminders(at):
            writer.writerow(
                [
                    reminder.user_id,
                    reminder.person_number,
                    reminder.name,
                    reminder.reason,
                    reminder.wave or "",
                    reminder.step or "",
                    reminder.invited_at.isoformat() if reminder.invited_at else "",
                    reminder.count,
                ]
            )
            count += 1
        stream.flush()
        os.fsync(stream.fileno())
    partial.replace(out)
    return count


# --- the weekly report -----------------------------------------------------------------------


@migration_app.command("report")
def report(
    week: Annotated[
        str, typer.Option(help="The ISO week to report, e.g. 2026-W09 (as of its end).")
    ],
    out: Annotated[Path, typer.Option(help="The folder for the HTML, PNG and CSV files.")] = Path(
        "."
    ),
    database_url: DatabaseUrl = None,
) -> None:
    """Write report-YYYY-Www.html with plots, and CSV tables, from the database alone."""
    from server.services.migration.report import progress, write_report

    iso_week = _parse_week(week)
    settings = _settings(database_url)
    with _session(settings) as session:
        result = progress(
            session,
            iso_week,
            abandon_after=dt.timedelta(days=settings.migration_abandon_days),
        )
    try:
        files = write_report(result, out)
    except OSError as exc:
        raise fail(f"could not write the report into {out}: {exc.strerror or exc}") from exc
    typer.echo(str(files.html))
    for path in [*files.tables.values(), *files.images]:
        typer.echo(str(path))
