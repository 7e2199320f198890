"""What a cached sequence pool costs the garbage collector of a web process.

    python bench/sequence_gc.py [--size 100000]

Builds a ``CandidatePool`` of N synthetic candidates (4 keywords each, from 5,000 words) in this
fresh process, drops the candidates (a web process keeps only the pool), then prints how many
objects the collector tracks because of the pool and how long a full collection takes with and
without it (best of 5). Every tracked object is walked by each full collection, which
CPython runs every few hundred thousand allocations; it pauses the whole process.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consultations.sequence import Candidate, CandidatePool  # noqa: E402


def full_collection_ms(repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        gc.collect()
        best = min(best, time.perf_counter() - t)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    args = parser.parse_args()
    n = args.size
    rng = np.random.default_rng(0)
    words = [f"mot{i}" for i in range(5000)]
    t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    gc.collect()
    base_objects, base_ms = len(gc.get_objects()), full_collection_ms()
    candidates = [
        Candidate(
            id=i,
            author_key=f"u{i % 5000}",
            created_at=t0 + datetime.timedelta(seconds=i),
            keywords=frozenset(words[j] for j in rng.integers(0, 5000, 4)),
        )
        for i in range(n)
    ]
    pool = CandidatePool.from_candidates(candidates)
    del candidates
    gc.collect()
    print(
        f"pool of {len(pool):,} candidates: {len(gc.get_objects()) - base_objects:,} objects "
        f"tracked by the garbage collector; full collection {full_collection_ms():.1f} ms "
        f"(without the pool {base_ms:.1f} ms)"
    )


if __name__ == "__main__":
    main()
