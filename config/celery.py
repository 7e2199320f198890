import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# OutboxTask: tasks sent after a commit wait in the database when the broker is down (config/outbox.py).
app = Celery("concorde", task_cls="config.outbox:OutboxTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["config"], related_name="outbox")

# Task metrics for Prometheus (config/metrics.py, docs/operations.md).
from config.metrics import connect_signals  # noqa: E402

connect_signals()
