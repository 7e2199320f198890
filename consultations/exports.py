"""Open-data exports of a consultation, streamed as CSV or Parquet.

Datasets (columns and licence in docs/open_data.md):

- ``proposals``: accepted proposals only, without any author data;
- ``votes``: vote counts per accepted proposal (from the counters, all trust levels, and the
  scored ones: trusted and sequence votes), qualifications included;
- ``ideas`` and ``memberships``: the ideas of the published engine run and their proposals;
- ``scores``: the published run's scores of the accepted proposals;
- ``groups``: the published run's votes on each accepted proposal per opinion group (one row
  per proposal and group, as Polis publishes them);
- ``positions``: the public positions partners took on accepted proposals, in their own name;
- ``segments``: vote counts per proposal and segment of one dimension (age range, gender,
  postal area), with every cell of fewer than ``k`` participants suppressed, plus secondary
  suppression so that a suppressed cell cannot be recomputed from the others.

Every dataset is a query read with ``.iterator(chunk_size=...)`` (a server-side cursor on
PostgreSQL): rows go out as they come, so memory does not grow with the consultation. Parquet
is written one row group at a time into a sink that is drained after each group, so the
response streams Parquet too (no temporary file). Callers check visibility first
(``consultation_get_for_user``): private consultations are exported to their members only.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Count, IntegerField, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from consensus.models import EngineRun, Idea, IdeaMembership, OpinionGroup, ProposalScore
from consensus.selectors import SEGMENT_DIMENSIONS, consultation_current_run
from partners.models import PartnerPosition

from .models import Consultation, Proposal, QualificationKey, Trust, Vote, VoteKey

CHUNK_SIZE = 2_000
ROW_GROUP_SIZE = 20_000
SEGMENT_SLICE = 10_000  # proposals per grouping query of the segments export
SCORED_TRUST = (Trust.TRUSTED, Trust.SEQUENCE)
FORMATS = ("csv", "parquet")


class ExportError(Exception):
    """A request for an export that cannot be served; the message is safe to show."""

    status = 400


class ExportNotFound(ExportError):
    status = 404


def min_segment_size() -> int:
    """The k of k-anonymity for segment cuts (shared with the public results page)."""
    return max(1, int(getattr(settings, "CONSENSUS_MIN_SEGMENT_SIZE", 10)))


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # "int", "float", "str", "bool", "datetime"


@dataclass(frozen=True)
class Dataset:
    name: str
    columns: tuple[Column, ...]
    rows: Callable[..., Iterator[tuple]]
    needs_run: bool = False
    description: str = ""


# --- Datasets --------------------------------------------------------------------------------


def _accepted(consultation: Consultation):
    return Proposal.objects.filter(consultation=consultation, status=Proposal.Status.ACCEPTED)


def proposals_rows(*, consultation: Consultation, **_params) -> Iterator[tuple]:
    qs = (
        _accepted(consultation)
        .order_by("pk")
        .values_list(
            "pk",
            "created_at",
            "content",
            "origin",
            "external_id",
            "votes_total",
            "source_votes",
            "source_adhesion",
        )
    )
    yield from qs.iterator(chunk_size=CHUNK_SIZE)


VOTE_KEYS = tuple(VoteKey.values)
QUALIFICATION_KEYS = tuple(QualificationKey.values)


def votes_rows(*, consultation: Consultation, **_params) -> Iterator[tuple]:
    """One row per accepted proposal: summed counters, grouped inside the database."""
    annotations = {}
    for key in VOTE_KEYS:
        annotations[f"all_{key}"] = Coalesce(
            Sum("counters__count", filter=Q(counters__key=key)), Value(0), output_field=IntegerField()
        )
    for key in VOTE_KEYS:
        annotations[f"scored_{key}"] = Coalesce(
            Sum("counters__count", filter=Q(counters__key=key, counters__trust__in=SCORED_TRUST)),
            Value(0),
            output_field=IntegerField(),
        )
    for key in QUALIFICATION_KEYS:
        annotations[f"q_{key}"] = Coalesce(
            Sum("counters__count", filter=Q(counters__key=key)), Value(0), output_field=IntegerField()
        )
    names = list(annotations)
    qs = _accepted(consultation).order_by("pk").annotate(**annotations).values_list("pk", *names)
    n_keys = len(VOTE_KEYS)
    for row in qs.iterator(chunk_size=CHUNK_SIZE):
        pk, counts = row[0], row[1:]
        yield (pk, *counts[:n_keys], sum(counts[:n_keys]), *counts[n_keys:])


def _run(consultation: Consultation) -> EngineRun:
    run = consultation_current_run(consultation=consultation)
    if run is None:
        raise ExportNotFound(_("This consultation has no published results yet."))
    return run


IDEA_SCORE_KEYS = (
    "zone",
    "agreement",
    "disagreement",
    "top_score",
    "trusted_votes",
    "sequence_votes",
    "group_consensus",
    "consensus_share",
)


def ideas_rows(*, consultation: Consultation, run: EngineRun, **_params) -> Iterator[tuple]:
    qs = (
        Idea.objects.filter(run=run, size__gt=0)  # not an idea staff emptied
        .order_by("number")
        .values_list(
            "number", "label", "keywords", "size", "share", "scores", "theme__number", "theme__label"
        )
    )
    for number, label, keywords, size, share, scores, *theme in qs.iterator(
        chunk_size=CHUNK_SIZE
    ):
        scores = scores or {}
        weighted = scores.get("weighted") or {}
        yield (
            run.pk,
            number,
            label,
            "; ".join(str(k) for k in keywords or []),
            size,
            share,
            *(scores.get(key) for key in IDEA_SCORE_KEYS),
            *theme,  # number and label, or None and None
            scores.get("source_votes"),  # votes where the proposals were imported from
            scores.get("source_adhesion"),
            # weighted to the consultation's population shares (docs/weighting.md)
            weighted.get("votes"),
            weighted.get("agree"),
            weighted.get("weighted_agree"),
        )


def memberships_rows(*, consultation: Consultation, run: EngineRun, **_params) -> Iterator[tuple]:
    qs = (
        IdeaMembership.objects.filter(run=run, proposal__status=Proposal.Status.ACCEPTED)
        .order_by("proposal_id")
        .values_list("proposal_id", "idea__number", "similarity", "is_central")
    )
    for row in qs.iterator(chunk_size=CHUNK_SIZE):
        yield (run.pk, *row)


SCORE_FIELDS = (
    "zone",
    "n_trusted",
    "n_sequence",
    "shown",
    "answered",
    "agreement",
    "disagreement",
    "neutral",
    "top_score",
    "top_score_lower",
    "top_score_upper",
    "controversy",
    "rejection",
    "group_consensus",
    "min_group_agree",
    "bridging",
)


def scores_rows(*, consultation: Consultation, run: EngineRun, **_params) -> Iterator[tuple]:
    qs = (
        ProposalScore.objects.filter(run=run, proposal__status=Proposal.Status.ACCEPTED)
        .order_by("proposal_id")
        .values_list("proposal_id", *SCORE_FIELDS)
    )
    for row in qs.iterator(chunk_size=CHUNK_SIZE):
        yield (run.pk, *row)


def groups_rows(*, consultation: Consultation, run: EngineRun, **_params) -> Iterator[tuple]:
    """Each accepted proposal's votes per opinion group of the run (``ProposalScore.group_counts``:
    ``[agree, disagree, votes]`` per group in number order); the groups are numbered from 1, as
    the results pages name them, with their number of participants. No row for a proposal the
    run scored before it had groups, nor for a run without groups."""
    groups = list(
        OpinionGroup.objects.filter(run=run).order_by("number").values_list("number", "size")
    )
    qs = (
        ProposalScore.objects.filter(run=run, proposal__status=Proposal.Status.ACCEPTED)
        .exclude(group_counts=[])
        .order_by("proposal_id")
        .values_list("proposal_id", "group_counts")
    )
    for proposal_id, counts in qs.iterator(chunk_size=CHUNK_SIZE):
        for (number, size), (agree, disagree, votes) in zip(groups, counts, strict=False):
            yield (run.pk, proposal_id, number + 1, size, agree, disagree, votes)


def positions_rows(*, consultation: Consultation, **_params) -> Iterator[tuple]:
    """The partners' public positions on the accepted proposals (partners/models.py), by
    proposal then partner; the author of a position is the partner, not the account."""
    qs = (
        PartnerPosition.objects.filter(
            proposal__consultation=consultation, proposal__status=Proposal.Status.ACCEPTED
        )
        .order_by("proposal_id", "partner__name")
        .values_list(
            "proposal_id", "partner__name", "partner__kind", "stance", "statement", "updated_at"
        )
    )
    yield from qs.iterator(chunk_size=CHUNK_SIZE)


def _suppress(cells: list[list], k: int) -> list[list]:
    """k-anonymity of one proposal's segment cells ``[segment, n, agree, disagree, neutral]``.

    Primary suppression: cells of fewer than ``k`` participants. Secondary: when the suppressed
    cells add up to fewer than ``k`` participants, the smallest published cells are suppressed
    too until they do, so that no suppressed cell can be recomputed from the published ones and
    the proposal's totals. Returns the published cells.
    """
    hidden = [c for c in cells if c[1] < k]
    shown = sorted((c for c in cells if c[1] >= k), key=lambda c: (c[1], c[0]))
    hidden_n = sum(c[1] for c in hidden)
    while hidden and 0 < hidden_n < k and shown:
        cell = shown.pop(0)
        hidden_n += cell[1]
    return sorted(shown, key=lambda c: c[0])


def _check_dimension(dimension: str) -> None:
    if dimension not in SEGMENT_DIMENSIONS:
        raise ExportError(
            _("Unknown or missing segment dimension “%(dimension)s”: choose one of %(choices)s.")
            % {"dimension": dimension[:40], "choices": ", ".join(SEGMENT_DIMENSIONS)}
        )


def _accepted_id_slices(consultation: Consultation, size: int) -> Iterator[tuple[int, int]]:
    """(first, last) ids of consecutive slices of ``size`` accepted proposals (keyset paging)."""
    last = 0
    while True:
        ids = list(
            _accepted(consultation).filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:size]
        )
        if not ids:
            return
        yield ids[0], ids[-1]
        last = ids[-1]


def segments_rows(*, consultation: Consultation, dimension: str = "", **_params) -> Iterator[tuple]:
    """Per (accepted proposal, segment) counts of scored votes, k-anonymous.

    The database groups the votes of ``SEGMENT_SLICE`` proposals at a time: each slice's result
    (at most slice × segments rows) is small, and a plain query may use a parallel plan, which
    PostgreSQL never does for a server-side cursor (measured: 2 s instead of 10 s for 1M votes).
    """
    _check_dimension(dimension)
    k = min_segment_size()
    field = f"participant__{dimension}"
    votes = (
        Vote.objects.filter(
            proposal__consultation=consultation,
            proposal__status=Proposal.Status.ACCEPTED,
            trust__in=SCORED_TRUST,
        )
        .exclude(**{field: ""})
        .values("proposal_id", field)
        .annotate(
            n=Count("pk"),  # one vote per participant and proposal (unique constraint)
            agree=Count("pk", filter=Q(key=VoteKey.AGREE)),
            disagree=Count("pk", filter=Q(key=VoteKey.DISAGREE)),
            neutral=Count("pk", filter=Q(key=VoteKey.NEUTRAL)),
        )
        .order_by("proposal_id", field)
    )
    current, cells = None, []

    def flush():
        for segment, n, agree, disagree, neutral in _suppress(cells, k):
            yield (current, dimension, segment, n, agree, disagree, neutral, round(agree / n, 4))

    for lo, hi in _accepted_id_slices(consultation, SEGMENT_SLICE):
        rows = votes.filter(proposal_id__gte=lo, proposal_id__lte=hi).values_list(
            "proposal_id", field, "n", "agree", "disagree", "neutral"
        )
        for proposal_id, segment, n, agree, disagree, neutral in rows:
            if proposal_id != current:
                yield from flush()
                current, cells = proposal_id, []
            cells.append([segment, n, agree, disagree, neutral])
    yield from flush()


def _cols(spec: str) -> tuple[Column, ...]:
    out = []
    for item in spec.split():
        name, _sep, kind = item.partition(":")
        out.append(Column(name, kind or "int"))
    return tuple(out)


DATASETS: dict[str, Dataset] = {
    "proposals": Dataset(
        "proposals",
        _cols(
            "proposal_id created_at:datetime content:str origin:str external_id:str votes_total "
            "source_votes source_adhesion:float"
        ),
        proposals_rows,
        description=gettext_lazy("The accepted proposals: text, date and origin, never their author."),
    ),
    "votes": Dataset(
        "votes",
        _cols(
            "proposal_id "
            + " ".join(VOTE_KEYS)
            + " total "
            + " ".join(f"scored_{k}" for k in VOTE_KEYS)
            + " "
            + " ".join(f"qualification_{k}" for k in QUALIFICATION_KEYS)
        ),
        votes_rows,
        description=gettext_lazy(
            "The votes on each proposal, by kind, and the qualifications chosen with them."
        ),
    ),
    "ideas": Dataset(
        "ideas",
        _cols(
            "run_id idea_number label:str keywords:str size share:float zone:str agreement:float "
            "disagreement:float top_score:float trusted_votes sequence_votes "
            "group_consensus:float consensus_share:float theme_number theme_label:str "
            "source_votes source_adhesion:float weighted_votes weighted_agree_as_voted:float "
            "weighted_agree:float"
        ),
        ideas_rows,
        needs_run=True,
        description=gettext_lazy(
            "The ideas of these results: label, keywords, size, theme and the votes on their "
            "proposals."
        ),
    ),
    "memberships": Dataset(
        "memberships",
        _cols("run_id proposal_id idea_number similarity:float is_central:bool"),
        memberships_rows,
        needs_run=True,
        description=gettext_lazy("Which idea each proposal is in."),
    ),
    "scores": Dataset(
        "scores",
        _cols(
            "run_id proposal_id zone:str n_trusted n_sequence shown answered agreement:float "
            "disagreement:float neutral:float top_score:float top_score_lower:float "
            "top_score_upper:float controversy:float rejection:float group_consensus:float "
            "min_group_agree:float bridging:float"
        ),
        scores_rows,
        needs_run=True,
        description=gettext_lazy(
            "The scores of each proposal: agreement, zone, consensus across opinion groups."
        ),
    ),
    "groups": Dataset(
        "groups",
        _cols("run_id proposal_id group group_participants agree disagree votes"),
        groups_rows,
        needs_run=True,
        description=gettext_lazy("The votes on each proposal in each opinion group."),
    ),
    "positions": Dataset(
        "positions",
        _cols(
            "proposal_id partner:str partner_kind:str stance:str statement:str "
            "updated_at:datetime"
        ),
        positions_rows,
        description=gettext_lazy(
            "The positions partners took on proposals, in their own name, and why."
        ),
    ),
    "segments": Dataset(
        "segments",
        _cols(
            "proposal_id dimension:str segment:str participants agree disagree neutral "
            "agreement:float"
        ),
        segments_rows,
        description=gettext_lazy(
            "The votes on each proposal by age range, gender or postal area, for groups of "
            "enough participants only."
        ),
    ),
}


def download_links(*, consultation: Consultation, grouped: bool | None = None) -> list[dict]:
    """Every dataset of ``consultation`` with its description and its files, for the results
    page: ``{"name", "description", "files": [(dimension, [(format, url)])]}``; the dimension is
    "" except for the segments dataset, which has files per dimension. The datasets of the
    engine run are left out until results are published, the groups one while the published
    run has no opinion groups (its file would be empty). ``grouped``: whether it has, when the
    caller knows (None: asked)."""
    run_id = consultation.current_run_id
    if grouped is None:
        grouped = bool(run_id) and OpinionGroup.objects.filter(run_id=run_id).exists()
    out = []
    for name, spec in DATASETS.items():
        if (spec.needs_run and run_id is None) or (name == "groups" and not grouped):
            continue
        files = []
        for dimension in SEGMENT_DIMENSIONS if name == "segments" else ("",):
            urls = []
            for fmt in FORMATS:
                url = reverse(
                    "api:export", kwargs={"slug": consultation.slug, "dataset": name, "fmt": fmt}
                )
                urls.append((fmt, f"{url}?dimension={dimension}" if dimension else url))
            files.append((dimension, urls))
        out.append({"name": name, "description": spec.description, "files": files})
    return out


def export_rows(*, consultation: Consultation, dataset: str, dimension: str = "") -> Iterator[tuple]:
    """The rows of ``dataset``; raises ``ExportError``/``ExportNotFound`` before any row is read.

    The parameters are checked here (not lazily in the generator) so that a view can still
    answer 400/404 before it starts streaming.
    """
    spec = DATASETS.get(dataset)
    if spec is None:
        raise ExportNotFound(
            _("Unknown dataset “%(name)s”: choose one of %(choices)s.")
            % {"name": dataset[:40], "choices": ", ".join(DATASETS)}
        )
    params = {"consultation": consultation}
    if spec.needs_run:
        params["run"] = _run(consultation)
    if dataset == "segments":
        _check_dimension(dimension)  # now: the generator would only fail once streaming
        params["dimension"] = dimension
    return spec.rows(**params)


# --- Writers ---------------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value[:1] in _FORMULA_START:
        # A spreadsheet would run it as a formula (CSV injection); Parquet keeps the raw text.
        return "'" + value
    return value


class _Echo:
    def write(self, value):
        return value


def csv_stream(columns: Iterable[Column], rows: Iterable[tuple], *, batch: int = 500) -> Iterator[str]:
    """CSV text in pieces of ``batch`` rows (one piece per row would be slow to send)."""
    writer = csv.writer(_Echo())
    yield writer.writerow([c.name for c in columns])
    buffer = []
    for row in rows:
        buffer.append(writer.writerow([_csv_value(v) for v in row]))
        if len(buffer) >= batch:
            yield "".join(buffer)
            buffer = []
    if buffer:
        yield "".join(buffer)


class _Sink:
    """A write-only file for pyarrow that keeps only the bytes not yet sent."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data) -> int:
        data = bytes(data)
        self.parts.append(data)
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self):
        pass

    def close(self):
        self.closed = True

    def writable(self):
        return True

    def seekable(self):
        return False

    def drain(self) -> bytes:
        data = b"".join(self.parts)
        self.parts = []
        return data


