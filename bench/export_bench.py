"""Open-data exports of a 1M-vote consultation: streamed, with bounded memory.

    DATABASE_URL=postgres://... python bench/export_bench.py [--sizes 100000,1000000] [--keep]

For each size (number of votes) the script builds a consultation with COPY: one proposal per
100 votes, one participant per 20 votes (each votes on 20 proposals, with an age range, a
gender and a postal area), the counters, and a published engine run with ideas, memberships
and scores for every proposal. Then every export (dataset × CSV/Parquet) runs in a fresh
child process, which reports:

- ``rss_before``: its resident memory once Django, psycopg and pyarrow are loaded and the
  database is connected (the baseline of the same process);
- ``peak_growth``: its peak resident memory (``VmHWM``) minus ``rss_before``;
- rows, bytes, seconds and rows/s.

Baseline in the same run: a naive export of the same data that lists everything first
(``list(queryset)`` of the votes with the voter's segment, aggregated in Python, then
written), whose memory grows with the number of votes. Bounded memory shows as the streamed
exports' ``peak_growth`` staying flat from 100k to 1M votes while the naive one grows ~10×.
Full output: docs/bench_export.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

VOTES_PER_PARTICIPANT = 20
VOTES_PER_PROPOSAL = 100
AGE_RANGES = ["18-24", "25-34", "35-49", "50-64", "65+", ""]
GENDERS = ["f", "m", "o", ""]


def rss_kib(field: str = "VmRSS") -> int:
    """This process's resident memory (``VmRSS``) or its peak (``VmHWM``), in KiB.

    ``VmHWM`` rather than ``ru_maxrss``: Linux carries ``ru_maxrss`` over from the parent
    across fork and exec, so a child would report the bench's own peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def setup_django():
    import django

    django.setup()


# --- Building the data -----------------------------------------------------------------------


