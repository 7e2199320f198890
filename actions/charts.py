"""Geometry of an objective's history chart, drawn as SVG by templates/actions/_chart.html.

Plain arithmetic, no plotting library: the page stays server-rendered and works without
JavaScript. Colours are from the Okabe–Ito palette (safe for colour-blind readers) and every
series also differs by its line style, so colour is never the only cue.
"""

import datetime
from dataclasses import dataclass
from decimal import Decimal

from .selectors import ObjectiveProgress

WIDTH, HEIGHT = 600, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 40


@dataclass
class Point:
    x: float
    y: float
    on: datetime.date
    value: Decimal

    # SVG wants "12.5" whatever the language (French number formatting would write "12,5").
    @property
    def sx(self) -> str:
        return f"{self.x:.1f}"

    @property
    def sy(self) -> str:
        return f"{self.y:.1f}"


def _points_attr(points) -> str:
    return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in points)


def objective_chart(row: ObjectiveProgress, *, today: datetime.date) -> dict:
    """Coordinates for the measured series, the linear pace, the target and today's line."""
    objective = row.objective
    history = row.history or []
    dates = [objective.baseline_on, objective.due_date] + [m.measured_on for m in history]
    values = [objective.baseline, objective.target] + [m.value for m in history]
    start = min(dates)
    # While the objective runs, the axis reaches today so that the "today" line shows.
    end = max(dates + [today]) if today <= objective.due_date else max(dates)
    if end <= start:
        end = start + datetime.timedelta(days=1)
    low, high = min(values), max(values)
    pad = (high - low) * Decimal("0.08") or Decimal(1)
    low, high = low - pad, high + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span_days = (end - start).days

    def x(on: datetime.date) -> float:
        return LEFT + plot_w * (on - start).days / span_days

    def y(value: Decimal) -> float:
        return TOP + plot_h * float((high - value) / (high - low))

    measured = [Point(x(m.measured_on), y(m.value), m.measured_on, m.value) for m in history]
    baseline = Point(
        x(objective.baseline_on), y(objective.baseline), objective.baseline_on, objective.baseline
    )
    due = Point(x(objective.due_date), y(objective.target), objective.due_date, objective.target)
    chart = {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "bottom": HEIGHT - BOTTOM,
        "label_y": HEIGHT - BOTTOM + 18,
        "baseline": baseline,
        "due": due,
        "pace": _points_attr([baseline, due]),
        "target_y": f"{y(objective.target):.1f}",
        "baseline_y": f"{y(objective.baseline):.1f}",
        "measured": measured,
        "measured_line": _points_attr([baseline, *measured]) if measured else "",
        "start": start,
        "end": end,
        "today_x": f"{x(today):.1f}" if start <= today <= end else None,
    }
    return chart
