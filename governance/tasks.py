"""Celery tasks of governance. They take ids, call a service, own their retry policy."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError

from governance.services import deadlines_enforce, open_items_reroute

logger = logging.getLogger(__name__)

# A database that went away usually comes back; both services are idempotent, so retrying is safe.
RETRYABLE = (OperationalError, InterfaceError)


def _champion_id(what: str) -> int | None:
    from recommendations.selectors import model_version_champion

    champion = model_version_champion()
    if champion is None:
        logger.info("%s skipped: no champion model yet", what)
        return None
    return champion.pk


@shared_task(
    name="governance.enforce_deadlines",
    autoretry_for=RETRYABLE,
    retry_backoff=True,
    retry_backoff_max=120,
    max_retries=5,
)
def enforce_deadlines() -> dict[str, int]:
    """Run by celery beat (CELERY_BEAT_SCHEDULE): expire stale offers, escalate past the SLA."""
    return deadlines_enforce()


@shared_task(
    name="governance.reroute_open_items",
    autoretry_for=RETRYABLE,
    retry_backoff=True,
    retry_backoff_max=120,
    max_retries=5,
)
def reroute_open_items(policy_version: int) -> dict[str, Any]:
    """Enqueued on commit of a policy save (or an alert/drift change): route open items again."""
    return open_items_reroute(policy_version=policy_version)


@shared_task(
    name="governance.fairness_report",
    autoretry_for=RETRYABLE,
    retry_backoff=True,
    retry_backoff_max=120,
    max_retries=3,
)
def fairness_report(model_version_id: int | None = None, run_id: int | None = None) -> int | None:
    """Build a fairness report (and open alerts above the levels); returns the report id.
    Without a model id (the beat schedule) it reports on the champion; None without one.
    Each call writes a new report: a retry after a lost result only adds a fresher one."""
    from governance.fairness import fairness_report_build

    model_version_id = model_version_id or _champion_id("fairness report")
    if model_version_id is None:
        return None
    return fairness_report_build(model_version_id=model_version_id, run_id=run_id).pk


@shared_task(name="governance.fairness_tradeoff", autoretry_for=RETRYABLE, retry_backoff=True, max_retries=3)
def fairness_tradeoff(model_version_id: int, column: str | None = None) -> int:
    """Train with and without reweighing on the model's data; returns the report id."""
    from governance.fairness import fairness_tradeoff_build

    return fairness_tradeoff_build(model_version_id=model_version_id, column=column).pk


@shared_task(name="governance.model_drift_check", autoretry_for=RETRYABLE, retry_backoff=True, max_retries=3)
def model_drift_check(model_version_id: int | None = None, run_id: int | None = None) -> float | None:
    """Measure a model's feature drift against training and store it (routing reads it).
    Without a model id (the beat schedule) it checks the champion."""
    from recommendations.monitoring import model_drift_check as check

    model_version_id = model_version_id or _champion_id("drift check")
    if model_version_id is None:
        return None
    result = check(model_version_id=model_version_id, run_id=run_id)
    return None if result is None else result.max_psi
