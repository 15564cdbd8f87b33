"""Celery tasks of governance. They take ids, call a service, own their retry policy."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.db import InterfaceError, OperationalError

from governance.services import deadlines_enforce, open_items_reroute

# A database that went away usually comes back; both services are idempotent, so retrying is safe.
RETRYABLE = (OperationalError, InterfaceError)


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
def fairness_report(model_version_id: int, run_id: int | None = None) -> int:
    """Build a fairness report (and open alerts above the levels); returns the report id.
    Each call writes a new report: a retry after a lost result only adds a fresher one."""
    from governance.fairness import fairness_report_build

    return fairness_report_build(model_version_id=model_version_id, run_id=run_id).pk


@shared_task(name="governance.fairness_tradeoff", autoretry_for=RETRYABLE, retry_backoff=True, max_retries=3)
def fairness_tradeoff(model_version_id: int, column: str | None = None) -> int:
    """Train with and without reweighing on the model's data; returns the report id."""
    from governance.fairness import fairness_tradeoff_build

    return fairness_tradeoff_build(model_version_id=model_version_id, column=column).pk


@shared_task(name="governance.model_drift_check", autoretry_for=RETRYABLE, retry_backoff=True, max_retries=3)
def model_drift_check(model_version_id: int, run_id: int | None = None) -> float | None:
    """Measure a model's feature drift against training and store it (routing reads it)."""
    from recommendations.monitoring import model_drift_check as check

    result = check(model_version_id=model_version_id, run_id=run_id)
    return None if result is None else result.max_psi
