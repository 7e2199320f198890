"""Celery entry points of the consensus engine (queue ``engine``, see CELERY_TASK_ROUTES).

    run_engine(run_id)
      -> chord(embed_chunk.s(run_id, lo_id, hi_id) for each chunk still to do)
      -> cluster_and_write(results, run_id)

Tasks take ids, load rows and call ``consensus.services``; the EngineRun row holds the progress.
Every task is idempotent (conditional updates, chunk markers, upserts keyed by (run, item)), so
transient database errors are retried and ``acks_late`` is safe. Any other error marks the run
FAILED with its text and leaves the consultation's current run alone; a failed run can be resumed
(``services.engine_run_resume``), which redoes only the chunks that are missing.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

from celery import chord, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils.translation import gettext

from config.outbox import OutboxTask

from . import services

logger = logging.getLogger(__name__)

RETRYABLE = (OperationalError, InterfaceError)
CHUNK_TIME_LIMIT = int(getattr(settings, "CONSENSUS_CHUNK_TIME_LIMIT", 900))
FINALIZE_TIME_LIMIT = services.finalize_time_limit()


class EngineTask(OutboxTask):  # a DjangoTask whose on-commit sends survive a broker outage
    """Retries transient database errors with backoff; tasks are idempotent, so acks_late."""

    autoretry_for = RETRYABLE
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 5
    acks_late = True
    reject_on_worker_lost = True


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, services.EngineError):
        return str(exc)
    if isinstance(exc, SoftTimeLimitExceeded):
        return gettext("The step ran past its time limit.")
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def _fail_run_on_error(task, run_id: int):
    """Mark the run FAILED on a final error; let autoretry handle transient ones.

    In eager mode (development without a broker) the error is logged and swallowed once the run
    row says FAILED, so that starting a run from a page never turns into a server error.
    """
    try:
        yield
    except RETRYABLE as exc:
        if task.request.retries < task.max_retries:
            raise
        _mark_failed(run_id, exc)
        if not task.request.is_eager:
            raise
        logger.exception("engine run %s failed", run_id)
    except Exception as exc:  # noqa: BLE001 - any error ends the run, with its text
        _mark_failed(run_id, exc)
        if not task.request.is_eager:
            raise
        logger.exception("engine run %s failed", run_id)


def _mark_failed(run_id: int, exc: BaseException) -> None:
    try:
        services.engine_run_fail(run_id=run_id, error=_error_text(exc))
    except Exception:  # the database itself may be what failed
        logger.exception("could not mark engine run %s as failed", run_id)


@shared_task(bind=True, base=EngineTask, soft_time_limit=600, time_limit=660)
def run_engine(self, run_id: int) -> dict:
    """Start the run and fan out its chunks; the chord body does the rest."""
    with _fail_run_on_error(self, run_id):
        redelivered = self.request.retries > 0 or bool(
            (self.request.delivery_info or {}).get("redelivered")
        )
        ranges = services.engine_run_begin(run_id=run_id, redelivered=redelivered)
        if ranges is None:
            return {"skipped": "not pending"}
        if not ranges:
            cluster_and_write.delay([], run_id)
            return {"chunks": 0}
        chord(embed_chunk.s(run_id, lo_id, hi_id) for lo_id, hi_id in ranges)(
            cluster_and_write.s(run_id)
        )
        return {"chunks": len(ranges)}
    return {"failed": run_id}


@shared_task(
    bind=True,
    base=EngineTask,
    soft_time_limit=CHUNK_TIME_LIMIT,
    time_limit=CHUNK_TIME_LIMIT + 60,
)
def embed_chunk(self, run_id: int, lo_id: int, hi_id: int) -> dict | None:
    """Embed the run's proposals with ids in [lo_id, hi_id]; returns small counts."""
    with _fail_run_on_error(self, run_id):
        return services.engine_chunk_embed(run_id=run_id, lo_id=lo_id, hi_id=hi_id)
    return None


@shared_task(
    bind=True,
    base=EngineTask,
    soft_time_limit=FINALIZE_TIME_LIMIT,
    time_limit=FINALIZE_TIME_LIMIT + 120,
)
def cluster_and_write(self, results, run_id: int) -> dict | None:
    """Chord body: ideas and/or vote results written under the run, then the swap."""
    with _fail_run_on_error(self, run_id):
        return services.engine_run_finalize(run_id=run_id)
    return None


@shared_task(bind=True, base=EngineTask, soft_time_limit=120, time_limit=180)
def assign_new_proposal(self, proposal_id: int) -> int | None:
    """Attach a newly accepted proposal to the nearest idea of the current run; returns the idea id.

    Call it with ``assign_new_proposal.delay_on_commit(proposal.pk)`` when a proposal is accepted.
    """
    membership = services.proposal_assign_to_idea(proposal_id=proposal_id)
    return membership.idea_id if membership is not None else None


@shared_task(bind=True, base=EngineTask, soft_time_limit=600, time_limit=660)
def refresh_ideas(self, run_id: int) -> bool:
    """Describe again the ideas of a run whose members staff changed by hand, and recompute every
    idea's vote figures (``services.ideas_refresh``).

    Idempotent: it reads the memberships as they are; queued again and again by a burst of
    moves, the first run does the work and the others find nothing left.
    """
    return services.ideas_refresh(run_id=run_id)


@shared_task(bind=True, base=EngineTask, soft_time_limit=1800, time_limit=1860)
def merge_idea(self, run_id: int, idea_id: int, into_id: int, actor_id: int | None = None) -> int:
    """Move every accepted proposal of one idea into another (``services.idea_merge``).

    Idempotent: a retry or a duplicate moves what is left, then describes the ideas again.
    """
    return services.idea_merge(run_id=run_id, idea_id=idea_id, into_id=into_id, actor_id=actor_id)


@shared_task(bind=True, base=EngineTask, soft_time_limit=3600, time_limit=3660)
def engine_nightly(self) -> list[int]:
    """Celery beat: a FULL run on each open consultation whose proposals or votes changed, after
    queuing again the refreshes of ideas staff changed that no refresh has described."""
    services.ideas_refresh_requeue()
    return services.engine_nightly_start()
