"""/health/, request ids, JSON logs and the production settings read from the environment."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from unittest import mock

import pytest
from django.db.utils import OperationalError
from django.test import override_settings

from config import health
from config.observability import JsonFormatter, RequestIdFilter

from .conftest import ROOT

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_migrations_cache():
    health._migrations_ok_at = None
    yield
    health._migrations_ok_at = None


def test_health_is_200_with_every_check_when_all_is_well(client):
    response = client.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["migrations"] == {"ok": True, "ms": body["checks"]["migrations"]["ms"]}
    # no Redis cache nor broker configured in the test settings: skipped, not failed
    assert body["checks"]["cache"]["skipped"] is True
    assert body["checks"]["broker"]["skipped"] is True
    assert response["Cache-Control"].startswith("max-age=0")
    assert "sessionid" not in response.cookies and "csrftoken" not in response.cookies


def test_health_is_503_when_the_database_fails(client, caplog):
    def broken():
        raise OperationalError("connection to server at 10.0.0.1 failed: password secret")

    with mock.patch.dict(health.CHECKS, {"database": broken}):
        response = client.get("/health/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["checks"]["database"]["error"] == "OperationalError"
    assert body["checks"]["migrations"]["ok"] is False
    assert "secret" not in response.content.decode()  # details go to the log only
    assert "password secret" in caplog.text


def test_health_is_503_with_unapplied_migrations(client):
    with mock.patch.object(health.MigrationExecutor, "migration_plan", return_value=[object()] * 2):
        response = client.get("/health/")
    assert response.status_code == 503
    assert response.json()["checks"]["migrations"] == {
        "ok": False, "unapplied": 2, "ms": response.json()["checks"]["migrations"]["ms"],
    }  # fmt: skip


def test_a_passing_migrations_check_is_cached(client):
    assert client.get("/health/").status_code == 200
    with mock.patch.object(health.MigrationExecutor, "migration_plan") as plan:
        body = client.get("/health/").json()
    plan.assert_not_called()
    assert body["checks"]["migrations"]["cached"] is True


def test_health_reports_an_unreachable_broker(client):
    with override_settings(
        CELERY_BROKER_URL="redis://127.0.0.1:1/0", CELERY_TASK_ALWAYS_EAGER=False
    ):
        response = client.get("/health/")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["ok"] is False


def test_health_refuses_writes(client):
    assert client.post("/health/").status_code == 405


def test_request_id_is_echoed_or_made(client):
    given = client.get("/health/", HTTP_X_REQUEST_ID="abc-123.x")
    assert given["X-Request-ID"] == "abc-123.x"
    made = client.get("/health/", HTTP_X_REQUEST_ID="not safe <script>")
    assert made["X-Request-ID"] != "not safe <script>" and len(made["X-Request-ID"]) == 32


def test_json_formatter_writes_one_object_per_line_with_extras():
    record = logging.LogRecord("concorde.test", logging.WARNING, __file__, 1, "vote %s", (7,), None)
    record.proposal_id = 7
    RequestIdFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "vote 7"
    assert entry["level"] == "WARNING" and entry["logger"] == "concorde.test"
    assert entry["proposal_id"] == 7
    assert "request_id" not in entry  # outside a request

    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exc_info"]


def _settings(**env) -> dict:
    code = (
        "import json, django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings');"
        "django.setup(); from django.conf import settings as s; db = s.DATABASES['default'];"
        "print(json.dumps({'pool': db.get('OPTIONS', {}).get('pool'), 'age': db['CONN_MAX_AGE'],"
        " 'options': {k: v for k, v in db.get('OPTIONS', {}).items() if k != 'pool'},"
        " 'beat': {k: [v['task'], str(v['schedule'])] for k, v in s.CELERY_BEAT_SCHEDULE.items()},"
        " 'hijack': s.CELERY_WORKER_HIJACK_ROOT_LOGGER, 'tz': s.CELERY_TIMEZONE,"
        " 'formatter': s.LOGGING['handlers']['console']['formatter'],"
        " 'session': s.SESSION_ENGINE,"
        " 'visibility': getattr(s, 'CELERY_BROKER_TRANSPORT_OPTIONS', {}).get('visibility_timeout')}))"
    )
    clean = {k: v for k, v in os.environ.items()
             if k not in {"DATABASE_URL", "DB_POOL_MAX_SIZE", "LOG_FORMAT", "ENGINE_NIGHTLY_CRON",
                          "CONN_MAX_AGE", "DB_CONNECT_TIMEOUT", "SESSION_ENGINE",
                          "CELERY_BROKER_URL", "REDIS_URL", "CONSENSUS_FINALIZE_TIME_LIMIT"}}  # fmt: skip
    clean.update(env)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_defaults_keep_persistent_connections_and_plain_logs():
    got = _settings(DATABASE_URL="postgres://postgres@127.0.0.1:5432/x")
    assert got["pool"] is None and got["age"] == 60 and got["options"] == {}
    assert got["formatter"] == "plain" and got["hijack"] is True
    assert got["session"] == "django.contrib.sessions.backends.db"
    assert got["beat"]["engine-nightly"] == [
        "consensus.tasks.engine_nightly", "<crontab: 30 2 * * * (m/h/dM/MY/d)>"
    ]  # fmt: skip
    # Tasks kept while the broker was down are sent again every minute (config/outbox.py).
    assert got["beat"]["outbox-flush"] == ["config.outbox.outbox_flush_task", "60.0"]
    assert got["tz"] == "Europe/Paris"
    assert got["visibility"] is None  # no Redis broker


def test_redis_visibility_timeout_outlasts_the_engine_final_step():
    got = _settings(CELERY_BROKER_URL="redis://127.0.0.1:6379/11")
    assert got["visibility"] == 3 * 3600 + 3600
    got = _settings(CELERY_BROKER_URL="redis://127.0.0.1:6379/11",
                    CONSENSUS_FINALIZE_TIME_LIMIT="600")  # fmt: skip
    assert got["visibility"] == 4200


def test_pool_settings_turn_off_persistent_connections():
    got = _settings(
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/x", DB_POOL_MAX_SIZE="8",
        DB_POOL_MIN_SIZE="2", CONN_MAX_AGE="600", DB_CONNECT_TIMEOUT="5", LOG_FORMAT="json",
        ENGINE_NIGHTLY_CRON="off",
    )  # fmt: skip
    assert got["pool"] == {"min_size": 2, "max_size": 8, "timeout": 10, "max_idle": 300}
    assert got["age"] == 0
    assert got["options"] == {"connect_timeout": 5}
    assert got["formatter"] == "json" and got["hijack"] is False
    assert "engine-nightly" not in got["beat"]


def test_pool_is_ignored_on_sqlite():
    got = _settings(DB_POOL_MAX_SIZE="8")
    assert got["pool"] is None and got["age"] == 0


@pytest.mark.realservices
def test_pooled_connections_work_on_postgresql():
    """A real query through Django's psycopg pool (the database of this test run)."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    url = (f"postgres://{db['USER']}{':' + db['PASSWORD'] if db['PASSWORD'] else ''}@"
           f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}")  # fmt: skip
    code = (
        "import os, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings');"
        "django.setup(); from django.db import connection;"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "def q(_):\n"
        "    from django.db import connection as c\n"
        "    with c.cursor() as cur: cur.execute('SELECT 1'); r = cur.fetchone()[0]\n"
        "    c.close(); return r\n"
        "with ThreadPoolExecutor(4) as ex: print(sum(ex.map(q, range(20))), "
        "type(connection.pool).__name__, connection.pool.max_size)"
    )
    env = dict(os.environ, DATABASE_URL=url, DB_POOL_MAX_SIZE="3", DB_POOL_MIN_SIZE="1")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["20", "ConnectionPool", "3"]


def test_procfile_names_the_four_processes():
    entries = dict(
        line.split(":", 1)
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert set(entries) == {"web", "worker", "engine", "beat"}
    assert "gunicorn config.wsgi:application" in entries["web"]
    assert "-Q web " in entries["worker"] and "-Q engine " in entries["engine"]
    assert "celery -A config beat" in entries["beat"]
    syntax = subprocess.run(["bash", "-n", str(ROOT / "scripts/stack.sh")], capture_output=True)
    assert syntax.returncode == 0, syntax.stderr
