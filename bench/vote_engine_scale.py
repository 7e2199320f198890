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


PG_DB = "concorde_vote_bench"


def _template(model, connection, **fixed):
    """(columns, db values) for one row of ``model`` with its Python defaults, id included."""
    obj = model(**fixed)
    cols, vals = [], []
    for f in model._meta.concrete_fields:
        if f.primary_key:
            continue
        cols.append(f.column)
        vals.append(f.get_db_prep_save(f.pre_save(obj, True), connection))
    return cols, vals


def _copy(connection, model, rows_cols: list[str], rows, **fixed) -> int:
    """COPY rows into ``model``'s table; ``rows`` give ``rows_cols`` (plus "id"), the rest is fixed."""
    cols, vals = _template(model, connection, **fixed)
    other = [i for i, c in enumerate(cols) if c not in rows_cols]
    names = ["id", *rows_cols, *[cols[i] for i in other]]
    tail = [vals[i] for i in other]
    qn = connection.ops.quote_name
    sql = f"COPY {qn(model._meta.db_table)} ({', '.join(qn(n) for n in names)}) FROM STDIN"
    n = 0
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row([*row, *tail])
            n += 1
    return n


def _write_synthetic(connection, coo, cid: int) -> None:
    """COPY the synthetic participants, proposals, votes and counters (ids from 1)."""
    from django.db import transaction

    from consultations.models import Participant, Proposal, ProposalCounter, Vote

    n_participants = coo.shape[0]
    keys = np.array(["disagree", "neutral", "agree"])
    with transaction.atomic():
        _copy(
            connection,
            Participant,
            ["session_key"],
            ((i + 1, f"bench-{i}") for i in range(n_participants)),
        )
        _copy(
            connection,
            Proposal,
            ["content"],
            ((j + 1, f"proposal {j}") for j in range(N_STATEMENTS)),
            consultation_id=cid,
            status=Proposal.Status.ACCEPTED,
        )
        vals = coo.data.astype(np.int64) + 1
        _copy(
            connection,
            Vote,
            ["participant_id", "proposal_id", "key"],
            zip(
                range(1, coo.nnz + 1),
                (coo.row + 1).tolist(),
                (coo.col + 1).tolist(),
                keys[vals].tolist(),
                strict=True,
            ),
            participant_id=1,
            proposal_id=1,
            key="agree",
            trust="trusted",
        )
        counts = np.bincount(coo.col * 3 + vals, minlength=N_STATEMENTS * 3)
        nz = np.flatnonzero(counts)
        _copy(
            connection,
            ProposalCounter,
            ["proposal_id", "key", "count"],
            zip(
                range(1, nz.size + 1),
                (nz // 3 + 1).tolist(),
                keys[nz % 3].tolist(),
                counts[nz].tolist(),
                strict=True,
            ),
            proposal_id=1,
            key="agree",
            trust="trusted",
        )
        with connection.cursor() as cur:
            for model in (Participant, Proposal, Vote, ProposalCounter):
                t = model._meta.db_table
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT MAX(id) FROM {t}))"
                )
            cur.execute("ANALYZE")


