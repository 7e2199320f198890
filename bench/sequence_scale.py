"""How the per-request reads of the sequence and the consultation page grow with one consultation.

For each size N (accepted proposals in ONE consultation, 3 counters each, ``--votes-per`` votes
each from a pool of participants) in a scratch database (``concorde_seq_bench``, created from
scratch, migrated, dropped at the end unless ``--keep``), times what one request does today:

- ``sequence_candidates``: the two queries and the Python that builds a Candidate per proposal;
- ``CandidatePool.from_candidates``: the arrays (``consultations/sequence.py``);
- ``select_sequence`` on the built pool (mean of 20 calls): what a cached pool would cost;
- ``consultation_stats``: the counters of the consultation page (COUNT DISTINCT over its votes);
- ``sequence_start`` without the pool cache, on a cached pool, on a stale pool (rebuilt in the
  request or in the background), and a process's first start (no pool yet: the full build in
  the request, or awaited ``CONCORDE_SEQUENCE_POOL_FIRST_WAIT`` seconds, then the interim pool).

Usage:
    python bench/sequence_scale.py [--sizes 20000 100000] [--votes-per 5]
        [--database-url postgres://postgres@127.0.0.1:5432/postgres] [--markdown FILE]

Numbers feed docs/scaling.md. Nothing here is specific to this machine except the timings.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DBNAME = "concorde_seq_bench"


def admin(url):
    import psycopg

    return psycopg.connect(url, autocommit=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[20_000, 100_000])
    parser.add_argument("--votes-per", type=int, default=5)
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/postgres",
        help="any database of the server, used to create and drop the scratch one",
    )  # fmt: skip
    parser.add_argument("--markdown")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    parsed = urlparse(args.database_url)
    scratch = urlunparse(parsed._replace(path=f"/{DBNAME}"))
    with admin(args.database_url) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DBNAME}")
    env = dict(os.environ, DATABASE_URL=scratch)
    env.pop("DB_POOL_MAX_SIZE", None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env,
        check=True,
    )  # fmt: skip
    os.environ["DATABASE_URL"] = scratch
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    rows = []
    try:
        for n in args.sizes:
            rows.append(measure(n, args.votes_per))
            print(rows[-1], flush=True)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            with admin(args.database_url) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
    report(rows, args)


def measure(n: int, votes_per: int) -> dict:
    from django.db import connection
    from django.utils import timezone

    from causes.models import Cause
    from consultations import selectors
    from consultations.models import Consultation
    from consultations.sequence import CandidatePool, select_sequence

    cause = Cause.objects.create(title=f"Bench {n}", slug=f"bench-{n}", status="active")
    consultation = Consultation.objects.create(
        cause=cause, question="Bench?", slug=f"bench-{n}",
        starts_at=timezone.now() - timezone.timedelta(days=1),
    )  # fmt: skip
    t0 = time.perf_counter()
    with connection.cursor() as cur:
        words = "vélo musée cantine arbre école transport logement santé travail climat".split()
        cur.execute(
            """
            INSERT INTO consultations_proposal (consultation_id, content, author_name, status,
                refusal_reason, origin, external_id, source_stats, votes_total, created_at,
                updated_at)
            SELECT %s, 'Il faut ' || (%s::text[])[1 + g %% 10] || ' et ' || (%s::text[])[1 + (g / 10) %% 10]
                       || ' proposition ' || g, '', 'accepted', '', 'import', '', '{}', %s,
                   now() - make_interval(secs => g), now()
            FROM generate_series(1, %s) g
            """,
            [consultation.pk, words, words, votes_per, n],
        )
        participants = max(1000, n * votes_per // 50)
        cur.execute(
            "INSERT INTO consultations_participant (session_key, age_range, gender, postal_area, "
            "created_at) SELECT 'b%s-' || g, '', '', '', now() FROM generate_series(1, %s) g",
            [n, participants],
        )
        cur.execute(
            """
            INSERT INTO consultations_vote (participant_id, proposal_id, key, trust, in_sequence,
                created_at, updated_at)
            SELECT pa.first + ((p.rn * 7919 + k) %% %s), p.id,
                   (ARRAY['agree','disagree','neutral'])[1 + (p.rn + k) %% 3], 'sequence', true,
                   now(), now()
            FROM (SELECT id, row_number() OVER (ORDER BY id) rn FROM consultations_proposal
                  WHERE consultation_id = %s) p
            CROSS JOIN generate_series(0, %s - 1) k
            CROSS JOIN (SELECT min(id) AS first FROM consultations_participant
                        WHERE session_key LIKE 'b' || %s || '-%%') pa
            ON CONFLICT DO NOTHING
            """,
            [participants, consultation.pk, votes_per, str(n)],
        )
        cur.execute(
            "INSERT INTO consultations_proposalcounter (proposal_id, consultation_id, key, trust, "
            "count) SELECT v.proposal_id, %s, v.key, v.trust, count(*) FROM consultations_vote v "
            "JOIN consultations_proposal p ON p.id = v.proposal_id WHERE p.consultation_id = %s "
            "GROUP BY 1, 2, 3, 4",
            [consultation.pk, consultation.pk],
        )
        for table in ("proposal", "vote", "proposalcounter", "participant"):
            cur.execute(f"ANALYZE consultations_{table}")
        cur.execute(
            "SELECT count(*) FROM consultations_vote v JOIN consultations_proposal p "
            "ON p.id = v.proposal_id WHERE p.consultation_id = %s",
            [consultation.pk],
        )
        n_votes = cur.fetchone()[0]
    setup = time.perf_counter() - t0

    timings = {}
    t = time.perf_counter()
    candidates = selectors.sequence_candidates(consultation=consultation)
    timings["sequence_candidates"] = time.perf_counter() - t
    t = time.perf_counter()
    pool = CandidatePool.from_candidates(candidates)
    timings["pool_build"] = time.perf_counter() - t
    settings = selectors.sequence_settings(consultation)
    runs = []
    for seed in range(20):
        t = time.perf_counter()
        select_sequence(candidates=pool, voted_ids=(), settings=settings, rng=seed)
        runs.append(time.perf_counter() - t)
    timings["select_on_pool"] = statistics.mean(runs)
    t = time.perf_counter()
    selectors.consultation_stats(consultation=consultation)
    timings["consultation_stats"] = time.perf_counter() - t
    # A web process holds the pool only: keeping these alive would make every full garbage
    # collection during the starts below walk n Candidates and their dicts.
    del candidates, pool

    # The whole sequence_start (participant's votes, candidates, selection, exposures written),
    # without the pool cache (every start builds: the baseline) and with a warm cached pool.
    from django.test import override_settings

    from consultations import sequence_cache
    from consultations.models import Participant
    from consultations.services import sequence_start

    people = list(Participant.objects.filter(session_key__startswith=f"b{n}-").order_by("pk")[:14])

    def starts(group):
        wall, cpu = [], []
        for person in group:
            t, c = time.perf_counter(), time.process_time()
            sequence_start(consultation=consultation, participant=person, rng=person.pk)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return statistics.mean(wall), statistics.mean(cpu)

    with override_settings(CONCORDE_SEQUENCE_POOL_SECONDS=0):
        timings["start_uncached"], timings["start_uncached_cpu"] = starts(people[:3])
    with override_settings(CONCORDE_SEQUENCE_POOL_SECONDS=600):
        sequence_cache.sequence_pools_clear()
        sequence_start(consultation=consultation, participant=people[3])  # builds the pool
        timings["start_cached"], timings["start_cached_cpu"] = starts(people[4:14])
        # The start that finds the pool stale (another process's invalidation): rebuilt in
        # the request (the baseline), or served stale while a background thread rebuilds it.
        for background, key in ((False, "start_stale_inline"), (True, "start_stale_background")):
            with override_settings(CONCORDE_SEQUENCE_POOL_BACKGROUND=background):
                sequence_cache.cache.set(sequence_cache._version_key(consultation.pk), key, None)
                timings[key], _ = starts(people[:1])
                sequence_cache.wait_for_rebuilds()
        # A process's first start (no pool yet): the full build in the request (the baseline),
        # or the background build awaited CONCORDE_SEQUENCE_POOL_FIRST_WAIT seconds, then the
        # interim pool of the newest proposals.
        for background, key in ((False, "first_inline"), (True, "first_background")):
            with override_settings(CONCORDE_SEQUENCE_POOL_BACKGROUND=background):
                sequence_cache.sequence_pools_clear()
                interim = sequence_cache.stats["interim"]
                timings[key], _ = starts(people[1:2])
                sequence_cache.wait_for_rebuilds()
        first_interim = sequence_cache.stats["interim"] > interim
        sequence_cache.sequence_pools_clear()
    return {"n": n, "votes": n_votes, "setup_s": round(setup, 1), "first_interim": first_interim,
            **{k: round(v * 1000, 1) for k, v in timings.items()}}  # fmt: skip


def report(rows, args):
    lines = [
        "| accepted proposals | votes | sequence_candidates ms | pool build ms | "
        "select_sequence on a built pool ms | consultation_stats ms | "
        "sequence_start, no pool cache: wall / CPU ms | sequence_start, cached pool: wall / CPU ms | "
        "start finding a stale pool, rebuilt in the request / in the background: wall ms | "
        "first start of a process, full build in the request / awaited, else interim pool: "
        "wall ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['votes']:,} | {r['sequence_candidates']:,} | {r['pool_build']:,} "
            f"| {r['select_on_pool']:,} | {r['consultation_stats']:,} "
            f"| {r['start_uncached']:,} / {r['start_uncached_cpu']:,} "
            f"| {r['start_cached']:,} / {r['start_cached_cpu']:,} "
            f"| {r['start_stale_inline']:,} / {r['start_stale_background']:,} "
            f"| {r['first_inline']:,} / {r['first_background']:,}"
            f"{' (interim pool)' if r['first_interim'] else ' (full pool)'} |"
        )
    head = (
        f"`python bench/sequence_scale.py --sizes {' '.join(map(str, args.sizes))} "
        f"--votes-per {args.votes_per}`; {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end."
    )
    text = head + "\n\n" + "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
