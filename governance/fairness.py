"""Fairness of a model version's predictions per member group, alerts, and reweighing.

Definitions (shown on the models page and stored in every report's ``definition``):

* Groups: age band (from birth_year at the report's as_of year: <25, 25-34, 35-44, 45-54,
  55-64, 65+, unknown), gender, region and tier ("unknown" when blank).
* Selected = the model predicts a HIGH CHURN RISK: engagement probability below
  ``RISK_THRESHOLD`` (0.5). This is the prediction members are treated on (retention offers
  and routing follow the churn risk), so selection rate = share of a group flagged at risk.
* Positive = the member churned: no purchase in the horizon (1 - the engagement label).
  TPR = share of a group's churners flagged; FPR = share of its engaged members flagged.
* Outcomes: realized outcomes of a scoring run (the engagement label of [as_of, as_of +
  horizon), recommendations.monitoring.realized_engagement) when the events on record cover
  that window; otherwise the model's TRAINING HOLDOUT: the same members, features and labels
  training used (features at as_of - horizon, labels in [as_of - horizon, as_of), the
  deterministic split of recommendations.training by the model's seed), rebuilt from the
  database and scored with the model's bundle. Rebuilding rather than storing keeps
  per-member rows out of the model's metrics; members who have since withdrawn consent or
  been erased are no longer in it.
* Intervals: Fairlearn MetricFrame percentile bootstrap (``N_BOOT`` resamples, 5% and 95%).
* Per column: demographic parity difference = max - min selection rate, equalized odds
  difference = the larger of the TPR range and the FPR range, over groups of at least
  ``MIN_GROUP`` members (smaller groups are shown but too noisy to alert on).
* Offer rate (scoring runs only): share of a group's recommendations that carry an offer.
* Calibration within groups: a group's calibration gap = its mean predicted churn risk (1 -
  engagement probability) minus its observed churn rate, with the same bootstrap; positive =
  the model overstates the group's churn. The column's calibration difference = max - min
  gap over groups of at least ``MIN_GROUP``. Parity and equalized odds look at who is
  flagged; this asks whether the probability itself means the same in every group (a label
  bias planted in one group shows here first). Reported, not alerted on.

An admin-set level (recommendations.monitoring.monitor_thresholds) above which a column's
difference opens a FairnessAlert (governance.services.fairness_alert_open) for that column's
most deviating group; routing's fairness_alert rule then sends the group's items to people.
Alerts exist for every group column (age band, gender, region, tier), and routing knows them
all: an age-band alert sends the items of members in that band (their age at the run's as_of,
loyalty.definitions.age_band) to people like any other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from django.db import transaction
from fairlearn.metrics import MetricFrame

from governance.models import FairnessAlert, FairnessReport
from loyalty.definitions import age_band

RISK_THRESHOLD = 0.5
N_BOOT = 200
CI_QUANTILES = (0.05, 0.95)
MIN_GROUP = 30
GROUP_COLUMNS = ("age_band", "gender", "region", "tier")


# -------------------------------------------------------------------------------- pure


def selection_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(y_pred)) if len(y_pred) else float("nan")


def true_positive_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    pos = np.asarray(y_true) == 1
    return float(np.mean(np.asarray(y_pred)[pos])) if pos.any() else float("nan")


def false_positive_rate(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    neg = np.asarray(y_true) == 0
    return float(np.mean(np.asarray(y_pred)[neg])) if neg.any() else float("nan")


def calibration_gap(y_true: np.ndarray, y_pred: np.ndarray, *, churn_risk: np.ndarray) -> float:
    """Mean predicted churn risk minus the observed churn rate (y_true = churned)."""
    return float(np.mean(churn_risk) - np.mean(y_true)) if len(y_true) else float("nan")


# Rows per probability bin of a group's coverage estimate: a group of 500 gets 5 bins.
COVERAGE_BIN_ROWS = 100


def interval_coverage_in_group(
    y_true: np.ndarray, y_pred: np.ndarray, *, engagement: np.ndarray, low: np.ndarray, high: np.ndarray
) -> float:
    """Realized coverage of the engagement intervals within one group (y_true = churned): the
    estimator of the models page (recommendations.training.interval_coverage_binned) with
    bins of about COVERAGE_BIN_ROWS of the group's own members. The conformal interval is
    calibrated over all members; nothing makes it cover each group as well."""
    from recommendations.training import interval_coverage_binned

    n = len(y_true)
    if not n:
        return float("nan")
    return interval_coverage_binned(1 - np.asarray(y_true, dtype=float), engagement, low, high,
                                    bins=max(1, min(20, n // COVERAGE_BIN_ROWS)))


def _count(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(len(y_true))


def _clean(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _range(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return max(finite) - min(finite) if len(finite) >= 2 else None


def group_metrics(
    *,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: dict[str, Sequence[str]],
    offered: np.ndarray | None = None,
    churn_risk: np.ndarray | None = None,
    interval: tuple[np.ndarray, np.ndarray] | None = None,
    n_boot: int = N_BOOT,
    min_group: int = MIN_GROUP,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per-group metrics (with bootstrap intervals) and per-column differences.

    Returns (rows, differences): rows {"column", "value", "n", "<metric>", "<metric>_low",
    "<metric>_high", ["offer_rate"]}; differences {column: {"demographic_parity_difference",
    "equalized_odds_difference", ["calibration_difference"], "groups_compared"}} over groups of
    at least ``min_group``. With ``churn_risk`` (the predicted probability behind ``y_pred``)
    the metrics include ``calibration_gap``; with it and ``interval`` (the engagement
    interval's low and high ends) also ``interval_coverage`` and a ``coverage_difference``.
    """
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    metrics = {"selection_rate": selection_rate, "tpr": true_positive_rate, "fpr": false_positive_rate}
    sample_params = {}
    if churn_risk is not None:
        metrics["calibration_gap"] = calibration_gap
        # A per-member array: MetricFrame splits it by group and resamples it with the bootstrap.
        sample_params["calibration_gap"] = {"churn_risk": np.asarray(churn_risk, dtype=float)}
        if interval is not None:
            metrics["interval_coverage"] = interval_coverage_in_group
            sample_params["interval_coverage"] = {
                "engagement": 1 - np.asarray(churn_risk, dtype=float),
                "low": np.asarray(interval[0], dtype=float), "high": np.asarray(interval[1], dtype=float),
            }
    rows: list[dict[str, Any]] = []
    differences: dict[str, dict[str, Any]] = {}
    for column, values in groups.items():
        values = np.asarray(values, dtype=object)
        frame = MetricFrame(
            metrics={**metrics, "n": _count},
            y_true=y_true,
            y_pred=y_pred,
            sensitive_features=pd.Series(values, name=column),
            sample_params=sample_params or None,
            n_boot=n_boot if n_boot else None,
            ci_quantiles=list(CI_QUANTILES) if n_boot else None,
            random_state=seed if n_boot else None,
        )
        by_group = frame.by_group
        low, high = (frame.by_group_ci[0], frame.by_group_ci[-1]) if n_boot else (by_group, by_group)
        column_rows = []
        for value in by_group.index:
            row: dict[str, Any] = {"column": column, "value": str(value), "n": int(by_group.loc[value, "n"])}
            for name in (name for name in metrics if name in by_group.columns):
                row[name] = _clean(by_group.loc[value, name])
                row[f"{name}_low"] = _clean(low.loc[value, name])
                row[f"{name}_high"] = _clean(high.loc[value, name])
            if offered is not None:
                row["offer_rate"] = float(np.mean(np.asarray(offered)[values == value]))
            column_rows.append(row)
        rows += column_rows
        big = [r for r in column_rows if r["n"] >= min_group]
        tpr_range, fpr_range = _range([r["tpr"] for r in big]), _range([r["fpr"] for r in big])
        odds = [v for v in (tpr_range, fpr_range) if v is not None]
        differences[column] = {
            "demographic_parity_difference": _range([r["selection_rate"] for r in big]),
            "equalized_odds_difference": max(odds) if odds else None,
            **({"calibration_difference": _range([r["calibration_gap"] for r in big])}
               if churn_risk is not None else {}),
            **({"coverage_difference": _range([r["interval_coverage"] for r in big])}
               if "interval_coverage" in metrics else {}),
            "groups_compared": len(big),
        }
    return rows, differences


