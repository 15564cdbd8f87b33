"""Fairness numbers on tiny examples worked out by hand, reweighing, and PSI."""

from __future__ import annotations

import numpy as np
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

from governance.fairness import age_band, fairness_sample_weights, group_metrics
from recommendations.monitoring import population_stability_index, psi_reference
from tests.monitoring.synthetic import north_churn_understated


def _tiny():
    # group a: churned [1, 1, 0, 0], flagged [1, 0, 1, 0] -> selection 2/4, TPR 1/2, FPR 1/2
    # group b: churned [1, 0, 0, 0, 0, 0], flagged [1, 1, 0, 0, 0, 0] -> 2/6, TPR 1/1, FPR 1/5
    y_true = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 0])
    y_pred = np.array([1, 0, 1, 0, 1, 1, 0, 0, 0, 0])
    groups = np.array(["a"] * 4 + ["b"] * 6)
    return y_true, y_pred, groups


def test_metric_frame_matches_hand_computation() -> None:
    y_true, y_pred, groups = _tiny()
    offered = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 1], dtype=float)
    rows, diffs = group_metrics(
        y_true=y_true, y_pred=y_pred, groups={"tier": groups}, offered=offered, n_boot=0, min_group=1
    )
    by = {r["value"]: r for r in rows}
    assert by["a"]["n"] == 4 and by["b"]["n"] == 6
    assert by["a"]["selection_rate"] == pytest.approx(0.5)
    assert by["a"]["tpr"] == pytest.approx(0.5)
    assert by["a"]["fpr"] == pytest.approx(0.5)
    assert by["b"]["selection_rate"] == pytest.approx(1 / 3)
    assert by["b"]["tpr"] == pytest.approx(1.0)
    assert by["b"]["fpr"] == pytest.approx(0.2)
    assert by["a"]["offer_rate"] == pytest.approx(0.5) and by["b"]["offer_rate"] == pytest.approx(2 / 6)
    # parity: 1/2 - 1/3; equalized odds: max(|1/2 - 1|, |1/2 - 1/5|) = 1/2
    assert diffs["tier"]["demographic_parity_difference"] == pytest.approx(1 / 6)
    assert diffs["tier"]["equalized_odds_difference"] == pytest.approx(0.5)
    assert diffs["tier"]["groups_compared"] == 2
    # ... and Fairlearn's own functions agree.
    assert diffs["tier"]["demographic_parity_difference"] == pytest.approx(
        demographic_parity_difference(y_true, y_pred, sensitive_features=groups)
    )
    assert diffs["tier"]["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(y_true, y_pred, sensitive_features=groups)
    )


def test_small_groups_are_shown_but_not_compared() -> None:
    y_true, y_pred, groups = _tiny()
    rows, diffs = group_metrics(y_true=y_true, y_pred=y_pred, groups={"tier": groups}, n_boot=0, min_group=5)
    assert {r["value"] for r in rows} == {"a", "b"}
    assert diffs["tier"] == {
        "demographic_parity_difference": None, "equalized_odds_difference": None, "groups_compared": 1,
    }


def test_undefined_rates_are_none() -> None:
    # Group c has no churners: its TPR is undefined, not 0.
    rows, _ = group_metrics(
        y_true=np.array([0, 0, 1, 0]), y_pred=np.array([1, 0, 1, 0]), groups={"g": np.array(["c", "c", "d", "d"])},
        n_boot=0, min_group=1,
    )
    c = next(r for r in rows if r["value"] == "c")
    assert c["tpr"] is None and c["fpr"] == pytest.approx(0.5)


def test_bootstrap_intervals_contain_the_point_estimate() -> None:
    rng = np.random.default_rng(3)
    n = 600
    groups = rng.choice(["north", "south", "east"], size=n)
    y_true = (rng.random(n) < np.where(groups == "south", 0.5, 0.3)).astype(int)
    y_pred = (rng.random(n) < np.where(y_true == 1, 0.7, 0.2)).astype(int)
    rows, _ = group_metrics(y_true=y_true, y_pred=y_pred, groups={"region": groups}, n_boot=100, seed=1)
    assert len(rows) == 3
    for row in rows:
        for name in ("selection_rate", "tpr", "fpr"):
            assert row[f"{name}_low"] <= row[name] <= row[f"{name}_high"], (row["value"], name)
            assert row[f"{name}_low"] < row[f"{name}_high"]
    # The point estimates are the plain per-group rates.
    south = groups == "south"
    row = next(r for r in rows if r["value"] == "south")
    assert row["selection_rate"] == pytest.approx(y_pred[south].mean())
    assert row["tpr"] == pytest.approx(y_pred[south & (y_true == 1)].mean())