def run_postgres(n_participants: int, n_votes: int, seed: int) -> dict:
    """Write the synthetic votes into a scratch database, then load and score them back."""
    import dj_database_url
    import psycopg

    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    cfg = dj_database_url.parse(base)
    admin = psycopg.connect(
        host=cfg["HOST"],
        port=cfg["PORT"] or 5432,
        user=cfg["USER"],
        password=cfg["PASSWORD"],
        dbname="postgres",
        autocommit=True,
    )
    admin.execute(f"DROP DATABASE IF EXISTS {PG_DB}")
    admin.execute(f"CREATE DATABASE {PG_DB}")
    os.environ["DATABASE_URL"] = base.rsplit("/", 1)[0] + "/" + PG_DB
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from consensus import services
    from consensus.models import EngineRun, ProposalScore
    from tests.factories import ConsultationFactory

    out = {"participants": n_participants, "target_votes": n_votes, "stages": []}

    def stage(name, fn):
        t = time.perf_counter()
        result = fn()
        out["stages"].append({"stage": name, "s": time.perf_counter() - t, "rss_peak_mb": rss_mb()})
        return result

    try:
        vm, _ = synthesise(n_participants, n_votes, seed)
        coo = vm.votes.tocoo()
        out["votes"] = int(coo.nnz)
        stage("migrate", lambda: call_command("migrate", verbosity=0))
        consultation = ConsultationFactory()
        cid = consultation.pk

        stage("write votes (COPY)", lambda: _write_synthetic(connection, coo, cid))
        pids = np.arange(1, N_STATEMENTS + 1, dtype=np.int64)
        loaded, _ids = stage("_load_vote_matrix", lambda: services._load_vote_matrix(cid, pids))
        out["loaded_votes"] = int(loaded.votes.nnz)
        stage("_load_counters", lambda: services._load_counters(cid, pids))
        run = EngineRun.objects.create(consultation_id=cid)
        cols = [
            "run_id",
            "proposal_id",
            "zone",
            "agreement",
            "disagreement",
            "neutral",
            "top_score",
            "top_score_lower",
            "top_score_upper",
            "controversy",
            "rejection",
        ]
        stage(
            "write ProposalScore (COPY)",
            lambda: _copy(
                connection,
                ProposalScore,
                cols,
                (
                    (int(p), run.pk, int(p), "limbo", 0.5, 0.3, 0.2, 0.4, 0.3, 0.5, 0.1, 0.2)
                    for p in pids
                ),
                run_id=run.pk,
                proposal_id=1,
                zone="limbo",
            ),
        )
    finally:
        connection.close()
        admin.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        admin.close()
    out["peak_rss_mb"] = rss_mb()
    return out


def _admin_connection():
    import dj_database_url
    import psycopg

    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    cfg = dj_database_url.parse(base)
    admin = psycopg.connect(
        host=cfg["HOST"],
        port=cfg["PORT"] or 5432,
        user=cfg["USER"],
        password=cfg["PASSWORD"],
        dbname="postgres",
        autocommit=True,
    )
    return admin, base.rsplit("/", 1)[0] + "/" + PG_DB


def e2e_prepare(n_participants: int, n_votes: int, seed: int) -> dict:
    """Process 1 of the end-to-end run: synthesise, migrate and COPY into the scratch database."""
    admin, url = _admin_connection()
    admin.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {PG_DB}")
    admin.close()
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from tests.factories import ConsultationFactory

    out = {"participants": n_participants}
    t = time.perf_counter()
    vm, _ = synthesise(n_participants, n_votes, seed)
    coo = vm.votes.tocoo()
    out["votes"] = int(coo.nnz)
    out["synth_s"] = time.perf_counter() - t
    t = time.perf_counter()
    call_command("migrate", verbosity=0)
    out["migrate_s"] = time.perf_counter() - t
    consultation = ConsultationFactory()
    t = time.perf_counter()
    _write_synthetic(connection, coo, consultation.pk)
    out["copy_s"] = time.perf_counter() - t
    out["consultation"] = consultation.pk
    connection.close()
    return out


# EngineRun.phase set by consensus.services when each stage of the votes run starts
E2E_STAGES = {
    "": "load counters and exposures (PostgreSQL)",
    "scores": "Make.org scores + zones",
    "loading votes": "load votes (PostgreSQL, binary COPY), weighting to the population",
    "opinion groups": "opinion groups (PCA, clustering, repness, GIC)",
    "bridging": "bridging (MF + min over groups)",
    "writing scores": "write back (scores, groups, 1 projection per participant)",
    "idea scores": "idea scores",
}
E2E_TIMINGS = {
    "": ("load_counters", "load_exposures"),
    "scores": ("scores",),
    "loading votes": ("load_votes", "weighting"),
    "opinion groups": ("opinion",),
    "bridging": ("bridging",),
    "writing scores": ("write_scores",),
    "idea scores": ("idea_scores",),
}


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# --weighting: the population shares of the second engine run (docs/weighting.md), and which
# participants said who they are (7 in 10; age range and gender by their id, so the same each time)
POPULATION = {
    "age_range": {"18-24": 10, "25-34": 17, "35-49": 25, "50-64": 25, "65+": 23},
    "gender": {"f": 52, "m": 48},
}
DEMOGRAPHICS_SQL = """
UPDATE consultations_participant SET
  age_range = (ARRAY['18-24', '25-34', '35-49', '50-64', '65+'])[1 + (id / 10) % 5],
  gender = CASE WHEN (id / 50) % 3 = 0 THEN 'm' ELSE 'f' END
WHERE id % 10 < 7
"""


