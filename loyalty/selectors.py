"""Reads of the loyalty domain."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from loyalty.models import Event, Member, Offer


def program_summary() -> dict[str, int]:
    members = Member.objects.aggregate(total=Count("id"))["total"]
    consenting = Member.objects.filter(consent_profiling=True).count()
    return {
        "members": members,
        "consenting_members": consenting,
        "events": Event.objects.count(),
        "active_offers": Offer.objects.filter(active=True).count(),
    }


def offer_list(*, active_only: bool = False) -> QuerySet[Offer]:
    offers = Offer.objects.all()
    return offers.filter(active=True) if active_only else offers


def offer_get(*, code: str) -> Offer | None:
    return Offer.objects.filter(code=code).first()
