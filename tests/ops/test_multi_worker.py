"""The engine across machines: one run with one Celery worker process, the same run with two.

Real ``celery -A config worker -Q engine`` subprocesses (separate OS processes, as on separate
hosts) share Redis (``MW_REDIS_URL``, default db 11) and the pytest test database. The run with
two workers must give the same ideas, scores and opinion groups as the run with one, and both
worker processes must have embedded chunks (counted from each worker's own log).
"""

from __future__ import annotations

import os
import re
import time

import pytest
from django.db import connection

from config.celery import app as celery_app
from consensus import services
from consensus.models import EngineRun, Idea, OpinionGroup, ProposalScore

from ..consensus.engine_data import add_votes, consultation_with_themes, theme_texts
from ..factories import ProposalFactory
from .conftest import PYTHON, Processes, app_env

pytestmark = [pytest.mark.realservices, pytest.mark.django_db(transaction=True)]

REDIS_URL = os.environ.get("MW_REDIS_URL", "redis://127.0.0.1:6379/11")
RUN = {
    "model_name": "hashing",
    "seed": 7,
    "parameters": {"chunk_size": 10, "reuse_embeddings": False},
}
BOOT_DEADLINE = 30
RUN_DEADLINE = 40
CONF_KEYS = ("broker_url", "result_backend", "task_always_eager", "task_eager_propagates")
SUCCEEDED = re.compile(r"Task consensus\.tasks\.embed_chunk\[[^\]]+\] succeeded")


def _reset_app_clients(app):
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.__dict__.pop("amqp", None)
    if hasattr(app._local, "backend"):
        del app._local.backend


@pytest.fixture
def broker():
    """This process publishes to Redis db 11 (flushed before and after) instead of running eagerly."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    client.flushdb()
    saved = {key: celery_app.conf[key] for key in CONF_KEYS}
    celery_app.conf.update(
        broker_url=REDIS_URL, result_backend=REDIS_URL, task_always_eager=False,
        task_eager_propagates=False,
    )  # fmt: skip
    _reset_app_clients(celery_app)
    try:
        yield REDIS_URL
    finally:
        celery_app.conf.update(saved)
        _reset_app_clients(celery_app)
        client.flushdb()
        client.close()


@pytest.fixture
def workers(broker, tmp_path):
    """Start n engine workers (one process each, concurrency 1); all stopped in teardown."""
    env = app_env(
        connection.settings_dict["NAME"],
        CELERY_BROKER_URL=broker,
        CELERY_RESULT_BACKEND=broker,
        REDIS_URL=broker,
    )
    groups: list[Processes] = []

    def start(n: int, tag: str) -> Processes:
        logdir = tmp_path / tag
        logdir.mkdir()
        procs = Processes(logdir)
        groups.append(procs)
        for i in range(n):
            procs.start(
                f"w{i}",
                [PYTHON, "-m", "celery", "-A", "config", "worker", "-Q", "engine", "-n",
                 f"mw{i}-{tag}-{os.getpid()}@%h", "--concurrency", "1", "--pool", "prefork",
                 "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"],
                env,
            )  # fmt: skip
        deadline = time.monotonic() + BOOT_DEADLINE
        while not all(" ready." in procs.log(name, tail=100_000) for name in procs.procs):
            procs.check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"workers not ready after {BOOT_DEADLINE}s:\n{procs.logs()}")
            time.sleep(0.2)
        return procs

    try:
        yield start
    finally:
        for procs in groups:
            procs.stop(timeout=10)


def _wait(run: EngineRun, procs: Processes) -> EngineRun:
    deadline = time.monotonic() + RUN_DEADLINE
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if not run.is_active:
            return run
        procs.check_alive()
        time.sleep(0.2)
    raise AssertionError(f"run {run.pk} still {run.status}/{run.phase}:\n{procs.logs()}")


def _chunks_per_worker(procs: Processes) -> dict[str, int]:
    return {name: len(SUCCEEDED.findall(procs.log(name, tail=10_000_000))) for name in procs.procs}


def _results(run: EngineRun):
    ideas = sorted(
        (
            idea.number,
            tuple(idea.keywords),
            tuple(sorted(idea.memberships.values_list("proposal_id", flat=True))),
        )
        for idea in Idea.objects.filter(run=run)
    )
    scores = sorted(
        tuple(sorted((k, v) for k, v in row.items() if k not in {"id", "run_id"}))
        for row in ProposalScore.objects.filter(run=run).values()
    )
    groups = sorted(
        tuple(sorted((k, v) for k, v in row.items() if k not in {"id", "run_id"}))
        for row in OpinionGroup.objects.filter(run=run).values()
    )
    return ideas, scores, groups


def test_two_worker_processes_give_the_same_run_as_one(workers):
    t0 = time.monotonic()
    consultation = consultation_with_themes()
    add_votes(consultation, n_participants=30)
    for text in theme_texts()[::2]:  # 48 + 24 accepted answers: 8 chunks of 10 (the last 2)
        ProposalFactory(consultation=consultation, content=f"{text}, vraiment")

    one = workers(1, "one")
    first = _wait(services.engine_run_start(consultation=consultation, kind="full", **RUN), one)
    assert first.status == EngineRun.Status.DONE, (first.error, one.logs())
    assert first.total_chunks >= 6
    assert sum(_chunks_per_worker(one).values()) == first.total_chunks
    one.stop(timeout=10)
    t1 = time.monotonic()

    two = workers(2, "two")
    second = _wait(services.engine_run_start(consultation=consultation, kind="full", **RUN), two)
    assert second.status == EngineRun.Status.DONE, (second.error, two.logs())
    t2 = time.monotonic()

    assert second.pk != first.pk and second.total_chunks == first.total_chunks
    per_worker = _chunks_per_worker(two)
    assert sum(per_worker.values()) == second.total_chunks, per_worker
    assert all(count >= 1 for count in per_worker.values()), (per_worker, two.logs())

    ideas1, scores1, groups1 = _results(first)
    ideas2, scores2, groups2 = _results(second)
    assert ideas1 and scores1 and groups1
    assert ideas2 == ideas1
    assert scores2 == scores1
    assert groups2 == groups1
    print(
        f"chunks={first.total_chunks} one worker {t1 - t0:.1f}s, two workers {t2 - t1:.1f}s, "
        f"chunks per worker {per_worker}"
    )
