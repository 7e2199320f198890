"""Celery task metrics in the Prometheus text format (issue #9, docs/operations.md).

Counters per task name: received (by a worker), succeeded, failed (with the exception class),
retried; a runtime histogram per task name; and, read from the broker at scrape time, the length
of each Celery queue (Redis broker only). They are filled by Celery signal handlers, connected in
config/celery.py (`connect_signals`).

Where to scrape:

- ``GET /metrics`` on the web process, for a staff session or with
  ``Authorization: Bearer $CONCORDE_METRICS_TOKEN``; anyone else gets a 403.
- ``CONCORDE_METRICS_PORT`` set on a worker: the worker's main process also serves the same page
  on that port (prometheus_client's exporter, no authentication: keep the port private).

Celery's prefork workers run tasks in child processes, so the counters live in several processes.
Set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared by the worker and web processes of a
machine (wiped at start, e.g. a tmpfs); every process then writes its counters there and every
scrape adds them up (prometheus_client's multiprocess mode). Without it, each process reports only
its own counters: right for ``--pool solo``/``threads`` workers and for tests.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time

from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger(__name__)

TASKS_RECEIVED = Counter(
    "concorde_celery_tasks_received", "Tasks received by a worker.", ["task"]
)
TASKS_SUCCEEDED = Counter(
    "concorde_celery_tasks_succeeded", "Tasks that finished without error.", ["task"]
)
TASKS_FAILED = Counter(
    "concorde_celery_tasks_failed", "Tasks that raised (after their last retry).", ["task", "exception"]
)
TASKS_RETRIED = Counter("concorde_celery_tasks_retried", "Task retries scheduled.", ["task"])
TASK_RUNTIME = Histogram(
    "concorde_celery_task_runtime_seconds",
    "Wall-clock run time of a task, from prerun to postrun.",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, float("inf")),
)

# task id -> start time; filled by task_prerun, emptied by task_postrun, in the process running it.
_started: dict[str, float] = {}
_started_lock = threading.Lock()


def _task_name(task) -> str:
    return getattr(task, "name", None) or "unknown"


def on_task_received(sender=None, request=None, **kwargs):
    TASKS_RECEIVED.labels(task=getattr(request, "name", None) or "unknown").inc()


def on_task_prerun(sender=None, task_id=None, task=None, **kwargs):
    if task_id:
        with _started_lock:
            _started[task_id] = time.perf_counter()


def on_task_postrun(sender=None, task_id=None, task=None, **kwargs):
    with _started_lock:
        started = _started.pop(task_id, None) if task_id else None
    if started is not None:
        TASK_RUNTIME.labels(task=_task_name(task or sender)).observe(time.perf_counter() - started)


def on_task_success(sender=None, **kwargs):
    TASKS_SUCCEEDED.labels(task=_task_name(sender)).inc()


def on_task_failure(sender=None, exception=None, **kwargs):
    exception_name = type(exception).__name__ if exception is not None else "unknown"
    TASKS_FAILED.labels(task=_task_name(sender), exception=exception_name).inc()


def on_task_retry(sender=None, request=None, **kwargs):
    TASKS_RETRIED.labels(task=_task_name(sender)).inc()


def on_worker_ready(sender=None, **kwargs):
    """Serve the metrics on CONCORDE_METRICS_PORT from the worker's main process, when set."""
    port = getattr(settings, "CONCORDE_METRICS_PORT", 0)
    if not port:
        return
    from prometheus_client import start_http_server

    addr = getattr(settings, "CONCORDE_METRICS_ADDR", "0.0.0.0")
    start_http_server(port, addr=addr, registry=scrape_registry())
    logger.info("metrics exporter listening", extra={"port": port})


def on_worker_process_shutdown(sender=None, pid=None, **kwargs):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


