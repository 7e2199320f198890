"""Engine runs through a real Celery worker, Redis broker and result backend, on PostgreSQL.

Eager mode is an emulation: here the chord, its retries and the write-back go through Redis and
a worker thread (pool "solo"), with committed transactions (``transaction=True``).
WORKER_TEST_REDIS_URL picks the Redis database (default redis://127.0.0.1:6379/9), one of its
own: the tests on OPS_REDIS_URL empty theirs (``flushdb``; those on TEST_REDIS_URL did too until
2026-12-07), and from another test process running at the same time (``pytest -n 2``) that can
drop a chunk's message queued here (a run then waited for its fifth chunk until the test's
timeout, once). The engine tasks go
to a queue named after this process, so test processes sharing that Redis never take each
other's work.
"""

import os
import threading
import time
from unittest import mock

import pytest
from celery import signals
from celery.contrib.testing.worker import start_worker
from django.db import OperationalError, connections
from django.utils import translation

from config.celery import app as celery_app
from consensus import services
from consensus.models import (
    EngineChunk,
    EngineRun,
    Idea,
    IdeaMembership,
    OpinionGroup,
    ProposalEmbedding,
)
from consensus.tasks import embed_chunk, run_engine
from consultations.models import Proposal

from ..factories import ConsultationFactory, ProposalFactory
from .engine_data import HASHING, add_votes, consultation_with_themes

pytestmark = [pytest.mark.realservices, pytest.mark.django_db(transaction=True)]

