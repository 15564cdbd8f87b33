"""End to end on a small simulated program: a real trained model, a real scoring run (tasks
in-process after commit), then drift, fairness reports (holdout, then realized outcomes once
the horizon's purchases are imported), an alert that routes a group to senior review through
the real routing, the command, the Celery task and the reweighing trade-off."""

from __future__ import annotations

import hashlib
import json
from io import StringIO

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from governance.fairness import fairness_report_build, fairness_tradeoff_build, training_population
from governance.models import AuditEvent, FairnessAlert, FairnessReport, MonitorThresholds
from governance.services import policy_save
from loyalty.definitions import age_band
from loyalty.models import Event, Member
from recommendations.models import ModelVersion, Recommendation, RecommendationStatus, ScoringRun
from recommendations.monitoring import coverage_over_time, model_drift_check
from recommendations.runs import run_start
from recommendations.selectors import member_frames_load
from tests.governance.conftest import policy_values
from tests.recommendations.scoring_support import COPIED_FIELDS, program_in_db

MEMBERS, SEED = 500, 21


@pytest.fixture
def trained(transactional_db, eager_celery, role_users):
    program = program_in_db(members=MEMBERS, seed=SEED)
    from recommendations.services import model_version_train

    model = model_version_train(as_of=program.as_of, horizon_days=program.horizon_days, seed=SEED)
    return program, model


@pytest.fixture
def scored(trained):
    program, model = trained
    run = run_start(as_of=program.as_of, chunk_size=250)
    run.refresh_from_db()
    assert run.status == ScoringRun.Status.SUCCEEDED, run.error
    return program, model, run


def _import_horizon_purchases(program) -> int:
    """The horizon's purchases arrive (as an import would bring them): realized outcomes."""
    future = program.future_events[program.future_events["kind"] == "purchase"]
    pks = dict(Member.objects.values_list("member_id", "pk"))
    Event.objects.bulk_create([
        Event(member_id=pks[row.member_id], occurred_at=pd.Timestamp(row.occurred_at).tz_convert("UTC") if pd.Timestamp(row.occurred_at).tzinfo else pd.Timestamp(row.occurred_at).tz_localize("UTC"), kind="purchase",
              amount=float(row.amount), fingerprint=hashlib.sha1(f"future-{i}".encode()).hexdigest())
        for i, row in enumerate(future.itertuples())
    ], batch_size=2000)
    return len(future)


