"""Reads for the engine's staff pages: rankings of a run and the comparison of two runs.

(Kept apart from ``selectors.py``, which serves the public results pages.)
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np
from django.db.models import F, Window
from django.db.models.functions import Rank
from django.utils.translation import gettext

from consultations.models import Proposal

from .engine.compare import Comparison, compare_runs
from .models import (
    EngineRun,
    Idea,
    IdeaMembership,
    OpinionGroup,
    ParticipantProjection,
    ProposalScore,
)
from .selectors import run_metric_rows, run_timing_rows


def run_rankings(*, run: EngineRun, limit: int = 10) -> dict[str, list[ProposalScore]]:
    """The run's proposals ranked three ways, each score with ``agreement_rank`` (plain agreement).

    ``group_consensus``: Polis's group-informed consensus (product over groups of the smoothed
    agree rates); ``bridging``: the matrix-factorisation intercept (docs/bridging.md);
    ``top_score``: Make.org's. Comparing a proposal's place with its ``agreement_rank`` shows
    which proposals the cross-group measures move up or down.
    """
    ranked = ProposalScore.objects.filter(run=run).annotate(
        agreement_rank=Window(Rank(), order_by=[F("agreement").desc(), F("proposal_id").asc()])
    )
    # No WHERE besides the run, so the window ranks every proposal of the run; ORDER BY and
    # LIMIT apply after it. Proposals without the score sort last and are dropped here.
    out = {}
    for key in ("group_consensus", "bridging", "top_score"):
        rows = ranked.select_related("proposal").order_by(
            F(key).desc(nulls_last=True), "proposal_id"
        )
        out[key] = [row for row in rows[:limit] if getattr(row, key) is not None]
    return out


@dataclass
class IdeaRef:
    number: int
    label: str
    size: int
    pk: int | None = None


@dataclass
class RunComparison:
    run_a: EngineRun
    run_b: EngineRun
    result: Comparison
    ideas_a: dict[int, IdeaRef] = field(default_factory=dict)
    ideas_b: dict[int, IdeaRef] = field(default_factory=dict)
    metric_rows: list[tuple[str, object, object]] = field(default_factory=list)
    timing_rows: list[tuple[str, object, object]] = field(default_factory=list)
    # Opinion groups compared the same way, by the participants they share; None when neither
    # run placed any participant (no votes).
    groups: Comparison | None = None
    groups_a: dict[int, IdeaRef] = field(default_factory=dict)
    groups_b: dict[int, IdeaRef] = field(default_factory=dict)

    def changes(self, kind: str) -> list[dict]:
        """The changes of one kind with their ideas resolved, largest first."""
        return _resolved(self.result, kind, self.ideas_a, self.ideas_b)

    def group_changes(self, kind: str) -> list[dict]:
        """The same for opinion groups (empty without groups)."""
        if self.groups is None:
            return []
        return _resolved(self.groups, kind, self.groups_a, self.groups_b)


def _resolved(result: Comparison, kind: str, refs_a: dict, refs_b: dict) -> list[dict]:
    rows = []
    for change in result.of_kind(kind):
        rows.append(
            {
                "change": change,
                "a": [refs_a[n] for n in change.a if n in refs_a],
                "b": [refs_b[n] for n in change.b if n in refs_b],
            }
        )
    rows.sort(key=lambda r: -sum(i.size for i in r["a"] + r["b"]))
    return rows


def _labelling(run: EngineRun) -> tuple[np.ndarray, np.ndarray]:
    """(proposal ids, idea numbers; -1 = in no idea) over the proposals the run read."""
    members = dict(
        IdeaMembership.objects.filter(run=run)
        .values_list("proposal_id", "idea__number")
        .iterator(chunk_size=10_000)
    )
    snapshot = Proposal.objects.filter(
        consultation_id=run.consultation_id, status=Proposal.Status.ACCEPTED
    )
    if run.input_max_id is not None:
        snapshot = snapshot.filter(pk__lte=run.input_max_id)
    ids = array("q")
    ids.extend(snapshot.values_list("pk", flat=True).iterator(chunk_size=10_000))
    ids.extend(members)  # members refused since the run still count as the run's
    items = np.unique(np.frombuffer(ids, dtype=np.int64)) if ids else np.zeros(0, np.int64)
    labels = np.array([members.get(int(p), -1) for p in items], dtype=np.int64)
    return items, labels


def _idea_refs(run: EngineRun) -> dict[int, IdeaRef]:
    return {
        number: IdeaRef(number=number, label=label, size=size, pk=pk)
        for pk, number, label, size in Idea.objects.filter(run=run).values_list(
            "pk", "number", "label", "size"
        )
    }


def _group_labelling(run: EngineRun) -> tuple[np.ndarray, np.ndarray]:
    """(participant ids, opinion group numbers; -1 = placed in no group) of the run."""
    pairs = list(
        ParticipantProjection.objects.filter(run=run)
        .order_by("participant_id")
        .values_list("participant_id", "group")
        .iterator(chunk_size=10_000)
    )
    items = np.fromiter((p for p, _ in pairs), dtype=np.int64, count=len(pairs))
    labels = np.fromiter(
        (-1 if g is None else g for _, g in pairs), dtype=np.int64, count=len(pairs)
    )
    return items, labels


def _group_refs(run: EngineRun) -> dict[int, IdeaRef]:
    return {
        number: IdeaRef(
            number=number, label=gettext("Group %(n)s") % {"n": number + 1}, size=size, pk=pk
        )
        for pk, number, size in OpinionGroup.objects.filter(run=run).values_list(
            "pk", "number", "size"
        )
    }


def _side_by_side(rows_a, rows_b) -> list[tuple[str, object, object]]:
    a, b = dict(rows_a), dict(rows_b)
    labels = list(a) + [k for k in b if k not in a]
    return [(label, a.get(label), b.get(label)) for label in labels]


def run_comparison(*, run_a: EngineRun, run_b: EngineRun, min_share: float = 0.2) -> RunComparison:
    """How the ideas (and opinion groups) of ``run_a`` became those of ``run_b``, plus metrics."""
    result = compare_runs(*_labelling(run_a), *_labelling(run_b), min_share=min_share)
    people_a, people_b = _group_labelling(run_a), _group_labelling(run_b)
    groups = None
    if people_a[0].size or people_b[0].size:
        groups = compare_runs(*people_a, *people_b, min_share=min_share)
    return RunComparison(
        run_a=run_a,
        run_b=run_b,
        result=result,
        ideas_a=_idea_refs(run_a),
        ideas_b=_idea_refs(run_b),
        metric_rows=_side_by_side(run_metric_rows(run=run_a), run_metric_rows(run=run_b)),
        timing_rows=_side_by_side(run_timing_rows(run=run_a), run_timing_rows(run=run_b)),
        groups=groups,
        groups_a=_group_refs(run_a) if groups else {},
        groups_b=_group_refs(run_b) if groups else {},
    )


def comparable_runs(*, consultation) -> list[EngineRun]:
    """Finished runs, newest first: the choices of the comparison form."""
    return list(
        EngineRun.objects.filter(
            consultation=consultation,
            status=EngineRun.Status.DONE,
        ).order_by("-created_at")[:100]
    )