REDIS_URL = os.environ.get("WORKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
QUEUE = f"engine-test-{os.getpid()}"
CONF_KEYS = (
    "broker_url", "result_backend", "task_always_eager", "task_eager_propagates", "task_routes",
    "task_default_queue",
)  # fmt: skip


def _reset_app_clients(app):
    """Forget the broker pool and result backend built from the previous configuration."""
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.__dict__.pop("amqp", None)  # queues, router and producer pool are cached on it
    if hasattr(app._local, "backend"):
        del app._local.backend


EXECUTED: list[tuple[str, bool]] = []


def _record_task(task=None, **_):
    EXECUTED.append((task.name, threading.current_thread() is threading.main_thread()))


def _close_thread_connections(**_):
    if threading.current_thread() is not threading.main_thread():
        connections.close_all()


@pytest.fixture(scope="module")
def worker(django_db_blocker):
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    saved = {key: celery_app.conf[key] for key in CONF_KEYS}
    celery_app.conf.update(
        broker_url=REDIS_URL,
        result_backend=REDIS_URL,
        task_always_eager=False,
        task_eager_propagates=False,
        task_routes={"consensus.tasks.*": {"queue": QUEUE}},
        task_default_queue=QUEUE,
    )
    _reset_app_clients(celery_app)
    signals.task_postrun.connect(_close_thread_connections, weak=False)
    signals.task_prerun.connect(_record_task, weak=False)
    try:
        with start_worker(
            celery_app,
            pool="solo",
            perform_ping_check=False,
            queues=[QUEUE],
            shutdown_timeout=30,
        ) as controller:
            yield controller
    finally:
        signals.task_postrun.disconnect(_close_thread_connections)
        signals.task_prerun.disconnect(_record_task)
        client.delete(QUEUE)
        celery_app.conf.update(saved)
        _reset_app_clients(celery_app)


def wait_for(run, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if not run.is_active:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run.pk} still {run.status}/{run.phase} after {timeout}s")


def ideas_of(run):
    return sorted(
        (
            i.number,
            tuple(i.keywords),
            tuple(sorted(i.memberships.values_list("proposal_id", flat=True))),
        )
        for i in Idea.objects.filter(run=run)
    )


def test_a_full_run_goes_through_the_worker_and_publishes_its_results(worker):
    EXECUTED.clear()
    consultation = consultation_with_themes()
    add_votes(consultation, n_participants=30)
    run = wait_for(services.engine_run_start(consultation=consultation, kind="full", **HASHING))

    assert run.status == EngineRun.Status.DONE, run.error
    assert run.done_chunks == run.total_chunks == 5
    assert Idea.objects.filter(run=run).count() == 4
    assert IdeaMembership.objects.filter(run=run).count() == 48
    assert OpinionGroup.objects.filter(run=run).count() == 2
    consultation.refresh_from_db()
    assert consultation.current_run_id == run.pk
    # it really went through the broker: every step ran in the worker thread, none in the test
    names = [name for name, in_main_thread in EXECUTED if not in_main_thread]
    assert not any(in_main_thread for _name, in_main_thread in EXECUTED)
    assert names.count("consensus.tasks.embed_chunk") == 5
    assert names.count("consensus.tasks.cluster_and_write") == 1


def test_a_chunk_that_hits_a_database_error_is_retried_and_counted_once(worker):
    consultation = consultation_with_themes()
    real = services._write_chunk_embeddings
    calls = []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 2:
            raise OperationalError("could not serialize access")
        return real(*args)

    with mock.patch.object(services, "_write_chunk_embeddings", side_effect=flaky):
        run = wait_for(
            services.engine_run_start(consultation=consultation, kind="ideas", **HASHING)
        )

    assert run.status == EngineRun.Status.DONE, run.error
    assert len(calls) == run.total_chunks + 1
    assert run.done_chunks == run.total_chunks == 5
    assert ProposalEmbedding.objects.filter(run=run).count() == 48
    assert not EngineChunk.objects.filter(run=run, done_at__isnull=True).exists()


def test_a_duplicated_chunk_changes_nothing(worker):
    consultation = consultation_with_themes()
    with mock.patch("consensus.tasks.run_engine.delay_on_commit"):
        run = services.engine_run_start(consultation=consultation, kind="ideas", **HASHING)
    lo, hi = services.engine_run_begin(run_id=run.pk)[0]

    first = embed_chunk.delay(run.pk, lo, hi).get(timeout=30)
    stored = {
        k: bytes(v)
        for k, v in ProposalEmbedding.objects.filter(run=run).values_list("proposal_id", "vector")
    }
    second = embed_chunk.delay(run.pk, lo, hi).get(timeout=30)

    assert first["size"] == 10 and second == {"skipped": "done", "chunk": 0}
    run.refresh_from_db()
    assert run.done_chunks == 1
    assert stored == {
        k: bytes(v)
        for k, v in ProposalEmbedding.objects.filter(run=run).values_list("proposal_id", "vector")
    }


def test_a_second_start_while_the_first_runs_is_refused(worker):
    consultation = consultation_with_themes()
    first = services.engine_run_start(consultation=consultation, kind="ideas", **HASHING)
    with pytest.raises(services.EngineBusy):
        services.engine_run_start(consultation=consultation, kind="ideas", **HASHING)
    assert wait_for(first).status == EngineRun.Status.DONE
    second = wait_for(services.engine_run_start(consultation=consultation, kind="ideas", **HASHING))
    assert second.status == EngineRun.Status.DONE
    assert EngineRun.objects.filter(consultation=consultation).count() == 2


def test_the_same_input_and_seed_give_the_same_ideas(worker):
    consultation = consultation_with_themes()
    options = {
        "kind": "ideas",
        "model_name": "hashing",
        "seed": 7,
        "parameters": {"chunk_size": 10, "reuse_embeddings": False},
    }
    first = wait_for(services.engine_run_start(consultation=consultation, **options))
    second = wait_for(services.engine_run_start(consultation=consultation, **options))

    assert first.status == second.status == EngineRun.Status.DONE
    assert second.metrics["reused_embeddings"] == 0
    assert first.input_hash == second.input_hash
    assert ideas_of(first) == ideas_of(second) and len(ideas_of(first)) == 4


@pytest.mark.parametrize(
    ("texts", "n_ideas"),
    [
        pytest.param(["Il faut plus de trains de nuit"], 0, id="one-proposal"),
        pytest.param(["Il faut plus de trains de nuit"] * 12, 1, id="all-identical"),
        pytest.param(
            ["Il faut des pistes cyclables sécurisées partout. " * 20] * 4
            + ["🚲🌳💚", "🚲🌳", "🔥🔥🔥"] * 2,
            None,
            id="long-and-emoji",
        ),
    ],
)
def test_degenerate_input_gives_a_sensible_run(worker, texts, n_ideas):
    consultation = ConsultationFactory()
    for text in texts:
        ProposalFactory(consultation=consultation, content=text[:1000])
    run = wait_for(services.engine_run_start(consultation=consultation, kind="full", **HASHING))

    assert run.status == EngineRun.Status.DONE, run.error
    if n_ideas is not None:
        assert run.metrics["n_ideas"] == n_ideas
    assert IdeaMembership.objects.filter(run=run).count() + run.metrics["n_noise"] == len(texts)


def test_an_empty_consultation_is_refused_and_a_vanished_input_fails_clearly(worker):
    empty = ConsultationFactory()
    with pytest.raises(services.EngineInputError):
        services.engine_run_start(consultation=empty, **HASHING)

    consultation = ConsultationFactory()
    ProposalFactory(consultation=consultation, content="Il faut plus de trains de nuit")
    with mock.patch("consensus.tasks.run_engine.delay_on_commit") as enqueue:
        run = services.engine_run_start(consultation=consultation, kind="ideas", **HASHING)
    Proposal.objects.filter(consultation=consultation).update(status=Proposal.Status.ARCHIVED)
    enqueue.assert_called_once_with(run.pk)
    run_engine.delay(run.pk)  # what the on-commit hook would have sent
    run = wait_for(run)
    assert run.status == EngineRun.Status.FAILED
    message = "No accepted proposal left to analyse."
    with translation.override("en"):
        english = translation.gettext(message)
    with translation.override("fr"):
        french = translation.gettext(message)
    assert run.error in {english, french}
    consultation.refresh_from_db()
    assert consultation.current_run_id is None
