"""The production processes, for real: gunicorn (2 workers) and a Celery worker on both queues.

Against a fresh PostgreSQL database (copied from the migrated template) and a Redis broker
(OPS_REDIS_URL), over HTTP on loopback: the home page, /health/, a vote POSTed to the vote
endpoint and found in the database, and an engine run (``hashing`` embedder) started through the
broker and completed by the worker. Then ``scripts/stack.sh`` itself: it starts the web process,
answers /health/, and stops every process it started on SIGTERM. Every wait has a deadline and
every process is killed in teardown.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest

from .conftest import (
    BIN,
    PYTHON,
    ROOT,
    Processes,
    app_env,
    connect,
    create_database,
    drop_database,
    free_port,
    scratch_name,
    wait_http,
)

pytestmark = pytest.mark.realservices

ENGINE_DEADLINE = 120  # seconds for the worker to finish the run
BOOT_DEADLINE = 60  # seconds for gunicorn to answer /health/


@pytest.fixture
def smoke_db(migrated_template):
    name = scratch_name("concorde_smoke")
    create_database(name, template=migrated_template)
    yield name
    drop_database(name)


@pytest.fixture
def stack(smoke_db, ops_redis, tmp_path):
    """gunicorn + one Celery worker (queues web and engine) on the smoke database."""
    port = free_port()
    env = app_env(
        smoke_db,
        REDIS_URL=ops_redis.rsplit("/", 1)[0] + "/13",  # cache
        CELERY_BROKER_URL=ops_redis,
        CELERY_RESULT_BACKEND=ops_redis,
        DJANGO_DEBUG="false",
        WEB_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="2",
        LOG_FORMAT="json",
    )
    procs = Processes(tmp_path)
    procs.start(
        "web",
        [str(BIN / "gunicorn"), "config.wsgi:application", "-c", "config/gunicorn.conf.py"],
        env,
    )
    procs.start(
        "worker",
        [PYTHON, "-m", "celery", "-A", "config", "worker", "-Q", "web,engine", "-n",
         f"smoke-{os.getpid()}@%h", "--concurrency", "1", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "-l", "info"],
        env,
    )  # fmt: skip
    try:
        yield {"url": f"http://127.0.0.1:{port}", "env": env, "procs": procs, "db": smoke_db}
    finally:
        codes = procs.stop()
        print(procs.logs()[-6000:])
        print("exit codes:", codes)


def _setup_data(env) -> dict:
    result = subprocess.run(
        [PYTHON, "tests/ops/smoke_data.py"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_stack_serves_votes_and_runs_the_engine(stack):
    import httpx

    t0 = time.monotonic()
    data = _setup_data(stack["env"])  # the run waits in Redis until the worker takes it
    base, procs = stack["url"], stack["procs"]

    health = wait_http(f"{base}/health/", timeout=BOOT_DEADLINE, procs=procs).json()
    assert health["status"] == "ok", health
    assert {name: check["ok"] for name, check in health["checks"].items()} == {
        "database": True, "migrations": True, "cache": True, "broker": True,
    }  # fmt: skip
    assert "skipped" not in health["checks"]["broker"]

    with httpx.Client(base_url=base, timeout=30, follow_redirects=False) as client:
        home = client.get("/")
        assert home.status_code == 200
        assert "X-Request-ID" in home.headers

        page = client.get(f"/c/{data['slug']}/p/{data['proposal']}/")
        assert page.status_code == 200
        token = client.cookies.get("csrftoken")
        assert token, "the proposal page sets the CSRF cookie"
        vote = client.post(
            f"/c/{data['slug']}/p/{data['proposal']}/vote/",
            data={"key": "agree", "csrfmiddlewaretoken": token},
            headers={"X-Request-ID": "smoke-vote-1"},
        )
        assert vote.status_code == 302, vote.text[:2000]
        assert vote.headers["X-Request-ID"] == "smoke-vote-1"

    with connect(stack["db"]) as conn:
        rows = conn.execute(
            "SELECT v.key, v.trust, p.session_key FROM consultations_vote v "
            "JOIN consultations_participant p ON p.id = v.participant_id "
            "WHERE v.proposal_id = %s AND p.session_key NOT LIKE 'smoke-voter-%%'",
            [data["proposal"]],
        ).fetchall()
        assert [(key, trust) for key, trust, _session in rows] == [("agree", "trusted")]
        counted = conn.execute(
            "SELECT count FROM consultations_proposalcounter "
            "WHERE proposal_id = %s AND key = 'agree' AND trust = 'trusted'",
            [data["proposal"]],
        ).fetchone()[0]
        recorded = conn.execute(
            "SELECT count(*) FROM consultations_vote "
            "WHERE proposal_id = %s AND key = 'agree' AND trust = 'trusted'",
            [data["proposal"]],
        ).fetchone()[0]
        assert counted == recorded

    run = _wait_for_run(stack["db"], data["run"], procs)
    assert run["status"] == "done", (run, procs.log("worker"))
    assert run["done_chunks"] == run["total_chunks"] == 3
    with connect(stack["db"]) as conn:
        ideas = conn.execute(
            "SELECT count(*) FROM consensus_idea WHERE run_id = %s", [data["run"]]
        ).fetchone()[0]
        current = conn.execute(
            "SELECT current_run_id FROM consultations_consultation WHERE slug = %s", [data["slug"]]
        ).fetchone()[0]
    assert ideas >= 1 and current == data["run"]

    # The web side logged JSON lines carrying the request id of the vote.
    web_log = procs.log("web", tail=200_000)
    assert re.search(r'"request_id":\s*"smoke-vote-1"', web_log), web_log[-3000:]
    print(f"smoke test body: {time.monotonic() - t0:.1f}s")


def _wait_for_run(database: str, run_id: int, procs: Processes) -> dict:
    deadline = time.monotonic() + ENGINE_DEADLINE
    with connect(database, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT status, phase, done_chunks, total_chunks, error "
                "FROM consensus_enginerun WHERE id = %s",
                [run_id],
            ).fetchone()
            run = dict(
                zip(["status", "phase", "done_chunks", "total_chunks", "error"], row, strict=True)
            )
            if run["status"] not in ("pending", "running"):
                return run
            procs.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"engine run still {run} after {ENGINE_DEADLINE}s")
            time.sleep(0.5)


@pytest.mark.parametrize("runner", ["plain", "honcho"])
def test_stack_script_starts_the_web_process_and_stops_everything(
    runner, smoke_db, ops_redis, tmp_path
):
    """scripts/stack.sh: migrate (a no-op here), gunicorn up, SIGTERM stops all it started."""
    if runner == "honcho" and not (BIN / "honcho").exists():
        pytest.skip("honcho is not installed")
    port = free_port()
    env = app_env(
        smoke_db,
        CELERY_BROKER_URL=ops_redis,
        REDIS_URL=ops_redis.rsplit("/", 1)[0] + "/13",
        WEB_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY="1",
        STACK_RUNNER=runner,
        STACK_STOP_TIMEOUT="10",
    )
    log = open(tmp_path / "stack.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        ["bash", "scripts/stack.sh", "web"], cwd=ROOT, env=env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + BOOT_DEADLINE
        import httpx

        while True:
            assert proc.poll() is None, (tmp_path / "stack.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "stack.log").read_text()
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        text = (tmp_path / "stack.log").read_text()
        assert "stack: migrate" in text, text
        if runner == "plain":
            assert code == 0 and "stack: stopped" in text, text
        else:
            assert "SIGTERM received" in text and "web.1 stopped" in text, text
        # nothing of the stack is left in its session (gunicorn master and workers included)
        time.sleep(0.5)
        left = subprocess.run(
            ["pgrep", "-s", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert not left, f"processes left behind: {left}\n{text}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        else:
            subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)
        log.close()
