"""Celery tasks of the recommendations app. They take ids, call a service, own their retries."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_process_init
from celery.utils.time import get_exponential_backoff_interval
from django.db import InterfaceError, OperationalError

from recommendations.runs import chunk_fail, chunk_score

logger = logging.getLogger(__name__)

# A database that went away (restart, failover, too many connections) usually comes back.
RETRYABLE = (OperationalError, InterfaceError)
MAX_RETRIES = 5


@worker_process_init.connect
def _one_compute_thread_per_pool_process(**_: Any) -> None:
    """Pool processes already use every core between them: one OpenMP/BLAS thread each.

    sklearn's gradient boosting predicts with an OpenMP team as large as the machine. With
    two pool processes on two cores that is four busy threads on two cores, and under load
    the spin-waiting made a 10,000-member chunk's scoring ~3x slower (1.1-1.7 s with one
    thread against 3.9-4.2 s with two, same chunk, load average ~6).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def retry_countdown(retries: int) -> int:
    """Exponential backoff with full jitter: up to 2, 4, 8, ... seconds, capped at 2 minutes."""
    return get_exponential_backoff_interval(factor=2, retries=retries, maximum=120, full_jitter=True)


def _record_failure(chunk_id: int, exc: BaseException) -> None:
    try:
        chunk_fail(chunk_id=chunk_id, error=f"{type(exc).__name__}: {exc}")
    except Exception:  # noqa: BLE001 - the database may be the thing that failed
        # The chunk stays "running"; `run_resume` picks it up as stale.
        logger.exception("could not record the failure of scoring chunk %s", chunk_id)


@shared_task(
    bind=True,
    name="recommendations.score_chunk",
    max_retries=MAX_RETRIES,
    # Acknowledge after the rows are committed; a killed pool child hands the chunk back.
    acks_late=True,
    reject_on_worker_lost=True,
)
def score_chunk(self: Task, chunk_id: int, reclaim: bool = False) -> dict[str, Any]:
    """Score one ScoringChunk.

    Redelivered, retried and resumed attempts may take over a chunk left "running" by a dead
    attempt; the unique (run, member) constraint keeps its rows single. Database errors are
    retried with backoff; once retries are exhausted, or on any other error, the chunk is
    marked failed, which fails the run with a message naming the chunk. (The failure is
    recorded here rather than in on_failure, which eager mode with propagation skips.)
    """
    delivery = self.request.delivery_info or {}
    retries = self.request.retries or 0
    reclaim = reclaim or bool(delivery.get("redelivered")) or retries > 0
    try:
        outcome = chunk_score(chunk_id=chunk_id, reclaim=reclaim)
    except RETRYABLE as exc:
        if retries < self.max_retries:
            logger.warning("scoring chunk %s: %s; retry %s of %s", chunk_id, exc, retries + 1, self.max_retries)
            raise self.retry(exc=exc, countdown=retry_countdown(retries)) from exc
        _record_failure(chunk_id, exc)
        raise
    except Exception as exc:
        _record_failure(chunk_id, exc)
        raise
    return {
        "chunk": outcome.chunk_id,
        "claimed": outcome.claimed,
        "rows_written": outcome.rows_written,
        "skipped_no_consent": outcome.skipped_no_consent,
        "run_finished": outcome.run_finished,
        "stage_seconds": outcome.stage_seconds,  # load, features, score, build, write
        "stage_cpu_seconds": outcome.stage_cpu_seconds,
        "stage_db_cpu_seconds": outcome.stage_db_cpu_seconds,
    }


# ---------------------------------------------------------------------------- learning loop


@shared_task(
    name="recommendations.retrain_model",
    autoretry_for=RETRYABLE,
    retry_backoff=True,
    retry_backoff_max=120,
    max_retries=3,
)
def retrain_model(actor_id: int | None = None) -> dict[str, Any]:
    """Train a challenger on history plus feedback and gate it (on demand, CLI, or beat).

    A retrain already running makes this one a no-op with a message (not an error to retry).
    """
    from django.contrib.auth import get_user_model

    from recommendations.learning import LearningError, model_version_retrain

    actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id is not None else None
    try:
        return model_version_retrain(actor=actor)
    except LearningError as exc:
        logger.warning("retrain skipped: %s", exc)
        return {"skipped": str(exc)}


@shared_task(
    name="recommendations.refresh_outcomes",
    autoretry_for=RETRYABLE,
    retry_backoff=True,
    retry_backoff_max=120,
    max_retries=5,
)
def refresh_outcomes(run_id: int | None = None) -> dict[str, Any]:
    """Join realized outcomes to past recommendations (after an events import). Idempotent."""
    from recommendations.outcomes import outcomes_refresh

    return outcomes_refresh(run_id=run_id)
