"""The model monitor: what the models page shows, and the drift check that feeds routing.

Reads (selectors) for the page: metrics per model version, decision rates over time,
approval speed against confidence, interval coverage against realized outcomes, and the
population stability index of the features. Writes: the admin-set alert levels
(``monitor_thresholds_save``) and ``model_drift_check``, which stores a model's PSI through
governance.services.model_drift_record (so routing sees it).

Definitions (also shown on the page):

* PSI of a feature = sum over bins of (a - e) * ln(a / e), with e the reference share and a
  the scored share of the bin (shares floored at 1e-4). Bins are the deciles of the feature
  in the training snapshot (the consenting members' features at as_of - horizon, exactly as
  the model trained on them, which the schema's ranges also come from), or, when less than a
  year of history lay behind that snapshot, in the same members at as_of
  (services.drift_reference says why), stored at train time in
  ``feature_schema["features"][i]["psi_bins"]`` ({"edges", "shares"}) with
  ``feature_schema["drift_reference"]``.
  A model trained before that was stored has no bins: its reference is then the features of
  its FIRST succeeded scoring run (so drift is measured from the first run on; the first
  run's own PSI is 0). The model's PSI is the largest feature PSI: one shifted input is
  enough to make the scores suspect.
* Realized outcome of a recommendation = the engagement label (loyalty.definitions: at least
  one purchase in [as_of, as_of + horizon)), known once the events on record reach the end of
  that window. Coverage over time is the binned realized coverage of the training metrics
  (recommendations.training.interval_coverage_binned) per scoring run.
* Approval speed: for each human decision, the seconds between the moment the decider could
  start on the item (the later of: the item's creation, the previous decision on the same
  item, the same person's previous decision on any item) and the decision.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from statistics import median
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Max, OuterRef, Q, Subquery
from django.db.models.functions import Mod, TruncDate
from django.utils import timezone

from governance.audit import audit_log
from governance.models import MonitorThresholds
from loyalty.definitions import ENGAGEMENT_EVENT_KIND
from loyalty.errors import FieldErrors
from loyalty.models import Event
from recommendations.models import Decision, ModelVersion, Recommendation, ScoringRun

PSI_BINS = 10
PSI_FLOOR = 1e-4
# Reading a million rows for a chart is not needed: larger runs are sampled evenly by id.
SAMPLE_ROWS = 50_000
# An approval faster than this on an uncertain item is counted as a possible rubber stamp.
FAST_SECONDS = 15.0
WIDE_INTERVAL = 0.35

DEFAULT_THRESHOLDS: dict[str, float] = {
    "coverage_min": 0.80,
    "auc_min": 0.65,
    "brier_max": 0.25,
    "psi_max": 0.25,
    "parity_difference_max": 0.20,
    "odds_difference_max": 0.20,
    "calibration_difference_max": 0.10,
}
THRESHOLD_LABELS: dict[str, str] = {
    "coverage_min": "Interval coverage below",
    "auc_min": "AUC below",
    "brier_max": "Brier score above",
    "psi_max": "Feature drift (PSI) above",
    "parity_difference_max": "Demographic parity difference above",
    "odds_difference_max": "Equalized odds difference above",
    "calibration_difference_max": "Calibration difference between groups above",
}
HUMAN_ACTIONS = (Decision.Action.APPROVE, Decision.Action.OVERRIDE, Decision.Action.ESCALATE)


# -------------------------------------------------------------------------------- PSI (pure)


def psi_reference(values: np.ndarray, bins: int = PSI_BINS) -> dict[str, list[float]]:
    """Bin edges (inner quantiles of ``values``, ties merged) and the share of values per bin."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return {"edges": [], "shares": [1.0]}
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    return {"edges": edges.tolist(), "shares": psi_shares(edges, values).tolist()}


