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