def _copy(model, columns, rows):
    from django.db import connection

    qn = connection.ops.quote_name
    connection.ensure_connection()
    with connection.connection.cursor() as cursor:
        names = ", ".join(qn(model._meta.get_field(c).column) for c in columns)
        with cursor.copy(f"COPY {qn(model._meta.db_table)} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _model_defaults(model, given):
    """Columns and values for the concrete fields not in ``given`` (defaults, auto dates)."""
    from django.db import models
    from django.utils import timezone

    now = timezone.now()
    extra = {}
    for f in model._meta.concrete_fields:
        if f.primary_key or f.attname in given or f.name in given:
            continue
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            extra[f.name] = now
        elif f.null and not f.has_default():
            continue
        else:
            value = f.get_default()  # "" for a blank text field without a default
            if value is None:
                raise RuntimeError(f"{model.__name__}.{f.name} has no default")
            extra[f.name] = json.dumps(value) if isinstance(f, models.JSONField) else value
    return extra


def _mix(i: int) -> int:
    """A fixed pseudo-random number for participant ``i`` (segments independent of votes)."""
    return (i * 2654435761 % 2**32) >> 8


def cleanup(slugs) -> None:
    """Delete the bench consultations and their participants (votes go with both)."""
    from consultations.models import Consultation, Participant

    Consultation.objects.filter(slug__in=slugs).delete()
    for slug in slugs:
        Participant.objects.filter(external_id__startswith=f"bench:{slug}:").delete()


def build(n_votes: int) -> str:
    from django.db import connection, transaction
    from django.utils import timezone

    from causes.models import Cause
    from consensus.models import EngineRun, Idea, IdeaMembership, ProposalScore
    from consultations.models import Consultation, Participant, Proposal, Vote
    from consultations.services import counters_rebuild

    slug = f"bench-export-{n_votes}"
    cleanup([slug])
    cause, _ = Cause.objects.get_or_create(
        slug="bench-export", defaults={"title": "Bench export", "status": Cause.Status.ACTIVE}
    )
    consultation = Consultation.objects.create(cause=cause, slug=slug, question=f"Bench {n_votes}")
    n_proposals = max(VOTES_PER_PARTICIPANT, n_votes // VOTES_PER_PROPOSAL)
    n_participants = n_votes // VOTES_PER_PARTICIPANT
    now = timezone.now()
    t0 = time.perf_counter()
    with transaction.atomic():
        given = {"consultation_id", "content", "status", "origin", "external_id", "created_at"}
        extra = _model_defaults(Proposal, given)
        cols = ["consultation", "content", "status", "origin", "external_id", "created_at", *extra]
        _copy(
            Proposal,
            cols,
            (
                [consultation.pk, f"Il faut la proposition numéro {i} pour le banc d'essai", "accepted",
                 "import", f"b{i}", now, *extra.values()]
                for i in range(n_proposals)
            ),
        )
        pids = list(
            Proposal.objects.filter(consultation=consultation).order_by("pk").values_list("pk", flat=True)
        )
        given = {"external_id", "age_range", "gender", "postal_area", "created_at"}
        extra = _model_defaults(Participant, given)
        prefix = f"bench:{slug}:"
        _copy(
            Participant,
            ["external_id", "age_range", "gender", "postal_area", "created_at", *extra],
            (
                [f"{prefix}{i}", AGE_RANGES[_mix(i) % 6], GENDERS[_mix(i) // 6 % 4],
                 f"{75000 + _mix(i) // 24 % 20}", now, *extra.values()]
                for i in range(n_participants)
            ),
        )
        first = Participant.objects.filter(external_id=f"{prefix}0").values_list("pk", flat=True).get()
        keys = ("agree", "agree", "disagree", "neutral", "agree")
        given = {"participant_id", "proposal_id", "key", "trust", "in_sequence", "created_at"}
        extra = _model_defaults(Vote, given)
        step = max(1, n_proposals // VOTES_PER_PARTICIPANT)

        def votes():
            for i in range(n_participants):
                for j in range(VOTES_PER_PARTICIPANT):
                    p = pids[(i + j * step) % n_proposals]
                    yield [first + i, p, keys[(i * 7 + j) % 5], "trusted" if j % 3 else "sequence",
                           j % 3 == 0, now, *extra.values()]

        _copy(Vote, ["participant", "proposal", "key", "trust", "in_sequence", "created_at", *extra], votes())
    counters_rebuild(consultation=consultation)
    with transaction.atomic():
        run = EngineRun.objects.create(
            consultation=consultation, status=EngineRun.Status.DONE, finished_at=now, input_count=n_proposals
        )
        n_ideas = max(1, n_proposals // 50)
        Idea.objects.bulk_create(
            [
                Idea(run=run, consultation=consultation, number=k, label=f"Idée {k}", keywords=["a", "b"],
                     size=50, share=1 / n_ideas, scores={"zone": "consensus", "agreement": 0.5})
                for k in range(n_ideas)
            ],
            batch_size=2000,
        )
        idea_ids = dict(Idea.objects.filter(run=run).values_list("number", "pk"))
        _copy(
            IdeaMembership,
            ["run", "idea", "proposal", "similarity", "is_central"],
            ([run.pk, idea_ids[i % n_ideas], p, 0.5, i % 50 == 0] for i, p in enumerate(pids)),
        )
        score_cols = ["run", "proposal", "zone", "n_trusted", "n_sequence", "agreement", "disagreement",
                      "neutral", "top_score", "top_score_lower", "top_score_upper", "controversy",
                      "rejection", "group_counts"]
        _copy(
            ProposalScore,
            score_cols,
            ([run.pk, p, "consensus", 60, 30, 0.6, 0.2, 0.2, 0.5, 0.4, 0.6, 0.1, 0.1, "[]"] for p in pids),
        )
        Consultation.objects.filter(pk=consultation.pk).update(current_run=run)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    n = Vote.objects.filter(proposal__consultation=consultation).count()
    print(f"built {slug}: {n} votes, {n_proposals} proposals, {n_participants} participants "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    return slug


# --- Child processes -------------------------------------------------------------------------


def child(slug: str, dataset: str, fmt: str, naive: bool, row_group: int = 0) -> None:
    setup_django()
    import pyarrow  # noqa: F401 - loaded before the baseline, like in a web worker
    import pyarrow.parquet  # noqa: F401
    from django.db import connection

    from consultations import exports
    from consultations.models import Consultation

    consultation = Consultation.objects.select_related("cause").get(slug=slug)
    if row_group:
        exports.ROW_GROUP_SIZE = row_group
    connection.ensure_connection()
    before = rss_kib()
    t0 = time.perf_counter()
    if naive:
        rows_out, size = naive_segments(consultation)
    else:
        counted = [0]
        export_rows = exports.export_rows

        def counting(**kwargs):
            for row in export_rows(**kwargs):
                counted[0] += 1
                yield row

        exports.export_rows = counting
        chunks, _ct, _name = exports.export_stream(
            consultation=consultation, dataset=dataset, fmt=fmt,
            dimension="age_range" if dataset == "segments" else "",
        )
        size = 0
        with open(os.devnull, "wb") as out:
            for chunk in chunks:
                data = chunk.encode() if isinstance(chunk, str) else chunk
                size += len(data)
                out.write(data)
        rows_out = counted[0]
    seconds = time.perf_counter() - t0
    peak = rss_kib("VmHWM")
    print(json.dumps({"rss_before": before, "peak": peak, "seconds": seconds, "bytes": size, "rows": rows_out}))


def naive_segments(consultation):
    """The baseline: list every vote with its voter's segment, aggregate in Python, write CSV."""
    import csv
    import io

    from consultations.exports import SCORED_TRUST, min_segment_size
    from consultations.models import Proposal, Vote

    votes = list(
        Vote.objects.filter(
            proposal__consultation=consultation,
            proposal__status=Proposal.Status.ACCEPTED,
            trust__in=SCORED_TRUST,
        )
        .exclude(participant__age_range="")
        .values_list("proposal_id", "participant__age_range", "key")
    )
    cells: dict = {}
    for proposal_id, segment, key in votes:
        cell = cells.setdefault((proposal_id, segment), {"agree": 0, "disagree": 0, "neutral": 0})
        cell[key] += 1
    k = min_segment_size()
    out = io.StringIO()
    writer = csv.writer(out)
    n = 0
    for (proposal_id, segment), cell in sorted(cells.items()):
        total = sum(cell.values())
        if total >= k:
            writer.writerow([proposal_id, segment, total, cell["agree"], cell["disagree"], cell["neutral"]])
            n += 1
    return n, len(out.getvalue().encode())


def run_child(slug, dataset, fmt, naive=False, row_group=0) -> dict:
    cmd = [sys.executable, __file__, "--child", slug, dataset, fmt] + (["--naive"] if naive else [])
    if row_group:
        cmd += ["--row-group", str(row_group)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--keep", action="store_true", help="keep the bench consultations")
    parser.add_argument("--child", nargs=3, metavar=("SLUG", "DATASET", "FMT"))
    parser.add_argument("--naive", action="store_true")
    parser.add_argument("--row-group", type=int, default=0)
    args = parser.parse_args()
    if args.child:
        child(*args.child, naive=args.naive, row_group=args.row_group)
        return
    setup_django()
    from django.db import connection

    if connection.vendor != "postgresql":
        sys.exit("export_bench needs PostgreSQL: set DATABASE_URL")
    from consultations.exports import DATASETS

    sizes = [int(s) for s in args.sizes.split(",")]
    slugs = {n: build(n) for n in sizes}
    print()
    print("| votes | export | format | rows | MiB | seconds | rows/s | RSS before (MiB) | peak RSS (MiB) | peak growth (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = {}
    for n in sizes:
        jobs = [(d, f, False, 0) for d in DATASETS for f in ("csv", "parquet")]
        # The same Parquet with small row groups: memory follows the row group, not the table.
        jobs.append(("scores", "parquet", False, 2_000))
        jobs.append(("segments", "csv", True, 0))
        for dataset, fmt, naive, row_group in jobs:
            r = run_child(slugs[n], dataset, fmt, naive, row_group)
            growth = (r["peak"] - r["rss_before"]) / 1024
            label = "segments (naive: list all votes)" if naive else dataset
            if row_group:
                label += f" (row groups of {row_group:,})"
            results[(n, label, fmt)] = growth
            rows = r["rows"]
            rate = f"{rows / r['seconds']:,.0f}" if rows else "—"
            print(
                f"| {n:,} | {label} | {fmt} | {rows if rows is not None else '—'} | "
                f"{r['bytes'] / 2**20:.1f} | {r['seconds']:.2f} | {rate} | "
                f"{r['rss_before'] / 1024:.0f} | {r['peak'] / 1024:.0f} | {growth:.1f} |",
                flush=True,
            )
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        print()
        print(f"Peak growth, {large:,} votes vs {small:,} votes:")
        for (n, label, fmt), growth in results.items():
            if n == large:
                base = results[(small, label, fmt)]
                print(f"- {label} {fmt}: {base:.1f} → {growth:.1f} MiB")
    if not args.keep:
        cleanup(list(slugs.values()))


if __name__ == "__main__":
    main()
