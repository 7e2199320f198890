"""Scale benchmark of the vote engine's numeric stages (no database).

Synthesises a consultation from real opinion structure: real Polis participants' vote rows are
resampled, each source conversation's statements being mapped onto its own block of the
5,000 target statements (conversations are tiled until the 5,000 are covered), and each row is
thinned to reach the target vote count. Then times each stage and its peak memory:
PCA, projection + clustering, group counts + repness, GIC, bridging (MF and min-over-groups).

    python bench/vote_engine_scale.py                     # 100k participants / 2M votes (< 5 min)
    python bench/vote_engine_scale.py --sizes 100k:2M 1M:10M
    python bench/vote_engine_scale.py --red-dwarf         # also time red-dwarf on real conversations

Each size runs in a fresh subprocess so that its peak RSS is clean. Per stage we report wall time
(untraced run), the tracemalloc peak of that stage (a second, traced run) (numpy/scipy buffers are traced) and the process peak RSS
(ru_maxrss) after the stage. Data: compdemocracy/openData (CC BY 4.0), read in place.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from consensus.engine import opinion as op  # noqa: E402
from consensus.engine.bridging import bridging_mf, min_group_agree  # noqa: E402

DATA = Path("/work/shared/data/polis")
SOURCES = [
    "vtaiwan.uberx",
    "austria-climate.5twd2jsnkf.2022-08-08",
    "scoop-hivemind.biodiversity",
    "ssis.land-bank-farmland.2rumnecbeh.2021-08-01",
    "canadian-electoral-reform",
    "scoop-hivemind.taxes",
    "brexit-consensus",
    "15-per-hour-seattle",
    "scoop-hivemind.ubi",
]
N_STATEMENTS = 5000


def parse_size(text: str) -> tuple[int, int]:
    def num(s: str) -> int:
        s = s.strip().lower()
        mult = {"k": 1_000, "m": 1_000_000}.get(s[-1], 1)
        return int(float(s[:-1] if s[-1] in "km" else s) * mult)

    n, v = text.split(":")
    return num(n), num(v)


def synthesise(n_participants: int, n_votes: int, seed: int = 0):
    """Resample real participants' vote rows onto N_STATEMENTS statements (see module doc)."""
    rng = np.random.default_rng(seed)
    exports = [op.load_polis_export(DATA / name) for name in SOURCES if (DATA / name).is_dir()]
    if not exports:
        raise SystemExit(f"no Polis data under {DATA}")
    # tile conversations over the statement range, each on its own block of columns
    moderated = []
    rows_all, cols_all, vals_all, n_rows = [], [], [], 0
    offset, i = 0, 0
    while offset < N_STATEMENTS:
        ex = exports[i % len(exports)]
        m = ex.matrix.votes
        m = m[np.diff(m.indptr) > 0].tocoo()
        width = min(m.shape[1], N_STATEMENTS - offset)
        keep = m.col < width
        rows_all.append(m.row[keep] + n_rows)
        cols_all.append(m.col[keep] + offset)
        vals_all.append(m.data[keep])
        moderated.append(ex.moderated_out[:width])
        n_rows += m.shape[0]
        offset += width
        i += 1
    src = sp.csr_matrix(
        (np.concatenate(vals_all), (np.concatenate(rows_all), np.concatenate(cols_all))),
        shape=(n_rows, N_STATEMENTS),
    )
    # csr_matrix((data, (row, col))) keeps explicit zeros; sort indices for row slicing
    src.sort_indices()
    pick = rng.integers(0, n_rows, n_participants)
    sample = src[pick]  # row fancy-indexing keeps stored zeros
    keep_p = min(1.0, n_votes / max(sample.nnz, 1))
    coo = sample.tocoo()
    keep = rng.random(coo.nnz) < keep_p
    vm = op.VoteMatrix.from_triples(
        coo.row[keep],
        coo.col[keep],
        coo.data[keep],
        n_participants=n_participants,
        n_statements=N_STATEMENTS,
    )
    return vm, np.concatenate(moderated)[:N_STATEMENTS]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(n_participants: int, n_votes: int, seed: int) -> dict:
    out = {"participants": n_participants, "target_votes": n_votes, "stages": []}
    t0 = time.perf_counter()
    vm, moderated = synthesise(n_participants, n_votes, seed)
    out["synth_s"] = time.perf_counter() - t0
    out["votes"] = vm.n_votes
    out["statements"] = vm.shape[1]
    out["rss_after_synth_mb"] = rss_mb()

    state = {}

    def stage(name, fn):
        # time without tracemalloc (it slows Python-heavy code several-fold), then run again
        # under tracemalloc for the stage's own peak allocation
        t = time.perf_counter()
        state[name] = fn()
        dt = time.perf_counter() - t
        tracemalloc.start()
        fn()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["stages"].append(
            {"stage": name, "s": dt, "traced_peak_mb": peak / 2**20, "rss_peak_mb": rss_mb()}
        )

    stage("PCA", lambda: op.pca(vm, moderated_out=moderated, seed=seed))

    def clustering():
        pos = op.project(vm, state["PCA"], moderated_out=moderated)
        in_conv = op.in_conv_mask(vm.votes_per_participant(), vm.shape[1])
        centres, lab = op.base_clusters(pos[in_conv], seed=seed)
        sizes = np.bincount(lab, minlength=len(centres)).astype(float)
        cands = op.group_clusters(
            centres, sizes, seed=seed, min_group_size=max(2, int(0.01 * in_conv.sum()))
        )
        k = max(cands, key=lambda kk: cands[kk][2])
        labels = np.full(vm.shape[0], -1)
        labels[np.flatnonzero(in_conv)] = cands[k][1][lab]
        return labels, in_conv.sum(), k

    stage("projection + clustering", clustering)
    labels = state["projection + clustering"][0]

    def repness():
        counts = op.group_vote_counts(vm, labels)
        return counts, op.representative_statements(counts, moderated_out=moderated)

    stage("group counts + repness", repness)
    counts = state["group counts + repness"][0]
    stage("GIC", lambda: op.group_informed_consensus(counts))
    stage("bridging: min over groups", lambda: min_group_agree(counts))
    stage("bridging: MF (ALS)", lambda: bridging_mf(vm, moderated_out=moderated, seed=seed))

    # the whole pipeline in one call, as the Celery task will run it
    t = time.perf_counter()
    res = op.compute_opinion_groups(vm, moderated_out=moderated, seed=seed)
    out["pipeline_s"] = time.perf_counter() - t
    out["clustered"] = int(res.in_conv.sum())
    out["groups"] = np.bincount(res.labels[res.labels >= 0]).tolist()
    mf = state["bridging: MF (ALS)"]
    out["mf_iterations"] = mf.n_iter
    out["peak_rss_mb"] = rss_mb()
    return out


