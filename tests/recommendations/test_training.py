import numpy as np
import pandas as pd
import pytest

from recommendations.training import EngagementInterval, train_bundle
from tests.recommendations.conftest import AS_OF
from tests.recommendations.synth import OFFERS

METRIC_KEYS = {
    "auc", "brier", "accuracy", "precision", "recall", "f1", "confusion_matrix",
    "calibration_curve", "interval_coverage", "n_train", "n_holdout", "response",
    "shap_rows_per_s", "policy", "hindsight_auc_holdout",
}


def test_training_stores_metrics(trained):
    bundle, metrics = trained
    assert METRIC_KEYS <= set(metrics)
    assert metrics["n_train"] > metrics["n_holdout"] > 0
    assert 0.7 < metrics["auc"] <= 1.0  # the synthetic rate is strongly visible in history
    assert np.array(metrics["confusion_matrix"]).sum() == metrics["n_holdout"]
    assert bundle.offer_policy == "learned" and metrics["offer_policy"] == "learned"
    assert set(bundle.offer_codes) == {o.code for o in OFFERS}
    assert metrics["response"]["auc"] > 0.6
    assert 0.0 <= metrics["interval_coverage"] <= 1.0
    # The models' sizes (what a recommendation costs to score) are stored with them.
    assert metrics["n_iter"] == bundle.engagement_model.n_iter_ > 0
    assert metrics["response"]["n_iter"] == {
        code: m.n_iter_ for code, m in zip(bundle.response_model.offer_codes, bundle.response_model.models, strict=True)
    }


def test_calibration_is_sane(trained):
    _, metrics = trained
    curve = metrics["calibration_curve"]
    gaps = np.abs(np.array(curve["mean_predicted"]) - np.array(curve["fraction_positive"]))
    assert gaps.mean() < 0.1
    assert metrics["brier"] < 0.2


def test_no_exposures_gives_default_policy(frames):
    members, events = frames
    quiet = events[~events["kind"].isin(["offer_sent", "offer_redeemed"])]
    bundle, metrics = train_bundle(members=members, events=quiet, offers=OFFERS, as_of=AS_OF, horizon_days=60)
    assert bundle.response_model is None
    assert bundle.offer_policy == "default_policy" == metrics["offer_policy"]
    assert metrics["response"]["n_exposures"] == 0


def test_rf_and_unknown_algorithm(frames):
    members, events = frames
    bundle, metrics = train_bundle(
        members=members, events=events, offers=OFFERS, as_of=AS_OF, horizon_days=60, algorithm="rf"
    )
    assert bundle.algorithm == "rf" and metrics["auc"] > 0.7
    with pytest.raises(ValueError, match="unknown algorithm"):
        train_bundle(members=members, events=events, offers=OFFERS, as_of=AS_OF, horizon_days=60, algorithm="xgb")


def test_training_ignores_events_after_as_of(frames, trained):
    members, events = frames
    late = events.sample(300, random_state=1).assign(occurred_at=AS_OF + pd.Timedelta(days=3))
    _, again = train_bundle(
        members=members, events=pd.concat([events, late]), offers=OFFERS, as_of=AS_OF, horizon_days=60
    )
    assert again["auc"] == pytest.approx(trained[1]["auc"], abs=1e-9)  # float summation order only


def test_heldout_interval_coverage_is_near_the_level(trained):
    # Split conformal: on held-out members the hindsight probability lies in the interval
    # about 90% of the time (300 holdout members here, so a band, not a point).
    _, metrics = trained
    assert 0.82 <= metrics["interval_coverage"] <= 0.97
    assert "hindsight probability" in metrics["interval_coverage_method"]
    assert metrics["hindsight_auc_holdout"] > metrics["auc"]  # hindsight sees the horizon's activity


def test_conformal_interval_covers_new_targets_in_every_fifth():
    # Calibrated probabilities p, targets spread around p more for middling p: the Mondrian
    # interval covers ~90% of NEW targets within each fifth of p, not just on average.
    rng = np.random.default_rng(0)

    def draw(n):
        raw = rng.uniform(0.02, 0.98, n)
        y = (rng.random(n) < raw).astype(int)
        target = np.clip(raw + rng.normal(0, 0.25 * np.sqrt(raw * (1 - raw)), n), 0, 1)
        return raw, y, target

    raw, y, target = draw(6000)
    interval = EngagementInterval().fit(raw, y)
    interval.fit_conformal(interval.predict_calibrated(raw), target)
    raw, _, target = draw(20000)
    p, low, high = interval.predict(raw)
    assert ((low <= p) & (p <= high)).all() and (low >= 0).all() and (high <= 1).all()
    covered = (low <= target) & (target <= high)
    fifth = np.searchsorted(np.quantile(p, [0.2, 0.4, 0.6, 0.8]), p)
    for b in range(5):
        assert 0.87 <= covered[fifth == b].mean() <= 0.95, b  # clipping at 0 and 1 only adds
    # Narrower where the spread is smaller (the extremes) than in the middle.
    width = high - low
    assert width[fifth == 0].mean() < width[fifth == 2].mean()
