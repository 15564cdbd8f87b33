"""Celery task of what-if segment scenarios (registered through CELERY_IMPORTS)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="recommendations.whatif_segment_run", acks_late=True, reject_on_worker_lost=True)
def run_segment_scenario(scenario_id: int) -> dict:
    """Run one segment scenario. Idempotent: a re-delivered run starts the sums again."""
    from recommendations.whatif import segment_scenario_run

    scenario = segment_scenario_run(scenario_id=scenario_id)
    return {"scenario": scenario.pk, "status": scenario.status, "members": scenario.members_done}
