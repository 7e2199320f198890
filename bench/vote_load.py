"""Sustained votes per second through the real vote endpoint, next to raw PostgreSQL inserts.

What runs, all on this machine over loopback:

- a scratch database (``concorde_vote_bench``, created, migrated, dropped at the end) with one open
  consultation of ``--proposals`` accepted proposals;
- gunicorn serving Concorde (``--workers`` sync workers, production-like settings: DEBUG off,
  persistent connections);
- ``--concurrency`` simulated voters (asyncio + httpx). Each one is a fresh browser session:
  GET the sequence page (CSRF cookie), POST "start" (the sequence is chosen, exposures logged),
  then for every card POST the vote with the card's token (HTMX, the card comes back) and POST
  "next". When its sequence ends, the voter starts over as a new visitor.

The load is bounded in time (``--duration`` seconds). Votes per second count only the vote
requests answered 200; latencies are client-side wall times per endpoint.

The baseline, measured in the same run with the same number of concurrent connections, is
PostgreSQL itself on loopback:

- ``raw insert``: one single-row ``INSERT`` per transaction into a bare table (no index, no
  constraint), i.e. the commit rate of the server;
- ``raw vote transaction``: the statements ``vote_cast`` issues for a new vote, without Django
  (``SELECT ... FOR UPDATE``, ``INSERT`` vote, counter upsert, ``UPDATE`` of the total), one
  transaction per vote.

Usage:
    python bench/vote_load.py [--database-url postgres://postgres@127.0.0.1:5432/concorde]
        [--duration 20] [--concurrency 16] [--workers 2] [--proposals 300]
        [--markdown docs/bench_vote_load.md] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCRATCH_DB = "concorde_vote_bench"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/concorde"
SLUG = "bench-votes"

VOTE_ACTION = re.compile(r'action="(/c/[^/]+/p/(\d+)/vote/)"')
TOKEN = re.compile(r'name="token" value="([^"]*)"')
POSITION = re.compile(r'name="position" value="(\d+)"')


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def psycopg_url(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


def admin_execute(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(psycopg_url(with_database(url, "postgres")), autocommit=True) as conn:
        conn.execute(sql)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# Setup ----------------------------------------------------------------------------------------


def migrated_scratch(url: str, name: str, env: dict) -> None:
    """Database ``name`` on ``url``'s server, dropped if there, created and migrated (``env``
    names it in DATABASE_URL)."""
    admin_execute(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_execute(url, f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )


def prepare(url: str, proposals: int, env: dict) -> None:
    migrated_scratch(url, SCRATCH_DB, env)
    seed = (
        "from causes.models import Cause\n"
        "from consultations.models import Consultation, Proposal\n"
        "cause = Cause.objects.create(title='Bench', slug='bench', summary='Bench', status='active')\n"
        f"c = Consultation.objects.create(cause=cause, question='Bench?', slug='{SLUG}', sequence_size=12)\n"
        "Proposal.objects.bulk_create([Proposal(consultation=c, status='accepted', "
        "content=f'Il faut la proposition de test numéro {i} sur le thème {i % 37}') "
        f"for i in range({proposals})])\n"
    )
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", seed], cwd=ROOT, env=env, check=True
    )


def start_gunicorn(env: dict, port: int, workers: int) -> subprocess.Popen:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen(
        [
            str(gunicorn),
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/c/{SLUG}/", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError("gunicorn did not answer within 30 s")


# The HTTP load ----------------------------------------------------------------------------------


async def http_load(base: str, duration: float, concurrency: int) -> dict:
    import httpx

    latencies: dict[str, list[float]] = {"start": [], "vote": [], "next": []}
    failures: dict[str, int] = {"start": 0, "vote": 0, "next": 0}
    deadline = time.monotonic() + duration
    rng = random.Random(7)

    async def timed(name, coroutine):
        t0 = time.perf_counter()
        response = await coroutine
        elapsed = time.perf_counter() - t0
        if response.status_code == 200:
            latencies[name].append(elapsed)
        else:
            failures[name] += 1
        return response

    async def voter():
        limits = httpx.Limits(max_connections=1)
        while time.monotonic() < deadline:
            async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
                await client.get(f"/c/{SLUG}/vote/")
                headers = {
                    "X-CSRFToken": client.cookies.get("csrftoken", ""),
                    "HX-Request": "true",
                }
                card = await timed("start", client.post(f"/c/{SLUG}/vote/", headers=headers))
                while time.monotonic() < deadline:
                    action, token = VOTE_ACTION.search(card.text), TOKEN.search(card.text)
                    if not action or not token:
                        break  # end of the sequence: a new visitor
                    data = {
                        "key": rng.choice(["agree", "disagree", "neutral"]),
                        "token": token.group(1),
                        "from": "sequence",
                    }
                    card = await timed(
                        "vote", client.post(action.group(1), data=data, headers=headers)
                    )
                    position = POSITION.search(card.text)
                    if not position:
                        break
                    card = await timed(
                        "next",
                        client.post(
                            f"/c/{SLUG}/vote/next/",
                            data={"position": position.group(1)},
                            headers=headers,
                        ),
                    )

    t0 = time.monotonic()
    await asyncio.gather(*(voter() for _ in range(concurrency)))
    return {"elapsed": time.monotonic() - t0, "latencies": latencies, "failures": failures}


# The raw PostgreSQL baselines -----------------------------------------------------------------------


async def raw_load(url: str, duration: float, concurrency: int, kind: str) -> dict:
    import psycopg

    conninfo = psycopg_url(url)
    setup = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    await setup.execute("DROP TABLE IF EXISTS bench_raw_votes")
    await setup.execute(
        "CREATE TABLE bench_raw_votes (participant_id bigint, proposal_id bigint, key text, "
        "created_at timestamptz)"
    )
    proposal_ids = [
        row[0]
        for row in await (
            await setup.execute("SELECT id FROM consultations_proposal ORDER BY id")
        ).fetchall()
    ]
    latencies: list[float] = []
    deadline = time.monotonic() + duration

    async def worker(n: int):
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        rng = random.Random(n)
        participant = None
        done_here = 0
        while time.monotonic() < deadline:
            pid = rng.choice(proposal_ids)
            key = rng.choice(["agree", "disagree", "neutral"])
            t0 = time.perf_counter()
            if kind == "insert":
                await conn.execute(
                    "INSERT INTO bench_raw_votes VALUES (%s, %s, %s, now())", (n, pid, key)
                )
            else:
                if participant is None or done_here >= 12:
                    cursor = await conn.execute(
                        "INSERT INTO consultations_participant (session_key, age_range, gender, "
                        "postal_area, created_at) VALUES (gen_random_uuid()::text, '', '', '', now()) "
                        "RETURNING id"
                    )
                    participant = (await cursor.fetchone())[0]
                    done_here = 0
                async with conn.transaction():
                    await conn.execute(
                        "SELECT id FROM consultations_vote WHERE participant_id = %s AND "
                        "proposal_id = %s FOR UPDATE",
                        (participant, pid),
                    )
                    await conn.execute(
                        "INSERT INTO consultations_vote (participant_id, proposal_id, key, trust, "
                        "in_sequence, created_at, updated_at) VALUES (%s, %s, %s, 'sequence', true, "
                        "now(), now()) ON CONFLICT DO NOTHING",
                        (participant, pid, key),
                    )
                    await conn.execute(
                        "INSERT INTO consultations_proposalcounter (proposal_id, key, trust, count) "
                        "VALUES (%s, %s, 'sequence', 1) ON CONFLICT (proposal_id, key, trust) DO "
                        "UPDATE SET count = consultations_proposalcounter.count + EXCLUDED.count",
                        (pid, key),
                    )
                    await conn.execute(
                        "UPDATE consultations_proposal SET votes_total = votes_total + 1 "
                        "WHERE id = %s",
                        (pid,),
                    )
                done_here += 1
            latencies.append(time.perf_counter() - t0)
        await conn.close()

    t0 = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    elapsed = time.monotonic() - t0
    await setup.execute("DROP TABLE IF EXISTS bench_raw_votes")
    await setup.close()
    return {"elapsed": elapsed, "latencies": latencies}


# Report -------------------------------------------------------------------------------------------


def row(name: str, count: int, elapsed: float, latencies: list[float]) -> str:
    ms = [x * 1000 for x in latencies]
    return (
        f"| {name} | {count:,} | {count / elapsed:,.0f} | {percentile(ms, 50):.1f} | "
        f"{percentile(ms, 95):.1f} | {percentile(ms, 99):.1f} |"
    )


def check_database(url: str) -> dict:
    import psycopg

    with psycopg.connect(psycopg_url(url)) as conn:
        votes = conn.execute("SELECT count(*) FROM consultations_vote").fetchone()[0]
        counted = conn.execute(
            "SELECT coalesce(sum(count), 0) FROM consultations_proposalcounter "
            "WHERE key IN ('agree', 'disagree', 'neutral')"
        ).fetchone()[0]
        totals = conn.execute(
            "SELECT coalesce(sum(votes_total), 0) FROM consultations_proposal"
        ).fetchone()[0]
        exposures = conn.execute("SELECT count(*) FROM consultations_exposure").fetchone()[0]
    return {"votes": votes, "counted": counted, "totals": totals, "exposures": exposures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--proposals", type=int, default=300)
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "bench_vote_load.md"))
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    url = with_database(args.database_url, SCRATCH_DB)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SECRET_KEY": "vote-load-bench-only",
        "DJANGO_DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CONN_MAX_AGE": "600",
        "LOG_LEVEL": "WARNING",
    }
    for name in ("DJANGO_ENV", "REDIS_URL", "CACHE_URL", "CELERY_BROKER_URL"):
        env.pop(name, None)

    print(f"Preparing {SCRATCH_DB} ({args.proposals} proposals)...", flush=True)
    prepare(args.database_url, args.proposals, env)
    port = free_port()
    load_before = os.getloadavg()[0]
    server = start_gunicorn(env, port, args.workers)
    try:
        print(f"HTTP load: {args.concurrency} voters for {args.duration:.0f} s...", flush=True)
        http = asyncio.run(http_load(f"http://127.0.0.1:{port}", args.duration, args.concurrency))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    state = check_database(url)
    print("Raw PostgreSQL baselines...", flush=True)
    raw_insert = asyncio.run(raw_load(url, args.duration, args.concurrency, "insert"))
    raw_vote = asyncio.run(raw_load(url, args.duration, args.concurrency, "vote"))
    load_after = os.getloadavg()[0]
    if not args.keep:
        admin_execute(args.database_url, f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')

    lat = http["latencies"]
    votes = len(lat["vote"])
    lines = [
        "# Vote endpoint under load",
        "",
        "Produced by `python bench/vote_load.py` "
        f"(duration {args.duration:.0f} s per measurement, {args.concurrency} concurrent clients, "
        f"gunicorn {args.workers} sync workers, {args.proposals} proposals, sequences of 12).",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        "PostgreSQL, gunicorn and the load generator share the machine, over loopback; "
        f"1-minute load average {load_before:.1f} before and {load_after:.1f} after the run "
        "(other jobs on the machine count in it, so compare rows of one run, not runs).",
        "",
        "| measurement | requests | per second | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
        row(
            "HTTP vote (`POST /c/<slug>/p/<pk>/vote/`, token, HTMX card back)",
            votes,
            http["elapsed"],
            lat["vote"],
        ),
        row(
            "HTTP next card (`POST /c/<slug>/vote/next/`)",
            len(lat["next"]),
            http["elapsed"],
            lat["next"],
        ),
        row(
            "HTTP sequence start (`POST /c/<slug>/vote/`)",
            len(lat["start"]),
            http["elapsed"],
            lat["start"],
        ),
        row(
            "raw PostgreSQL: 1-row INSERT per transaction",
            len(raw_insert["latencies"]),
            raw_insert["elapsed"],
            raw_insert["latencies"],
        ),
        row(
            "raw PostgreSQL: `vote_cast`'s statements, 1 transaction per vote",
            len(raw_vote["latencies"]),
            raw_vote["elapsed"],
            raw_vote["latencies"],
        ),
        "",
        f"Failed requests: {http['failures']}. After the HTTP run the database held "
        f"{state['votes']:,} votes, counters summing to {state['counted']:,}, totals summing to "
        f"{state['totals']:,} and {state['exposures']:,} exposures "
        f"({'consistent' if state['votes'] == state['counted'] == state['totals'] == votes else 'INCONSISTENT'} "
        "with the votes answered 200).",
        "",
        "Reading: the whole HTTP vote (session, consultation and proposal look-ups, token check, the "
        "vote transaction, the next card rendered) against what PostgreSQL alone can commit on this "
        "machine. The gap is Django and the template, not the database; more gunicorn workers (or "
        "cores) scale the HTTP side, while the raw rows are the ceiling of one commit per vote.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
    Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