def fairness_sample_weights(groups: Sequence[Any], labels: Sequence[Any]) -> np.ndarray:
    """Reweighing (Kamiran & Calders; AIF360 Reweighing): w(g, y) = P(g) P(y) / P(g, y).

    Each (group, label) cell is weighted as if group and label were independent, so the
    weighted training data shows no association between the group and the label. ``groups``
    may hold tuples for intersections. When every (group, label) cell occurs, the weights sum
    to the number of rows.
    """
    frame = pd.DataFrame({"g": list(groups), "y": list(labels)})
    n = len(frame)
    if not n:
        return np.zeros(0)
    p_g = frame.groupby("g")["y"].transform("size") / n
    p_y = frame.groupby("y")["g"].transform("size") / n
    p_gy = frame.groupby(["g", "y"])["y"].transform("size") / n
    return (p_g * p_y / p_gy).to_numpy(float)


def _most_deviating(rows: list[dict[str, Any]], column: str, metric: str, min_group: int) -> dict[str, Any] | None:
    """The group of ``column`` whose metric lies farthest from the mean of the compared groups."""
    names = {"equalized_odds_difference": ("tpr", "fpr"),
             "calibration_difference": ("calibration_gap",)}.get(metric, ("selection_rate",))
    big = [r for r in rows if r["column"] == column and r["n"] >= min_group]
    best, best_gap = None, -1.0
    for name in names:
        values = [r.get(name) for r in big if r.get(name) is not None]
        if len(values) < 2:
            continue
        centre = float(np.mean(values))
        for r in big:
            if r.get(name) is not None and abs(r[name] - centre) > best_gap:
                best, best_gap = r, abs(r[name] - centre)
    return best