def connect_signals() -> None:
    """Connect the handlers above to Celery's signals (idempotent: dispatch_uid)."""
    from celery import signals

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

    for signal, handler in (
        (signals.task_received, on_task_received),
        (signals.task_prerun, on_task_prerun),
        (signals.task_postrun, on_task_postrun),
        (signals.task_success, on_task_success),
        (signals.task_failure, on_task_failure),
        (signals.task_retry, on_task_retry),
        (signals.worker_ready, on_worker_ready),
        (signals.worker_process_shutdown, on_worker_process_shutdown),
    ):
        signal.connect(handler, weak=False, dispatch_uid=f"concorde.metrics.{handler.__name__}")


# Queue lengths ---------------------------------------------------------------------------------

# kombu's Redis transport keeps a queue's messages of priority p > 0 under "<queue>\x06\x16<p>".
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


def metrics_queues() -> list[str]:
    queues = list(getattr(settings, "CONCORDE_METRICS_QUEUES", []) or [])
    if not queues:
        queues = [getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")]
        for route in (getattr(settings, "CELERY_TASK_ROUTES", {}) or {}).values():
            if isinstance(route, dict) and route.get("queue"):
                queues.append(route["queue"])
    return sorted(set(queues))


def queue_lengths(broker_url: str | None = None) -> dict[str, int] | None:
    """Messages waiting in each queue, or None when the broker is not Redis or cannot be reached."""
    broker_url = broker_url or getattr(settings, "CELERY_BROKER_URL", "") or ""
    if not broker_url.startswith(("redis://", "rediss://")):
        return None
    import redis

    try:
        client = redis.Redis.from_url(broker_url, socket_timeout=1, socket_connect_timeout=1)
        with client.pipeline(transaction=False) as pipe:
            queues = metrics_queues()
            for queue in queues:
                pipe.llen(queue)
                for step in _PRIORITY_STEPS:
                    pipe.llen(f"{queue}{_PRIORITY_SEP}{step}")
            lengths = pipe.execute()
    except redis.RedisError as exc:
        logger.warning("metrics: cannot read queue lengths from the broker: %s", exc)
        return None
    per_queue = 1 + len(_PRIORITY_STEPS)
    return {q: int(sum(lengths[i * per_queue : (i + 1) * per_queue])) for i, q in enumerate(queues)}


class QueueLengthCollector:
    """Reads the queue lengths from Redis at each scrape."""

    def collect(self):
        lengths = queue_lengths()
        up = GaugeMetricFamily(
            "concorde_celery_broker_up", "1 when the queue lengths could be read from the broker."
        )
        up.add_metric([], 0 if lengths is None else 1)
        yield up
        if lengths is not None:
            gauge = GaugeMetricFamily(
                "concorde_celery_queue_length", "Messages waiting in a Celery queue.", labels=["queue"]
            )
            for queue, length in lengths.items():
                gauge.add_metric([queue], length)
            yield gauge


class _ProcessCollector:
    """This process's own metrics (the default registry), when not in multiprocess mode."""

    def collect(self):
        yield from REGISTRY.collect()


def scrape_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if multiproc_dir:
        from prometheus_client import multiprocess

        os.makedirs(multiproc_dir, exist_ok=True)
        multiprocess.MultiProcessCollector(registry, path=multiproc_dir)
    else:
        registry.register(_ProcessCollector())
    registry.register(QueueLengthCollector())
    return registry


# The endpoint ----------------------------------------------------------------------------------


def _authorised(request) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active and user.is_staff:
        return True
    token = getattr(settings, "CONCORDE_METRICS_TOKEN", "") or ""
    header = request.headers.get("Authorization", "")
    scheme, _sep, given = header.partition(" ")
    if not token or scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def metrics_view(request):
    """Prometheus text format, for staff or the scraper's bearer token (CONCORDE_METRICS_TOKEN)."""
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
    if not _authorised(request):
        return HttpResponseForbidden("Forbidden", content_type="text/plain; charset=utf-8")
    response = HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
