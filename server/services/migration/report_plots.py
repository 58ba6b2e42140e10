"""The migration report's plots: where people drop out, and each wave against its plan, each
with a text alternative that states every number it shows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.services.migration.report_model import STEP_NAMES, STEPS, Progress


@dataclass(frozen=True)
class Figure:
    """A plot and its text alternative (which states every number the plot shows)."""

    file: str
    alt: str
    caption: str
    kind: str  # "dropoff" or "wave"
    labels: list[str]
    series: list[tuple[str, list[int]]]
    deadline_index: int | None = None


WIDTH, HEIGHT, DPI = 8.0, 4.5, 100


def figures(report: Progress) -> list[Figure]:
    suffix = str(report.week)
    dropped = report.dropped_by_step()
    figures = [
        Figure(
            file=f"dropoff-{suffix}.png",
            alt="Bar chart of the flows that dropped out, by the step they stopped at, all "
            "waves together: "
            + "; ".join(f"{STEP_NAMES[step]} {count}" for step, count in dropped.items())
            + ".",
            caption="Flows that dropped out, by the last step they took (all waves).",
            kind="dropoff",
            labels=[STEP_NAMES[step] for step in STEPS],
            series=[("dropped", [dropped[step] for step in STEPS])],
        )
    ]
    for number, wave in enumerate(report.waves, 1):
        plan = wave.plan
        if plan is None or not wave.weeks:
            continue
        points = "; ".join(
            f"{w.week} {w.completed_to_date} completed, {w.planned_to_date} planned"
            for w in wave.weeks
        )
        figures.append(
            Figure(
                file=f"wave-{number}-{suffix}.png",
                alt=f"Line chart of wave {plan.name}: completed migrations in total at the end "
                f"of each week (solid line, circles) against the plan (dashed line, squares), "
                f"quota {plan.quota} by {plan.deadline.isoformat()}: {points}.",
                caption=f"Wave {plan.name}: completed in total, against the plan.",
                kind="wave",
                labels=[str(w.week) for w in wave.weeks],
                series=[
                    ("completed", [w.completed_to_date for w in wave.weeks]),
                    ("planned", [w.planned_to_date for w in wave.weeks]),
                ],
            )
        )
    return figures


def plot(figure: Figure, path: Path) -> None:
    """Draw with matplotlib's Agg canvas (no display, no global pyplot state). Series differ
    by line style, marker and label, never by colour alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as Canvas
    from matplotlib.ticker import MaxNLocator

    plot = Canvas(figsize=(WIDTH, HEIGHT), dpi=DPI, layout="constrained")
    FigureCanvasAgg(plot)
    axes = plot.add_subplot()
    if figure.kind == "dropoff":
        _, counts = figure.series[0]
        bars = axes.barh(
            figure.labels, counts, color="#4a4a4a", edgecolor="black", hatch="//", label="dropped"
        )
        axes.bar_label(bars, labels=[str(count) for count in counts], padding=3)
        axes.invert_yaxis()  # the first step on top
        axes.set_xlabel("flows that dropped out")
        axes.set_title(figure.caption)
        axes.set_xlim(0, max([*counts, 1]) * 1.15)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        positions = list(range(len(figure.labels)))
        # Hollow squares on filled circles: both series stay visible where they coincide.
        styles: dict[str, dict[str, Any]] = {
            "completed": {"linestyle": "-", "marker": "o", "markersize": 8, "color": "#1f3a93"},
            "planned": {
                "linestyle": "--",
                "marker": "s",
                "markersize": 6,
                "markerfacecolor": "white",
                "color": "#333333",
            },
        }
        for name, points in figure.series:
            axes.plot(positions, points, label=name, **styles[name])
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        step = max(1, math.ceil(len(positions) / 12))
        axes.set_xticks(positions[::step], figure.labels[::step], rotation=45, ha="right")
        axes.set_ylabel("people, in total")
        axes.set_ylim(bottom=0)
        axes.legend(loc="upper left")
        axes.set_title(figure.caption)
    axes.grid(axis="x" if figure.kind == "dropoff" else "y", linestyle=":")
    # No software version or date in the file: the same report gives the same bytes.
    plot.savefig(path, format="png", metadata={"Software": None})
