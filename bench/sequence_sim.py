"""How fast does a selector find the true top proposals? A voting simulation.

Proposals have hidden vote shares (agree / disagree / neutral) and hidden
qualification propensities. Simulated voters open sequences of cards and vote
on every card by drawing from those hidden probabilities. Every vote is a
sequence vote (so verified = sequence counts). After a given number of votes
we rank all proposals by the lower bound of their top_score
(consensus.engine.scores) and measure precision at K against the true top K,
the K best by expected top_score.

Selectors, run on the same hidden proposals, each with the same voter seed:

- sequence: consultations.sequence.select_sequence (Make.org defaults);
- random: uniformly random proposals the voter has not voted on;
- fewest: the proposals with the fewest votes (equal exposure, random ties).

Usage: python bench/sequence_sim.py [--proposals 2000] [--top 50] [--seeds 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consensus.engine import scores as sc  # noqa: E402
from consultations.sequence import CandidatePool, SequenceSettings, select_sequence  # noqa: E402

QUALIFICATION_COLUMNS = np.array(
    [[sc.KEY_INDEX[q] for q in sc.QUALIFICATIONS[v]] for v in sc.VOTE_KEYS]
)  # (3 vote keys, 3 qualifications)


class World:
    """Hidden truth about the proposals."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        neutral = rng.beta(1.5, 10.0, n)
        agree_share = rng.beta(3.0, 2.0, n)  # share of agree among non-neutral votes
        agree = (1 - neutral) * agree_share
        self.vote_probs = np.stack([agree, (1 - neutral) - agree, neutral], axis=1)
        # P(qualification | vote key): rows = vote key, columns = its 3 qualifications.
        self.qual_probs = rng.beta(2.0, 6.0, (n, 3, 3))
        p, q = self.vote_probs, self.qual_probs
        like_it, doable, plat_a = q[:, 0, 0], q[:, 0, 1], q[:, 0, 2]
        no_way, impossible, plat_d = q[:, 1, 0], q[:, 1, 1], q[:, 1, 2]
        a, d = p[:, 0], p[:, 1]
        # Expected top_score with infinitely many votes.
        self.true_top_score = (
            a + a * like_it + a * doable - d * no_way - d * impossible - (a * plat_a + d * plat_d)
        )

    def votes(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One vote (with qualifications) per row, as count deltas of shape (k, len(KEYS))."""
        k = len(rows)
        cumulative = np.cumsum(self.vote_probs[rows], axis=1)
        key = (rng.random(k)[:, None] > cumulative[:, :2]).sum(axis=1)
        delta = np.zeros((k, len(sc.KEYS)))
        delta[np.arange(k), key] = 1
        quals = rng.random((k, 3)) < self.qual_probs[rows, key]
        delta[np.arange(k)[:, None], QUALIFICATION_COLUMNS[key]] = quals
        return delta


def precision_at(counts: np.ndarray, true_top: set[int], k: int) -> float:
    scored = sc.score_proposals(verified=counts, sequence=counts)
    ranking = np.argsort(-scored.top_score.lower_bound, kind="stable")[:k]
    return len(true_top & set(ranking.tolist())) / k


def simulate(
    *,
    selector: str,
    world: World,
    checkpoints: list[int],
    top: int,
    seed: int,
    settings: SequenceSettings,
) -> tuple[dict[int, float], float, int]:
    n = len(world.true_top_score)
    rng = np.random.default_rng(seed)
    true_top = set(np.argsort(-world.true_top_score)[:top].tolist())
    created = np.arange(n)  # all proposals exist from the start, id order = age
    pool = CandidatePool(
        ids=list(range(n)),
        author_keys=list(range(n)),
        created_at=created.tolist(),
        keywords=[frozenset()] * n,
        verified=np.zeros((n, len(sc.KEYS))),
        sequence=np.zeros((n, len(sc.KEYS))),
    )
    counts = pool.sequence  # the pool's own matrix, updated by add_counts
    results: dict[int, float] = {}
    votes_cast = 0
    select_time = 0.0
    requests = 0
    remaining = sorted(checkpoints)
    while remaining:
        voted: set[int] = set()
        sequences = rng.geometric(0.5)  # sequences this voter goes through (mean 2)
        for _ in range(sequences):
            start = time.perf_counter()
            if selector == "sequence":
                cards = select_sequence(
                    candidates=pool, voted_ids=voted, settings=settings, rng=rng
                )
                rows = np.array([c.id for c in cards], dtype=np.int64)
            else:
                unvoted = np.setdiff1d(np.arange(n), np.fromiter(voted, dtype=np.int64))
                if selector == "random":
                    rows = rng.choice(unvoted, size=min(settings.size, len(unvoted)), replace=False)
                else:  # fewest votes first, random ties
                    tie = rng.random(len(unvoted))
                    order = np.lexsort((tie, pool.sequence_votes[unvoted]))
                    rows = unvoted[order[: settings.size]]
            select_time += time.perf_counter() - start
            requests += 1
            if not len(rows):
                break
            pool.add_counts(rows=rows, delta=world.votes(rows, rng))
            voted.update(rows.tolist())
            votes_cast += len(rows)
            while remaining and votes_cast >= remaining[0]:
                results[remaining.pop(0)] = precision_at(counts, true_top, top)
    return results, select_time, requests


def votes_to_reach(results: dict[int, float], target: float) -> int | None:
    for budget in sorted(results):
        if results[budget] >= target:
            return budget
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proposals", type=int, default=2000)
    parser.add_argument("--top", type=int, default=50)
    parser.add_argument("--max-votes", type=int, default=200_000)
    parser.add_argument("--step", type=int, default=10_000, help="checkpoint spacing (votes)")
    parser.add_argument("--target", type=float, default=0.8, help="precision to reach")
    parser.add_argument("--seeds", type=int, default=2, help="independent worlds to average")
    parser.add_argument("--selectors", default="sequence,random,fewest")
    args = parser.parse_args()

    checkpoints = sorted({*range(args.step, args.max_votes + 1, args.step), 20_000, 50_000})
    checkpoints = [c for c in checkpoints if c <= args.max_votes]
    selectors = args.selectors.split(",")
    settings = SequenceSettings()
    table: dict[str, list[dict[int, float]]] = {s: [] for s in selectors}
    timings: dict[str, float] = {s: 0.0 for s in selectors}
    requests: dict[str, int] = {s: 0 for s in selectors}
    wall = time.perf_counter()
    for seed in range(args.seeds):
        world = World(args.proposals, np.random.default_rng(1000 + seed))
        for selector in selectors:
            results, spent, count = simulate(
                selector=selector,
                world=world,
                checkpoints=checkpoints,
                top=args.top,
                seed=seed,
                settings=settings,
            )
            table[selector].append(results)
            timings[selector] += spent
            requests[selector] += count

    mean = {
        s: {c: float(np.mean([r[c] for r in table[s]])) for c in checkpoints} for s in selectors
    }
    print(
        f"{args.proposals} proposals, precision@{args.top} of the ranking by top_score lower bound,"
        f" mean over {args.seeds} world(s); sequence size {settings.size}"
    )
    shown = [
        c for c in checkpoints if c in (20_000, 50_000, 100_000, 200_000) or c == checkpoints[-1]
    ]
    print(f"{'votes':>8} " + " ".join(f"{s:>9}" for s in selectors))
    for c in shown:
        print(f"{c:>8} " + " ".join(f"{mean[s][c]:>9.3f}" for s in selectors))
    print(f"votes needed to reach precision {args.target} (checkpoints every {args.step}):")
    needed = {s: votes_to_reach(mean[s], args.target) for s in selectors}
    for s in selectors:
        print(f"  {s:>9}: {needed[s] if needed[s] is not None else f'> {checkpoints[-1]}'}")
    if "sequence" in selectors:
        for s in selectors:
            if s == "sequence":
                continue
            if needed["sequence"] and needed[s]:
                print(f"  ratio {s} / sequence: {needed[s] / needed['sequence']:.2f}")
            elif needed["sequence"]:
                bound = checkpoints[-1] / needed["sequence"]
                print(f"  ratio {s} / sequence: > {bound:.2f} ({s} did not reach the target)")
            else:
                print(f"  ratio {s} / sequence: n/a (sequence did not reach the target)")
    for s in selectors:
        ms = 1000 * timings[s] / max(requests[s], 1)
        print(f"  selection time {s}: {ms:.2f} ms per sequence request ({requests[s]} requests)")
    print(f"wall time {time.perf_counter() - wall:.1f} s")


if __name__ == "__main__":
    main()
