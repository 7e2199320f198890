"""Celery entry points of the consultations app: they take ids and call a service."""

from celery import shared_task
from django.db import OperationalError

from config.celery import NIGHTLY_TASK_OPTIONS


@shared_task(name="consultations.import_job_run", time_limit=3 * 3600, soft_time_limit=3 * 3600 - 60)
def import_job_run(job_id: int) -> str:
    """Run an uploaded import (consultations.imports); a job that is not pending is left alone."""
    from .imports import import_job_run as run

    job = run(job_id=job_id)
    return "skipped" if job is None else job.status


@shared_task(name="consultations.moderation_classifiers_retrain", **NIGHTLY_TASK_OPTIONS)
def moderation_classifiers_retrain() -> dict:
    """Nightly (Celery beat): retrain the moderation classifiers that have new decisions.

    Idempotent (`classifiers_retrain_open` skips a consultation with no decision since its
    latest classifier), so `acks_late` and retries are safe.
    """
    from .classifier import classifiers_retrain_open

    return classifiers_retrain_open()


@shared_task(name="consultations.popular_rank_refresh")
def popular_rank_refresh(consultation_id: int) -> int:
    """Refresh a consultation's "Most voted" and "Most controversial" orders
    (services.popular_rank_refresh); idempotent."""
    from .services import popular_rank_refresh as refresh

    if not isinstance(consultation_id, int) or isinstance(consultation_id, bool):
        raise ValueError(f"consultation_id must be an integer, not {consultation_id!r}")
    return refresh(consultation_id=consultation_id)


@shared_task(
    name="consultations.results_alerts_send",
    autoretry_for=(OSError, OperationalError),
    retry_backoff=True,
    max_retries=5,
)
def results_alerts_send(consultation_id: int) -> int:
    """Email the citizens who asked for a consultation's results that they are published
    (consultations.alerts.alerts_send). Each alert keeps what it was sent, so a retry (an SMTP
    server down: OSError) or a duplicate emails nobody twice."""
    from .alerts import alerts_send

    if not isinstance(consultation_id, int) or isinstance(consultation_id, bool):
        raise ValueError(f"consultation_id must be an integer, not {consultation_id!r}")
    return alerts_send(consultation_id=consultation_id)
