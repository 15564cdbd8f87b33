"""Reads of the loyalty domain."""

from __future__ import annotations

from django.db.models import QuerySet

from loyalty.models import Offer


def offer_list(*, active_only: bool = False) -> QuerySet[Offer]:
    offers = Offer.objects.all()
    return offers.filter(active=True) if active_only else offers


def offer_get(*, code: str) -> Offer | None:
    return Offer.objects.filter(code=code).first()