def red_dwarf_compare() -> None:
    try:
        from reddwarf.implementations.polis import run_pipeline
    except ImportError:
        print("red-dwarf is not installed (pip install red-dwarf): skipped")
        return
    import warnings

    warnings.filterwarnings("ignore")
    print("\n| conversation | red-dwarf s | Concorde s | groups red-dwarf / Concorde |")
    print("|---|---|---|---|")
    for name in SOURCES:
        ex = op.load_polis_export(DATA / name)
        m = ex.matrix.votes.tocoo()
        votes = [
            {
                "participant_id": int(ex.participant_ids[r]),
                "statement_id": int(ex.statement_ids[c]),
                "vote": int(v),
                "modified": 0,
            }
            for r, c, v in zip(m.row, m.col, m.data, strict=True)
        ]
        mod = [int(t) for t in ex.statement_ids[ex.moderated_out]]
        t = time.perf_counter()
        rd = run_pipeline(
            votes=votes,
            mod_out_statement_ids=mod,
            min_user_vote_threshold=7,
            max_group_count=5,
            random_state=0,
        )
        t_rd = time.perf_counter() - t
        t = time.perf_counter()
        res = op.compute_opinion_groups(ex.matrix, moderated_out=ex.moderated_out, seed=0)
        t_us = time.perf_counter() - t
        k_rd = getattr(rd.clusterer, "n_clusters_", getattr(rd.clusterer, "n_clusters", "?"))
        print(f"| `{name}` | {t_rd:.2f} | {t_us:.2f} | {k_rd} / {len(res.group_ids)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description="vote engine scale benchmark")
    ap.add_argument(
        "--sizes", nargs="*", default=["100k:2M"], help="participants:votes, e.g. 100k:2M 1M:10M"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--red-dwarf", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        n, v = parse_size(args.child)
        print(json.dumps(run_one(n, v, args.seed)))
        return

    print(f"machine: {os.cpu_count()} CPUs; numpy {np.__version__}; statements {N_STATEMENTS}")
    for size in args.sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", size, "--seed", str(args.seed)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(f"{size}: failed\n{proc.stderr[-2000:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"\n### {r['participants']:,} participants x {r['statements']:,} statements, "
            f"{r['votes']:,} votes"
        )
        print(
            f"synthesis {r['synth_s']:.1f} s (not part of the engine); RSS after synthesis "
            f"{r['rss_after_synth_mb']:.0f} MB; clustered {r['clustered']:,}; "
            f"groups {r['groups']}; MF sweeps {r['mf_iterations']}\n"
        )
        print("| stage | wall s | traced peak MB (stage) | process peak RSS MB |")
        print("|---|---|---|---|")
        for s in r["stages"]:
            print(
                f"| {s['stage']} | {s['s']:.2f} | {s['traced_peak_mb']:.0f} | {s['rss_peak_mb']:.0f} |"
            )
        total = sum(s["s"] for s in r["stages"])
        print(f"| **sum of stages** | **{total:.2f}** | | **{r['peak_rss_mb']:.0f}** |")
        print(
            f"\n`compute_opinion_groups` end to end (PCA, clustering, repness, GIC, majority): "
            f"{r['pipeline_s']:.2f} s"
        )
    if args.red_dwarf:
        red_dwarf_compare()


if __name__ == "__main__":
    main()
