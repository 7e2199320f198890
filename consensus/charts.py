"""Geometry of the results charts, drawn as SVG by templates/consensus/_results_*.html.

Plain arithmetic, no plotting library (as actions/charts.py): the page stays server-rendered,
cacheable and readable without JavaScript. Colours are from the Okabe–Ito palette (safe for
colour-blind readers) and each opinion group also has its own marker shape, so colour is never
the only cue; every chart comes with a text alternative in the template.

The opinion map never draws one mark per participant: ``consensus.selectors.run_opinion_map``
bins the projection on a square grid in SQL, and a mark stands for the participants of one cell,
in the style of their most common group. The output is bounded by the ``MAP_GRID`` cells whatever
the number of participants.
"""

from __future__ import annotations

import math

from django.utils.translation import gettext_lazy as _

# Okabe & Ito (2008), "Color Universal Design"; black is left out (it is the ink).
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442"]
SHAPES = ["circle", "square", "triangle", "diamond", "triangle-down", "cross", "star"]
SHAPE_LABELS = {
    "circle": _("round"),
    "square": _("square"),
    "triangle": _("triangle"),
    "diamond": _("diamond"),
    "triangle-down": _("downward triangle"),
    "cross": _("cross"),
    "star": _("star"),
}
UNGROUPED_COLOUR = "#8a8f99"

MAP_WIDTH, MAP_HEIGHT, MAP_PAD = 600, 400, 28
MAP_GRID = (40, 26)  # columns, rows: at most 1,040 marks, one per occupied cell

SHARE_WIDTH, SHARE_HEIGHT = 300, 14
VOTE_KEYS = ("agree", "neutral", "disagree")


def group_style(number: int | None) -> dict:
    """Colour and shape of an opinion group (``None``: participants in no group)."""
    if number is None:
        return {"colour": UNGROUPED_COLOUR, "shape": "circle", "css": "g-none"}
    i = number % len(OKABE_ITO)
    shape = SHAPES[number % len(SHAPES)]
    return {
        "colour": OKABE_ITO[i],
        "shape": shape,
        "shape_label": SHAPE_LABELS[shape],
        "css": f"g{i}",
    }


def _f(value: float) -> str:
    """A coordinate with one decimal at most ("12", "12.5"): shorter paths, same drawing."""
    text = f"{value:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    return "0" if text == "-0" else text


def marker_path(shape: str, cx: float, cy: float, r: float) -> str:
    """SVG path data of a marker of ``shape`` centred on (cx, cy), of radius about ``r``."""
    if shape == "square":
        s = r * 0.9
        return f"M{_f(cx - s)} {_f(cy - s)}h{_f(2 * s)}v{_f(2 * s)}h{_f(-2 * s)}z"
    if shape == "triangle":
        h = r * 1.15
        return f"M{_f(cx)} {_f(cy - h)}L{_f(cx + h)} {_f(cy + h * 0.8)}H{_f(cx - h)}z"
    if shape == "triangle-down":
        h = r * 1.15
        return f"M{_f(cx)} {_f(cy + h)}L{_f(cx + h)} {_f(cy - h * 0.8)}H{_f(cx - h)}z"
    if shape == "diamond":
        d = r * 1.25
        return f"M{_f(cx)} {_f(cy - d)}L{_f(cx + d)} {_f(cy)}L{_f(cx)} {_f(cy + d)}L{_f(cx - d)} {_f(cy)}z"
    if shape == "cross":
        a, b = r, r * 0.4
        return (
            f"M{_f(cx - b)} {_f(cy - a)}h{_f(2 * b)}v{_f(a - b)}h{_f(a - b)}v{_f(2 * b)}"
            f"h{_f(b - a)}v{_f(a - b)}h{_f(-2 * b)}v{_f(b - a)}h{_f(b - a)}v{_f(-2 * b)}"
            f"h{_f(a - b)}z"
        )
    if shape == "star":
        points = []
        for k in range(10):
            radius = r * 1.2 if k % 2 == 0 else r * 0.5
            angle = math.pi / 2 + k * math.pi / 5
            points.append(
                f"{_f(cx + radius * math.cos(angle))} {_f(cy - radius * math.sin(angle))}"
            )
        return "M" + "L".join(points) + "z"
    # circle, as two arcs
    return f"M{_f(cx - r)} {_f(cy)}a{_f(r)} {_f(r)} 0 1 0 {_f(2 * r)} 0a{_f(r)} {_f(r)} 0 1 0 {_f(-2 * r)} 0z"