# -------------------------------------------------------------------------------- data


def _member_groups(members: pd.DataFrame, year: int) -> dict[str, np.ndarray]:
    def text(column: str) -> np.ndarray:
        return members[column].fillna("").astype(str).replace("", "unknown").to_numpy(object)

    birth = pd.to_numeric(members["birth_year"], errors="coerce").to_numpy(float)
    return {
        "age_band": np.array([age_band(b, year) for b in birth], dtype=object),
        "gender": text("gender"),
        "region": text("region"),
        "tier": text("tier"),
    }


def training_population(
    members: pd.DataFrame, events: pd.DataFrame, *, as_of: date, horizon_days: int, seed: int
) -> dict[str, Any]:
    """The engagement model's training rows, rebuilt exactly as recommendations.training
    .train_bundle builds them: members who joined before t0 = as_of - horizon, features at t0,
    labels in [t0, as_of), and the split by seed. Returns {"members", "X", "y", "holdout"}."""
    from recommendations.features import build_features, engagement_labels, members_at
    from recommendations.training import _history_start, _split_members

    as_of_ts = pd.Timestamp(as_of, tz="UTC")
    t0 = as_of_ts - pd.Timedelta(days=horizon_days)
    joined = pd.to_datetime(members["joined_at"], errors="coerce", utc=True)
    population = members_at(members[~(joined >= t0).to_numpy()], events, t0)
    X = build_features(population, events, t0, history_start=_history_start(events))
    y = engagement_labels(population, events, t0, horizon_days).to_numpy()
    split = _split_members(X.index.to_numpy(), seed)
    return {
        "members": population.set_index("pk").loc[X.index.to_numpy()],
        "X": X,
        "y": y,
        "holdout": X.index.isin(split["holdout"]),
    }


def _engagement_probability(bundle: Any, X: pd.DataFrame) -> np.ndarray:
    from recommendations.scoring import engagement_raw_probability

    raw = engagement_raw_probability(bundle.engagement_model, X[bundle.feature_names].to_numpy(float))
    return bundle.engagement_interval.predict(raw)[0]


