"""Faults on the real services: Redis stopped during voting, a crash between votes and counters.

Redis: a private ``redis-server`` on a free port (never the shared one), started and killed by the
test. PostgreSQL: the test database. Marked ``realservices``; skipped without PostgreSQL or
without ``redis-server``. docs/reliability.md lists what each test shows.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from django.core.cache.backends.redis import RedisCache
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from config.cache import CacheUnavailable, ResilientRedisCache
from consultations import services
from consultations.models import PendingTask, Proposal, ProposalCounter, Vote
from consultations.services import (
    counters_drift,
    counters_recount,
    participant_for_session,
    vote_cast,
)
from tests.factories import ProposalFactory

from .conftest import free_port

pytestmark = [pytest.mark.realservices, pytest.mark.django_db]

REDIS_SERVER = shutil.which("redis-server")


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("fault tests need PostgreSQL")


class PrivateRedis:
    """A throwaway redis-server (no persistence) that the test may kill and start again."""

    def __init__(self):
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.exceptions.ConnectionError):
                if client.ping():
                    return
            time.sleep(0.05)
        raise AssertionError("private redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def private_redis():
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis()
    server.start()
    yield server
    server.kill()


def _resilient_cache(url: str) -> ResilientRedisCache:
    return ResilientRedisCache(url, {"OPTIONS": {"retry_seconds": 0.2}})


# (a) Redis stopped during voting ----------------------------------------------------------------


def test_cache_answers_misses_while_redis_is_down_then_recovers(private_redis):
    cache = _resilient_cache(private_redis.url)
    cache.set("k", "v", 60)
    assert cache.get("k") == "v"
    private_redis.kill()
    t0 = time.monotonic()
    assert cache.get("k", "default") == "default"
    cache.set("k2", "v2", 60)  # dropped, no error
    assert cache.add("k3", 1, 60) is False
    assert cache.get_many(["k", "k2"]) == {}
    with pytest.raises(CacheUnavailable):
        cache.incr("k")
    assert isinstance(CacheUnavailable(), ValueError)  # add/incr/set counting code fails open
    assert time.monotonic() - t0 < 3, "a dead Redis must not hold the request"
    assert not cache.is_up()
    private_redis.start()
    time.sleep(0.3)  # the breaker's pause
    cache.set("k", "again", 60)
    assert cache.get("k") == "again"
    assert cache.is_up()


def test_plain_django_redis_cache_would_fail(private_redis):
    """The reason for the wrapper: Django's own backend raises when Redis is gone."""
    import redis

    plain = RedisCache(private_redis.url, {"OPTIONS": {"socket_connect_timeout": 0.5}})
    private_redis.kill()
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.get("k")