def test_monitoring_on_a_real_model_and_run(scored, role_users, django_capture_on_commit_callbacks) -> None:
    program, model, run = scored
    admin = role_users["admin"]

    # Drift: the reference's bins were stored at train time; the check is stored for routing.
    schema = model.feature_schema["features"]
    assert all(len(f["psi_bins"]["shares"]) == len(f["psi_bins"]["edges"]) + 1 for f in schema)
    result = model_drift_check(model_version_id=model.pk, actor=admin)
    # The simulated history is one year long, so the training snapshot (as_of - 90 days) saw
    # less than a year: the reference is the members at as_of (services.drift_reference).
    assert model.feature_schema["drift_reference"] == {"snapshot": "as_of", "at": model.as_of.isoformat()}
    assert result.reference.startswith(f"the members at the model's as_of {model.as_of.isoformat()}")
    assert result.n == run.members_scored
    assert len(result.psi) == len(schema) and all(v >= 0 for v in result.psi)
    model.refresh_from_db()
    assert model.drift_psi == pytest.approx(result.max_psi, abs=1e-6)
    # The run scores the reference's members at the reference's date: no drift at all. (Against
    # the annualized training snapshot, offer and comment counts raised a false alarm here.)
    assert result.max_psi < 0.01, {f: v for f, v in zip(result.features, result.psi, strict=True) if v >= 0.01}
    assert model.drift_flagged is False
    assert AuditEvent.objects.filter(action="model.drift", object_id=str(model.pk)).exists()

    # Before the horizon's purchases are on record: the training holdout is the source.
    assert coverage_over_time()[-1]["known"] is False
    holdout = fairness_report_build(model_version_id=model.pk, n_boot=50)
    assert holdout.source == "holdout" and holdout.run is None and holdout.alerts == []
    members, events = member_frames_load(as_of=model.as_of)
    pop = training_population(members, events, as_of=model.as_of, horizon_days=model.horizon_days, seed=SEED)
    assert holdout.n == int(pop["holdout"].sum()) == model.metrics["n_holdout"]
    assert {g["column"] for g in holdout.groups} == {"age_band", "gender", "region", "tier"}
    for column in ("age_band", "gender", "region", "tier"):
        assert sum(g["n"] for g in holdout.groups if g["column"] == column) == holdout.n

    # The horizon's purchases arrive: realized outcomes of the run.
    assert _import_horizon_purchases(program) > 0
    coverage = coverage_over_time()[-1]
    assert coverage["known"] and coverage["run_id"] == run.pk and coverage["n"] == run.members_scored
    assert 0 <= coverage["coverage"] <= 1 and 0 < coverage["realized_rate"] < 1
    engaged = program.ground_truth.set_index("member_id")["engaged"]
    scored_ids = Member.objects.filter(recommendations__run=run).values_list("member_id", flat=True)
    assert coverage["realized_rate"] == pytest.approx(float(engaged.loc[list(scored_ids)].mean()))

    # Admin lowers the levels to zero and sends fairness-alerted groups to senior managers.
    with django_capture_on_commit_callbacks(execute=True):
        policy_save(actor=admin, **policy_values(
            phase="pilot", rules={"fairness_alert": {"enabled": True, "threshold": None, "route": "senior"}},
        ))
    MonitorThresholds.objects.create(coverage_min=0.8, auc_min=0.6, brier_max=0.3, psi_max=0.25,
                                     parity_difference_max=0.0, odds_difference_max=0.0)
    with django_capture_on_commit_callbacks(execute=True):
        report = fairness_report_build(model_version_id=model.pk, actor=admin, n_boot=50)
    assert report.source == "realized" and report.run_id == run.pk and report.n == run.members_scored
    # Cross-check one group's selection rate against the stored recommendations.
    tier = next(g for g in report.groups if g["column"] == "tier" and g["n"] >= 30)
    recs = Recommendation.objects.filter(run=run, member__tier=tier["value"])
    assert tier["n"] == recs.count()
    assert tier["selection_rate"] == pytest.approx(recs.filter(probability__lt=0.5).count() / recs.count())
    assert tier["offer_rate"] == pytest.approx(recs.filter(offer__isnull=False).count() / recs.count())
    assert tier["selection_rate_low"] <= tier["selection_rate"] <= tier["selection_rate_high"]
    # Its calibration gap: the stored probabilities against the members' realized churn.
    churned = 1 - engaged.loc[list(recs.values_list("member__member_id", flat=True))].to_numpy()
    risk = 1 - np.array(list(recs.values_list("probability", flat=True)))
    assert tier["calibration_gap"] == pytest.approx(risk.mean() - churned.mean())
    assert tier["calibration_gap_low"] <= tier["calibration_gap"] <= tier["calibration_gap_high"]
    assert report.differences["tier"]["calibration_difference"] >= 0
    # Its interval coverage: the stored intervals against the tier's realized engagement.
    from governance.fairness import interval_coverage_in_group

    shown = recs.order_by("pk").values_list("member__member_id", "probability", "p_low", "p_high")
    ids, p, low, high = zip(*shown, strict=True)
    tier_churned = 1 - engaged.loc[list(ids)].to_numpy()
    assert tier["interval_coverage"] == pytest.approx(interval_coverage_in_group(
        tier_churned, tier_churned, engagement=np.array(p), low=np.array(low), high=np.array(high)))
    assert 0 <= tier["interval_coverage_low"] <= tier["interval_coverage"] <= tier["interval_coverage_high"] <= 1
    assert "interval_coverage" in report.definition

    # Every column with two comparable groups differs by more than 0: an alert each, age band
    # included (the member's age band at the run's as_of).
    assert report.alerts, report.differences
    opened = {(a["column"], a["value"]) for a in report.alerts}
    assert {c for c, _ in opened} == {"age_band", "tier", "region", "gender"}
    assert set(FairnessAlert.objects.filter(status="open").values_list("column", "value")) == opened

    def group_of(member, column: str) -> str:
        return age_band(member.birth_year, run.as_of.year) if column == "age_band" else getattr(member, column)

    in_alerted = set()
    for rec in Recommendation.objects.filter(run=run).select_related("member"):
        if any(group_of(rec.member, c) == v for c, v in opened):
            in_alerted.add(rec.pk)
    for column, value in opened:
        group = [rec for rec in Recommendation.objects.filter(run=run).select_related("member")
                 if group_of(rec.member, column) == value]
        open_items = [rec for rec in group if rec.status in (RecommendationStatus.PENDING, RecommendationStatus.ESCALATED)]
        assert open_items, (column, value)
        for rec in open_items:
            assert rec.status == RecommendationStatus.ESCALATED and rec.route == "senior", (column, value)
            # The reason names one of the member's alerted groups (the first, when in several).
            reason = next(r for r in rec.route_reasons if r.get("code") == "fairness_alert")
            assert any(f"{c} = {v}" in reason["text"] and group_of(rec.member, c) == v for c, v in opened)
    others = set(Recommendation.objects.filter(run=run, status=RecommendationStatus.PENDING).values_list("pk", flat=True))
    assert others and not others & in_alerted  # members in no alerted group stay with managers
    # A second report opens no duplicate alerts.
    again = fairness_report_build(model_version_id=model.pk, n_boot=0)
    assert again.alerts == [] and FairnessAlert.objects.filter(status="open").count() == len(opened)

    # The command prints the report as JSON (a new report, same numbers).
    out = StringIO()
    call_command("fairness_report", "--model", str(model.pk), "--json", stdout=out)
    printed = json.loads(out.getvalue())
    assert printed["source"] == "realized" and printed["differences"].keys() == report.differences.keys()
    for column, values in report.differences.items():
        # Same numbers up to float summation order (numpy's pairwise sums of a group's
        # probabilities may differ in the last bit between two runs).
        assert printed["differences"][column] == {
            k: (pytest.approx(v, rel=1e-9) if isinstance(v, float) else v) for k, v in values.items()
        }
    # The Celery task (in-process here) builds one too.
    from governance.tasks import fairness_report as fairness_task

    report_id = fairness_task.delay(model.pk).get()
    assert FairnessReport.objects.get(pk=report_id).model_version_id == model.pk

    # The page shows the fairness charts and the banner, for the auditor too.
    client = Client()
    client.force_login(role_users["auditor"])
    html = client.get(reverse("models"), {"model": model.pk}).content.decode()
    for key in ("chart-fairness-diff", "chart-fairness-tier", "chart-fairness-age_band", "chart-psi", "chart-coverage"):
        assert f'id="{key}"' in html, key
    assert 'id="fairness-banner"' in html
    assert "calibration gap" in html and "calibration difference" in html


