"""The review desk pages. Each view parses input, calls one selector or service, renders."""

from __future__ import annotations

from datetime import date, datetime, time

import pandas as pd
from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.template.backends.utils import csrf_input
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from governance.audit import audit_log
from loyalty.definitions import RESPONSE_WINDOW_DAYS
from loyalty.permissions import capability_required
from recommendations import charts
from recommendations.decisions import (
    REASON_CODES,
    DecisionError,
    decision_bulk_approve,
    decision_record,
    decision_undo,
    review_claim,
)
from recommendations.features import TEXT_FEATURES
from recommendations.models import Decision, Recommendation
from recommendations.monitoring import model_metric_rows
from recommendations.queue import (
    InvalidCursor,
    QueueFilters,
    can_decide_status,
    decidable_statuses,
    decision_history,
    feature_names,
    filter_choices,
    member_earlier_items,
    member_purchase_history,
    member_recent_comments,
    override_offers,
    queue_page,
    queue_row,
    queue_status_counts,
    reason_texts,
    recalled_choices,
    recommendation_arrays,
    recommendation_drivers,
    recommendation_get,
)
from recommendations.runs import recommendation_priority_parts
from recommendations.selectors import as_of_instant

PAGE_SIZE = 50


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


def _next_url(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return default


def _decision_context(request: HttpRequest) -> dict:
    return {
        "reason_codes": list(REASON_CODES.items()),
        "offers": override_offers(),
        "currency": settings.LOYALTY_CURRENCY,
        "undo_seconds": settings.DECISION_UNDO_SECONDS,
    }


@require_GET
@capability_required("view_queue")
def queue(request: HttpRequest) -> HttpResponse:
    filters = QueueFilters.from_params(request.GET)
    cursor = request.GET.get("cursor") or None
    try:
        page = queue_page(user=request.user, filters=filters, cursor=cursor, limit=PAGE_SIZE)
    except InvalidCursor as exc:
        messages.error(request, f"{exc} Showing the first page.")
        page = queue_page(user=request.user, filters=filters, cursor=None, limit=PAGE_SIZE)
    params = filters.to_params()
    here = request.get_full_path()
    context = {
        "page": page,
        "rows_html": _rows_html(request, page.rows, here=here),
        "filters": filters,
        "counts": queue_status_counts(),
        "choices": filter_choices(),
        "can_decide_any": bool(decidable_statuses(request.user)),
        "claim_seconds": settings.REVIEW_CLAIM_SECONDS,
        "presence_seconds": settings.QUEUE_PRESENCE_SECONDS,
        "next_url": f"?{urlencode({**params, 'cursor': page.next_cursor})}" if page.next_cursor else "",
        "first_url": f"?{urlencode(params)}" if page.cursor else "",
        "export_query": urlencode({**params, "file_format": "csv"}),
        "here": here,
    }
    return render(request, "recommendations/queue.html", context)


def _rows_html(request: HttpRequest, rows: list, **context) -> str:
    """Queue rows from the Jinja2 template (the page's 50, or the one an htmx decision swaps)."""
    return mark_safe(render_to_string("partials/queue_rows.html", {
        "rows": rows,
        "csrf": csrf_input(request),  # one masked token for every form on the page, not one each
        **_decision_context(request),
        **context,
    }, request=request))  # noqa: S308 - Jinja2 autoescapes every value in it


def _tenure(joined: date | None, as_of: date) -> str:
    if joined is None:
        return "unknown"
    months = (as_of.year - joined.year) * 12 + as_of.month - joined.month
    return f"{months // 12} y {months % 12} m" if months >= 12 else f"{max(months, 0)} m"


@require_GET
@capability_required("view_queue")
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        rec = recommendation_get(recommendation_id=pk)
    except Recommendation.DoesNotExist as exc:
        raise Http404("No such recommendation") from exc
    # Looking at a member's data is itself recorded.
    audit_log(
        actor=request.user,
        action="member.view",
        object_type="recommendation",
        object_id=rec.pk,
        member_pseudo_id=rec.member.pseudo_id,
        ip=request.META.get("REMOTE_ADDR"),
    )
    can_decide = can_decide_status(request.user, rec.status)
    # Opening an item this manager may decide shows the others that they are on it (advice,
    # not a lock); closed items and other roles' items are simply not claimed.
    claimable, claimed_by = False, None
    try:
        other = review_claim(recommendation_id=rec.pk, actor=request.user)
        claimable, claimed_by = True, (other.name if other else None)
    except DecisionError:
        pass
    names = feature_names(rec.model_version)
    feats, shap = recommendation_arrays(rec)
    n = min(len(names), len(shap))
    history = member_purchase_history(
        member_id=rec.member_id, until=_end_of(rec.as_of) if rec.as_of else timezone.now()
    )
    drivers = recommendation_drivers(rec, names, top=3)
    earlier = member_earlier_items(rec=rec)
    recommended_code = rec.offer.code if rec.offer else None
    metric_summary, metric_others = model_metric_rows(rec.model_version.metrics)
    context = {
        "rec": rec,
        "member": rec.member,
        "tenure": _tenure(rec.member.joined_at, rec.as_of),
        "drivers": drivers,
        # What the model read: comments before the run's as-of date only.
        "recent_comments": member_recent_comments(member_id=rec.member_id, before=as_of_instant(rec.as_of)),
        "comments_drive": any(d["feature"] in TEXT_FEATURES for d in drivers),
        "features": [{"name": names[i], "value": float(feats[i]), "shap": float(shap[i])} for i in range(n)],
        "priority_parts": recommendation_priority_parts(rec, pd.DataFrame([feats[:n]], columns=names[:n])),
        "reasons": reason_texts(rec.route_reasons),
        "alternatives": sorted(rec.alternatives or [], key=lambda a: -float(a.get("ev", 0.0))),
        "metric_summary": metric_summary,
        "metric_others": metric_others,
        "decisions": decision_history(recommendation_id=rec.pk),
        "earlier": earlier,
        "recalled": recalled_choices([rec]).get(rec.pk),
        "response_window_days": RESPONSE_WINDOW_DAYS,
        "can_decide": can_decide,
        "claimed_by": claimed_by,
        "claim_url": reverse("api-recommendation-claim", args=[rec.pk]) if claimable else "",
        "claim_seconds": settings.REVIEW_CLAIM_SECONDS,
        "shap_chart": charts.figure_json(
            charts.shap_waterfall_figure(labels=names[:n], shap_values=shap[:n].tolist(), base_value=rec.shap_base)
        ),
        "alt_chart": charts.figure_json(
            charts.alternatives_figure(
                alternatives=rec.alternatives or [], recommended_code=recommended_code,
                currency=settings.LOYALTY_CURRENCY,
            )
        ),
        "history_chart": charts.figure_json(
            charts.history_sparkline_figure(
                months=[h["month"] for h in history], counts=[h["purchases"] for h in history]
            )
        ),
        "back": _next_url(request, reverse("home")),
        "here": request.get_full_path(),
        **_decision_context(request),
    }
    return render(request, "recommendations/detail.html", context)


def _end_of(day: date) -> datetime:
    return datetime.combine(day, time.max, tzinfo=timezone.get_current_timezone())


def _row_response(request: HttpRequest, rec_id: int, *, message: str = "", error: bool = False) -> HttpResponse:
    row = queue_row(user=request.user, recommendation_id=rec_id)
    undo_until = None
    if row.last_decision is not None and row.last_decision.actor_id == request.user.pk:
        undo_until = row.last_decision.at.timestamp() + settings.DECISION_UNDO_SECONDS
    context = {
        "message": message,
        "error": error,
        "can_undo": bool(
            undo_until
            and undo_until > timezone.now().timestamp()
            and row.last_decision.action != Decision.Action.UNDO
        ),
        "here": _next_url(request, reverse("home")),
    }
    return HttpResponse(_rows_html(request, [row], **context))


@require_POST
@capability_required("decide")
def decide(request: HttpRequest, pk: int) -> HttpResponse:
    action = request.POST.get("action", "")
    try:
        decision = decision_record(
            recommendation_id=pk,
            actor=request.user,
            action=action,
            chosen_offer_code=request.POST.get("chosen_offer_code"),
            reason_code=request.POST.get("reason_code", ""),
            reason_text=request.POST.get("reason_text", ""),
            note=request.POST.get("note", ""),
        )
    except DecisionError as exc:
        if _is_htmx(request) and Recommendation.objects.filter(pk=pk).exists():
            return _row_response(request, pk, message=exc.message, error=True)
        messages.error(request, exc.message)
        return HttpResponseRedirect(_next_url(request, reverse("home")))
    text = _decision_text(decision)
    if _is_htmx(request):
        return _row_response(request, pk, message=text)
    messages.success(request, text)
    return HttpResponseRedirect(_next_url(request, reverse("home")))


def _decision_text(decision: Decision) -> str:
    rec_id = decision.recommendation_id
    if decision.action == Decision.Action.OVERRIDE:
        choice = decision.chosen_offer.code if decision.chosen_offer else "no action"
        return f"Overridden #{rec_id}: {choice} ({decision.reason_code})."
    if decision.action == Decision.Action.ESCALATE:
        return f"Escalated #{rec_id} to a senior manager."
    if decision.action == Decision.Action.UNDO:
        return f"Undone: #{rec_id} is open again."
    return f"Approved #{rec_id}."


@require_POST
@capability_required("decide")
def undo(request: HttpRequest, decision_id: int) -> HttpResponse:
    original = Decision.objects.filter(pk=decision_id).values_list("recommendation_id", flat=True).first()
    if original is None:
        raise Http404("No such decision")
    try:
        decision = decision_undo(decision_id=decision_id, actor=request.user)
    except DecisionError as exc:
        if _is_htmx(request):
            return _row_response(request, original, message=exc.message, error=True)
        messages.error(request, exc.message)
        return HttpResponseRedirect(_next_url(request, reverse("home")))
    if _is_htmx(request):
        return _row_response(request, original, message=_decision_text(decision))
    messages.success(request, _decision_text(decision))
    return HttpResponseRedirect(_next_url(request, reverse("home")))


@require_POST
@capability_required("decide")
def bulk_approve(request: HttpRequest) -> HttpResponse:
    ids = [int(i) for i in request.POST.getlist("ids") if i.isdigit()]
    back = _next_url(request, reverse("home"))
    if not ids:
        messages.error(request, "Select at least one item (x toggles the current row).")
        return HttpResponseRedirect(back)
    if request.POST.get("confirm") != "yes":
        recs = (
            Recommendation.objects.filter(pk__in=ids)
            .select_related("member", "offer")
            .only("id", "status", "member__member_id", "offer__code", "offer__name", "expected_value")
            .order_by("id")
        )
        return render(
            request,
            "recommendations/bulk_confirm.html",
            {"recs": recs, "ids": ids, "count": len(ids), "back": back, "currency": settings.LOYALTY_CURRENCY},
        )
    try:
        result = decision_bulk_approve(recommendation_ids=ids, actor=request.user)
    except DecisionError as exc:
        messages.error(request, exc.message)
        return HttpResponseRedirect(back)
    messages.success(request, f"Approved {len(result.approved)} of {len(ids)} selected.")
    if result.refused:
        refused = "; ".join(f"#{r['id']}: {r['reason']}" for r in result.refused)
        messages.warning(request, f"Refused {len(result.refused)}: {refused}")
    return HttpResponseRedirect(back)

