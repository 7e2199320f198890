"""Celery entry points for accounts (eager in development and tests)."""

from celery import shared_task
from django.db import OperationalError

from . import services


@shared_task(
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
    acks_late=True,
    soft_time_limit=3300,
    time_limit=3600,
)
def anonymise_inactive_accounts(days: int | None = None) -> dict:
    """Erase the accounts inactive for CONCORDE_INACTIVE_ACCOUNT_DAYS (or `days`) days.

    Run nightly by Celery beat. Idempotent (an erased account is gone; each one is re-checked
    under its row lock), so `acks_late` and retries are safe.
    """
    return services.inactive_accounts_anonymise(days=days)