def test_reweighing_by_hand_and_independence() -> None:
    # n = 4; P(a) = 3/4, P(b) = 1/4, P(y=1) = P(y=0) = 1/2, P(a,1) = 1/2, P(a,0) = P(b,0) = 1/4
    w = fairness_sample_weights(["a", "a", "a", "b"], [1, 1, 0, 0])
    np.testing.assert_allclose(w, [0.75, 0.75, 1.5, 0.5])
    # With every (group, label) cell present, the weighted label rate is the same in every group
    # (group and label independent) and the weights sum to n.
    rng = np.random.default_rng(0)
    groups = rng.choice(["x", "y", "z"], size=500)
    labels = (rng.random(500) < np.select([groups == "x", groups == "y"], [0.2, 0.5], 0.8)).astype(int)
    w = fairness_sample_weights(groups, labels)
    assert w.sum() == pytest.approx(500)
    rates = [np.average(labels[groups == g], weights=w[groups == g]) for g in ("x", "y", "z")]
    np.testing.assert_allclose(rates, labels.mean())
    assert len(fairness_sample_weights([], [])) == 0


def test_age_bands() -> None:
    assert age_band(2003, 2026) == "<25"
    assert age_band(2001, 2026) == "25-34"
    assert age_band(1980, 2026) == "45-54"
    assert age_band(1950, 2026) == "65+"
    assert age_band(None, 2026) == "unknown"
    assert age_band(float("nan"), 2026) == "unknown"


def test_psi_is_zero_for_identical_and_large_for_shifted_distributions() -> None:
    rng = np.random.default_rng(5)
    train = rng.normal(0, 1, 5000)
    reference = psi_reference(train)
    assert len(reference["edges"]) == 9 and sum(reference["shares"]) == pytest.approx(1)
    assert population_stability_index(reference, train) == pytest.approx(0.0, abs=1e-12)
    # Another sample of the same distribution: small (below the usual 0.1 "no change" mark).
    assert population_stability_index(reference, rng.normal(0, 1, 5000)) < 0.02
    # Shifted by one standard deviation: far above the usual 0.25 "significant shift" mark.
    assert population_stability_index(reference, rng.normal(1, 1, 5000)) > 0.5
    # A discrete feature with ties still bins consistently.
    counts = rng.poisson(1.0, 3000).astype(float)
    ref = psi_reference(counts)
    assert population_stability_index(ref, counts) == pytest.approx(0.0, abs=1e-12)
    assert population_stability_index(ref, counts + 3) > 1.0


