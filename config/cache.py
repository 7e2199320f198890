"""A Redis cache that degrades instead of failing when Redis is unreachable.

``ResilientRedisCache`` is Django's ``RedisCache`` with a circuit breaker: a connection or
timeout error is logged (once per outage, not once per call), the operation answers as a cache
miss (``get`` returns the default, ``add``/``delete``/``touch``/``has_key`` return False, ``set``
does nothing), and for ``CACHE_RETRY_SECONDS`` the backend does not even try Redis, so a dead
Redis costs a request at most one connection timeout (``CACHE_SOCKET_TIMEOUT``, 0.5 s by
default) every few seconds instead of one per cache call. After that pause one call tries again;
the first success closes the breaker and logs the recovery.

``incr``/``decr`` raise ``CacheUnavailable``, a ``ValueError``: Django's contract for a missing
key, so counting code written as ``add`` + ``incr`` + ``except ValueError: set`` keeps working
(it fails open: a rate limit counted in the cache does not block anybody while Redis is down).
Callers that must know can catch ``CacheUnavailable`` itself.

What still needs Redis is what can only live there: sessions when ``SESSION_ENGINE`` is the
cache backend (visitors get a new session), and the Celery broker (see ``config.outbox``).
``cache_is_up()`` says whether the breaker is closed (the health endpoint checks Redis itself).
"""

from __future__ import annotations

import logging
import threading
import time

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache

logger = logging.getLogger(__name__)


class CacheUnavailable(ValueError):
    """The cache could not be reached; a ``ValueError`` so that incr callers treat it as a miss."""


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class _Breaker:
    """Open after a failure for ``retry_seconds``; shared by the threads of one process."""

    def __init__(self, retry_seconds: float):
        self.retry_seconds = retry_seconds
        self.open_until = 0.0
        self.failures = 0
        self.lock = threading.Lock()

    def allows(self) -> bool:
        return time.monotonic() >= self.open_until

    def failed(self, name: str, exc: BaseException) -> None:
        with self.lock:
            first = self.failures == 0
            self.failures += 1
            self.open_until = time.monotonic() + self.retry_seconds
        if first:
            logger.warning(
                "cache %s unreachable (%s: %s); serving without it, retrying every %.0f s",
                name, type(exc).__name__, exc, self.retry_seconds,
            )  # fmt: skip

    def succeeded(self, name: str) -> None:
        if self.failures:
            with self.lock:
                failures, self.failures, self.open_until = self.failures, 0, 0.0
            logger.warning("cache %s reachable again after %d failed calls", name, failures)


class ResilientRedisCache(RedisCache):
    """``RedisCache`` that answers as a miss while Redis is down (see the module docstring).

    ``OPTIONS`` accepts ``retry_seconds`` (breaker pause, default 5) on top of the redis-py
    connection pool options (``socket_connect_timeout``, ``socket_timeout``...).
    """

    def __init__(self, server, params):
        params = dict(params)
        options = dict(params.get("OPTIONS") or {})
        retry = float(options.pop("retry_seconds", 5))
        options.setdefault("socket_connect_timeout", 0.5)
        options.setdefault("socket_timeout", 0.5)
        params["OPTIONS"] = options
        super().__init__(server, params)
        self.breaker = _Breaker(retry)
        self._errors = _redis_errors()

    def _call(self, method: str, fallback, *args, **kwargs):
        if not self.breaker.allows():
            return fallback()
        try:
            result = getattr(super(), method)(*args, **kwargs)
        except self._errors as exc:
            self.breaker.failed(self._location_name(), exc)
            return fallback()
        self.breaker.succeeded(self._location_name())
        return result

    def _location_name(self) -> str:
        servers = self._servers or ["?"]
        # Never log a password that may sit in the URL.
        return ", ".join(s.rsplit("@", 1)[-1] for s in servers)

    def is_up(self) -> bool:
        return self.breaker.allows()

    # Reads answer as misses.
    def get(self, key, default=None, version=None):
        return self._call("get", lambda: default, key, default, version)

    def get_many(self, keys, version=None):
        return self._call("get_many", dict, keys, version)

    def has_key(self, key, version=None):
        return self._call("has_key", lambda: False, key, version)

    # Writes are dropped.
    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._call("set", lambda: None, key, value, timeout, version)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._call("add", lambda: False, key, value, timeout, version)

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        return self._call("set_many", lambda: list(data), data, timeout, version)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self._call("touch", lambda: False, key, timeout, version)

    def delete(self, key, version=None):
        return self._call("delete", lambda: False, key, version)

    def delete_many(self, keys, version=None):
        return self._call("delete_many", lambda: None, keys, version)

    def clear(self):
        return self._call("clear", lambda: False)

    def incr(self, key, delta=1, version=None):
        def unavailable():
            raise CacheUnavailable("cache unavailable")

        return self._call("incr", unavailable, key, delta, version)

    def decr(self, key, delta=1, version=None):
        return self.incr(key, -delta, version)


def cache_is_up(alias: str = "default") -> bool:
    """False while the cache's breaker is open (Redis found down a moment ago)."""
    from django.core.cache import caches

    backend = caches[alias]
    return backend.is_up() if hasattr(backend, "is_up") else True