def opinion_map(bins: dict, groups: list) -> dict | None:
    """Marks, group labels and legend of the opinion map, from ``selectors.run_opinion_map``.

    ``bins``: {"cell": side of a cell in map units, "x0", "y0" (lower corner), "cols", "rows",
    "total", "cells": [(col, row, group or None, count), ...]}. ``groups``: the run's
    OpinionGroup rows (for their centres). One mark per occupied cell, sized by the number of
    participants there and drawn in the style of the group most of them belong to; the marks
    of a group form one ``<path>`` (``layers``), so the SVG stays small. None when nobody was
    placed on the map.
    """
    if not bins or not bins.get("total"):
        return None
    cols, rows = bins["cols"], bins["rows"]
    plot_w, plot_h = MAP_WIDTH - 2 * MAP_PAD, MAP_HEIGHT - 2 * MAP_PAD
    step = min(plot_w / cols, plot_h / rows)  # square cells, the map keeps its proportions
    off_x = MAP_PAD + (plot_w - step * cols) / 2
    off_y = MAP_PAD + (plot_h - step * rows) / 2
    per_cell: dict[tuple[int, int], dict] = {}
    for col, row, group, count in bins["cells"]:
        per_cell.setdefault((col, row), {}).setdefault(group, 0)
        per_cell[(col, row)][group] += count
    largest = max(sum(by_group.values()) for by_group in per_cell.values())
    # Few occupied cells (a small or very polarised consultation): larger marks, still apart.
    r_min, r_max = 1.8, max(step * 0.6, min(22.0, 140 / math.sqrt(len(per_cell))))
    paths: dict[int | None, list[str]] = {}
    for (col, row), by_group in per_cell.items():
        total = sum(by_group.values())
        # the most common group of the cell; ties go to a real group, then the lowest number
        main = max(by_group, key=lambda g: (by_group[g], g is not None, -(g or 0)))
        cx = off_x + (col + 0.5) * step
        cy = off_y + (rows - row - 0.5) * step  # y grows upwards on the map
        r = r_min + (r_max - r_min) * math.sqrt(total / largest) if largest > 1 else r_max * 0.6
        paths.setdefault(main, []).append(marker_path(group_style(main)["shape"], cx, cy, r))
    layers = [
        {"group": g, "css": group_style(g)["css"], "d": "".join(d), "marks": len(d)}
        for g, d in sorted(paths.items(), key=lambda item: (item[0] is not None, item[0] or 0))
    ]
    cell = bins["cell"] or 1.0
    labels = []
    for g in groups:
        lx = off_x + (g.centre_x - bins["x0"]) / cell * step
        ly = off_y + (rows - (g.centre_y - bins["y0"]) / cell) * step
        # the label sits above the group's centre, clear of the marks drawn there
        ly -= min(r_max, 22.0) + 10
        lx = min(max(lx, 48), MAP_WIDTH - 48)  # room for the text of the label
        ly = min(max(ly, 14), MAP_HEIGHT - 14)
        labels.append({"number": g.number + 1, "x": f"{lx:.1f}", "y": f"{ly:.1f}"})
    legend = [
        {
            "number": g.number + 1,
            "size": g.size,
            "css": group_style(g.number)["css"],
            "d": marker_path(group_style(g.number)["shape"], 8, 8, 5),
        }
        for g in groups
    ]
    ungrouped = sum(count for _c, _r, group, count in bins["cells"] if group is None)
    if ungrouped:
        legend.append(
            {
                "number": None,
                "size": ungrouped,
                "css": "g-none",
                "d": marker_path("circle", 8, 8, 4),
            }
        )
    return {
        "width": MAP_WIDTH,
        "height": MAP_HEIGHT,
        "layers": layers,
        "marks": sum(layer["marks"] for layer in layers),
        "labels": labels,
        "legend": legend,
        "total": bins["total"],
        "largest": largest,
        "ungrouped": ungrouped,
    }


def share_bar(counts: dict | None) -> dict | None:
    """Stacked agree / neutral / disagree bar and qualification shares of one idea's votes.

    ``counts``: {key: number of trusted and sequence votes (or qualifications) of that key}.
    Percentages are of the idea's votes; a qualification's share is of the votes of its own
    side (e.g. "Realistic" among the agree votes). None when the idea has no vote.
    """
    from consultations.models import QUALIFICATIONS_BY_VOTE, QualificationKey, VoteKey

    counts = counts or {}
    total = sum(counts.get(k, 0) for k in VOTE_KEYS)
    if not total:
        return None
    labels = dict(VoteKey.choices)
    segments, x = [], 0.0
    for key in VOTE_KEYS:
        n = counts.get(key, 0)
        width = SHARE_WIDTH * n / total
        segments.append(
            {
                "key": key,
                "label": labels[key],
                "count": n,
                "percent": round(100 * n / total),
                "x": f"{x:.1f}",
                "width": f"{width:.1f}",
            }
        )
        x += width
    qual_labels = dict(QualificationKey.choices)
    qualifications = []
    for key in VOTE_KEYS:
        side = counts.get(key, 0)
        for q in QUALIFICATIONS_BY_VOTE[VoteKey(key)]:
            n = counts.get(str(q), 0)
            if n and side:
                qualifications.append(
                    {
                        "side": labels[key],
                        "key": str(q),
                        "label": qual_labels[q],
                        "count": n,
                        "percent": round(100 * n / side),
                    }
                )
    return {
        "width": SHARE_WIDTH,
        "height": SHARE_HEIGHT,
        "total": total,
        "segments": segments,
        "qualifications": qualifications,
    }


def group_vote_bars(rows: list[dict]) -> list[dict]:
    """``selectors.group_votes`` rows with their group's style, swatch and share bar."""
    for row in rows:
        row["style"] = style = group_style(row["group"].number)
        row["swatch"] = marker_path(style["shape"], 8, 8, 5)
        row["bar"] = share_bar(row)
    return rows