def psi_shares(edges: np.ndarray | list[float], values: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each bin: bin i holds values with exactly i edges <= value."""
    edges = np.asarray(edges, dtype=float)
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def population_stability_index(reference: dict[str, list[float]], values: np.ndarray) -> float:
    """PSI of ``values`` against a reference from psi_reference."""
    expected = np.clip(np.asarray(reference["shares"], dtype=float), PSI_FLOOR, None)
    actual = np.clip(psi_shares(reference["edges"], values), PSI_FLOOR, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


# -------------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Thresholds:
    coverage_min: float
    auc_min: float
    brier_max: float
    psi_max: float
    parity_difference_max: float
    odds_difference_max: float
    calibration_difference_max: float
    version: int | None = None  # MonitorThresholds id; None = the defaults

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _defaults() -> dict[str, float]:
    return {**DEFAULT_THRESHOLDS, **getattr(settings, "MONITOR_THRESHOLDS", {})}


def monitor_thresholds() -> Thresholds:
    """The alert levels in force: the latest admin-saved row, else the defaults (settings
    MONITOR_THRESHOLDS may override DEFAULT_THRESHOLDS)."""
    row = MonitorThresholds.objects.order_by("-id").first()
    if row is None:
        return Thresholds(**_defaults())
    return Thresholds(**{k: getattr(row, k) for k in DEFAULT_THRESHOLDS}, version=row.pk)


class ThresholdsInvalid(FieldErrors):
    """Monitoring thresholds that cannot be saved."""


def _threshold_values(values: dict[str, Any]) -> dict[str, float]:
    errors: dict[str, str] = {}
    clean: dict[str, float] = {}
    for key in DEFAULT_THRESHOLDS:
        try:
            number = float(values.get(key, ""))
        except (TypeError, ValueError):
            errors[key] = "enter a number"
            continue
        upper = math.inf if key in {"brier_max", "psi_max"} else 1.0
        if not math.isfinite(number) or number < 0 or number > upper:
            errors[key] = "must be between 0 and 1" if upper == 1.0 else "must be 0 or more"
            continue
        clean[key] = number
    if errors:
        raise ThresholdsInvalid(errors)
    return clean


def monitor_thresholds_save(*, actor: Any, values: dict[str, Any]) -> MonitorThresholds:
    """Validate and store the next version of the alert levels, audited with old and new."""
    clean = _threshold_values(values)
    with transaction.atomic():
        old = monitor_thresholds()
        row = MonitorThresholds.objects.create(
            created_by=actor if getattr(actor, "is_authenticated", False) else None, **clean
        )
        audit_log(
            actor=actor, action="monitor.thresholds", object_type="monitor_thresholds", object_id=row.pk,
            old={k: getattr(old, k) for k in clean}, new=clean,
        )
    return row


# -------------------------------------------------------------------------------- metrics


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def model_versions_metrics(*, limit: int = 12) -> list[dict[str, Any]]:
    """The latest model versions (oldest first) with their holdout metrics."""
    rows = []
    for mv in reversed(list(ModelVersion.objects.order_by("-id")[:limit])):
        m = mv.metrics or {}
        curve = m.get("calibration_curve") or {}
        rows.append({
            "id": mv.pk,
            "label": f"v{mv.pk}",
            "status": mv.status,
            "algorithm": mv.algorithm,
            "created_at": mv.created_at,
            "as_of": mv.as_of,
            "auc": _num(m.get("auc")),
            "brier": _num(m.get("brier")),
            "coverage": _num(m.get("interval_coverage")),
            "interval_mean_width": _num(m.get("interval_mean_width")),
            "n_holdout": m.get("n_holdout"),
            "calibration": {
                "mean_predicted": list(curve.get("mean_predicted") or []),
                "fraction_positive": list(curve.get("fraction_positive") or []),
            },
            "drift_psi": mv.drift_psi,
            "drift_flagged": mv.drift_flagged,
        })
    return rows


# -------------------------------------------------------------------------------- decisions


# The window of the decision charts (rates, approval speed).
DECISION_WINDOW_DAYS = 90


def _human_decisions(*, days: int, now: datetime | None = None):
    """Approvals, overrides and escalations by people in the last ``days``, undone ones left out."""
    since = (now or timezone.now()) - timedelta(days=days)
    undone = Decision.objects.filter(action=Decision.Action.UNDO, compensates__isnull=False).values(
        "compensates_id"
    )
    return Decision.objects.filter(at__gte=since, actor__isnull=False, action__in=HUMAN_ACTIONS).exclude(
        pk__in=undone
    )


def decision_rates(*, by: str | None = None, days: int = DECISION_WINDOW_DAYS, now: datetime | None = None) -> list[dict[str, Any]]:
    """Approval and override rates per day (and per offer or manager when ``by`` says so).

    Rates are shares of the people's decisions that day: approvals / (approvals + overrides +
    escalations), likewise for overrides. Rows: {"day", "key", "n", "approved", "overridden",
    "escalated", "approval_rate", "override_rate"}.
    """
    keys = {None: None, "offer": "recommendation__offer__code", "manager": "actor_label"}
    if by not in keys:
        raise ValueError("by must be None, 'offer' or 'manager'")
    fields = ["day", *([keys[by]] if by else [])]
    rows = (
        _human_decisions(days=days, now=now)
        .annotate(day=TruncDate("at"))
        .order_by()
        .values(*fields)
        .annotate(
            n=Count("id"),
            approved=Count("id", filter=Q(action=Decision.Action.APPROVE)),
            overridden=Count("id", filter=Q(action=Decision.Action.OVERRIDE)),
            escalated=Count("id", filter=Q(action=Decision.Action.ESCALATE)),
        )
    )
    out = []
    for row in rows:
        key = "all" if by is None else (row[keys[by]] or "no action")
        out.append({
            "day": row["day"],
            "key": key,
            "n": row["n"],
            "approved": row["approved"],
            "overridden": row["overridden"],
            "escalated": row["escalated"],
            "approval_rate": row["approved"] / row["n"],
            "override_rate": row["overridden"] / row["n"],
        })
    return sorted(out, key=lambda r: (r["day"], r["key"]))


def approval_speed(*, days: int = DECISION_WINDOW_DAYS, now: datetime | None = None, limit: int = 5000) -> list[dict[str, Any]]:
    """One row per human decision: who, what, how long the decider could have looked at the
    item (see the module docstring) and what the item showed (interval width, probability)."""
    previous_on_item = Decision.objects.filter(
        recommendation=OuterRef("recommendation"), sequence=OuterRef("sequence") - 1
    ).values("at")[:1]
    rows = list(
        _human_decisions(days=days, now=now)
        .annotate(item_created=F("recommendation__created_at"), previous_at=Subquery(previous_on_item))
        .order_by("-at")
        .values(
            "pk", "actor_id", "actor_label", "action", "at", "item_created", "previous_at",
            "shown_probability", "shown_p_low", "shown_p_high", "recommendation_id",
        )[:limit]
    )
    rows.sort(key=lambda r: (r["actor_id"], r["at"], r["pk"]))
    out = []
    last_by_actor: dict[int, datetime] = {}
    for r in rows:
        starts = [r["item_created"], r["previous_at"], last_by_actor.get(r["actor_id"])]
        start = max(s for s in starts if s is not None)
        last_by_actor[r["actor_id"]] = r["at"]
        out.append({
            "decision_id": r["pk"],
            "recommendation_id": r["recommendation_id"],
            "manager": r["actor_label"],
            "action": r["action"],
            "at": r["at"],
            "seconds": max((r["at"] - start).total_seconds(), 0.0),
            "width": float(r["shown_p_high"] - r["shown_p_low"]),
            "probability": float(r["shown_probability"]),
        })
    out.sort(key=lambda r: (r["at"], r["decision_id"]))
    return out


def approval_speed_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per manager: approvals, their median seconds, fast approvals (under FAST_SECONDS), fast
    approvals of uncertain items (interval at least WIDE_INTERVAL wide), and the correlation of
    seconds with interval width (a careful reviewer looks longer at uncertain items)."""
    by_manager: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_manager[r["manager"]].append(r)
    out = []
    for manager, items in sorted(by_manager.items()):
        approvals = [r for r in items if r["action"] == Decision.Action.APPROVE]
        seconds = [r["seconds"] for r in approvals]
        fast = [r for r in approvals if r["seconds"] < FAST_SECONDS]
        corr = None
        if len(approvals) >= 5:
            widths = np.array([r["width"] for r in approvals])
            secs = np.array(seconds)
            if widths.std() > 0 and secs.std() > 0:
                corr = float(np.corrcoef(widths, secs)[0, 1])
        out.append({
            "manager": manager,
            "decisions": len(items),
            "approvals": len(approvals),
            "median_seconds": median(seconds) if seconds else None,
            "fast_approvals": len(fast),
            "fast_wide_approvals": sum(1 for r in fast if r["width"] >= WIDE_INTERVAL),
            "width_seconds_corr": corr,
        })
    return out


