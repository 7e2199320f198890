"""Thread counts of the engine's numeric libraries, read from the environment."""

from __future__ import annotations

import os

THREAD_SETTINGS = ("CONCORDE_EMBED_THREADS", "CONCORDE_CLUSTER_THREADS", "CONCORDE_CLUSTER_WORKERS")


def env_threads(name: str, default: int = 1) -> int:
    """The whole number >= 1 in the environment variable `name` (`default` when unset or empty).

    Raises ValueError naming the variable for anything else ("two", "0", "1.5"), so that a
    mistyped setting stops a run with a clear reason instead of a bare int() error.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"{name} must be a whole number >= 1, not {raw!r}")
    return threads
