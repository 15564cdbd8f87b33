"""What-if pages: a member's features as sliders, segment scenarios, saved scenarios.

Each view parses input, calls one service of recommendations.whatif, renders or answers
JSON. The recompute endpoint answers the numbers and the two plotly figures that change.
"""

from __future__ import annotations

import json
from datetime import date

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST

from governance.audit import audit_log
from loyalty.models import Member, Tier
from loyalty.permissions import capability_required
from recommendations import charts, whatif_charts
from recommendations.models import Scenario
from recommendations.queue import RISK_BANDS
from recommendations.selectors import offer_terms_list
from recommendations.whatif import (
    WhatIfError,
    feature_controls,
    member_as_of,
    member_base_features,
    member_for_whatif,
    member_scenario_save,
    member_whatif_evaluate,
    model_feature_names,
    model_version_for_whatif,
    scenario_get,
    scenarios_list,
    segment_scenario_start,
    segment_spec_validate,
)


def _model_id(raw: str | None) -> int | None:
    return int(raw) if raw and raw.isdigit() else None


def _as_of(raw: str | None) -> date | None:
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError as exc:
        raise WhatIfError("as_of", "must be a date (YYYY-MM-DD)") from exc


def figures(result: dict, *, base_order: list[str] | None = None) -> dict:
    """The figures a recompute redraws: the edited member's waterfall and the offers."""
    names = result["feature_names"]
    order = base_order or whatif_charts.shap_order(labels=names, shap_values=result["base"]["shap"])
    return {
        "shap_after": charts.shap_waterfall_figure(
            labels=names, shap_values=result["scenario"]["shap"], base_value=result["scenario"]["shap_base"],
            title="What if: why the model says so (SHAP)", order=order,
        ),
        "offers": whatif_charts.offers_compare(
            before=result["base"]["alternatives"], after=result["scenario"]["alternatives"],
            currency=settings.LOYALTY_CURRENCY,
        ),
    }


@require_GET
@capability_required("run_whatif")
def home(request: HttpRequest) -> HttpResponse:
    member_id = (request.GET.get("member") or "").strip()
    if member_id:
        if Member.objects.filter(member_id=member_id).exists():
            return HttpResponseRedirect(reverse("whatif-member", args=[member_id]))
        messages.error(request, f"No member {member_id!r}.")
    return render(request, "whatif/home.html", {
        "scenarios": scenarios_list(limit=50),
        "tiers": list(Tier.values),
        "risks": list(RISK_BANDS),
        "offers": offer_terms_list(),
        "features": _segment_features(),
        "member": member_id,
    })


def _segment_features() -> list[str]:
    from recommendations.features import FEATURE_SPEC
    from recommendations.whatif import lock_reason

    return [spec.name for spec in FEATURE_SPEC if not lock_reason(spec.name)]


@require_GET
@capability_required("run_whatif")
def member_page(request: HttpRequest, member_id: str) -> HttpResponse:
    changes: dict = {}
    scenario = None
    try:
        model_id = _model_id(request.GET.get("model"))
        as_of = _as_of(request.GET.get("as_of"))
        if request.GET.get("scenario", "").isdigit():
            scenario = Scenario.objects.filter(pk=int(request.GET["scenario"]), kind=Scenario.Kind.MEMBER).first()
            if scenario is not None:
                changes, model_id, as_of = scenario.inputs.get("changes", {}), scenario.model_version_id, scenario.as_of
        member = member_for_whatif(member_id=member_id)
        version = model_version_for_whatif(model_id)
        as_of = as_of or member_as_of(member=member, model_version=version)
        base = member_base_features(member=member, model_version=version, as_of=as_of)
        result = member_whatif_evaluate(member=member, model_version=version, changes=changes, as_of=as_of)
    except WhatIfError as exc:
        if exc.field == "member_id" and not Member.objects.filter(member_id=member_id).exists():
            raise Http404(exc.message) from exc
        messages.error(request, exc.message)
        return HttpResponseRedirect(reverse("whatif-home"))
    audit_log(
        actor=request.user, action="member.view", object_type="whatif",
        member_pseudo_id=member.pseudo_id, ip=request.META.get("REMOTE_ADDR"),
    )
    names = result["feature_names"]
    order = whatif_charts.shap_order(labels=names, shap_values=result["base"]["shap"])
    controls = feature_controls(model_version=version, base=base)
    init = {
        "evaluate_url": reverse("whatif-evaluate", args=[member.member_id]),
        "model_version": version.pk,
        "as_of": as_of.isoformat(),
        "controls": controls,
        "changes": result["changes"],
        "result": result,
        "figures": figures(result, base_order=order),
        "base_order": order,
        "currency": settings.LOYALTY_CURRENCY,
    }
    return render(request, "whatif/member.html", {
        "member": member,
        "version": version,
        "as_of": as_of,
        "controls": controls,
        "result": result,
        "scenario": scenario,
        "init": init,
        "shap_before": charts.shap_waterfall_figure(
            labels=names, shap_values=result["base"]["shap"], base_value=result["base"]["shap_base"],
            title="As is: why the model says so (SHAP)", order=order,
        ),
        "currency": settings.LOYALTY_CURRENCY,
        "tiers": list(Tier.values),
    })