# -------------------------------------------------------------------------------- outcomes


def outcomes_known(*, as_of: date, horizon_days: int) -> bool:
    """True when the events on record reach the last day of [as_of, as_of + horizon)."""
    last_day = as_of + timedelta(days=horizon_days - 1)
    latest = Event.objects.aggregate(m=Max("occurred_at"))["m"]
    return latest is not None and latest.date() >= last_day


def realized_engagement(*, member_ids: np.ndarray, as_of: date, horizon_days: int) -> np.ndarray:
    """The engagement label (recommendations.features.engagement_labels, the training label)
    of each member for [as_of, as_of + horizon), from the events on record."""
    from recommendations.features import engagement_labels
    from recommendations.selectors import as_of_instant

    start = as_of_instant(as_of)
    end = start + timedelta(days=horizon_days)
    events = pd.DataFrame.from_records(
        Event.objects.filter(
            kind=ENGAGEMENT_EVENT_KIND, occurred_at__gte=start, occurred_at__lt=end,
            member_id__in=[int(m) for m in member_ids],
        ).values_list("member_id", "occurred_at", "kind"),
        columns=["member_pk", "occurred_at", "kind"],
    )
    events["occurred_at"] = pd.to_datetime(events["occurred_at"], utc=True)
    members = pd.DataFrame({"pk": np.asarray(member_ids, dtype="int64")})
    return engagement_labels(members, events, start, horizon_days).to_numpy()