def _holdout_data(mv: Any) -> dict[str, Any]:
    from recommendations.model_store import bundle_load
    from recommendations.selectors import member_frames_load

    members, events = member_frames_load(as_of=mv.as_of)
    seed = int((mv.params or {}).get("seed", 0))
    pop = training_population(members, events, as_of=mv.as_of, horizon_days=mv.horizon_days, seed=seed)
    hold = pop["holdout"]
    bundle = bundle_load(mv.pk, mv.artifact_path, mv.sha256)
    probability = _engagement_probability(bundle, pop["X"][hold])
    return {
        "engaged": pop["y"][hold],
        "probability": probability,
        "groups": _member_groups(pop["members"][hold], mv.as_of.year),
        "offered": None,
        "as_of": mv.as_of,
    }


def _run_data(run: Any) -> dict[str, Any] | None:
    from loyalty.models import Member
    from recommendations.monitoring import run_outcomes

    outcome = run_outcomes(run)
    if outcome is None:
        return None
    ids = outcome["member_id"]
    members = pd.DataFrame.from_records(
        Member.objects.filter(pk__in=[int(i) for i in ids]).values("pk", "birth_year", "gender", "region", "tier")
    ).set_index("pk").loc[ids].reset_index()
    from recommendations.models import Recommendation

    with_offer = set(
        Recommendation.objects.filter(run=run, member_id__in=[int(i) for i in ids], offer__isnull=False).values_list(
            "member_id", flat=True
        )
    )
    return {
        "engaged": outcome["y"],
        "probability": outcome["p"],
        "interval": (outcome["low"], outcome["high"]),
        "groups": _member_groups(members, run.as_of.year),
        "offered": np.array([int(i) in with_offer for i in ids], dtype=float),
        "as_of": run.as_of,
    }


# -------------------------------------------------------------------------------- services


def _alerts_open(
    report: FairnessReport, rows: list[dict[str, Any]], differences: dict[str, dict[str, Any]],
    thresholds: Any, actor: Any, min_group: int,
) -> list[dict[str, Any]]:
    from governance.services import fairness_alert_open

    opened = []
    already = set(
        FairnessAlert.objects.filter(status=FairnessAlert.Status.OPEN).values_list("column", "value")
    )
    levels = {
        "demographic_parity_difference": thresholds.parity_difference_max,
        "equalized_odds_difference": thresholds.odds_difference_max,
        "calibration_difference": thresholds.calibration_difference_max,
    }
    for column in FairnessAlert.Column.values:
        diff = differences.get(column) or {}
        for metric, level in levels.items():
            value = diff.get(metric)
            if value is None or value <= level:
                continue
            group = _most_deviating(rows, column, metric, min_group)
            if group is None or (column, group["value"]) in already:
                continue
            alert = fairness_alert_open(
                column=column, value=group["value"], metric=metric, actor=actor,
                detail=f"Fairness report #{report.pk} of model v{report.model_version_id}: {metric} "
                f"{value:.3f} above {level:.3f}; {column} = {group['value']} deviates most "
                f"(selection rate {group['selection_rate']}, TPR {group['tpr']}, FPR {group['fpr']}, "
                f"calibration gap {group.get('calibration_gap')}).",
            )
            already.add((column, group["value"]))
            opened.append({"id": alert.pk, "column": column, "value": group["value"], "metric": metric})
    return opened


