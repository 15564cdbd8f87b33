"""Reads for the prediction engine: member/event frames, offer terms, the champion model."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pandas as pd

from loyalty.models import Event, Member, Offer
from recommendations.models import ModelVersion
from recommendations.scoring import OfferTerms

MEMBER_FIELDS = [
    "pk", "member_id", "birth_year", "gender", "region", "tier", "points_balance",
    "joined_at", "consent_profiling",
]
EVENT_FIELDS = [
    "member_id", "occurred_at", "kind", "amount", "points", "quantity", "duration_seconds",
    "score", "offer_code",
]


def as_of_instant(as_of: date) -> datetime:
    """Midnight UTC at the start of ``as_of``: features use events strictly before it."""
    return datetime.combine(as_of, time.min, tzinfo=UTC)


def member_frames_load(
    *,
    as_of: date,
    pk_from: int | None = None,
    pk_to: int | None = None,
    consenting_only: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(members, events) frames for recommendations.features, for members with pk in
    [pk_from, pk_to] (inclusive; open when None) and their events before ``as_of``.

    consenting_only keeps members who consented to profiling; erased members are never read.
    Events come back with ``member_pk`` (the members' pk) and tz-aware UTC ``occurred_at``.
    """
    members_qs = Member.objects.filter(erased_at__isnull=True)
    events_qs = Event.objects.filter(occurred_at__lt=as_of_instant(as_of), member__erased_at__isnull=True)
    if consenting_only:
        members_qs = members_qs.filter(consent_profiling=True)
        events_qs = events_qs.filter(member__consent_profiling=True)
    if pk_from is not None:
        members_qs = members_qs.filter(pk__gte=pk_from)
        events_qs = events_qs.filter(member_id__gte=pk_from)
    if pk_to is not None:
        members_qs = members_qs.filter(pk__lte=pk_to)
        events_qs = events_qs.filter(member_id__lte=pk_to)
    members = pd.DataFrame.from_records(
        members_qs.order_by("pk").values_list(*MEMBER_FIELDS), columns=MEMBER_FIELDS
    )
    events = pd.DataFrame.from_records(
        events_qs.values_list(*EVENT_FIELDS).iterator(chunk_size=20_000), columns=EVENT_FIELDS
    ).rename(columns={"member_id": "member_pk"})
    events["occurred_at"] = pd.to_datetime(events["occurred_at"], utc=True)
    events["score"] = pd.to_numeric(events["score"], errors="coerce").astype(float)
    for name in ("amount",):
        events[name] = events[name].astype(float)
    for name in ("points", "quantity", "duration_seconds", "member_pk"):
        events[name] = events[name].astype("int64")
    members["pk"] = members["pk"].astype("int64")
    return members, events


def offer_terms_list(*, active_only: bool = True, codes: list[str] | None = None) -> list[OfferTerms]:
    """Offer catalog as OfferTerms (ordered by code), excluding the no-action pseudo offer."""
    qs = Offer.objects.exclude(kind="no_action")
    if active_only:
        qs = qs.filter(active=True)
    if codes is not None:
        qs = qs.filter(code__in=codes)
    return [
        OfferTerms(code=o.code, kind=o.kind, cost=float(o.cost), value=float(o.value), high_stakes=o.high_stakes)
        for o in qs.order_by("code")
    ]


def model_version_champion() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.CHAMPION).first()