def _sampled(qs, total: int):
    step = max(1, math.ceil(total / SAMPLE_ROWS))
    return qs if step == 1 else qs.annotate(_m=Mod("id", step)).filter(_m=0)


def run_outcomes(run: ScoringRun) -> dict[str, Any] | None:
    """Probability, interval and realized outcome of a run's (sampled) recommendations, or None
    while the outcome window is still open."""
    horizon = run.model_version.horizon_days
    if not outcomes_known(as_of=run.as_of, horizon_days=horizon):
        return None
    qs = Recommendation.objects.filter(run=run, member__erased_at__isnull=True)
    rows = list(_sampled(qs, run.members_scored or qs.count()).values_list("member_id", "probability", "p_low", "p_high"))
    if not rows:
        return None
    arr = np.array(rows, dtype=float)
    y = realized_engagement(member_ids=arr[:, 0].astype("int64"), as_of=run.as_of, horizon_days=horizon)
    return {"member_id": arr[:, 0].astype("int64"), "p": arr[:, 1], "low": arr[:, 2], "high": arr[:, 3], "y": y}


def coverage_over_time(*, limit: int = 24) -> list[dict[str, Any]]:
    """Per succeeded scoring run (by as_of): the interval's realized coverage and the realized
    engagement rate against the mean prediction, where the outcome window has closed; the
    model's held-out coverage from training alongside (what is known before that)."""
    from recommendations.training import interval_coverage_binned

    runs = list(
        ScoringRun.objects.filter(status=ScoringRun.Status.SUCCEEDED)
        .select_related("model_version")
        .order_by("-as_of", "-id")[:limit]
    )
    out = []
    for run in reversed(runs):
        outcome = run_outcomes(run)
        row = {
            "run_id": run.pk,
            "as_of": run.as_of,
            "model_version_id": run.model_version_id,
            "holdout_coverage": _num((run.model_version.metrics or {}).get("interval_coverage")),
            "known": outcome is not None,
            "n": 0,
            "coverage": None,
            "realized_rate": None,
            "mean_probability": None,
        }
        if outcome is not None:
            row.update({
                "n": len(outcome["y"]),
                "coverage": interval_coverage_binned(outcome["y"], outcome["p"], outcome["low"], outcome["high"]),
                "realized_rate": float(np.mean(outcome["y"])),
                "mean_probability": float(np.mean(outcome["p"])),
            })
        out.append(row)
    return out


# -------------------------------------------------------------------------------- drift


@dataclass
class DriftResult:
    model_version_id: int
    run_id: int
    reference: str  # "training" | "first run #<id>"
    features: list[str]
    psi: list[float]
    n: int

    @property
    def max_psi(self) -> float:
        return max(self.psi) if self.psi else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "max_psi": self.max_psi}


