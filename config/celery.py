import os

from celery import Celery
from django.db import OperationalError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# OutboxTask: tasks sent after a commit wait in the database when the broker is down (config/outbox.py).
app = Celery("concorde", task_cls="config.outbox:OutboxTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["config"], related_name="outbox")

# Options of the nightly maintenance tasks run by beat: they are idempotent, so a task lost with
# its worker is delivered again (acks_late) and a database hiccup is retried with backoff.
NIGHTLY_TASK_OPTIONS = {
    "autoretry_for": (OperationalError,),
    "retry_backoff": True,
    "max_retries": 5,
    "acks_late": True,
    "soft_time_limit": 3300,
    "time_limit": 3600,
}

# Task metrics for Prometheus (config/metrics.py, docs/operations.md).
from config.metrics import connect_signals  # noqa: E402

connect_signals()


# With DEBUG on (development), Django keeps the SQL of every query on the connection until a
# request starts; a worker serves no request, so nothing clears it (the embedding inserts of a
# 2M-answer run held about 3.8 GB per worker). Clear it after each task.
def _reset_queries(**_kwargs) -> None:
    from django.db import reset_queries

    reset_queries()


from celery import signals  # noqa: E402

signals.task_postrun.connect(_reset_queries, weak=False, dispatch_uid="concorde.reset_queries")