def _set_weighting(consultation_id: int, on: bool) -> None:
    from django.db import connection

    from consultations.models import PopulationShare

    PopulationShare.objects.filter(consultation_id=consultation_id).delete()
    if not on:
        return
    with connection.cursor() as cursor:
        cursor.execute(DEMOGRAPHICS_SQL)
    PopulationShare.objects.bulk_create(
        PopulationShare(consultation_id=consultation_id, dimension=d, value=v, percent=p)
        for d, shares in POPULATION.items()
        for v, p in shares.items()
    )


def e2e_engine(consultation_id: int, weighting: bool = False) -> dict:
    """Process 2: the engine alone, as its Celery task runs it: load, compute, write back.

    Calls ``consensus.services.engine_run_finalize`` on a RUNNING votes run; an RSS sampler
    thread (every 20 ms) attributes the process's resident memory to the stage in progress.
    """
    import threading

    _admin, url = _admin_connection()
    _admin.close()
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db.models import Max
    from django.utils import timezone

    from consensus import services
    from consensus.models import EngineRun, OpinionGroup, ParticipantProjection, ProposalScore
    from consultations.models import Consultation, Proposal

    rss_start = _rss_now_mb()
    current = {"phase": ""}
    peaks: dict[str, float] = {}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            phase = current["phase"]
            peaks[phase] = max(peaks.get(phase, 0.0), _rss_now_mb())
            time.sleep(0.02)

    record = services._record

    def tracking_record(run_id, *, phase=None, **kwargs):
        if phase is not None:
            peaks[current["phase"]] = max(peaks.get(current["phase"], 0.0), _rss_now_mb())
            current["phase"] = phase
        return record(run_id, phase=phase, **kwargs)

    services._record = tracking_record
    _set_weighting(consultation_id, weighting)  # not timed
    consultation = Consultation.objects.get(pk=consultation_id)
    agg = Proposal.objects.filter(consultation=consultation).aggregate(n=Max("pk"))
    run = EngineRun.objects.create(
        consultation=consultation,
        kind=EngineRun.Kind.VOTES,
        parameters=services.engine_parameters_validate({}),
        status=EngineRun.Status.RUNNING,
        started_at=timezone.now(),
        input_max_id=agg["n"],
        input_count=Proposal.objects.filter(consultation=consultation).count(),
    )
    load_start = os.getloadavg()[0]
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t = time.perf_counter()
    result = services.engine_run_finalize(run_id=run.pk)
    wall = time.perf_counter() - t
    stop.set()
    thread.join()
    services._record = record
    run.refresh_from_db()
    consultation.refresh_from_db()
    m = run.metrics
    return {
        "result": result,
        "wall_s": wall,
        "load": [load_start, os.getloadavg()[0]],
        "rss_start_mb": rss_start,
        "peak_rss_mb": rss_mb(),
        "timings": run.timings,
        "peaks": peaks,
        "published": consultation.current_run_id == run.pk,
        "n_participants": m.get("n_participants"),
        "n_votes": m.get("n_votes"),
        "group_sizes": m.get("group_sizes"),
        "zones": m.get("zones"),
        "bridging": m.get("bridging"),
        "weighting": {k: v for k, v in (m.get("weighting") or {}).items() if k != "composition"},
        "rows": {
            "ProposalScore": ProposalScore.objects.filter(run=run).count(),
            "OpinionGroup": OpinionGroup.objects.filter(run=run).count(),
            "ParticipantProjection": ParticipantProjection.objects.filter(run=run).count(),
        },
    }