def test_reweighing_tradeoff_for_a_challenger(trained, role_users) -> None:
    program, champion = trained
    # A challenger (candidate) on the same data; its artifact is the champion's (training once
    # more would only cost time: the trade-off trains twice itself).
    challenger = ModelVersion.objects.create(
        status=ModelVersion.Status.CANDIDATE, **{f: getattr(champion, f) for f in COPIED_FIELDS}
    )
    report = fairness_tradeoff_build(model_version_id=challenger.pk, column="age_band", actor=role_users["admin"])
    assert report.kind == "tradeoff" and report.tradeoff["column"] == "age_band"
    plain, weighted = report.tradeoff["unweighted"], report.tradeoff["reweighted"]
    # Same data and seed: the unweighted variant is the challenger itself.
    assert plain["auc"] == pytest.approx(challenger.metrics["auc"])
    assert plain["brier"] == pytest.approx(challenger.metrics["brier"])
    for variant in (plain, weighted):
        assert 0 < variant["auc"] <= 1 and variant["demographic_parity_difference"] is not None
        assert {g["column"] for g in variant["groups"]} == {"age_band"}
    assert weighted["auc"] != plain["auc"] or weighted["brier"] != plain["brier"]  # weights changed the fit
    client = Client()
    client.force_login(role_users["admin"])
    html = client.get(reverse("models")).content.decode()
    assert 'id="chart-tradeoff"' in html and f"Challenger v{challenger.pk}" in html
    # Reweighing weights line up with the training rows and follow the formula per cell.
    from governance.fairness import fairness_training_weights

    members, events = member_frames_load(as_of=challenger.as_of)
    w = fairness_training_weights(members, events, as_of=challenger.as_of, horizon_days=challenger.horizon_days,
                                  column="tier", seed=SEED)
    pop = training_population(members, events, as_of=challenger.as_of, horizon_days=challenger.horizon_days, seed=SEED)
    assert list(w.index) == list(pop["X"].index)
    frame = pd.DataFrame({"g": pop["members"]["tier"].to_numpy(), "y": pop["y"], "w": w.to_numpy()})
    cell = frame.groupby(["g", "y"])["w"].agg(["min", "max"])
    np.testing.assert_allclose(cell["min"], cell["max"])  # one weight per (group, label) cell