def run_feature_matrix(run: ScoringRun, *, n_features: int) -> np.ndarray:
    """The stored float32 features of a run's (sampled) recommendations, one row each."""
    qs = Recommendation.objects.filter(run=run)
    blobs = _sampled(qs, run.members_scored or qs.count()).values_list("features", flat=True).iterator(
        chunk_size=5000
    )
    rows = [np.frombuffer(bytes(b), dtype=np.float32) for b in blobs]
    rows = [r for r in rows if len(r) == n_features]
    return np.vstack(rows).astype(float) if rows else np.zeros((0, n_features))


def _succeeded_runs(model_version_id: int):
    return ScoringRun.objects.filter(model_version_id=model_version_id, status=ScoringRun.Status.SUCCEEDED)


# The model's holdout metrics as a loyalty manager reads them on an item's page: plain words,
# percentages and counts, in this order. Every other stored metric follows under "all
# recorded metrics" (data people get them all from the models page and the API as well).
MODEL_METRIC_SUMMARY: list[tuple[str, str, str]] = [
    ("auc", "How well it ranks members who engage above those who do not (AUC: 0.5 is chance, 1 is perfect)", "ratio"),
    ("accuracy", "Right about engaging or not, at a 50% cut-off", "percent"),
    ("precision", "Of members it called engaged, share who engaged", "percent"),
    ("recall", "Of members who engaged, share it called engaged", "percent"),
    ("brier", "Brier score (squared error of the probability; lower is better)", "ratio"),
    ("interval_coverage", "Held-out members whose 90% interval held their probability judged in hindsight", "percent"),
    ("interval_mean_width", "Average width of the 90% interval", "percent"),
    ("base_rate", "Members who engaged in the training window", "percent"),
    ("n_train", "Members trained on", "count"),
    ("n_holdout", "Members held out to test it", "count"),
    ("train_seconds", "Training time (seconds)", "seconds"),
]


def metric_text(value: Any, kind: str = "") -> str:
    """One metric as text: a percentage, a count with separators, or 3 decimals."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if not math.isfinite(value):
        return "–"
    if kind == "percent":
        return f"{value * 100:.1f}%"
    if kind == "seconds":
        return f"{value:,.1f}"
    if kind == "count" or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3f}"


def model_metric_rows(metrics: dict[str, Any]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(summary, others): the summary in MODEL_METRIC_SUMMARY's words, then every other
    scalar metric under its stored key, each as {"label", "value"}."""
    scalars = {k: v for k, v in (metrics or {}).items() if not isinstance(v, dict | list)}
    summary = [{"label": label, "value": metric_text(scalars[key], kind)}
               for key, label, kind in MODEL_METRIC_SUMMARY if key in scalars]
    shown = {key for key, _label, _kind in MODEL_METRIC_SUMMARY}
    others = [{"label": key, "value": metric_text(value)} for key, value in scalars.items() if key not in shown]
    return summary, others


# What a stored reference is (recommendations.services.drift_reference). Models stored before
# the choice existed used the training snapshot.
REFERENCE_LABELS = {
    "training": "the training snapshot",
    "as_of": "the members at the model's as_of {at} (its training snapshot had less than a year of history)",
}


def drift_measure(*, model_version_id: int, run_id: int | None = None) -> DriftResult | None:
    """PSI of each feature of a run (default: the model's latest succeeded run) against the
    training distribution (see the module docstring); None when the model has no run."""
    mv = ModelVersion.objects.get(pk=model_version_id)
    runs = _succeeded_runs(mv.pk)
    run = runs.filter(pk=run_id).first() if run_id is not None else runs.order_by("-as_of", "-id").first()
    if run is None:
        return None
    schema = (mv.feature_schema or {}).get("features") or []
    names = [f["name"] for f in schema]
    X = run_feature_matrix(run, n_features=len(names))
    if all("psi_bins" in f for f in schema):
        references = [f["psi_bins"] for f in schema]
        stored = (mv.feature_schema or {}).get("drift_reference") or {"snapshot": "training"}
        label = REFERENCE_LABELS[stored["snapshot"]].format(at=stored.get("at", "?"))
    else:
        first = runs.order_by("as_of", "id").first()
        X_ref = X if first.pk == run.pk else run_feature_matrix(first, n_features=len(names))
        references = [psi_reference(X_ref[:, j]) for j in range(len(names))]
        label = f"first run #{first.pk}"
    psi = [population_stability_index(references[j], X[:, j]) for j in range(len(names))]
    return DriftResult(mv.pk, run.pk, label, names, [round(v, 6) for v in psi], len(X))