def _prepared_consultation(size: str) -> int | None:
    """The consultation of a scratch database kept by ``--keep-db`` for this size, if any."""
    admin, _url = _admin_connection()
    try:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [PG_DB]).fetchone():
            return None
    finally:
        admin.close()
    import psycopg

    with psycopg.connect(_url) as conn:
        row = conn.execute(
            "SELECT c.id, (SELECT count(*) FROM consultations_participant) "
            "FROM consultations_consultation c ORDER BY c.id LIMIT 1"
        ).fetchone()
        if row is None or row[1] != parse_size(size)[0]:
            return None
        # forget the earlier runs of the engine stage, dependants first
        conn.execute("UPDATE consultations_consultation SET current_run_id = NULL")
        for table in (
            "consensus_participantprojection", "consensus_proposalscore", "consensus_opiniongroup",
            "consensus_ideamembership", "consensus_idea", "consensus_enginechunk",
            "consensus_proposalembedding", "consensus_enginerun",
        ):  # fmt: skip
            conn.execute(f"DELETE FROM {table}")
    return row[0]


def run_end_to_end(size: str, seed: int, *, keep_db: bool = False, weighting: bool = False) -> None:
    print(f"\n### End to end, one engine process: {size}")
    consultation_id = _prepared_consultation(size) if keep_db else None
    if consultation_id is None:
        prep = subprocess.run(
            [sys.executable, __file__, "--e2e-prepare", size, "--seed", str(seed)],
            capture_output=True,
            text=True,
            check=False,
        )
        if prep.returncode != 0:
            print(f"preparation failed\n{prep.stderr[-3000:]}")
            return
        p = json.loads(prep.stdout.strip().splitlines()[-1])
        consultation_id = p["consultation"]
        print(
            f"preparation (process 1, not the engine): synthesis {p['synth_s']:.1f} s, migrate "
            f"{p['migrate_s']:.1f} s, COPY of {p['participants']:,} participants / "
            f"{p['votes']:,} votes / {N_STATEMENTS:,} proposals {p['copy_s']:.1f} s"
        )
    else:
        print(f"preparation: reusing the scratch database {PG_DB} kept by --keep-db")
    results = []
    try:
        # with --weighting: the same engine run without population shares, then with them
        for weighted in (False, True) if weighting else (False,):
            eng = subprocess.run(
                [sys.executable, __file__, "--e2e-engine", str(consultation_id)]
                + (["--e2e-weighting"] if weighted else []),
                capture_output=True,
                text=True,
                check=False,
            )
            if eng.returncode != 0:
                print(f"engine failed\n{eng.stderr[-3000:]}")
                return
            results.append(json.loads(eng.stdout.strip().splitlines()[-1]))
    finally:
        if not keep_db:
            admin, _url = _admin_connection()
            admin.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
            admin.close()
    for r in results:
        _print_engine(r)
    if weighting:
        base, weighted = results
        w = weighted["weighting"]
        print(
            f"\nWeighting to the population (docs/weighting.md), second run: "
            f"{weighted['timings'].get('weighting', 0):.2f} s for {w.get('weighted', 0):,} of "
            f"{w.get('voters', 0):,} participants weighted (effective sample size "
            f"{w.get('effective')}, largest weight {w.get('max_weight')}, converged "
            f"{w.get('converged')} in {w.get('iterations')} iterations); whole run "
            f"{weighted['wall_s']:.2f} s against {base['wall_s']:.2f} s without shares "
            f"(ratio {weighted['wall_s'] / base['wall_s']:.2f}), peak RSS "
            f"{weighted['peak_rss_mb']:.0f} MB against {base['peak_rss_mb']:.0f} MB"
        )


