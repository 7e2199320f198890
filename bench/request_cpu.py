"""CPU time per request of the voting flow, for capacity planning (docs/scaling.md).

Throughput measured on a shared machine depends on what else runs; CPU seconds per request do
much less. This drives one visitor at a time (no concurrency) through the real flow against
gunicorn with ONE sync worker, and reads the CPU time (user + system, /proc) that the gunicorn
worker and the PostgreSQL backends spent on each request type:

    GET /c/<slug>/vote/              (sequence page, CSRF cookie)
    POST /c/<slug>/vote/             start: the sequence is chosen, exposures logged
    POST /c/<slug>/p/<pk>/vote/      each card: the vote, with the card's token (HTMX)
    POST /c/<slug>/vote/next/        each card: the next card (HTMX)

A scratch database (``concorde_cpu_bench``) is created, migrated, filled with one open
consultation of ``--proposals`` accepted proposals, and dropped at the end.

Usage:
    python bench/request_cpu.py [--proposals 300] [--sequences 30]
        [--database-url postgres://postgres@127.0.0.1:5432/postgres] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[1]
DBNAME = "concorde_cpu_bench"
SLUG = "cpu-bench"
VOTE_ACTION = re.compile(r'action="(/c/[^/]+/p/(\d+)/vote/)"')
TOKEN = re.compile(r'name="token" value="([^"]*)"')
POSITION = re.compile(r'name="position" value="(\d+)"')
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proposals", type=int, default=300)
    parser.add_argument("--sequences", type=int, default=30)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--markdown")
    parser.add_argument("--redis-url", help="cache (REDIS_URL) for the web process; default none")
    parser.add_argument("--session-engine", help="SESSION_ENGINE, e.g. ...sessions.backends.cache")
    args = parser.parse_args()

    import httpx
    import psycopg

    scratch = urlunparse(urlparse(args.database_url)._replace(path=f"/{DBNAME}"))
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DBNAME}")
    env = {k: v for k, v in os.environ.items()
           if k not in {"REDIS_URL", "CELERY_BROKER_URL", "DJANGO_ENV", "DB_POOL_MAX_SIZE"}}  # fmt: skip
    env.update(DATABASE_URL=scratch, DJANGO_DEBUG="false", CONN_MAX_AGE="600")
    if args.redis_url:
        env["REDIS_URL"] = env["CELERY_BROKER_URL"] = args.redis_url
    if args.session_engine:
        env["SESSION_ENGINE"] = args.session_engine
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                   env=env, check=True)  # fmt: skip
    seed = (
        "from causes.models import Cause\n"
        "from consultations.models import Consultation, Proposal\n"
        "from django.utils import timezone\n"
        "cause = Cause.objects.create(title='Bench', slug='bench', status='active')\n"
        f"c = Consultation.objects.create(cause=cause, question='Bench?', slug='{SLUG}',"
        " starts_at=timezone.now() - timezone.timedelta(days=1))\n"
        "Proposal.objects.bulk_create([Proposal(consultation=c, status='accepted', "
        "content=f'Il faut la proposition de test numéro {i} sur le thème {i % 37}') "
        f"for i in range({args.proposals})], batch_size=5000)\n"
    )
    subprocess.run([sys.executable, "manage.py", "shell", "-c", seed], cwd=ROOT, env=env,
                   check=True)  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gunicorn = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "config.wsgi:application", "-c",
         "config/gunicorn.conf.py", "--workers", "1", "--bind", f"127.0.0.1:{port}",
         "--log-level", "warning", "--access-logfile", "/dev/null"],
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    pg = psycopg.connect(scratch, autocommit=True)
    cpu = defaultdict(float)
    pg_cpu = defaultdict(float)
    wall = defaultdict(float)
    count = defaultdict(int)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health/", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start")
            time.sleep(0.3)
        workers = children(gunicorn.pid)
        rng = random.Random(3)

        def backends():
            rows = pg.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [DBNAME],
            ).fetchall()
            return [r[0] for r in rows]

        def timed(client, name, method, url, **kwargs):
            procs = backends()
            c0 = sum(cpu_seconds(p) for p in workers)
            p0 = {p: cpu_seconds(p) for p in procs}
            t0 = time.perf_counter()
            response = client.request(method, url, **kwargs)
            wall[name] += time.perf_counter() - t0
            cpu[name] += sum(cpu_seconds(p) for p in workers) - c0
            pg_cpu[name] += sum(cpu_seconds(p) - p0.get(p, 0.0) for p in backends())
            count[name] += 1
            assert response.status_code == 200, (name, response.status_code, response.text[:500])
            return response

        for _ in range(args.sequences):
            with httpx.Client(base_url=base, timeout=60) as client:
                timed(client, "page", "GET", f"/c/{SLUG}/vote/")
                headers = {"X-CSRFToken": client.cookies.get("csrftoken", ""), "HX-Request": "true"}
                card = timed(client, "start", "POST", f"/c/{SLUG}/vote/", headers=headers)
                while True:
                    action, token = VOTE_ACTION.search(card.text), TOKEN.search(card.text)
                    if not action or not token:
                        break
                    data = {
                        "key": rng.choice(["agree", "disagree", "neutral"]),
                        "token": token.group(1),
                        "from": "sequence",
                    }
                    card = timed(client, "vote", "POST", action.group(1), data=data,
                                 headers=headers)  # fmt: skip
                    position = POSITION.search(card.text)
                    if not position:
                        break
                    card = timed(client, "next", "POST", f"/c/{SLUG}/vote/next/",
                                 data={"position": position.group(1)}, headers=headers)  # fmt: skip
        rss_mb = max(rss_kb(p) for p in workers) / 1024
    finally:
        pg.close()
        os.killpg(gunicorn.pid, signal.SIGTERM)
        gunicorn.wait(timeout=30)
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")

    lines = [
        f"`python bench/request_cpu.py --proposals {args.proposals} --sequences "
        f"{args.sequences}"
        + (f" --redis-url {args.redis_url}" if args.redis_url else "")
        + (f" --session-engine {args.session_engine}" if args.session_engine else "")
        + f"`; {platform.machine()}, {os.cpu_count()} CPUs, one gunicorn sync "
        f"worker, one visitor at a time; load average {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| request | n | gunicorn CPU ms / request | PostgreSQL CPU ms / request | wall ms / request |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("page", "start", "vote", "next"):
        n = count[name] or 1
        lines.append(f"| {name} | {count[name]} | {cpu[name] / n * 1000:.1f} | "
                     f"{pg_cpu[name] / n * 1000:.1f} | {wall[name] / n * 1000:.1f} |")  # fmt: skip
    votes = count["vote"] or 1
    per_vote = sum(cpu.values()) / votes * 1000
    per_vote_pg = sum(pg_cpu.values()) / votes * 1000
    lines += ["", f"Per vote, everything included (page + start spread over the votes of the "
              f"sequence, vote, next): gunicorn {per_vote:.1f} ms CPU, PostgreSQL "
              f"{per_vote_pg:.1f} ms CPU. gunicorn worker RSS at the end: {rss_mb:.0f} MB."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
