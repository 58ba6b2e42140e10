"""The migration report's files: an HTML page (with the plots beside it) and CSV tables."""

from __future__ import annotations

import csv
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from server.services.migration.report_forecast import RATE_WEEKS
from server.services.migration.report_model import (
    CHANNEL_NAMES,
    KIND_NAMES,
    STEP_NAMES,
    Progress,
    WaveProgress,
)
from server.services.migration.report_plots import DPI, HEIGHT, WIDTH, Figure, figures, plot


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    tables: dict[str, Path]  # name -> CSV file
    images: list[Path]


WAVE_COLUMNS = (
    "wave",
    "cohort",
    "starts_on",
    "deadline",
    "quota",
    "invited",
    "started",
    "completed",
    "dropped",
    "in_progress",
    "planned_to_date",
    "completed_per_week",
    "forecast",
    "late_by_days",
    "status",
)


def _rate(value: Fraction) -> str:
    return f"{float(value):.1f}"


def csv_tables(report: Progress) -> dict[str, tuple[tuple[str, ...], list[list[object]]]]:
    """The report's tables as CSV rows: name -> (header, rows)."""
    waves: list[list[object]] = []
    steps: list[list[object]] = []
    channels: list[list[object]] = []
    kinds: list[list[object]] = []
    weekly: list[list[object]] = []
    for wave in report.waves:
        plan = wave.plan
        fc = wave.forecast
        waves.append(
            [
                wave.name,
                plan.cohort.describe() if plan else "",
                plan.starts_on.isoformat() if plan else "",
                plan.deadline.isoformat() if plan else "",
                plan.quota if plan else "",
                wave.invited,
                wave.started,
                wave.completed,
                wave.dropped,
                wave.in_progress,
                wave.planned_to_date if wave.planned_to_date is not None else "",
                _rate(fc.rate_per_week) if fc else "",
                (fc.finish_on.isoformat() if fc.finish_on else fc.status.value) if fc else "",
                fc.late_by_days if fc else "",
                fc.status.value if fc else "",
            ]
        )
        steps += [[wave.name, s.step, s.reached, s.failed, s.dropped] for s in wave.steps]
        channels += [
            [wave.name, c.channel, c.started, c.completed, c.dropped] for c in wave.channels
        ]
        kinds += [
            [wave.name, k.kind, k.chosen, k.activated, k.activation_failures, k.dropped]
            for k in wave.kinds
        ]
        weekly += [
            [
                wave.name,
                str(w.week),
                w.invited,
                w.started,
                w.completed,
                w.completed_to_date,
                w.planned_to_date,
            ]
            for w in wave.weeks
        ]
    return {
        "waves": (WAVE_COLUMNS, waves),
        "steps": (("wave", "step", "reached", "failed", "dropped"), steps),
        "channels": (("wave", "channel", "started", "completed", "dropped"), channels),
        "kinds": (
            ("wave", "kind", "chosen", "activated", "activation_failures", "dropped"),
            kinds,
        ),
        "weekly": (
            (
                "wave",
                "week",
                "invited",
                "started",
                "completed",
                "completed_to_date",
                "planned_to_date",
            ),
            weekly,
        ),
    }