def _print_engine(r: dict) -> None:
    print(
        f"load average (1 min) at the engine's start / end: {r['load'][0]:.1f} / "
        f"{r['load'][1]:.1f} on {os.cpu_count()} CPUs (the machine is shared)"
    )
    print(
        f"engine (process 2): {r['n_participants']:,} participants, {r['n_votes']:,} votes loaded; "
        f"groups {r['group_sizes']}; zones {r['zones']}; bridging {r['bridging']}; "
        f"rows written {r['rows']}; published {r['published']}\n"
    )
    print("| stage | wall s | peak RSS during stage MB |")
    print("|---|---|---|")
    for phase, label in E2E_STAGES.items():
        secs = sum(r["timings"].get(k, 0.0) for k in E2E_TIMINGS.get(phase, ()))
        peak = r["peaks"].get(phase)
        secs_txt = f"{secs:.2f}" if phase in E2E_TIMINGS else "-"
        print(f"| {label} | {secs_txt} | {peak:.0f} |" if peak else f"| {label} | {secs_txt} | - |")
    print(
        f"| **total (engine_run_finalize, wall)** | **{r['wall_s']:.2f}** | "
        f"**{r['peak_rss_mb']:.0f}** (process peak, ru_maxrss) |"
    )
    print(
        f"\nRSS of the engine process before the run (Django, numpy, scipy, sklearn loaded): "
        f"{r['rss_start_mb']:.0f} MB"
    )


def red_dwarf_synthetic(size: str, seed: int, timeout: int) -> None:
    """red-dwarf's pipeline and Concorde's on the same synthetic matrix, each in its own process."""
    print(f"\n### red-dwarf vs Concorde on the synthetic {size} (opinion groups only)\n")
    rows = {}
    for who in ("concorde", "red-dwarf"):
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--rd-child", size, "--rd-who", who,
                 "--seed", str(seed)],
                capture_output=True, text=True, check=False, timeout=timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            rows[who] = None
            print(f"{who}: no result within {timeout} s")
            continue
        if proc.returncode != 0:
            rows[who] = None
            print(f"{who}: failed (exit {proc.returncode})\n{proc.stderr[-1500:]}")
            continue
        rows[who] = json.loads(proc.stdout.strip().splitlines()[-1])
    print("| implementation | wall s | peak RSS MB | groups |")
    print("|---|---|---|---|")
    for who, r in rows.items():
        if r:
            print(f"| {who} | {r['s']:.2f} | {r['rss_mb']:.0f} | {r['groups']} |")
    if rows.get("concorde") and rows.get("red-dwarf"):
        print(
            f"\nratio red-dwarf / Concorde: {rows['red-dwarf']['s'] / rows['concorde']['s']:.1f}x "
            f"time, {rows['red-dwarf']['rss_mb'] / rows['concorde']['rss_mb']:.1f}x memory"
        )


def rd_child(size: str, who: str, seed: int) -> dict:
    n, v = parse_size(size)
    vm, moderated = synthesise(n, v, seed)
    if who == "concorde":
        t = time.perf_counter()
        res = op.compute_opinion_groups(vm, moderated_out=moderated, seed=seed)
        return {"s": time.perf_counter() - t, "rss_mb": rss_mb(), "groups": len(res.group_ids)}
    import warnings

    from reddwarf.implementations.polis import run_pipeline

    warnings.filterwarnings("ignore")
    m = vm.votes.tocoo()
    votes = [
        {"participant_id": int(r), "statement_id": int(c), "vote": int(x), "modified": 0}
        for r, c, x in zip(m.row, m.col, m.data, strict=True)
    ]
    del m, vm
    mod = [int(j) for j in np.flatnonzero(moderated)]
    t = time.perf_counter()
    rd = run_pipeline(
        votes=votes,
        mod_out_statement_ids=mod,
        min_user_vote_threshold=7,
        max_group_count=5,
        random_state=seed,
    )
    k = getattr(rd.clusterer, "n_clusters_", getattr(rd.clusterer, "n_clusters", "?"))
    return {"s": time.perf_counter() - t, "rss_mb": rss_mb(), "groups": k}


