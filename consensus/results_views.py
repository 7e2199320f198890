"""Public results of a consultation's current engine run: ideas, opinion groups, method, CSV, segments.

Visibility follows ``consultation_get_for_user`` (private consultations are 404 for outsiders).
The page reads a bounded number of queries whatever the size of the consultation; the segment
cut (which scans the votes) is only computed when a dimension is asked for.
"""

import csv

from django.conf import settings
from django.db.models import prefetch_related_objects
from django.db.models.query import Prefetch
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.utils.cache import patch_vary_headers
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET

from consultations.models import Participant
from consultations.selectors import consultation_get_for_user

from . import selectors
from .models import Idea, IdeaMembership

CENTRAL_PER_IDEA = 3
IDEAS_PER_ZONE = 20
SEGMENT_TOP_IDEAS = 5

DIMENSION_LABELS = {
    "age_range": gettext_lazy("Age range"),
    "gender": gettext_lazy("Gender"),
    "postal_area": gettext_lazy("Postal area"),
}
SEGMENT_VALUE_LABELS = {
    "age_range": dict(Participant.AgeRange.choices),
    "gender": dict(Participant.Gender.choices),
    "postal_area": {},
}

CSV_HEADER = [
    "idea",
    "label",
    "zone",
    "proposals",
    "share",
    "agreement",
    "disagreement",
    "trusted_votes",
    "sequence_votes",
    "group_consensus",
]


def _attach_central(ideas: list[Idea], run) -> None:
    """One query: each idea gets ``central`` = its (at most 3) most central proposals."""
    central = (
        IdeaMembership.objects.filter(run=run, is_central=True)
        .select_related("proposal")
        .order_by("-similarity")
    )
    prefetch_related_objects(
        ideas, Prefetch("memberships", queryset=central, to_attr="central_all")
    )
    for idea in ideas:
        idea.central = idea.central_all[:CENTRAL_PER_IDEA]


def _zoned_ideas(run) -> dict[str, list[Idea]]:
    """The run's ideas by zone (ranked by ``selectors.key_ideas``) with their central proposals."""
    zoned = selectors.key_ideas(run=run, limit=IDEAS_PER_ZONE)
    _attach_central([i for group in zoned.values() for i in group], run)
    return zoned


def _csv_cell(value):
    """Defuse spreadsheet formulas in free text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


class _Echo:
    def write(self, value):
        return value


def _csv_response(consultation, run):
    ideas = (
        Idea.objects.filter(run=run)
        .defer("centroid")
        .order_by("-size", "number")
        .values_list("number", "label", "size", "share", "scores")
    )

    def rows():
        writer = csv.writer(_Echo())
        yield writer.writerow(CSV_HEADER)
        for number, label, size, share, scores in ideas.iterator(chunk_size=2_000):
            scores = scores or {}
            yield writer.writerow(
                [
                    number,
                    _csv_cell(label),
                    scores.get("zone") or "",
                    size,
                    round(share, 4),
                    _csv_cell(scores.get("agreement")),
                    _csv_cell(scores.get("disagreement")),
                    _csv_cell(scores.get("trusted_votes")),
                    _csv_cell(scores.get("sequence_votes")),
                    _csv_cell(scores.get("group_consensus")),
                ]
            )

    filename = f"{slugify(consultation.slug)[:80] or 'consultation'}-results-run-{run.pk}.csv"
    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _segment_table(run, zoned, dimension: str) -> dict:
    """Per-segment agreement of the top ideas' central proposals; suppressed cells stay None."""
    k = int(getattr(settings, "CONSENSUS_MIN_SEGMENT_SIZE", 10))
    scores = selectors.segment_scores(run_or_consultation=run, dimension=dimension, k=k)
    top = [i for group in zoned.values() for i in group][:SEGMENT_TOP_IDEAS]
    segments = sorted({seg for per in scores.values() for seg in per})
    value_labels = SEGMENT_VALUE_LABELS.get(dimension, {})
    columns = [(seg, value_labels.get(seg, seg)) for seg in segments]
    rows = []
    for idea in top:
        for membership in idea.central:
            per = scores.get(membership.proposal_id, {})
            cells = []
            for seg in segments:
                cell = per.get(seg)
                cells.append(
                    None if cell is None else {**cell, "percent": round(100 * cell["agreement"])}
                )
            rows.append({"idea": idea, "proposal": membership.proposal, "cells": cells})
    return {"columns": columns, "rows": rows, "k": k}


@require_GET
def results(request, slug):
    consultation = consultation_get_for_user(slug=slug, user=request.user)
    run = selectors.consultation_current_run(consultation=consultation)
    dimension = request.GET.get("dimension", "")
    if dimension and dimension not in selectors.SEGMENT_DIMENSIONS:
        response = HttpResponseBadRequest(
            _("Unknown segment “%(dimension)s”: choose one of %(choices)s.")
            % {"dimension": dimension[:40], "choices": ", ".join(selectors.SEGMENT_DIMENSIONS)},
            content_type="text/plain; charset=utf-8",
        )
        patch_vary_headers(response, ("HX-Request",))
        return response

    if run is None:
        response = render(
            request, "consensus/results.html", {"consultation": consultation, "run": None}
        )
        patch_vary_headers(response, ("HX-Request",))
        return response

    if request.GET.get("format") == "csv":
        return _csv_response(consultation, run)

    zoned = _zoned_ideas(run)
    context = {
        "consultation": consultation,
        "run": run,
        "dimension": dimension,
        "dimensions": list(DIMENSION_LABELS.items()),
        "segment": _segment_table(run, zoned, dimension) if dimension else None,
    }
    htmx = getattr(request, "htmx", False)
    if htmx:
        response = render(request, "consensus/results.html#segments", context)
    else:
        metrics = run.metrics or {}
        context.update(
            {
                "zones": [
                    (
                        "consensual",
                        _("Key ideas"),
                        _("Most participants agree."),
                        zoned["consensual"],
                    ),
                    (
                        "controversial",
                        _("Controversial ideas"),
                        _("Participants are divided."),
                        zoned["controversial"],
                    ),
                    (
                        "rejected",
                        _("Rejected ideas"),
                        _("Most participants disagree."),
                        zoned["rejected"],
                    ),
                ],
                "groups": selectors.run_opinion_groups(run=run),
                "n_votes": metrics.get("n_votes"),
                "n_participants": metrics.get("n_participants"),
            }
        )
        response = render(request, "consensus/results.html", context)
    patch_vary_headers(response, ("HX-Request",))
    return response
