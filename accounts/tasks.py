"""Celery entry points for accounts (eager in development and tests)."""

from celery import shared_task

from config.celery import NIGHTLY_TASK_OPTIONS

from . import services


@shared_task(**NIGHTLY_TASK_OPTIONS)
def anonymise_inactive_accounts(days: int | None = None) -> dict:
    """Erase the accounts inactive for CONCORDE_INACTIVE_ACCOUNT_DAYS (or `days`) days.

    Run nightly by Celery beat. Idempotent (an erased account is gone; each one is re-checked
    under its row lock), so `acks_late` and retries are safe.
    """
    return services.inactive_accounts_anonymise(days=days)