def print_postgres(r: dict) -> None:
    print(
        f"\n### PostgreSQL stage: {r['participants']:,} participants, {r['votes']:,} votes "
        f"(loaded back {r['loaded_votes']:,})\n"
    )
    print("| stage | wall s | process peak RSS MB |")
    print("|---|---|---|")
    for s in r["stages"]:
        print(f"| {s['stage']} | {s['s']:.2f} | {s['rss_peak_mb']:.0f} |")


def run_in_child(flag: str, size: str, seed: int) -> dict | None:
    """Run one size in a fresh process (so peak RSS is per size); its last stdout line is JSON."""
    proc = subprocess.run(
        [sys.executable, __file__, flag, size, "--seed", str(seed)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        print(f"{size}: failed\n{proc.stderr[-2000:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description="vote engine scale benchmark")
    ap.add_argument(
        "--sizes", nargs="*", default=["100k:2M"], help="participants:votes, e.g. 100k:2M 1M:10M"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--red-dwarf", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument(
        "--postgres",
        action="store_true",
        help=f"only the PostgreSQL stage: COPY into a scratch {PG_DB} database, load back, write scores",
    )
    ap.add_argument("--pg-child", help=argparse.SUPPRESS)
    ap.add_argument(
        "--end-to-end",
        metavar="SIZE",
        help="one engine process on PostgreSQL: load, compute everything, write back (e.g. 1M:10M)",
    )
    ap.add_argument(
        "--red-dwarf-size",
        metavar="SIZE",
        help="red-dwarf and Concorde on the same synthetic matrix (e.g. 100k:2M)",
    )
    ap.add_argument("--red-dwarf-timeout", type=int, default=900)
    ap.add_argument(
        "--keep-db",
        action="store_true",
        help=f"keep the scratch {PG_DB} database and reuse it next time (same size)",
    )
    ap.add_argument("--e2e-prepare", help=argparse.SUPPRESS)
    ap.add_argument("--e2e-engine", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--e2e-weighting", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--weighting",
        action="store_true",
        help="with --end-to-end: run the engine again with population shares (7 in 10 "
        "participants said who they are) and compare",
    )
    ap.add_argument("--rd-child", help=argparse.SUPPRESS)
    ap.add_argument("--rd-who", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.e2e_prepare:
        n, v = parse_size(args.e2e_prepare)
        print(json.dumps(e2e_prepare(n, v, args.seed)))
        return
    if args.e2e_engine:
        print(json.dumps(e2e_engine(args.e2e_engine, args.e2e_weighting), default=str))
        return
    if args.rd_child:
        print(json.dumps(rd_child(args.rd_child, args.rd_who, args.seed), default=str))
        return
    if args.end_to_end or args.red_dwarf_size:
        print(f"machine: {os.cpu_count()} CPUs; numpy {np.__version__}; statements {N_STATEMENTS}")
        if args.end_to_end:
            run_end_to_end(
                args.end_to_end, args.seed, keep_db=args.keep_db, weighting=args.weighting
            )
        if args.red_dwarf_size:
            red_dwarf_synthetic(args.red_dwarf_size, args.seed, args.red_dwarf_timeout)
        return
    if args.pg_child:
        n, v = parse_size(args.pg_child)
        print(json.dumps(run_postgres(n, v, args.seed)))
        return
    if args.postgres:
        for size in args.sizes:
            result = run_in_child("--pg-child", size, args.seed)
            if result is not None:
                print_postgres(result)
        return
    if args.child:
        n, v = parse_size(args.child)
        print(json.dumps(run_one(n, v, args.seed)))
        return

    print(f"machine: {os.cpu_count()} CPUs; numpy {np.__version__}; statements {N_STATEMENTS}")
    for size in args.sizes:
        r = run_in_child("--child", size, args.seed)
        if r is None:
            continue
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
