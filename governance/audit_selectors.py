"""Reads of the audit trail: one filter definition for the page, the CSV export and the API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import date, datetime, time

from django.db.models import QuerySet
from django.http import QueryDict
from django.utils import timezone

from governance.models import AuditEvent


class InvalidAuditFilter(ValueError):
    pass


@dataclass(frozen=True)
class AuditFilters:
    actor: str = ""
    action: str = ""
    object_type: str = ""
    object_id: str = ""
    member: str = ""  # pseudo id
    date_from: date | None = None
    date_to: date | None = None

    @classmethod
    def from_params(cls, params: QueryDict) -> AuditFilters:
        """Parse query parameters; InvalidAuditFilter names the first bad one."""
        text = {k: params.get(k, "").strip() for k in ("actor", "action", "object_type", "object_id", "member")}
        if text["member"]:
            try:
                text["member"] = str(uuid.UUID(text["member"]))
            except ValueError as exc:
                raise InvalidAuditFilter("member must be a pseudo id (a UUID)") from exc
        dates: dict[str, date | None] = {}
        for key in ("date_from", "date_to"):
            raw = params.get(key, "").strip()
            try:
                dates[key] = date.fromisoformat(raw) if raw else None
            except ValueError as exc:
                raise InvalidAuditFilter(f"{key} must be a date like 2026-01-31") from exc
        return cls(**text, **dates)

    def to_params(self) -> dict[str, str]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value:
                out[f.name] = value.isoformat() if isinstance(value, date) else str(value)
        return out


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone())


def audit_event_list(*, filters: AuditFilters) -> QuerySet[AuditEvent]:
    """Audit rows matching `filters`, newest first. Actor and action match by prefix/exact."""
    qs = AuditEvent.objects.all()
    if filters.actor:
        qs = qs.filter(actor_label__iexact=filters.actor)
    if filters.action:
        # "privacy." finds every privacy action; a full code finds just that one.
        qs = qs.filter(action__startswith=filters.action) if filters.action.endswith(".") else qs.filter(
            action=filters.action
        )
    if filters.object_type:
        qs = qs.filter(object_type=filters.object_type)
    if filters.object_id:
        qs = qs.filter(object_id=filters.object_id)
    if filters.member:
        qs = qs.filter(member_pseudo_id=filters.member)
    if filters.date_from:
        qs = qs.filter(at__gte=_day_start(filters.date_from))
    if filters.date_to:
        qs = qs.filter(at__lt=_day_start(date.fromordinal(filters.date_to.toordinal() + 1)))
    return qs.order_by("-at", "-id")


def audit_action_choices() -> list[str]:
    return list(AuditEvent.objects.order_by("action").values_list("action", flat=True).distinct())