def _arrow_schema(columns):
    import pyarrow as pa

    types = {
        "int": pa.int64(),
        "float": pa.float64(),
        "str": pa.string(),
        "bool": pa.bool_(),
        "datetime": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema([pa.field(c.name, types[c.type]) for c in columns])


def parquet_stream(
    columns: Iterable[Column], rows: Iterable[tuple], *, row_group_size: int | None = None
) -> Iterator[bytes]:
    """Parquet bytes, one row group at a time (zstd compressed); memory holds one group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row_group_size = row_group_size or ROW_GROUP_SIZE

    columns = tuple(columns)
    schema = _arrow_schema(columns)
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")

    def write(group):
        arrays = [
            pa.array([row[i] for row in group], type=schema.field(i).type)
            for i in range(len(columns))
        ]
        writer.write_batch(pa.record_batch(arrays, schema=schema), row_group_size=len(group))

    try:
        group = []
        for row in rows:
            group.append(row)
            if len(group) >= row_group_size:
                write(group)
                group = []
                yield sink.drain()
        if group:
            write(group)
    finally:
        writer.close()
    yield sink.drain()


def export_stream(*, consultation: Consultation, dataset: str, fmt: str, dimension: str = ""):
    """(chunks, content type, file name) of an export; errors are raised before streaming."""
    if fmt not in FORMATS:
        raise ExportNotFound(
            _("Unknown format “%(fmt)s”: choose csv or parquet.") % {"fmt": fmt[:20]}
        )
    rows = export_rows(consultation=consultation, dataset=dataset, dimension=dimension)
    columns = DATASETS[dataset].columns
    suffix = f"-{dimension}" if dataset == "segments" else ""
    filename = f"{consultation.slug}-{dataset}{suffix}.{fmt}"
    if fmt == "csv":
        return csv_stream(columns, rows), "text/csv; charset=utf-8", filename
    return parquet_stream(columns, rows), "application/vnd.apache.parquet", filename
