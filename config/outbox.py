"""Tasks enqueued after a commit survive a broker outage: a database outbox.

``OutboxTask`` is the base of every Concorde task (``config/celery.py``; the engine's
``EngineTask`` derives from it). Its ``delay_on_commit`` / ``apply_async_on_commit`` send the
message after the commit as usual; when the broker cannot be reached the task is written to
``consultations.PendingTask`` instead of failing the request whose data is already committed
(the error is logged). ``outbox_flush`` sends the pending tasks again and deletes each one that
went out; it runs:

- every ``OUTBOX_FLUSH_SECONDS`` (60) from Celery beat (``outbox-flush`` in the schedule);
- when a worker starts (``worker_ready``);
- on demand: ``manage.py tasks_requeue``.

Delivery is at least once (a crash between sending and deleting the row sends it twice); the
tasks are idempotent, as the house style requires. In eager mode (no broker) nothing changes.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.contrib.django.task import DjangoTask
from celery.signals import worker_ready
from django.db import transaction

logger = logging.getLogger(__name__)


def _spool(name: str, args, kwargs, options, exc: BaseException) -> None:
    from consultations.models import PendingTask

    logger.error("broker unreachable (%s); task %s kept in the outbox", type(exc).__name__, name)
    try:
        PendingTask.objects.create(
            name=name,
            args=list(args or ()),
            kwargs=dict(kwargs or {}),
            options={k: v for k, v in (options or {}).items() if k in {"queue", "countdown"}},
            last_error=f"{type(exc).__name__}: {exc}"[:500],
        )
    except Exception:  # noqa: BLE001 - database down as well: nothing more we can do
        logger.exception("could not keep task %s in the outbox", name)


def send_or_spool(task, args=(), kwargs=None, **options):
    """``task.apply_async``; on a broker error, keep it in the outbox and return None."""
    if task.app.conf.task_always_eager:
        return task.apply_async(args, kwargs, **options)
    try:
        return task.apply_async(args, kwargs, **options)
    except Exception as exc:  # noqa: BLE001 - the commit is done: never turn a send into a 500
        # Broker errors (kombu OperationalError), and the Redis result backend's RuntimeError
        # ("Retry limit exceeded while trying to reconnect to the Celery result store").
        _spool(task.name, args, kwargs, options, exc)
        return None


class OutboxTask(DjangoTask):
    """A ``DjangoTask`` whose on-commit sends fall back to the database outbox."""

    def delay_on_commit(self, *args, **kwargs):
        return transaction.on_commit(lambda: send_or_spool(self, args, kwargs))

    def apply_async_on_commit(self, args=None, kwargs=None, **options):
        return transaction.on_commit(lambda: send_or_spool(self, args or (), kwargs, **options))


def outbox_flush(*, limit: int = 1000) -> dict:
    """Send the pending tasks again, oldest first; stop at the first broker error.

    Returns ``{"sent", "left"}``. Rows are locked with SKIP LOCKED, so concurrent flushes
    (beat and a starting worker) never send the same row twice.
    """
    from celery import current_app

    from consultations.models import PendingTask

    sent = 0
    for pk in list(PendingTask.objects.order_by("pk").values_list("pk", flat=True)[:limit]):
        with transaction.atomic():
            row = PendingTask.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
            if row is None:
                continue
            try:
                current_app.send_task(row.name, args=row.args, kwargs=row.kwargs, **row.options)
            except Exception as exc:  # noqa: BLE001 - broker or result backend still down
                PendingTask.objects.filter(pk=pk).update(
                    attempts=row.attempts + 1, last_error=f"{type(exc).__name__}: {exc}"[:500]
                )
                logger.warning("outbox: broker still unreachable (%s)", type(exc).__name__)
                break
            row.delete()
            sent += 1
    left = PendingTask.objects.count()
    if sent:
        logger.warning("outbox: %d pending task(s) sent again, %d left", sent, left)
    return {"sent": sent, "left": left}


@shared_task(name="config.outbox.outbox_flush_task", ignore_result=True)
def outbox_flush_task() -> dict:
    return outbox_flush()


@worker_ready.connect
def _flush_on_worker_ready(**kwargs):
    try:
        outbox_flush()
    except Exception:  # noqa: BLE001 - a worker must start even if the flush fails
        logger.exception("outbox flush at worker start failed")
