"""Celery task metrics (config/metrics.py): signal handlers, the /metrics endpoint, queue lengths,
and a real prefork worker reporting through the multiprocess directory and its own port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from config import metrics
from config.celery import app
from tests.factories import UserFactory

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="set TEST_REDIS_URL to a Redis database")


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def parse(text: str) -> dict:
    """{(sample name, frozenset(labels)): value} of a Prometheus text page."""
    values = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            values[(s.name, frozenset(s.labels.items()))] = s.value
    return values


@app.task(name="metrics_eager.ok")
def eager_ok():
    return 42


@app.task(name="metrics_eager.boom")
def eager_boom():
    raise ZeroDivisionError("boom")


# Signal handlers -------------------------------------------------------------------------------


def test_a_task_run_counts_a_success_and_its_runtime():
    succeeded = sample("concorde_celery_tasks_succeeded_total", task="metrics_eager.ok")
    runs = sample("concorde_celery_task_runtime_seconds_count", task="metrics_eager.ok")
    assert eager_ok.delay().get() == 42
    assert sample("concorde_celery_tasks_succeeded_total", task="metrics_eager.ok") == succeeded + 1
    assert sample("concorde_celery_task_runtime_seconds_count", task="metrics_eager.ok") == runs + 1
    assert sample("concorde_celery_task_runtime_seconds_sum", task="metrics_eager.ok") > 0


def test_a_failing_task_counts_a_failure_with_its_exception():
    before = sample("concorde_celery_tasks_failed_total", task="metrics_eager.boom", exception="ZeroDivisionError")
    result = eager_boom.apply(throw=False)
    assert result.state == "FAILURE"
    after = sample("concorde_celery_tasks_failed_total", task="metrics_eager.boom", exception="ZeroDivisionError")
    assert after == before + 1
    assert sample("concorde_celery_tasks_succeeded_total", task="metrics_eager.boom") == 0


def test_received_and_retried_handlers_count_per_task_name():
    received = sample("concorde_celery_tasks_received_total", task="x.y")
    metrics.on_task_received(request=SimpleNamespace(name="x.y"))
    metrics.on_task_received(request=None)  # never raises on an odd request
    assert sample("concorde_celery_tasks_received_total", task="x.y") == received + 1
    retried = sample("concorde_celery_tasks_retried_total", task="x.y")
    metrics.on_task_retry(sender=SimpleNamespace(name="x.y"), request=None, reason="again")
    assert sample("concorde_celery_tasks_retried_total", task="x.y") == retried + 1


def test_postrun_without_prerun_observes_nothing():
    count = sample("concorde_celery_task_runtime_seconds_count", task="x.z")
    metrics.on_task_postrun(sender=SimpleNamespace(name="x.z"), task_id="never-started")
    metrics.on_task_prerun(task_id="t1")
    metrics.on_task_postrun(task=SimpleNamespace(name="x.z"), task_id="t1")
    assert sample("concorde_celery_task_runtime_seconds_count", task="x.z") == count + 1
    assert "t1" not in metrics._started  # no leak


def test_the_handlers_are_connected_once():
    from celery import signals

    metrics.connect_signals()
    metrics.connect_signals()
    receivers = [r for r in signals.task_success.receivers if "concorde.metrics" in str(r[0])]
    assert len(receivers) == 1


# The endpoint ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_anonymous_and_citizens_are_refused(client):
    assert client.get("/metrics").status_code == 403
    client.force_login(UserFactory())
    assert client.get("/metrics").status_code == 403


@pytest.mark.django_db
def test_staff_read_the_metrics(client):
    eager_ok.delay()
    client.force_login(UserFactory(is_staff=True))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert response["Cache-Control"] == "no-store"
    values = parse(response.content.decode())
    assert values[("concorde_celery_tasks_succeeded_total", frozenset({("task", "metrics_eager.ok")}))] >= 1
    assert values[("concorde_celery_broker_up", frozenset())] == 0  # memory:// broker in tests


@pytest.mark.django_db
def test_the_scraper_token(client, settings):
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403  # no token set
    settings.CONCORDE_METRICS_TOKEN = "s3cret-scrape-token"
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token").status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION="bearer s3cret-scrape-token").status_code == 200
    for bad in ("Bearer wrong", "Basic s3cret-scrape-token", "s3cret-scrape-token", "Bearer", "Bearer  "):
        assert client.get("/metrics", HTTP_AUTHORIZATION=bad).status_code == 403, bad
    assert client.post("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token").status_code == 405


# Queue lengths ---------------------------------------------------------------------------------


def test_queues_default_to_the_routed_ones(settings):
    settings.CONCORDE_METRICS_QUEUES = []
    assert metrics.metrics_queues() == ["engine", "web"]
    settings.CONCORDE_METRICS_QUEUES = ["web"]
    assert metrics.metrics_queues() == ["web"]


def test_an_unreachable_or_non_redis_broker_reports_down_without_failing():
    assert metrics.queue_lengths("memory://") is None
    assert metrics.queue_lengths("redis://127.0.0.1:1/0") is None


@needs_redis
def test_queue_lengths_are_read_from_redis(settings):
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    queue = f"metrics-test-{uuid.uuid4().hex[:8]}"
    settings.CONCORDE_METRICS_QUEUES = [queue]
    try:
        client.rpush(queue, "a", "b")
        client.rpush(f"{queue}\x06\x163", "c")  # a priority-3 message (kombu's key)
        assert metrics.queue_lengths(REDIS_URL) == {queue: 3}
        settings.CELERY_BROKER_URL = REDIS_URL
        values = parse(metrics.generate_latest(metrics.scrape_registry()).decode())
        assert values[("concorde_celery_queue_length", frozenset({("queue", queue)}))] == 3
        assert values[("concorde_celery_broker_up", frozenset())] == 1
    finally:
        client.delete(queue, f"{queue}\x06\x163")


# A real prefork worker -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url, deadline):
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer")


@needs_redis
def test_a_prefork_worker_reports_through_its_port_and_the_shared_directory(tmp_path, monkeypatch):
    from celery import Celery

    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    port = _free_port()
    queue = f"metrics-{uuid.uuid4().hex[:8]}"
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="config.settings",
        CELERY_BROKER_URL=REDIS_URL,
        CELERY_RESULT_BACKEND=REDIS_URL,
        PROMETHEUS_MULTIPROC_DIR=str(multiproc),
        CONCORDE_METRICS_PORT=str(port),
        CONCORDE_METRICS_ADDR="127.0.0.1",
        CONCORDE_METRICS_QUEUES=queue,
    )
    env.pop("PYTEST_CURRENT_TEST", None)
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queue, "-n",
         f"{queue}@%h", "--pool", "prefork", "--concurrency", "2", "--include",
         "tests.accounts.metrics_tasks", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "-l", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    sender = Celery(broker=REDIS_URL, backend=REDIS_URL)
    try:
        _wait_http(f"http://127.0.0.1:{port}/metrics", time.monotonic() + 90)
        results = [sender.send_task("metrics_test.ok", args=[i], queue=queue) for i in range(4)]
        failing = sender.send_task("metrics_test.boom", queue=queue)
        flaky = sender.send_task("metrics_test.flaky", queue=queue)
        assert [r.get(timeout=60) for r in results] == [0, 1, 2, 3]
        assert flaky.get(timeout=60) == "ok after a retry"
        with pytest.raises(KeyError):
            failing.get(timeout=60)
        time.sleep(0.5)  # the child writes its counters just after storing the result

        page = parse(_wait_http(f"http://127.0.0.1:{port}/metrics", time.monotonic() + 10))
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(multiproc))
        shared = parse(metrics.generate_latest(metrics.scrape_registry()).decode())
        for values in (page, shared):  # the worker's own port, and the web's /metrics on this host
            def v(name, values=values, **labels):
                return values.get((name, frozenset(labels.items())), 0)

            assert v("concorde_celery_tasks_received_total", task="metrics_test.ok") == 4
            assert v("concorde_celery_tasks_succeeded_total", task="metrics_test.ok") == 4
            assert v("concorde_celery_task_runtime_seconds_count", task="metrics_test.ok") == 4
            assert v("concorde_celery_tasks_failed_total", task="metrics_test.boom", exception="KeyError") == 1
            assert v("concorde_celery_tasks_retried_total", task="metrics_test.flaky") == 1
            assert v("concorde_celery_tasks_succeeded_total", task="metrics_test.flaky") == 1
        assert page[("concorde_celery_queue_length", frozenset({("queue", queue)}))] == 0
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
        log.close()
