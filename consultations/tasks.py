"""Celery entry points of the consultations app: they take ids and call a service."""

from celery import shared_task

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
