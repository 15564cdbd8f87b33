"""The models page: who sees it, its charts' data, alert levels, the banner, and the
approval-speed and decision-rate selectors on a constructed set of decisions."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from governance.models import AuditEvent, FairnessAlert, MonitorThresholds
from recommendations.decisions import decision_record, decision_undo
from recommendations.models import Decision, Recommendation
from recommendations.monitoring import (
    DEFAULT_THRESHOLDS,
    approval_speed,
    approval_speed_summary,
    decision_rates,
    drift_measure,
    monitor_thresholds,
)
from tests.desk.factories import make_user

CHARTS = ("chart-metrics", "chart-calibration", "chart-coverage", "chart-rates", "chart-rates-offer",
          "chart-rates-manager", "chart-speed", "chart-psi")


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _charts(html: str) -> dict[str, dict]:
    found = re.findall(r'<script id="([^"]+)" type="application/json">(.*?)</script>', html, re.S)
    return {key: json.loads(body) for key, body in found}


@pytest.mark.parametrize("role", ["admin", "auditor"])
def test_page_renders_with_chart_data(world, role_users, role) -> None:
    response = _client(role_users[role]).get(reverse("models"))
    assert response.status_code == 200
    html = response.content.decode()
    charts = _charts(html)
    for key in CHARTS:
        assert key in charts, key
        assert "data" in charts[key] and "layout" in charts[key]
        assert f'data-chart="{key}"' in html
    # The metrics chart carries the model's holdout numbers.
    bars = {t["name"]: t["y"] for t in charts["chart-metrics"]["data"]}
    assert bars["AUC"] == [0.81] and bars["Brier"] == [0.14] and bars["Interval coverage"] == [0.9]
    # No inline script: charts are JSON blocks drawn by desk.js.
    assert "<script>" not in html and "js/desk.js" in html and "js/models.js" in html
    admin_only = "Save alert levels" in html
    assert admin_only == (role == "admin")


@pytest.mark.parametrize("role", ["manager", "senior_manager"])
def test_page_forbidden_for_managers(world, role_users, role) -> None:
    assert _client(role_users[role]).get(reverse("models")).status_code == 403
    assert _client(role_users[role]).post(reverse("models-thresholds"), {}).status_code == 403


def test_nav_link_for_admins_and_auditors_only(world, role_users) -> None:
    for role, shown in (("admin", True), ("auditor", True), ("manager", False)):
        html = _client(role_users[role]).get(reverse("home")).content.decode()
        assert (f'href="{reverse("models")}"' in html) is shown, role


def test_drift_of_a_model_without_stored_bins_uses_its_first_run(world) -> None:
    result = drift_measure(model_version_id=world.model.pk)
    assert result.reference == f"first run #{world.run.pk}" and result.run_id == world.run.pk
    assert result.n == Recommendation.objects.filter(run=world.run).count()
    assert result.psi == [0.0] * 5  # the first run against itself


def test_thresholds_saved_by_admin_audited_and_validated(world, role_users) -> None:
    assert monitor_thresholds().version is None and monitor_thresholds().auc_min == DEFAULT_THRESHOLDS["auc_min"]
    values = {**{k: str(v) for k, v in DEFAULT_THRESHOLDS.items()}, "auc_min": "0.9"}
    response = _client(role_users["admin"]).post(reverse("models-thresholds"), values)
    assert response.status_code == 302
    assert monitor_thresholds().auc_min == 0.9
    audit = AuditEvent.objects.get(action="monitor.thresholds")
    assert audit.old == {**DEFAULT_THRESHOLDS} | {"auc_min": DEFAULT_THRESHOLDS["auc_min"]}
    assert audit.new["auc_min"] == 0.9 and audit.actor == role_users["admin"]
    # The model's AUC 0.81 is now below the level: the page shows a banner.
    html = _client(role_users["auditor"]).get(reverse("models")).content.decode()
    assert "AUC 0.810 is below 0.900" in html
    # Invalid values save nothing.
    _client(role_users["admin"]).post(reverse("models-thresholds"), {**values, "coverage_min": "1.5"})
    assert MonitorThresholds.objects.count() == 1


def test_open_fairness_alert_banner_on_the_queue(world, role_users) -> None:
    FairnessAlert.objects.create(column="region", value="south", metric="demographic_parity_difference")
    for role in ("manager", "admin"):
        html = _client(role_users[role]).get(reverse("home")).content.decode()
        assert 'id="fairness-banner"' in html and "region = south" in html
    assert 'id="fairness-banner"' not in Client().get(reverse("login")).content.decode()


def test_admin_closes_an_alert_from_the_page(world, role_users, django_capture_on_commit_callbacks, eager_celery):
    alert = FairnessAlert.objects.create(column="tier", value="gold")
    with django_capture_on_commit_callbacks(execute=True):
        response = _client(role_users["admin"]).post(reverse("models-alert-close", args=[alert.pk]))
    assert response.status_code == 302
    alert.refresh_from_db()
    assert alert.status == "closed" and AuditEvent.objects.filter(action="fairness_alert.close").exists()


def _at(decision: Decision, when) -> None:
    Decision.objects.filter(pk=decision.pk).update(at=when)


def test_rubber_stamp_data_on_constructed_decisions(world, role_users) -> None:
    t0 = timezone.localtime(timezone.now() - timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    Recommendation.objects.filter(run=world.run).update(created_at=t0)
    m1, senior = role_users["manager"], role_users["senior_manager"]
    m2 = make_user("m2", "manager")
    recs = world.recs
    # m1 approves "top" (width 0.30) after 100 s, then "mid" (width 0.15) 5 s later.
    a = decision_record(recommendation_id=recs["top"].pk, actor=m1, action="approve")
    _at(a, t0 + timedelta(seconds=100))
    b = decision_record(recommendation_id=recs["mid"].pk, actor=m1, action="approve")
    _at(b, t0 + timedelta(seconds=105))
    # m2 overrides "stakes" after 40 s; a senior approves the escalated "esc" (width 0.40) 3 s
    # after their own override of "low"... which came 300 s after creation.
    c = decision_record(recommendation_id=recs["stakes"].pk, actor=m2, action="override", chosen_offer_code="",
                        reason_code="too_costly", reason_text="not worth it")
    _at(c, t0 + timedelta(seconds=40))
    d = decision_record(recommendation_id=recs["low"].pk, actor=senior, action="escalate", note="look")
    _at(d, t0 + timedelta(seconds=300))
    e = decision_record(recommendation_id=recs["esc"].pk, actor=senior, action="approve")
    _at(e, t0 + timedelta(seconds=303))
    # An undone decision is not counted.
    undone = decision_record(recommendation_id=recs["low"].pk, actor=senior, action="approve")
    decision_undo(decision_id=undone.pk, actor=senior)
    Decision.objects.filter(recommendation=recs["low"], sequence__gte=2).update(at=t0 + timedelta(seconds=900))

    rows = {r["decision_id"]: r for r in approval_speed()}
    assert set(rows) == {a.pk, b.pk, c.pk, d.pk, e.pk}
    assert rows[a.pk]["seconds"] == pytest.approx(100) and rows[a.pk]["width"] == pytest.approx(0.30)
    assert rows[b.pk]["seconds"] == pytest.approx(5) and rows[b.pk]["width"] == pytest.approx(0.15)
    assert rows[c.pk]["seconds"] == pytest.approx(40) and rows[c.pk]["manager"] == "m2"
    assert rows[d.pk]["seconds"] == pytest.approx(300)
    assert rows[e.pk]["seconds"] == pytest.approx(3) and rows[e.pk]["width"] == pytest.approx(0.40)
    assert rows[e.pk]["probability"] == pytest.approx(0.3)

    summary = {s["manager"]: s for s in approval_speed_summary(list(rows.values()))}
    assert summary["manager"] == {
        "manager": "manager", "decisions": 2, "approvals": 2, "median_seconds": pytest.approx(52.5),
        "fast_approvals": 1, "fast_wide_approvals": 0, "width_seconds_corr": None,
    }
    assert summary["senior_manager"]["fast_approvals"] == 1 and summary["senior_manager"]["fast_wide_approvals"] == 1
    assert summary["m2"]["approvals"] == 0 and summary["m2"]["median_seconds"] is None

    day = t0.date()
    overall = decision_rates()
    assert overall == [{"day": day, "key": "all", "n": 5, "approved": 3, "overridden": 1, "escalated": 1,
                        "approval_rate": 0.6, "override_rate": 0.2}]
    by_manager = {r["key"]: r for r in decision_rates(by="manager")}
    assert by_manager["manager"]["approval_rate"] == 1.0 and by_manager["m2"]["override_rate"] == 1.0
    assert by_manager["senior_manager"]["n"] == 2 and by_manager["senior_manager"]["approval_rate"] == 0.5
    by_offer = {r["key"]: r for r in decision_rates(by="offer")}
    assert by_offer["bonus_500"]["approved"] == 2 and by_offer["tier_upgrade"]["overridden"] == 1
    assert by_offer["no action"]["escalated"] == 1

    # The page's approval-speed chart carries these points, one trace per manager.
    html = _client(role_users["admin"]).get(reverse("models")).content.decode()
    speed = _charts(html)["chart-speed"]
    traces = {t["name"]: t for t in speed["data"]}
    assert set(traces) == {"manager", "m2", "senior_manager"}
    assert sorted(traces["manager"]["y"]) == [5, 100]
    assert sorted(traces["manager"]["x"]) == pytest.approx([0.15, 0.30])
    assert not speed["layout"].get("annotations") or all(
        "No decisions" not in a.get("text", "") for a in speed["layout"]["annotations"])


def test_decision_charts_say_why_they_are_empty(world, role_users) -> None:
    html = _client(role_users["admin"]).get(reverse("models")).content.decode()
    charts = _charts(html)
    for key in ("chart-rates", "chart-rates-offer", "chart-rates-manager", "chart-speed"):
        notes = [a["text"] for a in charts[key]["layout"].get("annotations", [])]
        assert "No decisions by people in the last 90 days" in notes, key


def test_a_group_whose_probabilities_mean_something_else_opens_an_alert(world, role_users) -> None:
    """Same true risk everywhere, but the north's churn is understated by 15 points (its history
    is recorded worse): the calibration difference is over the default level, so the north gets
    a fairness alert (which routes its items, governance rules) and the models page a banner."""
    from governance.fairness import _alerts_open, group_metrics
    from governance.models import FairnessReport
    from recommendations.monitoring import monitor_alerts
    from tests.monitoring.synthetic import north_churn_understated

    groups, risk, churned = north_churn_understated()
    n = len(groups)
    rows, differences = group_metrics(y_true=churned, y_pred=(risk > 0.5).astype(int), groups={"region": groups},
                                      churn_risk=risk, n_boot=0)
    thresholds = monitor_thresholds()
    assert differences["region"]["calibration_difference"] > thresholds.calibration_difference_max == 0.10
    report = FairnessReport.objects.create(model_version=world.model, n=n, groups=rows, differences=differences,
                                           definition={"min_group": 50})
    opened = _alerts_open(report, rows, differences, thresholds, role_users["admin"], 50)
    assert {"column": "region", "value": "north", "metric": "calibration_difference"} in [
        {k: a[k] for k in ("column", "value", "metric")} for a in opened]
    assert FairnessAlert.objects.filter(column="region", value="north", status="open").exists()
    banners = [a["text"] for a in monitor_alerts(versions=[], coverage=[], thresholds=thresholds,
                                                 fairness_reports=[report])]
    assert any("region" in t and "calibration difference 0.1" in t for t in banners), banners
