from celery import shared_task

from loyalty.models import Offer


@shared_task(name="loyalty.count_offers")
def count_offers() -> int:
    """Proves a worker reads the same database as the web process (integration check)."""
    return Offer.objects.count()


@shared_task(name="loyalty.purge_expired_events", acks_late=True)
def purge_expired_events() -> dict:
    """Beat task: drop events past LOYALTY_EVENT_RETENTION_DAYS. Batches commit one by one,
    so a retried or overlapping run only finds what is still due."""
    from governance.privacy import events_purge_expired

    result = events_purge_expired()
    return {"deleted": result.deleted, "batches": result.batches, "cutoff": result.cutoff.isoformat()}