def write_report(report: Progress, folder: Path) -> ReportFiles:
    """Write ``report-YYYY-Www.html``, its PNG plots and the CSV tables into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = str(report.week)
    tables: dict[str, Path] = {}
    for name, (header, rows) in csv_tables(report).items():
        path = folder / f"{name}-{suffix}.csv"
        with path.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(header)
            writer.writerows(rows)
        tables[name] = path
    drawn = figures(report)
    images = []
    for figure in drawn:
        plot(figure, folder / figure.file)
        images.append(folder / figure.file)
    page = folder / f"report-{suffix}.html"
    page.write_text(_html(report, drawn, tables), encoding="utf-8")
    return ReportFiles(page, tables, images)


# --- HTML ------------------------------------------------------------------------------------

_STYLE = """
body { font-family: sans-serif; line-height: 1.5; margin: 1rem auto; max-width: 70rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
caption { text-align: left; font-weight: bold; padding: 0.25rem 0; }
th, td { border: 1px solid #444; padding: 0.25rem 0.5rem; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table(
    caption: str,
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
) -> str:
    """A table whose first column names its row (``<th scope="row">``)."""
    head = "".join(f'<th scope="col">{_e(name)}</th>' for name in header)
    body = []
    for row in rows:
        first, *rest = row
        cells = "".join(
            f'<td class="number">{_e(_rate(value) if isinstance(value, Fraction) else value)}</td>'
            if isinstance(value, int | Fraction)
            else f"<td>{_e(value)}</td>"
            for value in rest
        )
        body.append(f'<tr><th scope="row">{_e(first)}</th>{cells}</tr>')
    return (
        f"<table>\n<caption>{_e(caption)}</caption>\n<thead><tr>{head}</tr></thead>\n"
        f"<tbody>\n{chr(10).join(body)}\n</tbody>\n</table>"
    )


def _figure_html(figure: Figure) -> str:
    width, height = int(WIDTH * DPI), int(HEIGHT * DPI)
    return (
        f'<figure>\n<img src="{_e(figure.file)}" width="{width}" height="{height}" '
        f'alt="{_e(figure.alt)}">\n<figcaption>{_e(figure.caption)}</figcaption>\n</figure>'
    )


def _status(wave: WaveProgress) -> str:
    if wave.plan is None or wave.forecast is None:
        return ""
    return wave.forecast.describe(wave.plan.deadline)


def _html(report: Progress, drawn: list[Figure], tables: dict[str, Path]) -> str:
    week = report.week
    by_file = {figure.file: figure for figure in drawn}
    days = report.abandon_after.days
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Migration report {_e(week)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>Migration from the legacy eID: week {_e(week)}</h1>",
        f"<p>As of the end of Sunday {week.sunday.isoformat()}, Copenhagen time "
        f"({report.as_of:%Y-%m-%d %H:%M} UTC): only steps taken before then count. A flow counts "
        f"as dropped when the person abandoned it, or when it has not moved for {days} days; "
        "it is counted at the last step it took. Completion rates are per week, over the last "
        f"{RATE_WEEKS} weeks.</p>",
        "<h2>Waves against the plan</h2>",
    ]
    if not report.waves:
        parts.append("<p>No wave had started by the end of this week.</p>")
    else:
        parts.append(
            _table(
                "Each wave's people, plan and forecast",
                (
                    "Wave",
                    "Cohort",
                    "Start",
                    "Deadline",
                    "Quota",
                    "Invited",
                    "Started",
                    "Completed",
                    "Dropped",
                    "In progress",
                    "Planned by now",
                    "Completed per week",
                    "Forecast",
                ),
                [
                    [
                        wave.name,
                        wave.plan.cohort.describe() if wave.plan else "",
                        wave.plan.starts_on.isoformat() if wave.plan else "",
                        wave.plan.deadline.isoformat() if wave.plan else "",
                        wave.plan.quota if wave.plan else "",
                        wave.invited,
                        wave.started,
                        wave.completed,
                        wave.dropped,
                        wave.in_progress,
                        wave.planned_to_date if wave.planned_to_date is not None else "",
                        wave.forecast.rate_per_week if wave.forecast else "",
                        _status(wave),
                    ]
                    for wave in report.waves
                ],
            )
        )
    dropoff = by_file[f"dropoff-{week}.png"]
    parts += ["<h2>Where people drop out</h2>", _figure_html(dropoff)]
    for number, wave in enumerate(report.waves, 1):
        parts.append(f'<section aria-labelledby="wave-{number}">')
        title = f"Wave {wave.name}" if wave.plan else "Flows outside waves"
        parts.append(f'<h2 id="wave-{number}">{_e(title)}</h2>')
        parts.append(f"<p>{_e(_summary(wave))}</p>")
        figure = by_file.get(f"wave-{number}-{week}.png")
        if figure is not None:
            parts.append(_figure_html(figure))
        parts += [
            "<h3>Steps</h3>",
            _table(
                f"{wave.name}: flows by step",
                ("Step", "Reached", "Failed attempts", "Dropped here"),
                [[STEP_NAMES[s.step], s.reached, s.failed, s.dropped] for s in wave.steps],
            ),
            "<h3>Channels</h3>",
            _table(
                f"{wave.name}: flows by channel",
                ("Channel", "Started", "Completed", "Dropped"),
                [
                    [CHANNEL_NAMES.get(c.channel, c.channel), c.started, c.completed, c.dropped]
                    for c in wave.channels
                ],
            ),
            "<h3>Authenticators</h3>",
            _table(
                f"{wave.name}: flows by authenticator kind",
                ("Authenticator", "Chosen", "Activated", "Failed activations", "Dropped"),
                [
                    [
                        KIND_NAMES.get(k.kind, k.kind),
                        k.chosen,
                        k.activated,
                        k.activation_failures,
                        k.dropped,
                    ]
                    for k in wave.kinds
                ],
            ),
        ]
        if wave.weeks:
            parts += [
                "<h3>Week by week</h3>",
                _table(
                    f"{wave.name}: each week",
                    (
                        "Week",
                        "Invited",
                        "Started",
                        "Completed",
                        "Completed in total",
                        "Planned in total",
                    ),
                    [
                        [
                            str(w.week),
                            w.invited,
                            w.started,
                            w.completed,
                            w.completed_to_date,
                            w.planned_to_date,
                        ]
                        for w in wave.weeks
                    ],
                ),
            ]
        parts.append("</section>")
    parts.append("<h2>Data files</h2>\n<ul>")
    parts += [
        f'<li><a href="{_e(path.name)}">{_e(path.name)}</a>: {_e(name)} (CSV)</li>'
        for name, path in tables.items()
    ]
    parts += ["</ul>", "</main>", "</body>", "</html>", ""]
    return "\n".join(parts)


def _summary(wave: WaveProgress) -> str:
    counts = (
        f"{wave.invited} invited, {wave.started} started, {wave.completed} completed, "
        f"{wave.dropped} dropped, {wave.in_progress} in progress."
    )
    if wave.plan is None:
        return f"People who started without an invitation: {counts}"
    return (
        f"{wave.plan.cohort.describe().capitalize()}; quota {wave.plan.quota} from "
        f"{wave.plan.starts_on.isoformat()} to {wave.plan.deadline.isoformat()}. {counts} "
        f"Planned by now: {wave.planned_to_date}. Forecast: {_status(wave)}."
    )
