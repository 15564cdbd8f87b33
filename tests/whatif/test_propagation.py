"""Linked features: an edit keeps the vector one that build_features could have produced."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommendations.features import FEATURE_NAMES, build_features
from recommendations.whatif import WhatIfError, base_validate, changes_validate, features_propagate

AS_OF = pd.Timestamp("2026-06-30", tz="UTC")


def _events(purchases_days_ago: list[float], amounts: list[float], sessions_days_ago: list[float]) -> pd.DataFrame:
    rows = []
    for d, a in zip(purchases_days_ago, amounts, strict=True):
        rows.append({"kind": "purchase", "days": d, "amount": a, "points": int(a), "duration_seconds": 0})
    for d in sessions_days_ago:
        rows.append({"kind": "session", "days": d, "amount": 0.0, "points": 0, "duration_seconds": 600})
    frame = pd.DataFrame(rows)
    frame["occurred_at"] = AS_OF - pd.to_timedelta(frame["days"], unit="D")
    frame["member_pk"] = 1
    frame["score"] = np.nan
    frame["offer_code"] = ""
    return frame.drop(columns="days")


def _features(events: pd.DataFrame) -> pd.DataFrame:
    members = pd.DataFrame({"pk": [1], "birth_year": [1980], "tier": ["silver"], "points_balance": [1500],
                            "joined_at": [pd.Timestamp("2022-01-01")]})
    return build_features(members, events, AS_OF)


def test_untouched_vector_is_returned_exactly():
    base = _features(_events([5, 40, 100, 200, 300], [50, 30, 40, 60, 20], [3, 50]))
    out = features_propagate(base, {})
    pd.testing.assert_frame_equal(out, base)


def test_recent_purchases_match_what_build_features_gives():
    # The member as they are, and the same member with two more purchases 10 days ago at
    # their average basket: the propagated vector equals the rebuilt one on every count,
    # spend, trend and basket feature.
    days, amounts = [40, 100, 200, 300], [50.0, 30.0, 40.0, 60.0]
    base = _features(_events(days, amounts, [3]))
    basket = sum(amounts) / len(amounts)
    truth = _features(_events([10, 10, *days], [basket, basket, *amounts], [3]))
    edited = features_propagate(base, {"purchases_30d": base["purchases_30d"].iloc[0] + 2})
    for name in ("purchases_30d", "purchases_90d", "purchases_180d", "purchases_365d", "spend_30d", "spend_90d",
                 "spend_365d", "avg_basket_365d", "purchase_trend_30_60", "spend_trend_90_90",
                 "purchases_per_month_now"):
        assert edited[name].iloc[0] == pytest.approx(truth[name].iloc[0]), name
    # The last purchase is now inside the 30-day window.
    assert edited["days_since_purchase"].iloc[0] <= 30
    assert base["days_since_purchase"].iloc[0] > 30
    assert edited["gap_ratio"].iloc[0] < base["gap_ratio"].iloc[0]


def test_lowering_a_long_window_pulls_the_short_ones_down():
    base = _features(_events([5, 8, 40, 100, 200], [50, 30, 40, 60, 20], []))
    edited = features_propagate(base, {"purchases_90d": 1})
    row = edited.iloc[0]
    assert row["purchases_30d"] == 1 and row["purchases_90d"] == 1
    assert row["purchases_180d"] == base["purchases_180d"].iloc[0] - 2  # carried down
    assert row["purchases_30d"] <= row["purchases_90d"] <= row["purchases_180d"] <= row["purchases_365d"]
    assert row["spend_30d"] <= row["spend_90d"] <= row["spend_365d"]


def test_zero_purchases_empties_spend_and_moves_recency_out_of_the_window():
    base = _features(_events([5, 20, 100], [50, 30, 40], [2, 4]))
    edited = features_propagate(base, {"purchases_90d": 0}).iloc[0]
    assert edited["purchases_30d"] == 0 and edited["spend_30d"] == 0 and edited["spend_90d"] == 0
    assert edited["days_since_purchase"] > 90
    sessions = features_propagate(base, {"sessions_90d": 0}).iloc[0]
    assert sessions["sessions_30d"] == 0 and sessions["session_minutes_90d"] == 0
    assert sessions["days_since_session"] > 90


def test_editing_days_since_purchase_empties_the_shorter_windows():
    base = _features(_events([5, 20, 100], [50, 30, 40], []))
    edited = features_propagate(base, {"days_since_purchase": 60.0}).iloc[0]
    assert edited["days_since_purchase"] == 60.0
    assert edited["purchases_30d"] == 0 and edited["purchases_90d"] >= 1


def test_vectorized_rows_are_independent():
    base = _features(_events([5, 40], [50, 30], [1]))
    rows = pd.concat([base] * 3, ignore_index=True)
    out = features_propagate(rows, {"sessions_30d": np.array([0.0, 5.0, 20.0])})
    assert out["sessions_30d"].tolist() == [0.0, 5.0, 20.0]
    assert (out["sessions_90d"] >= out["sessions_30d"]).all()
    # More recent visits, a higher visit rate at current engagement.
    assert np.all(np.diff(out["visits_per_week_now"].to_numpy()) > 0)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"no_such_feature": 1}, "no_such_feature", "unknown feature"),
        ({"age": 30}, "age", "protected"),
        ({"avg_basket_365d": 30}, "avg_basket_365d", "derived"),
        ({"tenure_days": 30}, "tenure_days", "fact of the past"),
        ({"sessions_30d": "many"}, "sessions_30d", "must be a number"),
        ({"sessions_30d": True}, "sessions_30d", "must be a number"),
        ({"sessions_30d": None}, "sessions_30d", "must be a number"),
        ({"sessions_30d": 2.5}, "sessions_30d", "whole number"),
        ({"points_balance": -5}, "points_balance", "between 0 and 500000"),
        ({"feedback_mean_365d": 9}, "feedback_mean_365d", "between 0 and 5"),
        ([1, 2], "changes", "must be an object"),
    ],
)
def test_invalid_changes_name_the_field(changes, field, message):
    with pytest.raises(WhatIfError) as err:
        changes_validate(feature_names=FEATURE_NAMES, changes=changes)
    assert err.value.field == field
    assert message in err.value.message


def test_valid_changes_accept_numeric_strings():
    assert changes_validate(feature_names=FEATURE_NAMES, changes={"sessions_30d": "7", "feedback_mean_365d": 4.5}) == {
        "sessions_30d": 7.0, "feedback_mean_365d": 4.5,
    }


def test_a_base_vector_must_be_complete():
    with pytest.raises(WhatIfError) as err:
        base_validate(feature_names=FEATURE_NAMES, features={"purchases_30d": 1})
    assert err.value.field == FEATURE_NAMES[0] and "missing" in err.value.message
