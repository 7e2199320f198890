"""Load harness: a realistic mix against gunicorn + PostgreSQL + Redis, at rising concurrency.

What runs, all on this machine over loopback:

- a scratch database (``concorde_load_bench``, created, migrated, dropped at the end unless
  ``--keep``) with one open consultation of ``--proposals`` accepted proposals that accepts
  proposals (auto-accepted) and ``--users`` citizens, each with a ready session (logged in);
- gunicorn (``--workers`` sync workers, DEBUG off, persistent connections) with Redis
  (``--redis-url``) as cache and Celery broker: the production wiring. Rate limits are turned
  off for the run (they would stop a load generator that is one IP; see docs/reliability.md);
- for each concurrency step (``--steps``, each ``--step-seconds`` long) that many simulated
  citizens (asyncio + httpx), each looping: load the sequence page, start a sequence, and for
  every card vote (agree / disagree / neutral), qualify the vote one time in three, go to the
  next card; one sequence in four also reads the results page and one in ten proposes.

Per step: requests/s, votes/s (votes answered 200), p50/p95/p99 over all requests and per
kind, error rate (non-2xx/3xx answers and transport errors). The step with the best
requests/s is the saturation point; a step whose throughput no longer grows while its p95
does is past it.

Afterwards, on the database: every acknowledged vote (answered 200) is there exactly once with
the key last acknowledged, no vote is there that was not acknowledged (a request that failed
may still have committed: those are counted apart), and every counter and vote total equals a
recount from the votes table (``counters_drift``).

Usage:
    python bench/load_harness.py [--database-url postgres://postgres@127.0.0.1:5432/postgres]
        [--redis-url redis://127.0.0.1:6379/7] [--steps 2 8 24] [--step-seconds 15]
        [--workers 3] [--proposals 500] [--users 200] [--markdown docs/bench_load.md] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.vote_load import (  # noqa: E402
    POSITION,
    TOKEN,
    VOTE_ACTION,
    admin_execute,
    free_port,
    percentile,
    with_database,
)

SCRATCH_DB = "concorde_load_bench"
SLUG = "bench-load"
STAMP = re.compile(r'name="form_stamp" value="([^"]*)"')  # consultations.abuse.STAMP_FIELD
QUALIFY = {
    "agree": ["like_it", "doable", "platitude_agree"],
    "disagree": ["no_way", "impossible", "platitude_disagree"],
    "neutral": ["do_not_understand", "no_opinion", "do_not_care"],
}


def prepare(url: str, proposals: int, users: int, env: dict) -> list[tuple[int, str]]:
    admin_execute(url, f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
    admin_execute(url, f'CREATE DATABASE "{SCRATCH_DB}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    seed = f"""
import json
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from accounts.models import User
from causes.models import Cause
from consultations.models import Consultation, Proposal
cause = Cause.objects.create(title='Bench', slug='bench', summary='Bench', status='active')
c = Consultation.objects.create(cause=cause, question='Bench?', slug='{SLUG}', sequence_size=12,
                                auto_accept=True)
Proposal.objects.bulk_create([Proposal(consultation=c, status='accepted',
    content=f'Il faut la proposition de test numéro {{i}} sur le thème {{i % 37}}')
    for i in range({proposals})])
