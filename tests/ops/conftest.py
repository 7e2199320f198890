"""Helpers for the operations tests: scratch PostgreSQL databases, subprocesses, free ports.

The stack and backup tests run real processes (gunicorn, Celery, manage.py, pg_dump) against
their own databases, created here from a migrated template (``concorde_ops_tpl``, migrated once
per session) and dropped afterwards. Database names end with the xdist worker id, so parallel
runs do not collide. ``OPS_REDIS_URL`` picks the Redis database the stack uses (default db 12).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
BIN = Path(sys.executable).parent
OPS_REDIS_URL = os.environ.get("OPS_REDIS_URL", "redis://127.0.0.1:6379/12")
SUFFIX = os.environ.get("PYTEST_XDIST_WORKER", "")


def db_params() -> dict:
    db = settings.DATABASES["default"]
    return {
        "host": db.get("HOST") or "127.0.0.1",
        "port": str(db.get("PORT") or 5432),
        "user": db.get("USER") or "postgres",
        "password": db.get("PASSWORD") or "",
    }


def db_url(name: str) -> str:
    p = db_params()
    auth = p["user"] + (f":{p['password']}" if p["password"] else "")
    return f"postgres://{auth}@{p['host']}:{p['port']}/{name}"


def scratch_name(base: str) -> str:
    return f"{base}{'_' + SUFFIX if SUFFIX else ''}"


def pg_env() -> dict:
    """libpq variables for pg_dump / pg_restore / psql."""
    p = db_params()
    env = dict(os.environ, PGHOST=p["host"], PGPORT=p["port"], PGUSER=p["user"])
    if p["password"]:
        env["PGPASSWORD"] = p["password"]
    return env


def connect(name: str = "postgres", **kwargs):
    import psycopg

    p = db_params()
    return psycopg.connect(
        host=p["host"], port=p["port"], user=p["user"], password=p["password"] or None,
        dbname=name, connect_timeout=10, **kwargs,
    )  # fmt: skip


def drop_database(name: str) -> None:
    with connect(autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_database(name: str, *, template: str = "template0") -> None:
    drop_database(name)
    with connect(autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


def app_env(database: str, **extra) -> dict:
    """The environment of a Concorde process on ``database`` with the ops Redis database."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DJANGO_ENV", "REDIS_URL", "CACHE_URL", "CELERY_BROKER_URL",
                     "CELERY_RESULT_BACKEND", "DB_POOL_MAX_SIZE", "LOG_FORMAT"}
    }  # fmt: skip
    env.update(
        DATABASE_URL=db_url(database),
        DJANGO_SETTINGS_MODULE="config.settings",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        CONCORDE_EMBED_THREADS="1",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update(extra)
    return env


def manage(*args, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Subprocesses in their own process groups, output to files, all stopped at the end."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        proc._log = log  # type: ignore[attr-defined]
        self.procs[name] = proc
        return proc

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"----- {name} -----\n{self.log(name)}" for name in self.procs)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")

    def stop(self, timeout: float = 15) -> dict[str, int | None]:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[name] = None
            # whatever is left in the group (forked children) goes too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
            proc._log.close()  # type: ignore[attr-defined]
        return codes


def wait_http(url: str, *, timeout: float, procs: Processes | None = None, status=200):
    import httpx

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if procs is not None:
            procs.check_alive()
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code == status:
                return response
            last = f"{response.status_code} {response.text[:500]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.3)
    raise AssertionError(f"{url} not {status} after {timeout}s: {last}")


@pytest.fixture(scope="session")
def migrated_template(django_db_blocker):
    """A database with every migration applied, to copy with CREATE DATABASE ... TEMPLATE."""
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("needs PostgreSQL")
    name = scratch_name("concorde_ops_tpl")
    with django_db_blocker.unblock():
        create_database(name)
        manage("migrate", "--noinput", env=app_env(name), timeout=300)
        try:
            yield name
        finally:
            drop_database(name)


@pytest.fixture
def ops_redis():
    import redis

    client = redis.Redis.from_url(OPS_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip(f"Redis is not reachable at {OPS_REDIS_URL}")
    client.flushdb()
    yield OPS_REDIS_URL
    client.flushdb()
    client.close()