def fairness_report_build(
    *, model_version_id: int, run_id: int | None = None, actor: Any = None, n_boot: int = N_BOOT,
    min_group: int = MIN_GROUP,
) -> FairnessReport:
    """Measure a model version's fairness per group, store a FairnessReport, and open a
    FairnessAlert per routable column above the admin-set level (see the module docstring).

    ``run_id``: the scoring run whose realized outcomes to use (default: the model's latest
    succeeded run); while its outcome window is open, the training holdout is used instead.
    """
    from governance.audit import audit_log
    from recommendations.models import ModelVersion, ScoringRun
    from recommendations.monitoring import monitor_thresholds
    from recommendations.services import _json_safe

    mv = ModelVersion.objects.get(pk=model_version_id)
    runs = ScoringRun.objects.filter(model_version=mv, status=ScoringRun.Status.SUCCEEDED)
    run = runs.get(pk=run_id) if run_id is not None else runs.order_by("-as_of", "-id").first()
    data = _run_data(run) if run is not None else None
    source = FairnessReport.Source.REALIZED
    if data is None:
        data, source = _holdout_data(mv), FairnessReport.Source.HOLDOUT
    churned = 1 - np.asarray(data["engaged"], dtype=int)
    flagged = (np.asarray(data["probability"]) < RISK_THRESHOLD).astype(int)
    rows, differences = group_metrics(
        y_true=churned, y_pred=flagged, groups=data["groups"], offered=data["offered"],
        churn_risk=1 - np.asarray(data["probability"], dtype=float), interval=data.get("interval"),
        n_boot=n_boot, min_group=min_group, seed=mv.pk,
    )
    thresholds = monitor_thresholds()
    dpds = [d["demographic_parity_difference"] for d in differences.values() if d["demographic_parity_difference"] is not None]
    eods = [d["equalized_odds_difference"] for d in differences.values() if d["equalized_odds_difference"] is not None]
    definition = {
        "selected": f"engagement probability < {RISK_THRESHOLD} (high churn risk)",
        "positive": "churned: no purchase in the horizon",
        "outcomes": (
            f"realized outcomes of run #{run.pk} (as of {run.as_of})" if source == FairnessReport.Source.REALIZED
            else "training holdout labels (rebuilt from the database with the model's split)"
            + (f"; run #{run.pk}'s outcome window is still open" if run is not None else "; no scoring run")
        ),
        "as_of": data["as_of"].isoformat(),
        "n_boot": n_boot,
        "ci_quantiles": list(CI_QUANTILES),
        "min_group": min_group,
        "risk_threshold": RISK_THRESHOLD,
        "calibration_gap": "mean predicted churn risk minus observed churn rate (positive: churn overstated)",
        **({"interval_coverage": "realized coverage of the 90% engagement interval within the group "
            f"(binned, ~{COVERAGE_BIN_ROWS} members a bin); calibrated over all members, not per group"}
           if data.get("interval") is not None else {}),
    }
    with transaction.atomic():
        report = FairnessReport.objects.create(
            kind=FairnessReport.Kind.GROUPS,
            model_version=mv,
            run=run if source == FairnessReport.Source.REALIZED else None,
            source=source,
            n=len(churned),
            definition=definition,
            groups=_json_safe(rows),
            differences=_json_safe(differences),
            max_parity_difference=max(dpds) if dpds else None,
            max_odds_difference=max(eods) if eods else None,
            thresholds=thresholds.as_dict(),
            created_by=actor if getattr(actor, "is_authenticated", False) else None,
        )
        report.alerts = _alerts_open(report, rows, differences, thresholds, actor, min_group)
        report.save(update_fields=["alerts"])
        audit_log(
            actor=actor, action="fairness_report.build", object_type="fairness_report", object_id=report.pk,
            new={"model_version": mv.pk, "source": source, "n": report.n,
                 "max_parity_difference": report.max_parity_difference,
                 "max_odds_difference": report.max_odds_difference, "alerts": report.alerts},
        )
    return report


def fairness_training_weights(
    members: pd.DataFrame, events: pd.DataFrame, *, as_of: date, horizon_days: int, column: str, seed: int = 0
) -> pd.Series:
    """Reweighing weights for retraining on ``column``'s groups, indexed by member pk: pass
    them to recommendations.training.train_bundle(sample_weight=...)."""
    pop = training_population(members, events, as_of=as_of, horizon_days=horizon_days, seed=seed)
    groups = _member_groups(pop["members"], as_of.year)[column]
    return pd.Series(fairness_sample_weights(groups, pop["y"]), index=pop["X"].index)