def model_drift_check(*, model_version_id: int, run_id: int | None = None, actor: Any = None) -> DriftResult | None:
    """Measure drift and store it on the model (flagged above the psi_max level), through
    governance.services.model_drift_record, which audits it and re-routes the open items."""
    from governance.services import model_drift_record

    result = drift_measure(model_version_id=model_version_id, run_id=run_id)
    if result is None:
        return None
    flagged = result.max_psi > monitor_thresholds().psi_max
    model_drift_record(model_version_id=model_version_id, psi=round(result.max_psi, 6), flagged=flagged, actor=actor)
    return result


# -------------------------------------------------------------------------------- alerts


def monitor_alerts(
    *, versions: list[dict[str, Any]], coverage: list[dict[str, Any]], thresholds: Thresholds,
    fairness_reports: list[Any] = (),
) -> list[dict[str, str]]:
    """Banners for the models page: the champion's (and candidates') held-out metrics, the
    latest realized coverage, drift, and fairness differences, against the levels in force."""
    alerts: list[dict[str, str]] = []
    for v in versions:
        if v["status"] == ModelVersion.Status.RETIRED:
            continue
        name = f"Model v{v['id']} ({v['status']})"
        if v["auc"] is not None and v["auc"] < thresholds.auc_min:
            alerts.append({"level": "error", "text": f"{name}: AUC {v['auc']:.3f} is below {thresholds.auc_min:.3f}."})
        if v["brier"] is not None and v["brier"] > thresholds.brier_max:
            alerts.append({"level": "error", "text": f"{name}: Brier {v['brier']:.3f} is above {thresholds.brier_max:.3f}."})
        if v["coverage"] is not None and v["coverage"] < thresholds.coverage_min:
            alerts.append({
                "level": "error",
                "text": f"{name}: held-out interval coverage {v['coverage']:.1%} is below {thresholds.coverage_min:.0%}.",
            })
        if v["drift_psi"] is not None and (v["drift_flagged"] or v["drift_psi"] > thresholds.psi_max):
            alerts.append({
                "level": "warning",
                "text": f"{name}: feature drift PSI {v['drift_psi']:.3f} (level {thresholds.psi_max:.2f}).",
            })
    known = [c for c in coverage if c["known"] and c["coverage"] is not None]
    if known and known[-1]["coverage"] < thresholds.coverage_min:
        last = known[-1]
        alerts.append({
            "level": "error",
            "text": f"Run #{last['run_id']} (as of {last['as_of']}): realized interval coverage "
            f"{last['coverage']:.1%} is below {thresholds.coverage_min:.0%}.",
        })
    for report in fairness_reports:
        for column, diff in (report.differences or {}).items():
            dpd = diff.get("demographic_parity_difference")
            eod = diff.get("equalized_odds_difference")
            cal = diff.get("calibration_difference")
            over = (dpd is not None and dpd > thresholds.parity_difference_max) or (
                eod is not None and eod > thresholds.odds_difference_max
            ) or (cal is not None and cal > thresholds.calibration_difference_max)
            if over:
                alerts.append({
                    "level": "warning",
                    "text": f"Model v{report.model_version_id}, fairness report #{report.pk}: {column} "
                    f"parity difference {_fmt(dpd)}, equalized odds difference {_fmt(eod)}, "
                    f"calibration difference {_fmt(cal)} (levels {thresholds.parity_difference_max:.2f} / "
                    f"{thresholds.odds_difference_max:.2f} / {thresholds.calibration_difference_max:.2f}).",
                })
        # The interval is calibrated over everyone: a group it covers clearly less often (the
        # whole bootstrap interval below the level, so not a small group's noise) is flagged.
        min_group = (report.definition or {}).get("min_group", 0)
        for row in report.groups or []:
            coverage = row.get("interval_coverage")
            upper = row.get("interval_coverage_high", coverage)
            if coverage is None or upper is None or row["n"] < min_group or upper >= thresholds.coverage_min:
                continue
            alerts.append({
                "level": "warning",
                "text": f"Model v{report.model_version_id}, fairness report #{report.pk}: the 90% interval "
                f"covers {row['column']} = {row['value']} only {coverage:.1%} of the time (n={row['n']}, "
                f"bootstrap up to {upper:.1%}; level {thresholds.coverage_min:.0%}).",
            })
    return alerts


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"