def test_votes_recorded_and_pages_render_with_redis_down(private_redis, client, settings):
    """Voting and the pages go on with the cache (and broker) on a Redis that was killed."""
    settings.CACHES = {
        "default": {
            "BACKEND": "config.cache.ResilientRedisCache",
            "LOCATION": private_redis.url,
            "OPTIONS": {"retry_seconds": 1},
        }
    }
    settings.CONCORDE_SEQUENCE_POOL_SECONDS = 30  # the pool cache's shared keys live in Redis
    proposal = ProposalFactory(consultation__sequence_size=3)
    others = ProposalFactory.create_batch(3, consultation=proposal.consultation)
    consultation = proposal.consultation
    private_redis.kill()
    before = Vote.objects.count()
    for i, target in enumerate([proposal, *others]):
        vote_cast(
            participant=participant_for_session(session_key=f"r{i}"), proposal=target, key="agree"
        )
    assert Vote.objects.count() == before + 4
    assert counters_drift(proposal_ids=[p.pk for p in [proposal, *others]]) == {
        "counters": {},
        "totals": {},
    }
    # The pages: consultation, proposal, sequence (start) and a vote through HTTP.
    assert client.get(consultation.get_absolute_url()).status_code == 200
    assert client.get(proposal.get_absolute_url()).status_code == 200
    assert client.get(f"/c/{consultation.slug}/vote/").status_code == 200
    response = client.post(f"/c/{consultation.slug}/vote/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    response = client.post(
        f"/c/{consultation.slug}/p/{proposal.pk}/vote/", {"key": "disagree"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert Vote.objects.filter(proposal=proposal, key="disagree").count() == 1
    assert client.get("/").status_code == 200


ENQUEUE_WHILE_DOWN = """
import time
from django.db import transaction
from actions.tasks import notify_followers
from consultations.models import PendingTask
t0 = time.monotonic()
with transaction.atomic():
    notify_followers.delay_on_commit(12345, "status")
print("ELAPSED", time.monotonic() - t0)
print("PENDING", list(PendingTask.objects.values_list("name", "args")))
"""


@pytest.mark.django_db(transaction=True)
def test_tasks_enqueued_while_broker_down_are_kept_and_sent_when_it_is_back(private_redis):
    """A task sent after a commit with the broker down waits in the outbox, then is queued.

    Real processes with the production wiring (``REDIS_URL`` = broker and cache) on the test
    database: the enqueue after the commit neither fails nor hangs; ``tasks_requeue`` keeps the
    task while Redis is down and puts it on its queue once Redis is back.
    """
    import redis

    from .conftest import app_env, manage

    env = app_env(connection.settings_dict["NAME"], REDIS_URL=private_redis.url)
    private_redis.kill()
    out = manage("shell", "-c", ENQUEUE_WHILE_DOWN, env=env).stdout
    assert "PENDING [('actions.tasks.notify_followers', [12345, 'status'])]" in out, out
    elapsed = float(out.split("ELAPSED", 1)[1].split()[0])
    assert elapsed < 10, "a dead broker must not hold the request"
    out = manage("tasks_requeue", env=env).stdout
    assert "sent 0, left 1" in out, out
    assert PendingTask.objects.get().attempts == 1
    private_redis.start()
    out = manage("tasks_requeue", env=env).stdout
    assert "sent 1, left 0" in out, out
    assert not PendingTask.objects.exists()
    queued = redis.Redis.from_url(private_redis.url).lrange("web", 0, -1)
    assert len(queued) == 1 and b"notify_followers" in queued[0]


# (d) A crash between writing votes and updating counters ---------------------------------------


def test_vote_and_counters_commit_together_or_not_at_all(monkeypatch):
    """A crash after the vote row, before the counters: the transaction leaves neither."""
    proposal = ProposalFactory()
    participant = participant_for_session(session_key="crash")

    def crash(deltas):
        raise RuntimeError("killed between the vote and its counters")

    monkeypatch.setattr(services, "counters_add", crash)
    with pytest.raises(RuntimeError):
        vote_cast(participant=participant, proposal=proposal, key="agree")
    assert not Vote.objects.filter(proposal=proposal).exists()
    assert not ProposalCounter.objects.filter(proposal=proposal).exists()
    assert Proposal.objects.get(pk=proposal.pk).votes_total == 0


def test_recount_command_reports_drift_then_repairs_it(capsys):
    """Votes written behind the counters' back (a crash, a manual fix): --check reports, repair fixes."""
    proposal = ProposalFactory()
    for i in range(3):
        vote_cast(
            participant=participant_for_session(session_key=f"d{i}"), proposal=proposal, key="agree"
        )
    # Simulate the crash of a non-transactional writer: a vote row without its counters.
    Vote.objects.create(
        participant=participant_for_session(session_key="lost"), proposal=proposal, key="disagree"
    )
    ProposalCounter.objects.filter(proposal=proposal, key="agree").update(count=7)
    slug = proposal.consultation.slug

    with pytest.raises(SystemExit) as exit_info:
        call_command("counters_recount", "--check", "--consultation", slug)
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert "counters drifted: 2, vote totals drifted: 1" in out
    assert f"proposal={proposal.pk} key=agree trust=trusted: -4" in out
    assert f"proposal={proposal.pk} key=disagree trust=trusted: +1" in out

    call_command("counters_recount", "--consultation", slug)
    assert "repaired: 2 counters, 1 totals" in capsys.readouterr().out
    counts = dict(ProposalCounter.objects.filter(proposal=proposal).values_list("key", "count"))
    assert counts == {"agree": 3, "disagree": 1}
    assert Proposal.objects.get(pk=proposal.pk).votes_total == 4
    call_command("counters_recount", "--check", "--consultation", slug)  # no drift: exit 0
    assert "counters drifted: 0, vote totals drifted: 0" in capsys.readouterr().out
    assert counters_recount(proposal_ids=[proposal.pk]) == {"counters_fixed": 0, "totals_fixed": 0}


def test_recount_command_refuses_an_unknown_consultation():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("counters_recount", "--consultation", "no-such-slug")


def test_counters_carry_their_consultation_for_the_index():
    proposal = ProposalFactory()
    vote_cast(participant=participant_for_session(session_key="c"), proposal=proposal, key="agree")
    assert set(
        ProposalCounter.objects.filter(proposal=proposal).values_list("consultation_id", flat=True)
    ) == {proposal.consultation_id}


@override_settings(CONCORDE_SEQUENCE_POOL_SECONDS=60)
def test_sequence_pool_is_reused_and_rebuilt_on_invalidation(django_capture_on_commit_callbacks):
    from consultations import sequence_cache

    sequence_cache.sequence_pools_clear()
    proposal = ProposalFactory(consultation__sequence_size=2)
    ProposalFactory.create_batch(2, consultation=proposal.consultation)
    consultation = proposal.consultation
    builds = sequence_cache.stats["builds"]
    first = sequence_cache.sequence_pool_get(consultation)
    assert sequence_cache.sequence_pool_get(consultation) is first
    assert sequence_cache.stats["builds"] == builds + 1
    added = ProposalFactory(consultation=consultation)
    with override_settings(CONCORDE_SEQUENCE_POOL_BACKGROUND=False):
        sequence_cache.sequence_pool_invalidate(consultation.pk)
        rebuilt = sequence_cache.sequence_pool_get(consultation)
    assert rebuilt is not first and added.pk in rebuilt.index
    # A vote recorded by this process moves its own pool's counts at once.
    row = rebuilt.index[added.pk]
    with django_capture_on_commit_callbacks(execute=True):
        vote_cast(participant=participant_for_session(session_key="p"), proposal=added, key="agree",
                  trust="sequence", in_sequence=True)  # fmt: skip
    assert rebuilt.sequence_votes[row] == 1
    sequence_cache.sequence_pools_clear()


# (b) A Celery worker killed in the middle of an engine run -------------------------------------

SLOW_WORKER = """
import os, sys, time
sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from consensus import services
original = services.engine_chunk_embed
def slow_chunk(**kwargs):
    with open(os.environ["CHUNK_LOG"], "a") as log:
        log.write(f"{os.getpid()} {kwargs['lo_id']}\\n")
    time.sleep(float(os.environ["CHUNK_SLEEP"]))
    return original(**kwargs)
services.engine_chunk_embed = slow_chunk
from celery.__main__ import main
sys.argv = ["celery", *sys.argv[1:]]
main()
"""
ENGINE_RUN = {
    "model_name": "hashing",
    "seed": 3,
    "parameters": {"chunk_size": 10, "reuse_embeddings": False},
}
CONF_KEYS = ("broker_url", "result_backend", "task_always_eager", "task_eager_propagates",
             "broker_transport_options")  # fmt: skip


def _reset_app_clients(app):
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    app.__dict__.pop("amqp", None)
    if hasattr(app._local, "backend"):
        del app._local.backend


@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_run_another_worker_finishes_it(private_redis, tmp_path):
    """SIGKILL a whole engine worker (parent and pool) while it embeds a chunk: the unacknowledged
    message goes back to the queue after the visibility timeout, a second worker finishes the run,
    every chunk is done once, and the previous run stays current until the new one is done."""
    from config.celery import app as celery_app
    from consensus import services as engine
    from consensus.models import EngineChunk, EngineRun, ProposalScore
    from consultations.models import Consultation

    from ..consensus.engine_data import add_votes, consultation_with_themes
    from .conftest import PYTHON, Processes, app_env

    visibility = 6
    saved = {key: celery_app.conf[key] for key in CONF_KEYS}
    celery_app.conf.update(
        broker_url=private_redis.url, result_backend=private_redis.url, task_always_eager=False,
        task_eager_propagates=False, broker_transport_options={"visibility_timeout": visibility},
    )  # fmt: skip
    _reset_app_clients(celery_app)
    chunk_log = tmp_path / "chunks.log"
    script = tmp_path / "slow_worker.py"
    script.write_text(SLOW_WORKER)
    env = app_env(
        connection.settings_dict["NAME"], REDIS_URL=private_redis.url,
        CELERY_VISIBILITY_TIMEOUT=str(visibility), CHUNK_LOG=str(chunk_log), CHUNK_SLEEP="1.5",
    )  # fmt: skip
    procs = Processes(tmp_path)

    def start(name):
        procs.start(
            name,
            [PYTHON, str(script), "-A", "config", "worker", "-Q", "engine", "-n", f"{name}-{os.getpid()}@%h",
             "--concurrency", "1", "--pool", "prefork", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-l", "info"],
            env,
        )  # fmt: skip
        deadline = time.monotonic() + 40
        while " ready." not in procs.log(name, tail=100_000):
            procs.check_alive()
            assert time.monotonic() < deadline, procs.logs()
            time.sleep(0.2)

    def wait(run, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if not run.is_active:
                return run
            time.sleep(0.3)
        raise AssertionError(f"run {run.pk} still {run.status}/{run.phase}:\n{procs.logs()}")

    try:
        consultation = consultation_with_themes()
        add_votes(consultation, n_participants=20)
        start("a")
        first = wait(
            engine.engine_run_start(consultation=consultation, kind="full", **ENGINE_RUN), 90
        )
        assert first.status == EngineRun.Status.DONE, (first.error, procs.logs())
        assert Consultation.objects.get(pk=consultation.pk).current_run_id == first.pk

        chunk_log.write_text("")
        second = engine.engine_run_start(consultation=consultation, kind="full", seed=4,
                                         model_name="hashing", parameters=ENGINE_RUN["parameters"])  # fmt: skip
        deadline = time.monotonic() + 60
        while len(chunk_log.read_text().splitlines()) < 2:  # a's second chunk is under way
            assert time.monotonic() < deadline, procs.logs()
            time.sleep(0.1)
        os.killpg(procs.procs["a"].pid, signal.SIGKILL)  # parent and pool child, like a lost host
        procs.procs["a"].wait(timeout=10)
        procs.procs.pop("a")._log.close()  # dead on purpose: not checked any more
        second.refresh_from_db()
        assert second.is_active
        assert Consultation.objects.get(pk=consultation.pk).current_run_id == first.pk

        start("b")
        second = wait(second, 120)
        assert second.status == EngineRun.Status.DONE, (second.error, procs.logs())
        chunks = EngineChunk.objects.filter(run=second)
        assert (
            chunks.count() == second.total_chunks
            and not chunks.filter(done_at__isnull=True).exists()
        )
        assert second.done_chunks == second.total_chunks
        assert Consultation.objects.get(pk=consultation.pk).current_run_id == second.pk
        scored = ProposalScore.objects.filter(run=second)
        assert (
            scored.count() == scored.values("proposal_id").distinct().count() > 0
        )  # no duplicates
        assert scored.count() == ProposalScore.objects.filter(run=first).count()  # none missing
        started = [line.split() for line in chunk_log.read_text().splitlines()]
        b_pids = {pid for pid, _lo in started} - {pid for pid, _lo in started[:2]}
        assert b_pids, "the second worker did embed chunks"
    finally:
        procs.stop(timeout=10)
        celery_app.conf.update(saved)
        _reset_app_clients(celery_app)


# (c) PostgreSQL restarted --------------------------------------------------------------------

PG_BIN = (
    sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1:]
    if Path("/usr/lib/postgresql").exists()
    else []
)
SEED_PAGE = """
from causes.models import Cause
from consultations.models import Consultation, Proposal
cause = Cause.objects.create(title='Faults', slug='faults', summary='Faults', status='active')
c = Consultation.objects.create(cause=cause, question='Faults?', slug='faults')
Proposal.objects.create(consultation=c, status='accepted', content='Il faut tenir quand la base redémarre')
"""


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (initdb in a temp dir, its own port), run as ``postgres``."""

    def __init__(self, root: Path):
        self.bin = PG_BIN[0]
        self.dir = root / "pgdata"
        self.port = free_port()
        self.root = root

    def _run(self, *argv, check=True):
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run(
            [*prefix, *argv], capture_output=True, text=True, check=check, timeout=120
        )

    def init(self) -> None:
        self.root.chmod(0o755)
        self._run(str(self.bin / "initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres",
                  "--no-sync")  # fmt: skip
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir), "-o", options, "-l",
                  str(self.root / "pg.log"), "-w", "start")  # fmt: skip

    def stop(self, check=True) -> None:
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.dir), "-m", "fast", "-w", "stop", check=check
        )

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture
def private_postgres():
    import tempfile

    if not PG_BIN or shutil.which("runuser") is None and os.geteuid() == 0:
        pytest.skip("PostgreSQL server binaries (or runuser) not available")
    # Not under pytest's tmp dir: its parents are private to root, and the cluster runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="concorde-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    server = PrivatePostgres(root)
    try:
        server.init()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"could not start a private PostgreSQL cluster: {exc.stderr[-500:]}")
    yield server
    server.stop(check=False)
    shutil.rmtree(root, ignore_errors=True)


def test_postgresql_restart_gives_clean_5xx_then_recovers_without_app_restart(
    private_postgres, tmp_path
):
    """gunicorn on a private cluster: stop PostgreSQL, pages answer a plain 500 page (no stack
    trace) and /health/ 503; start it again and the same gunicorn serves pages and votes."""
    import httpx
    import psycopg

    from .conftest import PYTHON, Processes, app_env, manage, wait_http

    with psycopg.connect(private_postgres.url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE concorde_faults")
    env = app_env("concorde_faults", DATABASE_URL=private_postgres.url("concorde_faults"),
                  DJANGO_DEBUG="0", CONN_MAX_AGE="600", DB_CONNECT_TIMEOUT="2",
                  SECRET_KEY="faults-test-only", LOG_LEVEL="WARNING")  # fmt: skip
    manage("migrate", "--noinput", env=env, timeout=300)
    manage("shell", "-c", SEED_PAGE, env=env)
    procs = Processes(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs.start("web", [PYTHON, "-m", "gunicorn", "config.wsgi:application", "--bind",
                        f"127.0.0.1:{port}", "--workers", "1", "--timeout", "30"], env)  # fmt: skip
    try:
        wait_http(f"{base}/c/faults/", timeout=60, procs=procs)
        with httpx.Client(base_url=base, timeout=20) as client:
            assert client.get("/c/faults/").status_code == 200

            private_postgres.stop()
            for path in ("/c/faults/", "/c/faults/vote/", "/"):
                response = client.get(path)
                assert response.status_code == 500, (path, response.status_code)
                assert "Traceback" not in response.text and "OperationalError" not in response.text
                assert (
                    "psycopg" not in response.text
                    and str(private_postgres.port) not in response.text
                )
            health = client.get("/health/")
            assert health.status_code == 503
            assert health.json()["checks"]["database"]["ok"] is False

            private_postgres.start()
            deadline = time.monotonic() + 30
            while client.get("/c/faults/").status_code != 200:  # no restart of gunicorn
                assert time.monotonic() < deadline, procs.logs()
                time.sleep(0.5)
            assert client.get("/health/").status_code == 200
            client.get("/c/faults/vote/")
            headers = {"X-CSRFToken": client.cookies.get("csrftoken", ""), "HX-Request": "true"}
            card = client.post("/c/faults/vote/", headers=headers)
            assert card.status_code == 200
            pid = int(re.search(r"/c/faults/p/(\d+)/vote/", card.text).group(1))
            vote = client.post(f"/c/faults/p/{pid}/vote/", data={"key": "agree"}, headers=headers)
            assert vote.status_code == 200
        procs.check_alive()
    finally:
        procs.stop()
    with psycopg.connect(private_postgres.url("concorde_faults")) as conn:
        assert conn.execute("SELECT count(*) FROM consultations_vote").fetchone()[0] == 1