def _variant_metrics(bundle: Any, metrics: dict[str, Any], pop: dict[str, Any], column: str, year: int) -> dict:
    hold = pop["holdout"]
    probability = _engagement_probability(bundle, pop["X"][hold])
    groups = {column: _member_groups(pop["members"][hold], year)[column]}
    rows, differences = group_metrics(
        y_true=1 - pop["y"][hold], y_pred=(probability < RISK_THRESHOLD).astype(int), groups=groups,
        churn_risk=1 - probability, n_boot=0, min_group=1,
    )
    return {
        "auc": metrics.get("auc"),
        "brier": metrics.get("brier"),
        "interval_coverage": metrics.get("interval_coverage"),
        **{k: v for k, v in differences[column].items() if k != "groups_compared"},
        "groups": rows,
    }


def fairness_tradeoff(
    *, members: pd.DataFrame, events: pd.DataFrame, offers: list, as_of: date, horizon_days: int,
    column: str, algorithm: str = "hgb", seed: int = 0,
) -> dict[str, Any]:
    """Train on the same data with and without reweighing on ``column`` and return both metric
    sets (holdout AUC, Brier, coverage, and the column's parity and equalized odds differences)."""
    from recommendations.training import train_bundle

    pop = training_population(members, events, as_of=as_of, horizon_days=horizon_days, seed=seed)
    weights = pd.Series(
        fairness_sample_weights(_member_groups(pop["members"], as_of.year)[column], pop["y"]), index=pop["X"].index
    )
    out: dict[str, Any] = {"column": column, "holdout_n": int(pop["holdout"].sum())}
    for name, weight in (("unweighted", None), ("reweighted", weights)):
        bundle, metrics = train_bundle(
            members=members, events=events, offers=offers, as_of=pd.Timestamp(as_of, tz="UTC"),
            horizon_days=horizon_days, algorithm=algorithm, seed=seed, sample_weight=weight,
        )
        out[name] = _variant_metrics(bundle, metrics, pop, column, as_of.year)
    return out


def fairness_tradeoff_build(*, model_version_id: int, column: str | None = None, actor: Any = None) -> FairnessReport:
    """The reweighing trade-off for a model version's training data, stored as a FairnessReport
    of kind "tradeoff". ``column``: default the column with the largest difference in the
    model's latest group report, else age band."""
    from governance.audit import audit_log
    from recommendations.models import ModelVersion
    from recommendations.monitoring import monitor_thresholds
    from recommendations.selectors import member_frames_load, offer_terms_list
    from recommendations.services import _json_safe

    mv = ModelVersion.objects.get(pk=model_version_id)
    if column is None:
        latest = mv.fairness_reports.filter(kind=FairnessReport.Kind.GROUPS).first()
        diffs = (latest.differences if latest else {}) or {}
        scored = {c: max(v for v in d.values() if isinstance(v, float)) for c, d in diffs.items()
                  if any(isinstance(v, float) for v in d.values())}
        column = max(scored, key=scored.get) if scored else "age_band"
    if column not in GROUP_COLUMNS:
        raise ValueError(f"column must be one of {', '.join(GROUP_COLUMNS)}")
    members, events = member_frames_load(as_of=mv.as_of)
    result = fairness_tradeoff(
        members=members, events=events, offers=offer_terms_list(active_only=False), as_of=mv.as_of,
        horizon_days=mv.horizon_days, column=column, algorithm=mv.algorithm,
        seed=int((mv.params or {}).get("seed", 0)),
    )
    with transaction.atomic():
        report = FairnessReport.objects.create(
            kind=FairnessReport.Kind.TRADEOFF,
            model_version=mv,
            source=FairnessReport.Source.HOLDOUT,
            n=result["holdout_n"],
            definition={"reweighing": "w(g, y) = P(g) P(y) / P(g, y) on the training rows", "column": column,
                        "risk_threshold": RISK_THRESHOLD},
            tradeoff=_json_safe(result),
            thresholds=monitor_thresholds().as_dict(),
            created_by=actor if getattr(actor, "is_authenticated", False) else None,
        )
        audit_log(actor=actor, action="fairness_report.tradeoff", object_type="fairness_report",
                  object_id=report.pk, new={"model_version": mv.pk, "column": column})
    return report