def _json_error(exc: WhatIfError, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": exc.message, "field": exc.field, "fields": {exc.field: [exc.message]}}, status=status)


@require_POST
@capability_required("run_whatif")
def member_evaluate(request: HttpRequest, member_id: str) -> JsonResponse:
    """One recompute: {"changes": {...}, "model_version": id, "as_of": date} -> numbers + figures."""
    try:
        payload = json.loads(request.body or b"{}")
    except json.JSONDecodeError:
        return _json_error(WhatIfError("body", "must be JSON"))
    if not isinstance(payload, dict):
        return _json_error(WhatIfError("body", "must be a JSON object"))
    try:
        member = member_for_whatif(member_id=member_id)
        version = model_version_for_whatif(_model_id(str(payload.get("model_version") or "")))
        result = member_whatif_evaluate(
            member=member, model_version=version, changes=payload.get("changes") or {},
            as_of=_as_of(payload.get("as_of")), recourse=bool(payload.get("recourse", True)),
        )
    except WhatIfError as exc:
        return _json_error(exc)
    order = payload.get("base_order")
    result["figures"] = figures(result, base_order=order if isinstance(order, list) else None)
    return JsonResponse(result)


@require_POST
@capability_required("run_whatif")
def member_save(request: HttpRequest, member_id: str) -> HttpResponse:
    try:
        changes = json.loads(request.POST.get("changes") or "{}")
        member = member_for_whatif(member_id=member_id)
        version = model_version_for_whatif(_model_id(request.POST.get("model_version")))
        scenario = member_scenario_save(
            actor=request.user, name=request.POST.get("name", ""), member=member, model_version=version,
            changes=changes, as_of=_as_of(request.POST.get("as_of")),
        )
    except json.JSONDecodeError:
        messages.error(request, "The changes could not be read.")
        return HttpResponseRedirect(reverse("whatif-member", args=[member_id]))
    except WhatIfError as exc:
        messages.error(request, f"Not saved: {exc.field}: {exc.message}")
        return HttpResponseRedirect(reverse("whatif-member", args=[member_id]))
    messages.success(request, f"Saved scenario “{scenario.name}”. Share this page's URL.")
    return HttpResponseRedirect(reverse("whatif-scenario", args=[scenario.pk]))


@require_POST
@capability_required("run_whatif")
def segment_start(request: HttpRequest) -> HttpResponse:
    data = {k: request.POST.get(k, "") for k in ("tier", "region", "risk", "offer", "feature", "op", "amount")}
    code, cost = request.POST.get("cost_offer", ""), request.POST.get("cost", "")
    data["offer_costs"] = {code: cost} if code and cost != "" else {}
    try:
        version = model_version_for_whatif(_model_id(request.POST.get("model_version")))
        spec = segment_spec_validate(data, feature_names=model_feature_names(version))
        scenario = segment_scenario_start(actor=request.user, name=request.POST.get("name", ""), spec=spec,
                                          model_version=version)
    except WhatIfError as exc:
        messages.error(request, f"{exc.field}: {exc.message}")
        return HttpResponseRedirect(reverse("whatif-home"))
    return HttpResponseRedirect(reverse("whatif-scenario", args=[scenario.pk]))


def _scenario_or_404(pk: int) -> Scenario:
    try:
        return scenario_get(scenario_id=pk)
    except Scenario.DoesNotExist as exc:
        raise Http404("No such scenario") from exc


def segment_figures(scenario: Scenario) -> dict:
    result = scenario.result or {}
    before, after = result.get("before", {}), result.get("after", {})
    hist = result.get("delta_histogram", {"edges": [], "counts": []})
    return {
        "engaged": whatif_charts.segment_totals(
            before=before, after=after, key="engaged", unit="members",
            title="Expected engaged members (the members' 90% bounds added up)"),
        "ev": whatif_charts.segment_totals(
            before=before, after=after, key="ev", unit=settings.LOYALTY_CURRENCY,
            title="Expected value of the recommended offers (the members' ranges added up)"),
        "mix": whatif_charts.segment_mix(before=before, after=after, codes=result.get("offer_codes", [])),
        "delta": whatif_charts.delta_histogram(edges=hist["edges"], counts=hist["counts"]),
    }


@require_GET
@capability_required("run_whatif")
def scenario_page(request: HttpRequest, pk: int) -> HttpResponse:
    scenario = _scenario_or_404(pk)
    if scenario.kind == Scenario.Kind.MEMBER:
        if scenario.member is None:
            raise Http404("The member of this scenario no longer exists")
        url = reverse("whatif-member", args=[scenario.member.member_id])
        return HttpResponseRedirect(f"{url}?{urlencode({'scenario': scenario.pk})}")
    return render(request, "whatif/segment.html", _segment_context(scenario))


def _segment_context(scenario: Scenario) -> dict:
    done = scenario.status == Scenario.Status.SUCCEEDED
    return {
        "scenario": scenario,
        "figures": segment_figures(scenario) if done else None,
        "done": done,
        "finished": scenario.status in (Scenario.Status.SUCCEEDED, Scenario.Status.FAILED),
        "percent": round(100 * scenario.progress),
        "currency": settings.LOYALTY_CURRENCY,
    }


@require_GET
@capability_required("run_whatif")
def scenario_status(request: HttpRequest, pk: int) -> HttpResponse:
    """The progress/result block; htmx polls it until the run has finished."""
    return render(request, "whatif/_segment_status.html", _segment_context(_scenario_or_404(pk)))


@require_GET
@capability_required("run_whatif")
def compare(request: HttpRequest) -> HttpResponse:
    ids = [int(i) for i in request.GET.getlist("ids") if i.isdigit()][:6]
    found = {s.pk: s for s in scenarios_list(ids=ids)} if ids else {}
    chosen = [found[i] for i in ids if i in found]
    return render(request, "whatif/compare.html", {"scenarios": chosen, "currency": settings.LOYALTY_CURRENCY})