MONITORING_BEAT = {
    "recommendations-retrain": "recommendations.retrain_model",
    "governance-fairness-report": "governance.fairness_report",
    "governance-drift-check": "governance.model_drift_check",
}


def test_beat_schedule_runs_retraining_fairness_and_drift_on_the_champion(scored, settings) -> None:
    from loyalty.celery import app

    program, model, run = scored
    assert model.status == ModelVersion.Status.CHAMPION
    app.loader.import_default_modules()  # what a worker does at start: autodiscovered tasks
    outcomes = {}
    for entry_name, task_name in MONITORING_BEAT.items():
        entry = settings.CELERY_BEAT_SCHEDULE[entry_name]
        assert entry["task"] == task_name and task_name in app.tasks
        assert float(entry["schedule"]) >= 3600  # hourly or rarer: each one trains or scores
        # What beat sends: the task by name, no arguments (tasks run in-process here).
        outcomes[task_name] = app.tasks[task_name].apply_async(args=entry.get("args", ())).get()

    report = FairnessReport.objects.get(pk=outcomes["governance.fairness_report"])
    # Before the horizon's purchases are on record, the report is on the training holdout.
    assert report.model_version_id == model.pk and report.source == "holdout"
    model.refresh_from_db()
    assert model.drift_psi == pytest.approx(outcomes["governance.model_drift_check"], abs=1e-6)
    assert AuditEvent.objects.filter(action="model.drift", object_id=str(model.pk)).exists()
    retrain = outcomes["recommendations.retrain_model"]
    challenger = ModelVersion.objects.get(pk=retrain["model_version"])
    assert challenger.pk != model.pk and "gate" in challenger.metrics
    assert AuditEvent.objects.filter(action="model.retrain", object_id=str(challenger.pk)).exists()


@pytest.mark.django_db
def test_scheduled_monitoring_without_a_champion_does_nothing(eager_celery) -> None:
    from governance.tasks import fairness_report, model_drift_check

    assert fairness_report.delay().get() is None
    assert model_drift_check.delay().get() is None
    assert not FairnessReport.objects.exists()
