"""Celery entry points for action plans (eager in development and tests)."""

from celery import shared_task
from django.db import OperationalError

from . import services


@shared_task(
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
    soft_time_limit=540,
    time_limit=600,
)
def notify_followers(action_id: int, event: str) -> int:
    """Email the followers of an action that moved (``event``: "measurement" or "status").

    Enqueue with ``notify_followers.delay_on_commit(action_id, event)`` so that the email never
    announces a change that was rolled back. Not idempotent (it sends emails): no ``acks_late``.
    """
    return services.followers_notify(action_id=action_id, event=event)
