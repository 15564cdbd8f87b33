"""quality_report: trains on a simulated program and compares with its ground truth."""

import math

import pytest

from loyalty.simulator import simulate_program
from recommendations.quality import quality_report

KEYS = {
    "auc", "bayes_auc", "coverage_90", "interval_mean_width", "heldout_coverage_90",
    "policy_capture", "same_offer_capture", "random_capture", "policy_value",
    "response_coverage_90", "train_seconds", "rows_per_s", "score_rows_per_s", "feature_rows_per_s",
}


@pytest.fixture(scope="module")
def report() -> dict:
    return quality_report(simulate_program(members=2500, seed=3), seed=0)


def test_report_keys_and_sane_ranges(report: dict) -> None:
    assert KEYS <= set(report)
    assert 0.6 < report["auc"] <= report["bayes_auc"] + 0.03
    assert 0.7 < report["bayes_auc"] < 0.95
    assert 0.0 <= report["coverage_90"] <= 1.0 and 0.0 < report["interval_mean_width"] < 1.0
    # The conformal guarantee holds on held-out members (for the hindsight probability), and
    # the interval contains most members' TRUE probability (2500 members: a loose band; bench
    # measures it at 20k against 0.88-0.93).
    assert 0.8 <= report["heldout_coverage_90"] <= 0.98
    assert 0.75 <= report["coverage_90"] <= 0.99
    assert 0.0 <= report["response_coverage_90"] <= 1.0
    assert report["policy_value"]["oracle"] > 0
    # The learned policy beats random offers; at this size it need not beat the best single offer.
    assert report["policy_capture"] > report["random_capture"]
    assert all(math.isfinite(report[k]) for k in ("same_offer_capture", "random_capture"))
    assert report["rows_per_s"] > 100 and report["train_seconds"] > 0
