"""Compare bridging scores with the plain agree rate on real Polis conversations.

Usage: python bench/bridging_compare.py [--data /work/shared/data/polis] [--detail NAME ...]

Prints, per conversation, Spearman correlations between four statement scores (plain agree rate,
group-informed consensus, min-over-groups agree rate, Community-Notes-style intercept), the
top-10 overlap of each with GIC, and for the --detail conversations the statements that move
most between the agree-rate ranking and the MF-intercept ranking. Output is pasted into
docs/bridging.md. Data: compdemocracy/openData (CC BY 4.0), read in place, never copied.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consensus.engine.bridging import agree_rate, bridging_mf, min_group_agree  # noqa: E402
from consensus.engine.opinion import compute_opinion_groups, load_polis_export  # noqa: E402

DETAIL = ["15-per-hour-seattle", "brexit-consensus", "scoop-hivemind.biodiversity"]


def rank_desc(x: np.ndarray) -> np.ndarray:
    order = np.argsort(-x, kind="stable")
    rank = np.empty(len(x), dtype=int)
    rank[order] = np.arange(1, len(x) + 1)
    return rank


def short(text: str, n: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/work/shared/data/polis")
    ap.add_argument("--detail", nargs="*", default=DETAIL)
    ap.add_argument("--movers", type=int, default=4)
    args = ap.parse_args()
    base = Path(args.data)
    convs = sorted(p.name for p in base.iterdir() if (p / "comments.csv").exists())

    print(
        "| conversation | stmts | groups | MF s | rho(MF, agree) | rho(GIC, agree) | rho(MF, GIC) "
        "| rho(min, GIC) | top-10 ∩ GIC: agree / min / MF |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    details = []
    for name in convs:
        ex = load_polis_export(base / name)
        vm = ex.matrix
        res = compute_opinion_groups(vm, moderated_out=ex.moderated_out, seed=0)
        t0 = time.perf_counter()
        fit = bridging_mf(vm, moderated_out=ex.moderated_out)
        dt = time.perf_counter() - t0
        ok = ~ex.moderated_out & ~np.isnan(fit.statement_intercept)
        scores = {
            "agree": agree_rate(vm)[ok],
            "GIC": res.gic[ok],
            "min": min_group_agree(res.counts)[ok],
            "MF": fit.statement_intercept[ok],
        }
        top = {k: set(np.argsort(-v, kind="stable")[:10].tolist()) for k, v in scores.items()}

        def rho(a, b, scores=scores):
            return spearmanr(scores[a], scores[b])[0]

        print(
            f"| `{name}` | {ok.sum()} | {len(res.group_ids)} | {dt:.2f} | {rho('MF', 'agree'):.2f} "
            f"| {rho('GIC', 'agree'):.2f} | {rho('MF', 'GIC'):.2f} | {rho('min', 'GIC'):.2f} "
            f"| {len(top['agree'] & top['GIC'])} / {len(top['min'] & top['GIC'])} / "
            f"{len(top['MF'] & top['GIC'])} |"
        )
        if name in args.detail:
            details.append((name, ex, res, fit, ok, scores))

    for name, ex, res, fit, ok, scores in details:
        cols = np.flatnonzero(ok)
        r_agree, r_mf = rank_desc(scores["agree"]), rank_desc(scores["MF"])
        move = r_agree - r_mf  # > 0: MF ranks it higher than the plain agree rate
        n = len(cols)
        print(f"\n#### `{name}` ({n} statements, {len(res.group_ids)} groups; rank 1 = best)\n")
        print(
            "| tid | rank by agree rate | rank by MF intercept | agree rate | per-group agree "
            "| MF intercept | MF factor | statement |"
        )
        print("|---|---|---|---|---|---|---|---|")
        up = np.argsort(-move, kind="stable")[: args.movers]
        down = np.argsort(move, kind="stable")[: args.movers]
        for label, sel in (("up", up), ("down", down)):
            for i in sel:
                j = cols[i]
                c = res.counts
                per_group = " / ".join(
                    f"{(c.agree[g, j] + 1) / (c.seen[g, j] + 2):.2f}"
                    for g in range(len(c.group_ids))
                )
                print(
                    f"| {ex.statement_ids[j]} ({label}) | {r_agree[i]} | {r_mf[i]} "
                    f"| {scores['agree'][i]:.2f} | {per_group} | {fit.statement_intercept[j]:+.3f} "
                    f"| {fit.statement_factor[j]:+.2f} | {short(ex.texts[j])} |"
                )


if __name__ == "__main__":
    main()