def test_calibration_gap_by_hand_and_its_difference() -> None:
    # group a: churned [1, 1, 0, 0] (rate 1/2), predicted churn risk mean 0.7 -> gap +0.2
    # group b: churned [1, 0, 0, 0, 0, 0] (rate 1/6), predicted mean 0.1 -> gap -1/15
    y_true, y_pred, groups = _tiny()
    risk = np.array([0.9, 0.8, 0.6, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    rows, diffs = group_metrics(y_true=y_true, y_pred=y_pred, groups={"tier": groups}, churn_risk=risk,
                                n_boot=0, min_group=1)
    by = {r["value"]: r for r in rows}
    assert by["a"]["calibration_gap"] == pytest.approx(0.2)
    assert by["b"]["calibration_gap"] == pytest.approx(0.1 - 1 / 6)
    assert diffs["tier"]["calibration_difference"] == pytest.approx(0.2 - (0.1 - 1 / 6))
    # Without the probabilities the report has no calibration figures at all.
    rows, diffs = group_metrics(y_true=y_true, y_pred=y_pred, groups={"tier": groups}, n_boot=0, min_group=1)
    assert "calibration_gap" not in rows[0] and "calibration_difference" not in diffs["tier"]


def test_a_label_bias_in_one_group_shows_as_its_calibration_gap() -> None:
    """The same true risk everywhere, but the north's churn is recorded 15 points more often:
    a model that learned the other regions overstates nothing there and understates the north."""
    groups, risk, churned = north_churn_understated()
    rows, diffs = group_metrics(y_true=churned, y_pred=(risk > 0.5).astype(int), groups={"region": groups},
                                churn_risk=risk, n_boot=100, seed=2)
    by = {r["value"]: r for r in rows}
    assert by["north"]["calibration_gap_high"] < -0.08  # understated, and the interval says so
    for fair in ("south", "east"):
        assert by[fair]["calibration_gap_low"] < 0 < by[fair]["calibration_gap_high"]
    assert diffs["region"]["calibration_difference"] == pytest.approx(0.15, abs=0.04)


def test_interval_coverage_by_hand_within_each_group() -> None:
    # One bin per group (fewer than COVERAGE_BIN_ROWS members): the group's engaged rate is
    # compared with each member's own interval.
    # group a: churned [1, 1, 0, 0] -> engaged rate 0.5; intervals [0.4, 0.6] x3 and [0.7, 0.9]
    #   -> 3 of 4 cover 0.5
    # group b: churned [1, 0, 0, 0, 0, 0] -> engaged rate 5/6; intervals [0.1, 0.3] x6 -> none
    y_true, y_pred, groups = _tiny()
    risk = np.full(10, 0.5)
    low = np.array([0.4, 0.4, 0.4, 0.7] + [0.1] * 6)
    high = np.array([0.6, 0.6, 0.6, 0.9] + [0.3] * 6)
    rows, diffs = group_metrics(y_true=y_true, y_pred=y_pred, groups={"tier": groups}, churn_risk=risk,
                                interval=(low, high), n_boot=0, min_group=1)
    by = {r["value"]: r for r in rows}
    assert by["a"]["interval_coverage"] == pytest.approx(0.75)
    assert by["b"]["interval_coverage"] == pytest.approx(0.0)
    assert diffs["tier"]["coverage_difference"] == pytest.approx(0.75)
    # Without intervals (a report on training holdout labels) there is no coverage figure.
    rows, diffs = group_metrics(y_true=y_true, y_pred=y_pred, groups={"tier": groups}, churn_risk=risk,
                                n_boot=0, min_group=1)
    assert "interval_coverage" not in rows[0] and "coverage_difference" not in diffs["tier"]


def test_a_group_the_interval_misses_is_flagged_on_the_models_page() -> None:
    """Intervals that fit everyone else but are too narrow and too low for the north: its
    coverage is flagged (bootstrap interval wholly below the level); the others are not."""
    from types import SimpleNamespace

    from recommendations.monitoring import DEFAULT_THRESHOLDS, Thresholds, monitor_alerts

    rng = np.random.default_rng(3)
    n = 3000
    groups = rng.choice(["north", "south", "east"], size=n)
    p = rng.uniform(0.3, 0.8, size=n)
    north = groups == "north"
    engaged = (rng.random(n) < np.where(north, np.clip(p + 0.2, 0, 1), p)).astype(int)
    low, high = np.clip(p - 0.1, 0, 1), np.clip(p + 0.1, 0, 1)
    rows, diffs = group_metrics(y_true=1 - engaged, y_pred=(p < 0.5).astype(int), groups={"region": groups},
                                churn_risk=1 - p, interval=(low, high), n_boot=100, seed=1)
    by = {r["value"]: r for r in rows}
    assert by["north"]["interval_coverage_high"] < 0.5
    assert by["south"]["interval_coverage"] > 0.85 and by["east"]["interval_coverage"] > 0.85
    report = SimpleNamespace(pk=9, model_version_id=4, differences=diffs, groups=rows, definition={"min_group": 50})
    alerts = monitor_alerts(versions=[], coverage=[], thresholds=Thresholds(**DEFAULT_THRESHOLDS),
                            fairness_reports=[report])
    texts = [a["text"] for a in alerts if "covers" in a["text"]]
    assert len(texts) == 1 and "region = north" in texts[0]


@pytest.mark.parametrize(("history_days", "snapshot"), [(540, "training"), (300, "as_of")])
def test_the_drift_reference_is_the_training_snapshot_only_with_a_year_of_history_behind_it(
    history_days: int, snapshot: str
) -> None:
    # A training snapshot with less than a year behind it annualizes its yearly counts, which
    # then fall in other bins than the whole counts of a run: it would raise a false alarm.
    from datetime import date, timedelta

    import pandas as pd

    from recommendations.features import build_features
    from recommendations.services import drift_reference
    from recommendations.training import population_at, training_features
    from tests.recommendations.synth import synth_frames

    members, events = synth_frames(n_members=300, days=history_days, end="2024-07-01")
    as_of, horizon = date(2024, 7, 1), 90
    t0 = as_of - timedelta(days=horizon)
    at = pd.Timestamp(as_of, tz="UTC")
    train = training_features(members, events, as_of=at, horizon_days=horizon)
    reference, about = drift_reference(members, events, as_of=as_of, t0=t0, train_features=train)
    if snapshot == "training":
        assert about == {"snapshot": "training", "at": t0.isoformat()} and reference is train
    else:
        assert about == {"snapshot": "as_of", "at": as_of.isoformat()}
        pd.testing.assert_frame_equal(reference, build_features(population_at(members, events, at), events, at))
