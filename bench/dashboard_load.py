"""Latency of the public results dashboard under load, on 20,000 proposals and 2M votes.

What runs, all on this machine over loopback:

- a scratch database (``concorde_dashboard_bench``, created, migrated, dropped at the end unless
  ``--keep``) holding one open consultation with ``--proposals`` accepted proposals,
  ``--participants`` participants (age range, gender and postal area drawn at random) and
  ``--votes`` votes written with ``COPY`` (four camps that vote alike, 70 % trusted, 25 %
  sequence, 5 % untrusted), its counters rebuilt by ``counters_rebuild`` and qualification
  counters added;
- precomputed engine results inserted as rows (no engine run: that is bench/engine_scale.py and
  bench/vote_engine_scale.py): one done ``EngineRun`` made current, ideas of 40 proposals with
  their scores and memberships (3 central each), four opinion groups with representative
  proposals and one ``ParticipantProjection`` row per participant;
- gunicorn (``--workers`` sync workers, DEBUG off, persistent connections, Redis cache on
  ``--redis-url``) serving Concorde;
- ``--concurrency`` clients (asyncio + httpx) hammering one URL at a time for ``--duration``
  seconds each.

Measured, per URL: p50 / p95 / p99 client-side latency and requests per second, with the cache
warm (the steady state: the cache key is the current run, so it stays warm until another run is
published), and the first, cold request of each after a cache flush (built from the database).
The baseline, in the same run and with the same load, is ``GET /health/`` (a ``SELECT 1``, a
Redis round trip and a JSON answer). Target: the dashboard page under 150 ms at p95.

Usage:
    python bench/dashboard_load.py [--database-url postgres://postgres@127.0.0.1:5432/concorde]
        [--redis-url redis://127.0.0.1:6379/3] [--duration 15] [--concurrency 4] [--workers 2]
        [--proposals 20000] [--votes 2000000] [--participants 50000] [--rounds 3]
        [--markdown docs/bench_dashboard.md] [--keep] [--reuse]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.vote_load import admin_execute, free_port, percentile, with_database  # noqa: E402

SCRATCH_DB = "concorde_dashboard_bench"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/concorde"
SLUG = "bench-dashboard"
IDEA_SIZE = 40
CAMPS = 4
THEMES = [
    "des pistes cyclables sécurisées",
    "des musées gratuits le dimanche",
    "des repas bio dans les cantines",
    "des arbres dans chaque rue",
    "des transports en commun la nuit",
    "des jardins partagés",
    "des bibliothèques ouvertes le soir",
    "des concerts gratuits en plein air",
]


def seed(n_proposals: int, n_participants: int, n_votes: int, rng_seed: int = 11) -> dict:
    """Consultation, votes (COPY) and precomputed results; runs inside this process (Django)."""
    import django

    django.setup()
    from django.db import connection, transaction
    from django.utils import timezone

    from causes.models import Cause
    from consensus.models import (
        EngineRun,
        Idea,
        IdeaMembership,
        OpinionGroup,
        ParticipantProjection,
    )
    from consultations.models import Consultation, Participant, Proposal, ProposalCounter, Vote
    from consultations.services import counters_rebuild

    rng = np.random.default_rng(rng_seed)
    timings = {}
    t0 = time.perf_counter()
    cause = Cause.objects.create(title="Bench", slug="bench", summary="Bench", status="active")
    consultation = Consultation.objects.create(
        cause=cause,
        question="Comment rendre la ville plus agréable ?",
        slug=SLUG,
        starts_at=timezone.now() - timezone.timedelta(days=30),
        ends_at=timezone.now() + timezone.timedelta(days=30),
    )
    theme_of = rng.integers(0, len(THEMES), n_proposals)
    Proposal.objects.bulk_create(
        (
            Proposal(
                consultation=consultation,
                status=Proposal.Status.ACCEPTED,
                content=f"Il faut {THEMES[theme_of[i]]}, proposition numéro {i}",
                author_name="Bench",
            )
            for i in range(n_proposals)
        ),
        batch_size=5_000,
    )
    proposal_ids = np.array(
        Proposal.objects.filter(consultation=consultation)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    ages = [v for v, _label in Participant.AgeRange.choices]
    genders = [v for v, _label in Participant.Gender.choices]
    Participant.objects.bulk_create(
        (
            Participant(
                session_key=f"bench-{i}",
                age_range=ages[rng.integers(len(ages))] if rng.random() < 0.8 else "",
                gender=genders[rng.integers(len(genders))] if rng.random() < 0.7 else "",
                postal_area=f"{69000 + rng.integers(0, 10) * 10}" if rng.random() < 0.6 else "",
            )
            for i in range(n_participants)
        ),
        batch_size=5_000,
    )
    participant_ids = np.array(
        Participant.objects.filter(session_key__startswith="bench-")
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    timings["proposals and participants"] = time.perf_counter() - t0

    # Votes: each participant votes on a block of distinct proposals (start + k * step).
    t0 = time.perf_counter()
    per = max(1, n_votes // n_participants)
    camp = np.arange(n_participants) % CAMPS
    # camp c agrees with themes where (theme + c) % 4 < 2, disagrees otherwise, mostly
    now = timezone.now().isoformat()
    columns = [
        "participant_id",
        "proposal_id",
        "key",
        "trust",
        "in_sequence",
        "created_at",
        "updated_at",
    ]
    written = 0
    with connection.cursor() as cursor, transaction.atomic():
        sql = f"COPY {Vote._meta.db_table} ({', '.join(columns)}) FROM STDIN"
        with cursor.cursor.copy(sql) as copy:
            for lo in range(0, n_participants, 5_000):
                hi = min(n_participants, lo + 5_000)
                n = hi - lo
                start = rng.integers(0, n_proposals, n)
                step = rng.integers(1, max(2, n_proposals // per), n)
                cols = (start[:, None] + np.arange(per)[None, :] * step[:, None]) % n_proposals
                themes = theme_of[cols]
                likes = ((themes + camp[lo:hi, None]) % 4) < 2
                draw = rng.random(cols.shape)
                keys = np.where(
                    draw < 0.15, "neutral", np.where((draw < 0.85) == likes, "agree", "disagree")
                )
                trust_draw = rng.random(cols.shape)
                trust = np.where(
                    trust_draw < 0.70,
                    "trusted",
                    np.where(trust_draw < 0.95, "sequence", "untrusted"),
                )
                buf = io.StringIO()
                pids = participant_ids[lo:hi]
                for r in range(n):
                    pid = pids[r]
                    for k in range(per):
                        t = trust[r, k]
                        buf.write(
                            f"{pid}\t{proposal_ids[cols[r, k]]}\t{keys[r, k]}\t{t}\t"
                            f"{'t' if t == 'sequence' else 'f'}\t{now}\t{now}\n"
                        )
                copy.write(buf.getvalue())
                written += n * per
    timings["votes (COPY)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    counters_rebuild(consultation=consultation)
    # Qualifications: a share of the agree / disagree / neutral votes, as counters only.
    quals = {
        "agree": ["like_it", "doable"],
        "disagree": ["no_way", "impossible"],
        "neutral": ["no_opinion"],
    }
    extra = []
    for counter in ProposalCounter.objects.filter(
        proposal__consultation=consultation, key__in=list(quals), trust__in=["trusted", "sequence"]
    ).only("proposal_id", "key", "trust", "count"):
        for q, share in zip(quals[counter.key], (0.3, 0.15), strict=False):
            if int(counter.count * share):
                row = ProposalCounter(
                    proposal_id=counter.proposal_id,
                    key=q,
                    trust=counter.trust,
                    count=int(counter.count * share),
                )
                if hasattr(row, "consultation_id"):
                    row.consultation_id = consultation.pk
                extra.append(row)
    ProposalCounter.objects.bulk_create(extra, batch_size=5_000, ignore_conflicts=True)
    timings["counters"] = time.perf_counter() - t0

    # Precomputed results of one run, made current.
    t0 = time.perf_counter()
    print("engine result rows...", flush=True)
    n_trusted = Vote.objects.filter(
        proposal__consultation=consultation, trust__in=["trusted", "sequence"]
    ).count()
    run = EngineRun.objects.create(
        consultation=consultation,
        kind=EngineRun.Kind.FULL,
        status=EngineRun.Status.DONE,
        model_name="synthetic rows (bench/dashboard_load.py)",
        parameters={"min_cluster_size": IDEA_SIZE},
        started_at=timezone.now(),
        finished_at=timezone.now(),
        metrics={"n_votes": n_trusted, "n_participants": n_participants, "n_groups": CAMPS},
    )
    order = rng.permutation(n_proposals)
    n_ideas = max(1, n_proposals // IDEA_SIZE)
    zones = rng.choice(
        ["consensus", "controversy", "rejection", "limbo"], n_ideas, p=[0.3, 0.3, 0.2, 0.2]
    )
    ideas = Idea.objects.bulk_create(
        [
            Idea(
                run=run,
                consultation=consultation,
                number=i,
                label=f"{THEMES[i % len(THEMES)].capitalize()} ({i})",
                keywords=THEMES[i % len(THEMES)].split()[:3],
                size=IDEA_SIZE,
                share=IDEA_SIZE / n_proposals,
                scores={
                    "zone": str(zones[i]),
                    "agreement": round(float(rng.uniform(0.2, 0.9)), 4),
                    "disagreement": round(float(rng.uniform(0.05, 0.6)), 4),
                    "top_score": round(float(rng.uniform(0, 1)), 4),
                    "trusted_votes": int(n_trusted / n_ideas),
                    "sequence_votes": int(n_trusted / n_ideas / 4),
                    "group_consensus": round(float(rng.uniform(0, 0.3)), 6),
                },
            )
            for i in range(n_ideas)
        ],
        batch_size=2_000,
    )
    IdeaMembership.objects.bulk_create(
        (
            IdeaMembership(
                run=run,
                idea=ideas[min(j // IDEA_SIZE, n_ideas - 1)],
                proposal_id=int(proposal_ids[order[j]]),
                similarity=1.0 - (j % IDEA_SIZE) / IDEA_SIZE,
                is_central=j % IDEA_SIZE < 3,
            )
            for j in range(n_proposals)
        ),
        batch_size=5_000,
    )
    OpinionGroup.objects.bulk_create(
        [
            OpinionGroup(
                run=run,
                number=g,
                size=int((camp == g).sum()),
                centre_x=float(np.cos(g * np.pi / 2) * 2),
                centre_y=float(np.sin(g * np.pi / 2) * 2),
                representatives=[
                    {
                        "proposal": int(proposal_ids[(g * 97 + k * 13) % n_proposals]),
                        "direction": "agree" if k % 2 == 0 else "disagree",
                        "p": 0.01,
                        "ratio": 2.0,
                        "n_success": 80,
                        "n_seen": 100,
                        "best_agree": k == 0,
                    }
                    for k in range(5)
                ],
            )
            for g in range(CAMPS)
        ]
    )
    xs = np.cos(camp * np.pi / 2) * 2 + rng.normal(0, 0.8, n_participants)
    ys = np.sin(camp * np.pi / 2) * 2 + rng.normal(0, 0.8, n_participants)
    with connection.cursor() as cursor, transaction.atomic():
        sql = f'COPY {ParticipantProjection._meta.db_table} (run_id, participant_id, x, y, "group", in_conv) FROM STDIN'
        with cursor.cursor.copy(sql) as copy:
            buf = io.StringIO()
            null = "\\N"
            for i in range(n_participants):
                grouped = rng.random() < 0.9
                buf.write(
                    f"{run.pk}\t{participant_ids[i]}\t{xs[i]:.5f}\t{ys[i]:.5f}\t"
                    f"{camp[i] if grouped else null}\t{'t' if grouped else 'f'}\n"
                )
            copy.write(buf.getvalue())
    Consultation.objects.filter(pk=consultation.pk).update(current_run=run)
    timings["engine result rows"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        for model in (Vote, Proposal, Participant, ProposalCounter, Idea, IdeaMembership):
            cursor.execute(f"ANALYZE {model._meta.db_table}")
        cursor.execute(f"ANALYZE {ParticipantProjection._meta.db_table}")
    timings["analyze"] = time.perf_counter() - t0
    return {
        "proposals": int(proposal_ids.shape[0]),
        "participants": int(participant_ids.shape[0]),
        "votes": Vote.objects.filter(proposal__consultation=consultation).count(),
        "ideas": n_ideas,
        "run": run.pk,
        "timings": timings,
    }


# Server and load --------------------------------------------------------------------------------


def start_gunicorn(env: dict, port: int, workers: int) -> subprocess.Popen:
    import httpx

    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen(
        [str(gunicorn), "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    os.killpg(process.pid, signal.SIGTERM)
    raise RuntimeError("gunicorn did not answer within 60 s")


async def hammer(url: str, headers: dict, duration: float, concurrency: int) -> dict:
    import httpx

    latencies: list[float] = []
    failures = 0
    sizes = set()
    deadline = time.monotonic() + duration

    async def client_loop(client):
        nonlocal failures
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            response = await client.get(url, headers=headers)
            elapsed = time.perf_counter() - t0
            if response.status_code == 200:
                latencies.append(elapsed)
                sizes.add(len(response.content))
            else:
                failures += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {
        "latencies": latencies,
        "failures": failures,
        "elapsed": elapsed,
        "bytes": max(sizes or {0}),
    }


def cold_request(url: str, headers: dict) -> tuple[float, int, int]:
    import httpx

    t0 = time.perf_counter()
    response = httpx.get(url, headers=headers, timeout=120)
    return time.perf_counter() - t0, response.status_code, len(response.content)


def flush_cache(redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/3")
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="warm rounds over every URL")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--proposals", type=int, default=20_000)
    parser.add_argument("--participants", type=int, default=50_000)
    parser.add_argument("--votes", type=int, default=2_000_000)
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "bench_dashboard.md"))
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reuse", action="store_true", help="reuse a kept scratch database")
    args = parser.parse_args()

    url = with_database(args.database_url, SCRATCH_DB)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "CACHE_URL": args.redis_url,
        "SECRET_KEY": "dashboard-bench-only",
        "DJANGO_DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CONN_MAX_AGE": "600",
        "LOG_LEVEL": "WARNING",
    }
    for name in ("DJANGO_ENV", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    os.environ.update(
        {k: v for k, v in env.items() if k in ("DATABASE_URL", "CACHE_URL", "SECRET_KEY")}
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    env["DJANGO_SETTINGS_MODULE"] = os.environ["DJANGO_SETTINGS_MODULE"]

    data = None
    if not args.reuse:
        print(f"Preparing {SCRATCH_DB}...", flush=True)
        admin_execute(args.database_url, f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
        admin_execute(args.database_url, f'CREATE DATABASE "{SCRATCH_DB}"')
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        t0 = time.perf_counter()
        data = seed(args.proposals, args.participants, args.votes)
        data["timings"]["total"] = time.perf_counter() - t0
        print(json.dumps(data, indent=1), flush=True)
    else:
        import django

        django.setup()
        from consensus.models import Idea
        from consultations.models import Consultation, Participant, Proposal, Vote

        consultation = Consultation.objects.get(slug=SLUG)
        data = {
            "proposals": Proposal.objects.filter(consultation=consultation).count(),
            "participants": Participant.objects.filter(session_key__startswith="bench-").count(),
            "votes": Vote.objects.filter(proposal__consultation=consultation).count(),
            "ideas": Idea.objects.filter(run_id=consultation.current_run_id).count(),
            "run": consultation.current_run_id,
            "timings": {},
        }

    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)  # no log line per request of the load
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    results = f"{base}/engine/{SLUG}/results/"
    htmx = {"HX-Request": "true", "Accept-Language": "en"}
    plain = {"Accept-Language": "en"}
    targets = [
        ("baseline: `GET /health/`", f"{base}/health/", plain),
        ("dashboard page", results, plain),
        ("segment partial, age range (HTMX)", f"{results}?dimension=age_range", htmx),
        ("segment partial, gender (HTMX)", f"{results}?dimension=gender", htmx),
        ("segment partial, postal area (HTMX)", f"{results}?dimension=postal_area", htmx),
        ("live counters partial (HTMX)", f"{results}?part=counters", htmx),
    ]
    load_before = os.getloadavg()[0]
    flush_cache(args.redis_url)
    server = start_gunicorn(env, port, args.workers)
    rows_cold, rows_warm = [], []
    try:
        # Cold: first request of each URL after the flush (the page also fills the stats).
        for name, target, headers in targets[1:]:
            elapsed, status, size = cold_request(target, headers)
            rows_cold.append((name, elapsed, status, size))
        # The page once more per worker so that every process has its templates loaded.
        for _ in range(args.workers * 2):
            for _name, target, headers in targets:
                cold_request(target, headers)
        # Several rounds, each URL after its baseline, so that the background load of the
        # machine (shared) weighs on both alike; the summary takes the median round.
        for round_no in range(1, args.rounds + 1):
            for name, target, headers in targets:
                print(f"round {round_no}, load: {name}...", flush=True)
                result = asyncio.run(hammer(target, headers, args.duration, args.concurrency))
                rows_warm.append((round_no, name, result))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    load_after = os.getloadavg()[0]
    if not args.keep:
        admin_execute(args.database_url, f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')

    def p95(round_no, name):
        for r_no, r_name, r in rows_warm:
            if r_no == round_no and r_name == name:
                return percentile([x * 1000 for x in r["latencies"]], 95)
        return float("nan")

    page_name, base_name = targets[1][0], targets[0][0]
    rounds = [(p95(n, page_name), p95(n, base_name)) for n in range(1, args.rounds + 1)]
    page_p95, base_p95 = sorted(rounds)[len(rounds) // 2]
    lines = [
        "# Results dashboard under load",
        "",
        "Produced by `python bench/dashboard_load.py` "
        f"({args.concurrency} concurrent clients for {args.duration:.0f} s per URL, gunicorn "
        f"{args.workers} sync workers, Redis cache, DEBUG off). Data: {data['proposals']:,} proposals, "
        f"{data['participants']:,} participants, {data['votes']:,} votes (COPY), {data['ideas']:,} ideas "
        f"of run #{data['run']} (precomputed result rows, see the script's docstring).",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        "PostgreSQL, Redis, gunicorn and the load generator share the machine over loopback; "
        f"1-minute load average {load_before:.1f} before and {load_after:.1f} after "
        "(other jobs count in it: compare rows of one run, not runs).",
        "",
        "## Warm (steady state: the cache key is the current run)",
        "",
        "| round | URL | requests | per second | p50 ms | p95 ms | p99 ms | bytes | failed |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for round_no, name, r in rows_warm:
        ms = [x * 1000 for x in r["latencies"]]
        lines.append(
            f"| {round_no} | {name} | {len(ms):,} | {len(ms) / r['elapsed']:,.0f} | "
            f"{percentile(ms, 50):.1f} | {percentile(ms, 95):.1f} | {percentile(ms, 99):.1f} | "
            f"{r['bytes']:,} | {r['failures']} |"
        )
    lines += [
        "",
        "Dashboard page p95 per round: "
        + ", ".join(f"{page:.0f} ms (baseline {base:.0f} ms)" for page, base in rounds)
        + ".",
        "",
        f"Target: dashboard page p95 < 150 ms: **{'met' if page_p95 < 150 else 'NOT met'}** "
        f"in the median round ({page_p95:.1f} ms; baseline {base_p95:.1f} ms, "
        f"{page_p95 / base_p95:.1f}x).",
        "",
        "## Cold (first request after a cache flush, one client)",
        "",
        "| URL | ms | status | bytes |",
        "|---|---:|---:|---:|",
    ]
    for name, elapsed, status, size in rows_cold:
        lines.append(f"| {name} | {elapsed * 1000:.0f} | {status} | {size:,} |")
    if data.get("timings"):
        lines += ["", "## Set-up", "", "| step | seconds |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in data["timings"].items()]
    lines += [
        "",
        "Reading: a warm page is one query (the consultation, with its current run id) and two "
        "cache reads (the rendered sections, a peek at the live counters); a warm segment partial "
        "is one query and one cache read. A cold page builds every section from the run's rows in "
        "a bounded number of queries (pinned in tests/consensus/test_results_views.py); a cold "
        "segment partial reads only the votes on the top ideas' central proposals. The page never "
        "counts the voters itself: when the cached counters (`CONCORDE_STATS_CACHE_SECONDS`, 30 s) "
        "have expired it shows a placeholder that the counters partial fills by HTMX, and that "
        "partial pays the count (distinct voters over every vote) once per 30 s, as its cold row "
        "shows. The baseline row is the same server answering its cheapest useful request under "
        "the same load: the gap to it is the cost of the dashboard itself.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
    Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
