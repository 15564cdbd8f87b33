"""The models page: monitoring charts, fairness, drift, alert levels, and the admins' actions.

Admins and auditors see the page (view_models); only admins act (manage_models). Each action
view parses input, calls one service or enqueues one task, and redirects back to the page.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import Resolver404, resolve, reverse
from django.views.decorators.http import require_GET, require_POST

from governance.fairness import GROUP_COLUMNS
from governance.models import FairnessAlert, FairnessReport
from governance.routing import TIERS
from governance.services import fairness_alert_close
from loyalty.permissions import capability_required
from recommendations import charts
from recommendations.models import ModelVersion
from recommendations.monitoring import (
    DECISION_WINDOW_DAYS,
    DEFAULT_THRESHOLDS,
    FAST_SECONDS,
    THRESHOLD_LABELS,
    WIDE_INTERVAL,
    ThresholdsInvalid,
    approval_speed,
    approval_speed_summary,
    coverage_over_time,
    decision_rates,
    drift_measure,
    model_versions_metrics,
    monitor_alerts,
    monitor_thresholds,
    monitor_thresholds_save,
)
from recommendations.outcomes import override_payoff
from recommendations.rollout import rollout_overview
from recommendations.training import INTERVAL_LEVEL

# The retraining helper's API (recommendations.learning behind it). The buttons post there with
# fetch + CSRF (static/js/models.js) and are disabled while the route is not served.
LOOP_ROUTES = {
    "retrain": "/api/models/retrain/",
    "promote": "/api/models/{id}/promote/",
    "rollback": "/api/models/{id}/rollback/",
}


def _served(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


def _selected_model(request: HttpRequest) -> ModelVersion | None:
    raw = request.GET.get("model", "")
    if raw.isdigit():
        model = ModelVersion.objects.filter(pk=int(raw)).first()
        if model is None:
            raise Http404("No such model version")
        return model
    return (
        ModelVersion.objects.filter(status=ModelVersion.Status.CHAMPION).first()
        or ModelVersion.objects.order_by("-id").first()
    )


NO_DECISIONS = f"No decisions by people in the last {DECISION_WINDOW_DAYS} days"


def _charts(context: dict) -> dict:
    thresholds = context["thresholds"]
    versions = context["versions"]
    out = {
        "chart-metrics": charts.model_metrics_figure(versions=versions),
        "chart-calibration": charts.calibration_figure(
            curves=[{"label": v["label"], **v["calibration"]} for v in versions if v["calibration"]["mean_predicted"]]
        ),
        "chart-coverage": charts.coverage_over_time_figure(
            rows=context["coverage"], level=INTERVAL_LEVEL, minimum=thresholds.coverage_min
        ),
        "chart-rates": charts.decision_rates_figure(
            rows=context["rates"], title="Approval and override rate", empty_text=NO_DECISIONS
        ),
        "chart-rates-offer": charts.decision_rates_figure(
            rows=context["rates_offer"], title="Approval and override rate per offer", empty_text=NO_DECISIONS
        ),
        "chart-rates-manager": charts.decision_rates_figure(
            rows=context["rates_manager"], title="Approval and override rate per manager", empty_text=NO_DECISIONS
        ),
        "chart-speed": charts.approval_speed_figure(
            rows=context["speed"], fast_seconds=FAST_SECONDS, empty_text=NO_DECISIONS
        ),
    }
    drift = context["drift"]
    if drift is not None:
        out["chart-psi"] = charts.psi_figure(
            features=drift.features, psi=drift.psi, level=thresholds.psi_max,
            title=f"Feature drift of run #{drift.run_id} against {drift.reference} (PSI)",
        )
    report = context["fairness"]
    if report is not None:
        out["chart-fairness-diff"] = charts.fairness_differences_figure(
            differences=report.differences, parity_max=thresholds.parity_difference_max,
            odds_max=thresholds.odds_difference_max,
        )
        for column in GROUP_COLUMNS:
            out[f"chart-fairness-{column}"] = charts.fairness_groups_figure(rows=report.groups, column=column)
    tradeoff = context["tradeoff"]
    if tradeoff is not None:
        out["chart-tradeoff"] = charts.fairness_tradeoff_figure(tradeoff=tradeoff.tradeoff)
    return {key: charts.figure_json(fig) for key, fig in out.items()}


@require_GET
@capability_required("view_models")
def models_page(request: HttpRequest) -> HttpResponse:
    selected = _selected_model(request)
    thresholds = monitor_thresholds()
    versions = model_versions_metrics()
    coverage = coverage_over_time()
    speed = approval_speed()
    fairness = selected.fairness_reports.filter(kind=FairnessReport.Kind.GROUPS).first() if selected else None
    challenger = ModelVersion.objects.filter(status=ModelVersion.Status.CANDIDATE).order_by("-id").first()
    tradeoff = (
        challenger.fairness_reports.filter(kind=FairnessReport.Kind.TRADEOFF).first() if challenger else None
    )
    context = {
        "selected": selected,
        "models": ModelVersion.objects.order_by("-id")[:12],
        "versions": versions,
        "thresholds": thresholds,
        "threshold_fields": [
            {"name": k, "label": THRESHOLD_LABELS[k], "value": getattr(thresholds, k), "default": v}
            for k, v in DEFAULT_THRESHOLDS.items()
        ],
        "coverage": coverage,
        "recent_runs": list(reversed(coverage))[:5],
        "rates": decision_rates(),
        "rates_offer": decision_rates(by="offer"),
        "rates_manager": decision_rates(by="manager"),
        "speed": speed,
        "speed_summary": approval_speed_summary(speed),
        "payoff": override_payoff(),
        "currency": settings.LOYALTY_CURRENCY,
        "drift": drift_measure(model_version_id=selected.pk) if selected else None,
        "fairness": fairness,
        "challenger": challenger,
        "tradeoff": tradeoff,
        "open_alerts": FairnessAlert.objects.filter(status=FairnessAlert.Status.OPEN),
        "rollout": rollout_overview(),
        "tiers": TIERS,
        "fast_seconds": FAST_SECONDS,
        "wide_interval": WIDE_INTERVAL,
        "group_columns": GROUP_COLUMNS,
        "loop": {name: path for name, path in LOOP_ROUTES.items()},
        "loop_served": {
            "retrain": _served(LOOP_ROUTES["retrain"]),
            "promote": _served(LOOP_ROUTES["promote"].format(id=1)),
            "rollback": _served(LOOP_ROUTES["rollback"].format(id=1)),
        },
    }
    context["alerts"] = monitor_alerts(
        versions=versions, coverage=coverage, thresholds=thresholds, fairness_reports=[fairness] if fairness else []
    )
    context["charts"] = _charts(context)
    return render(request, "recommendations/models.html", context)


def _back(model_id: int | None = None) -> HttpResponseRedirect:
    url = reverse("models")
    return HttpResponseRedirect(f"{url}?model={model_id}" if model_id else url)


def _model_or_404(pk: int) -> ModelVersion:
    model = ModelVersion.objects.filter(pk=pk).first()
    if model is None:
        raise Http404("No such model version")
    return model


@require_POST
@capability_required("manage_models")
def thresholds_save(request: HttpRequest) -> HttpResponse:
    try:
        monitor_thresholds_save(actor=request.user, values=request.POST.dict())
    except ThresholdsInvalid as exc:
        messages.error(request, f"Alert levels not saved: {exc}")
        return _back()
    messages.success(request, "Alert levels saved.")
    return _back()


@require_POST
@capability_required("manage_models")
def fairness_report_request(request: HttpRequest, pk: int) -> HttpResponse:
    from governance.tasks import fairness_report

    model = _model_or_404(pk)
    fairness_report.delay(model.pk)
    messages.success(request, f"Fairness report of model v{model.pk} requested.")
    return _back(model.pk)


@require_POST
@capability_required("manage_models")
def fairness_tradeoff_request(request: HttpRequest, pk: int) -> HttpResponse:
    from governance.tasks import fairness_tradeoff

    model = _model_or_404(pk)
    column = request.POST.get("column") or None
    if column is not None and column not in GROUP_COLUMNS:
        messages.error(request, f"Unknown group column {column!r}.")
        return _back(model.pk)
    fairness_tradeoff.delay(model.pk, column)
    messages.success(request, f"Reweighing trade-off of model v{model.pk} requested (two trainings).")
    return _back(model.pk)


@require_POST
@capability_required("manage_models")
def drift_check_request(request: HttpRequest, pk: int) -> HttpResponse:
    from governance.tasks import model_drift_check

    model = _model_or_404(pk)
    model_drift_check.delay(model.pk)
    messages.success(request, f"Drift check of model v{model.pk} requested.")
    return _back(model.pk)


@require_POST
@capability_required("manage_models")
def fairness_alert_close_view(request: HttpRequest, pk: int) -> HttpResponse:
    if fairness_alert_close(alert_id=pk, actor=request.user):
        messages.success(request, f"Fairness alert #{pk} closed; its group's open items are routed again.")
    else:
        messages.warning(request, f"Fairness alert #{pk} was not open.")
    return _back()
