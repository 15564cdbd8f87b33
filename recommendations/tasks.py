"""Celery tasks of the recommendations app. They take ids, call a service, own their retries."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from django.db import InterfaceError, OperationalError

from recommendations.runs import chunk_fail, chunk_score


class ChunkTask(Task):
    """Records a chunk's failure once Celery has given up on it (retries exhausted or a
    non-retryable error), which fails the run with a message naming the chunk."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        chunk_id = args[0] if args else kwargs.get("chunk_id")
        if chunk_id is not None:
            chunk_fail(chunk_id=int(chunk_id), error=f"{type(exc).__name__}: {exc}")


@shared_task(
    bind=True,
    base=ChunkTask,
    name="recommendations.score_chunk",
    # A database that went away (restart, failover, too many connections) usually comes back.
    autoretry_for=(OperationalError, InterfaceError),
    max_retries=5,
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    # Acknowledge after the rows are committed; a killed pool child hands the chunk back.
    acks_late=True,
    reject_on_worker_lost=True,
)
def score_chunk(self: Task, chunk_id: int, reclaim: bool = False) -> dict[str, Any]:
    """Score one ScoringChunk. Redelivered, retried and resumed attempts may take over a chunk
    left "running" by a dead attempt; the unique (run, member) constraint keeps rows single."""
    delivery = self.request.delivery_info or {}
    reclaim = reclaim or bool(delivery.get("redelivered")) or (self.request.retries or 0) > 0
    outcome = chunk_score(chunk_id=chunk_id, reclaim=reclaim)
    return {
        "chunk": outcome.chunk_id,
        "claimed": outcome.claimed,
        "rows_written": outcome.rows_written,
        "skipped_no_consent": outcome.skipped_no_consent,
        "run_finished": outcome.run_finished,
    }
