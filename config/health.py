"""``GET /health/``: is this process able to serve? JSON, 200 when every check passes, else 503.

Checks, each with its time in milliseconds:

- ``database``: ``SELECT 1`` on the default database;
- ``migrations``: no migration left to apply (computed once, then re-checked every
  ``HEALTH_MIGRATIONS_TTL`` seconds while it passes, since it reads the migration files);
- ``cache``: a set/get round trip, only when the cache is Redis (``REDIS_URL`` / ``CACHE_URL``);
- ``broker``: a ping of the Celery broker, only when there is one (``CELERY_BROKER_URL``), plus
  the number of messages waiting in each queue (``queues``), informational, for a Redis broker.

A check that is not configured says ``"skipped"`` and does not fail. Errors are logged in full;
the response only names the exception class, so that the endpoint leaks no host or password.
The view touches no session and sets no cookie; it is never cached.
"""

from __future__ import annotations

import logging
import time
import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import connections
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

BROKER_TIMEOUT = 2.0  # seconds, connect and read
_migrations_ok_at: float | None = None  # monotonic time of the last passing migrations check


def _timed(check) -> dict:
    t0 = time.perf_counter()
    try:
        result = check()
    except Exception as exc:  # noqa: BLE001 - any failure is a failed check
        logger.exception("health check %s failed", check.__name__)
        return {"ok": False, "error": type(exc).__name__, "ms": _ms(t0)}
    result = dict(result or {})
    result.setdefault("ok", True)
    result["ms"] = _ms(t0)
    return result


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)


def check_database() -> dict:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connections["default"].vendor}


def check_migrations() -> dict:
    global _migrations_ok_at
    ttl = getattr(settings, "HEALTH_MIGRATIONS_TTL", 300)
    now = time.monotonic()
    if _migrations_ok_at is not None and now - _migrations_ok_at < ttl:
        return {"cached": True}
    executor = MigrationExecutor(connections["default"])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        _migrations_ok_at = None
        return {"ok": False, "unapplied": len(plan)}
    _migrations_ok_at = now
    return {}


def _redis_cache_configured() -> bool:
    return "redis" in settings.CACHES["default"]["BACKEND"].lower()


def check_cache() -> dict:
    if not _redis_cache_configured():
        return {"skipped": True}
    key = f"health:{uuid.uuid4().hex}"
    cache.set(key, "1", timeout=10)
    value = cache.get(key)
    cache.delete(key)
    return {} if value == "1" else {"ok": False, "error": "cache returned no value"}


def _broker_url() -> str:
    url = getattr(settings, "CELERY_BROKER_URL", "") or ""
    if (
        not url
        or url.startswith("memory://")
        or getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False)
    ):
        return ""
    return url


def _queue_names() -> list[str]:
    names = {getattr(settings, "CELERY_TASK_DEFAULT_QUEUE", "celery")}
    for route in (getattr(settings, "CELERY_TASK_ROUTES", None) or {}).values():
        if isinstance(route, dict) and route.get("queue"):
            names.add(route["queue"])
    return sorted(names)


def check_broker() -> dict:
    url = _broker_url()
    if not url:
        return {"skipped": True}
    if url.startswith(("redis://", "rediss://", "unix://")):
        import redis

        client = redis.Redis.from_url(
            url, socket_connect_timeout=BROKER_TIMEOUT, socket_timeout=BROKER_TIMEOUT
        )
        try:
            client.ping()
            pipe = client.pipeline(transaction=False)
            names = _queue_names()
            for name in names:
                pipe.llen(name)
            return {"queues": dict(zip(names, pipe.execute(), strict=True))}
        finally:
            client.close()
    from kombu import Connection

    with Connection(url, connect_timeout=BROKER_TIMEOUT) as conn:
        conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT)
    return {}


CHECKS = {
    "database": check_database,
    "migrations": check_migrations,
    "cache": check_cache,
    "broker": check_broker,
}


@never_cache
@require_safe
def health(request):
    checks = {}
    for name, check in CHECKS.items():
        if name == "migrations" and not checks["database"]["ok"]:
            checks[name] = {"ok": False, "error": "database unavailable", "ms": 0.0}
            continue
        checks[name] = _timed(check)
    ok = all(result["ok"] for result in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "error", "checks": checks}, status=200 if ok else 503
    )