out = []
for i in range({users}):
    user = User.objects.create_user(email=f'load{{i}}@example.org', password=None)
    s = SessionStore()
    s[SESSION_KEY] = str(user.pk)
    s[BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'
    s[HASH_SESSION_KEY] = user.get_session_auth_hash()
    s.create()
    out.append((user.pk, s.session_key))
print('SESSIONS' + json.dumps(out))
"""
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", seed],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    line = next(x for x in result.stdout.splitlines() if x.startswith("SESSIONS"))
    return [tuple(x) for x in json.loads(line[len("SESSIONS") :])]


def start_gunicorn(env: dict, port: int, workers: int) -> subprocess.Popen:
    import httpx

    gunicorn = Path(sys.executable).with_name("gunicorn")
    process = subprocess.Popen(
        [str(gunicorn), "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/c/{SLUG}/", timeout=3).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError("gunicorn did not answer within 40 s")


class Step:
    def __init__(self, concurrency: int):
        self.concurrency = concurrency
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.votes_ok = 0
        self.elapsed = 0.0


async def run_step(
    base, sessions, step: Step, seconds: float, acked: dict, attempted: set, seed: int
):
    import httpx

    deadline = time.monotonic() + seconds
    rng = random.Random(seed)

    async def call(client, kind, method, url, **kwargs):
        t0 = time.perf_counter()
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.HTTPError:
            step.errors[kind] += 1
            return None
        step.latencies[kind].append(time.perf_counter() - t0)
        if response.status_code >= 400:
            step.errors[kind] += 1
            return None
        return response

    async def citizen(user_id: int, session_key: str):
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(
            base_url=base, limits=limits, timeout=60, cookies={"sessionid": session_key}
        ) as client:
            stamp = ""
            while time.monotonic() < deadline:
                if not stamp:  # the consultation page, with the proposal form (signed stamp)
                    detail = await call(client, "consultation", "GET", f"/c/{SLUG}/")
                    found = STAMP.search(detail.text) if detail is not None else None
                    stamp = found.group(1) if found else ""
                page = await call(client, "page", "GET", f"/c/{SLUG}/vote/")
                if page is None:
                    await asyncio.sleep(0.2)
                    continue
                headers = {"X-CSRFToken": client.cookies.get("csrftoken", ""), "HX-Request": "true"}
                card = await call(client, "start", "POST", f"/c/{SLUG}/vote/", headers=headers)
                while card is not None and time.monotonic() < deadline:
                    action, token = VOTE_ACTION.search(card.text), TOKEN.search(card.text)
                    if not action or not token:
                        break
                    pid = int(action.group(2))
                    key = rng.choice(["agree", "disagree", "neutral"])
                    attempted.add((user_id, pid))
                    card = await call(
                        client, "vote", "POST", action.group(1), headers=headers,
                        data={"key": key, "token": token.group(1), "from": "sequence"},
                    )  # fmt: skip
                    if card is None:
                        break
                    step.votes_ok += 1
                    acked[(user_id, pid)] = key
                    if rng.random() < 1 / 3:
                        await call(
                            client, "qualify", "POST", f"/c/{SLUG}/p/{pid}/qualify/",
                            headers=headers, data={"key": rng.choice(QUALIFY[key]), "from": "sequence"},
                        )  # fmt: skip
                    position = POSITION.search(card.text)
                    if not position:
                        break
                    card = await call(
                        client, "next", "POST", f"/c/{SLUG}/vote/next/", headers=headers,
                        data={"position": position.group(1)},
                    )  # fmt: skip
                if rng.random() < 0.25:
                    await call(client, "results", "GET", f"/engine/{SLUG}/results/")
                if rng.random() < 0.10 and stamp:
                    await call(
                        client, "propose", "POST", f"/c/{SLUG}/propose/", headers=headers,
                        data={"content": f"Il faut tester la charge, idée {rng.randrange(10**9)} "
                                         f"de {user_id}", "form_stamp": stamp, "website": ""},
                    )  # fmt: skip
                    stamp = ""

    chosen = sessions[: step.concurrency]
    t0 = time.monotonic()
    await asyncio.gather(*(citizen(uid, key) for uid, key in chosen))
    step.elapsed = time.monotonic() - t0


def check_database(url: str, acked: dict, attempted: set) -> dict:
    import psycopg

    conninfo = url.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT p.user_id, v.proposal_id, v.key FROM consultations_vote v "
            "JOIN consultations_participant p ON p.id = v.participant_id"
        ).fetchall()
        duplicates = conn.execute(
            "SELECT count(*) FROM (SELECT participant_id, proposal_id FROM consultations_vote "
            "GROUP BY 1, 2 HAVING count(*) > 1) d"
        ).fetchone()[0]
        recount_sql = """
            WITH truth AS (
              SELECT proposal_id, key, trust, count(*) AS n FROM consultations_vote GROUP BY 1, 2, 3
              UNION ALL
              SELECT v.proposal_id, q.key, v.trust, count(*) FROM consultations_qualification q
              JOIN consultations_vote v ON v.id = q.vote_id GROUP BY 1, 2, 3),
            t AS (SELECT proposal_id, key, trust, sum(n) AS n FROM truth GROUP BY 1, 2, 3)
            SELECT count(*) FROM t FULL JOIN consultations_proposalcounter c
              ON c.proposal_id = t.proposal_id AND c.key = t.key AND c.trust = t.trust
            WHERE coalesce(t.n, 0) <> coalesce(c.count, 0)"""
        counter_drift = conn.execute(recount_sql).fetchone()[0]
        total_drift = conn.execute(
            "SELECT count(*) FROM consultations_proposal p WHERE p.votes_total <> "
            "(SELECT count(*) FROM consultations_vote v WHERE v.proposal_id = p.id)"
        ).fetchone()[0]
        counters = conn.execute("SELECT count(*) FROM consultations_proposalcounter").fetchone()[0]
        proposals = conn.execute("SELECT count(*) FROM consultations_proposal").fetchone()[0]
    stored = {(uid, pid): key for uid, pid, key in rows}
    missing = [k for k in acked if k not in stored]
    wrong_key = [k for k, key in acked.items() if k in stored and stored[k] != key]
    unacked = [k for k in stored if k not in acked]
    unexplained = [k for k in unacked if k not in attempted]
    return {
        "votes_in_db": len(rows),
        "acked": len(acked),
        "missing": len(missing),
        "wrong_key": len(wrong_key),
        "duplicates": duplicates,
        "unacked_but_attempted": len(unacked) - len(unexplained),
        "unexplained": len(unexplained),
        "counter_drift": counter_drift,
        "total_drift": total_drift,
        "counters": counters,
        "proposals": proposals,
    }


def fmt_step(step: Step) -> str:
    all_lat = [x * 1000 for v in step.latencies.values() for x in v]
    requests = len(all_lat)
    errors = sum(step.errors.values())
    return (
        f"| {step.concurrency} | {requests + errors:,} | {requests / step.elapsed:,.1f} | "
        f"{step.votes_ok / step.elapsed:,.1f} | {percentile(all_lat, 50):.0f} | "
        f"{percentile(all_lat, 95):.0f} | {percentile(all_lat, 99):.0f} | "
        f"{100 * errors / max(1, requests + errors):.2f} % |"
    )


def fmt_kinds(step: Step) -> list[str]:
    lines = []
    for kind in ("consultation", "page", "start", "vote", "qualify", "next", "results", "propose"):
        lat = [x * 1000 for x in step.latencies.get(kind, [])]
        lines.append(
            f"| {step.concurrency} | {kind} | {len(lat):,} | {step.errors.get(kind, 0)} | "
            f"{percentile(lat, 50):.0f} | {percentile(lat, 95):.0f} | {percentile(lat, 99):.0f} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/7")
    parser.add_argument("--steps", nargs="+", type=int, default=[2, 8, 24])
    parser.add_argument("--step-seconds", type=float, default=15)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--proposals", type=int, default=500)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--markdown", default=str(ROOT / "docs" / "bench_load.md"))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if max(args.steps) > args.users:
        parser.error("--users must be at least the largest step")

    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    url = with_database(args.database_url, SCRATCH_DB)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DJANGO_ENV", "CACHE_URL", "CELERY_BROKER_URL"}
    }
    env.update(
        DATABASE_URL=url, REDIS_URL=args.redis_url, SECRET_KEY="load-bench-only", DJANGO_DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1,localhost", CONN_MAX_AGE="600", LOG_LEVEL="ERROR",
        CONCORDE_RATELIMIT_VOTE="", CONCORDE_RATELIMIT_VOTE_USER="", CONCORDE_RATELIMIT_QUALIFY="",
        CONCORDE_RATELIMIT_QUALIFY_USER="", CONCORDE_RATELIMIT_PROPOSE="",
        CONCORDE_RATELIMIT_PROPOSE_USER="", CONCORDE_PROPOSALS_PER_HOUR="1000000",
    )  # fmt: skip
    print(
        f"Preparing {SCRATCH_DB}: {args.proposals} proposals, {args.users} citizens...", flush=True
    )
    sessions = prepare(args.database_url, args.proposals, args.users, env)
    port = free_port()
    load_before = os.getloadavg()[0]
    server = start_gunicorn(env, port, args.workers)
    steps: list[Step] = []
    acked: dict = {}
    attempted: set = set()
    try:
        for n, concurrency in enumerate(args.steps):
            print(f"step: {concurrency} citizens for {args.step_seconds:.0f} s...", flush=True)
            step = Step(concurrency)
            rotated = sessions[n * 7 % len(sessions) :] + sessions[: n * 7 % len(sessions)]
            asyncio.run(
                run_step(f"http://127.0.0.1:{port}", rotated, step, args.step_seconds, acked,
                         attempted, seed=n)
            )  # fmt: skip
            steps.append(step)
            print(fmt_step(step), flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    load_after = os.getloadavg()[0]
    state = check_database(url, acked, attempted)
    if not args.keep:
        admin_execute(args.database_url, f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')

    def rate(step):
        return sum(len(v) for v in step.latencies.values()) / step.elapsed

    best = max(steps, key=rate)
    knee = next(step for step in steps if rate(step) >= 0.9 * rate(best))
    saturation = (
        f"Saturation: {rate(best):.1f} requests/s at best ({best.concurrency} citizens); "
        f"{knee.concurrency} citizen(s) already reach 90 % of it. Past that point requests/s stays "
        "flat and the latency grows with the queue (p50 "
        f"{percentile([x * 1000 for v in knee.latencies.values() for x in v], 50):.0f} ms at "
        f"{knee.concurrency}, {percentile([x * 1000 for v in steps[-1].latencies.values() for x in v], 50):.0f} "
        f"ms at {steps[-1].concurrency}). The one-citizen step is the baseline of the same run."
    )
    ok = (
        state["missing"] == state["wrong_key"] == state["duplicates"] == state["unexplained"]
        == state["counter_drift"] == state["total_drift"] == 0
    )  # fmt: skip
    lines = [
        "# Load harness: the citizen mix at rising concurrency",
        "",
        f"Produced by `python bench/load_harness.py --steps {' '.join(map(str, args.steps))} "
        f"--step-seconds {args.step_seconds:.0f} --workers {args.workers} --proposals "
        f"{args.proposals} --users {args.users}`.",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        "gunicorn (sync workers), PostgreSQL, Redis (cache + broker) and the load generator share "
        f"the machine, over loopback; 1-minute load average {load_before:.1f} before, "
        f"{load_after:.1f} after (other jobs count in it: compare steps of one run, not runs).",
        "",
        "Mix per citizen (logged in): consultation page (with the proposal form), sequence page, start, then per card vote (+ a qualification "
        "one time in three) and next card; after a sequence, results page (1 in 4) and a proposal "
        "(1 in 10, auto-accepted). Rate limits off for the run (one IP).",
        "",
        "| concurrent citizens | requests | requests/s | votes/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[fmt_step(s) for s in steps],
        "",
        saturation,
        "",
        "Per kind of request:",
        "",
        "| citizens | request | answered | errors | p50 ms | p95 ms | p99 ms |",
        "|---:|---|---:|---:|---:|---:|---:|",
        *[line for s in steps for line in fmt_kinds(s)],
        "",
        "## Nothing lost, nothing counted twice",
        "",
        f"- votes acknowledged (answered 200): {state['acked']:,} distinct (citizen, proposal); in "
        f"the database: {state['votes_in_db']:,}",
        f"- acknowledged but missing: {state['missing']}; stored with another key than the last "
        f"acknowledged: {state['wrong_key']}; duplicates (participant, proposal): {state['duplicates']}",
        f"- in the database but not acknowledged: {state['unacked_but_attempted']} from requests "
        f"that failed or were cut at the end of a step (committed before the answer), "
        f"{state['unexplained']} unexplained",
        f"- counters differing from a recount of the votes: {state['counter_drift']} of "
        f"{state['counters']:,}; vote totals differing: {state['total_drift']} of "
        f"{state['proposals']:,} proposals",
        f"- **{'CONSISTENT' if ok else 'INCONSISTENT'}**",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.markdown).write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
