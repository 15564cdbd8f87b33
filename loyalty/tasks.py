from celery import shared_task

from loyalty.models import Offer


@shared_task(name="loyalty.count_offers")
def count_offers() -> int:
    """Proves a worker reads the same database as the web process (integration check)."""
    return Offer.objects.count()
