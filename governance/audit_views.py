"""The audit trail for auditors and admins: a filterable page and a streamed CSV export."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator

from django.core.paginator import Paginator
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from governance.audit import audit_log
from governance.audit_selectors import (
    AuditFilters,
    InvalidAuditFilter,
    audit_action_choices,
    audit_event_list,
)
from governance.models import AuditEvent
from loyalty.permissions import capability_required

PAGE_SIZE = 50
CSV_COLUMNS = ["id", "at", "actor", "action", "object_type", "object_id", "member_pseudo_id", "old", "new", "ip"]


def _filters(request: HttpRequest) -> AuditFilters | HttpResponse:
    try:
        return AuditFilters.from_params(request.GET)
    except InvalidAuditFilter as exc:
        return HttpResponseBadRequest(str(exc))


@require_GET
@capability_required("view_audit")
def audit_page(request: HttpRequest) -> HttpResponse:
    filters = _filters(request)
    if isinstance(filters, HttpResponse):
        return filters
    page = Paginator(audit_event_list(filters=filters), PAGE_SIZE).get_page(request.GET.get("page"))
    params = filters.to_params()
    return render(
        request,
        "governance/audit.html",
        {
            "page": page,
            "filters": filters,
            "actions": audit_action_choices(),
            "query": urlencode(params),
        },
    )


class _Echo:
    def write(self, value: str) -> str:
        return value


def _row(event: AuditEvent) -> list[str]:
    return [
        str(event.pk), event.at.isoformat(), event.actor_label, event.action, event.object_type, event.object_id,
        str(event.member_pseudo_id or ""),
        "" if event.old is None else json.dumps(event.old, sort_keys=True),
        "" if event.new is None else json.dumps(event.new, sort_keys=True),
        event.ip or "",
    ]


def _csv_lines(rows: Iterator[AuditEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for event in rows:
        yield writer.writerow(_row(event))


@require_GET
@capability_required("view_audit")
def audit_export(request: HttpRequest) -> HttpResponse:
    filters = _filters(request)
    if isinstance(filters, HttpResponse):
        return filters
    events = audit_event_list(filters=filters)
    # The export is itself on the trail, recorded before the first byte leaves.
    with transaction.atomic():
        record = audit_log(
            actor=request.user, action="audit.export", object_type="audit_event",
            new={"filters": filters.to_params(), "rows": events.count()},
            ip=request.META.get("REMOTE_ADDR"),
        )
    # The rows as they were when the export was recorded (the count above): a stable snapshot.
    rows = events.filter(id__lt=record.pk).iterator(chunk_size=2000)
    response = StreamingHttpResponse(_csv_lines(rows), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
    return response
