import numpy as np
import pandas as pd
import pytest

from recommendations.features import (
    FEATURE_NAMES,
    FEATURE_SPEC,
    build_features,
    engagement_labels,
    members_at,
    offer_exposures,
    window_activity,
)
from tests.recommendations.synth import synth_frames

AS_OF = pd.Timestamp("2024-07-01", tz="UTC")


def _event(pk, when, kind, **kw):
    row = {
        "member_pk": pk, "occurred_at": pd.Timestamp(when) if pd.Timestamp(when).tzinfo else pd.Timestamp(when, tz="UTC"), "kind": kind, "amount": 0.0,
        "points": 0, "quantity": 0, "duration_seconds": 0, "score": np.nan, "offer_code": "",
    }
    row.update(kw)
    return row


def _hand_member():
    members = pd.DataFrame([{
        "pk": 7, "member_id": "A7", "birth_year": 1984, "gender": "f", "region": "north",
        "tier": "gold", "points_balance": 1200, "joined_at": pd.Timestamp("2023-07-01").date(),
        "consent_profiling": True,
    }])
    events = pd.DataFrame([
        _event(7, "2024-06-21 10:00", "purchase", amount=50.0, points=50),  # 10 days before
        _event(7, "2024-06-11 10:00", "purchase", amount=30.0, points=30),  # 20 days before
        _event(7, "2024-05-02 10:00", "purchase", amount=20.0, points=20),  # 60 days before
        _event(7, "2024-01-03 10:00", "purchase", amount=100.0, points=100),  # 180 days before
        _event(7, "2024-06-26 09:00", "session", duration_seconds=600),
        _event(7, "2024-04-01 09:00", "session", duration_seconds=300),  # 90.6 days before
        _event(7, "2024-06-01 09:00", "redemption", points=-500),
        _event(7, "2024-05-01 09:00", "feedback", score=4.0),
        _event(7, "2024-06-01 09:00", "feedback", score=2.0),
        _event(7, "2024-05-01 12:00", "offer_sent", offer_code="B500"),
        _event(7, "2024-05-05 12:00", "offer_redeemed", offer_code="B500"),
        _event(7, "2024-06-25 12:00", "offer_sent", offer_code="D10"),  # window still open
        # On and after as_of: must be ignored.
        _event(7, "2024-07-01 00:00", "purchase", amount=999.0, points=999),
    ])
    return members, events


def test_features_match_hand_computed_values():
    members, events = _hand_member()
    row = build_features(members, events, AS_OF).loc[7]
    assert list(row.index) == FEATURE_NAMES
    assert row["days_since_purchase"] == pytest.approx(10 - 10 / 24)
    assert row["purchases_30d"] == 2 and row["purchases_90d"] == 3
    assert row["purchases_180d"] == 4 and row["purchases_365d"] == 4
    assert row["spend_30d"] == 80 and row["spend_90d"] == 100 and row["spend_365d"] == 200
    assert row["avg_basket_365d"] == 50
    assert row["purchase_trend_30_60"] == pytest.approx(2 - 1 / 2)
    assert row["spend_trend_90_90"] == pytest.approx(100 - 100)
    # first purchase ~180 days back, last ~9.6 days back, 4 purchases -> 3 gaps
    assert row["mean_gap_days"] == pytest.approx((180 - 10) / 3, abs=0.01)
    assert row["sessions_30d"] == 1 and row["sessions_90d"] == 1  # 90.6 days back is outside
    assert row["session_minutes_90d"] == 10
    assert row["redemptions_90d"] == 1 and row["points_redeemed_365d"] == 500
    assert row["feedback_count_365d"] == 2 and row["feedback_mean_365d"] == 3
    assert row["points_balance"] == 1200
    assert row["tenure_days"] == 366  # 2024 is a leap year
    assert row["tier_rank"] == 2 and row["age"] == 40
    assert row["offers_received_365d"] == 2
    assert row["offer_response_rate"] == 1.0  # only the closed B500 exposure counts
    assert row["days_since_offer"] == pytest.approx(5.5)


def test_no_leakage_events_after_as_of_change_nothing():
    members, events = synth_frames(n_members=150, seed=3)
    before = build_features(members, events, AS_OF - pd.Timedelta(days=60))
    late = events[events["occurred_at"] >= AS_OF - pd.Timedelta(days=60)]
    extra = late.assign(occurred_at=late["occurred_at"] + pd.Timedelta(days=1), amount=late["amount"] * 3)
    after = build_features(members, pd.concat([events, extra]), AS_OF - pd.Timedelta(days=60))
    pd.testing.assert_frame_equal(before, after)
    # ... while events before as_of do change them (the test can fail).
    early = events[events["occurred_at"] < AS_OF - pd.Timedelta(days=90)].head(50)
    changed = build_features(members, pd.concat([events, early]), AS_OF - pd.Timedelta(days=60))
    assert not changed.equals(before)


def test_label_window_is_half_open():
    members, _ = _hand_member()
    horizon = 30
    edge = AS_OF + pd.Timedelta(days=horizon)
    events = pd.DataFrame([_event(7, AS_OF - pd.Timedelta(seconds=1), "purchase")])
    assert engagement_labels(members, events, AS_OF, horizon).loc[7] == 0
    events = pd.DataFrame([_event(7, AS_OF, "purchase")])
    assert engagement_labels(members, events, AS_OF, horizon).loc[7] == 1
    events = pd.DataFrame([_event(7, edge, "purchase")])
    assert engagement_labels(members, events, AS_OF, horizon).loc[7] == 0
    events = pd.DataFrame([_event(7, edge - pd.Timedelta(seconds=1), "session")])
    assert engagement_labels(members, events, AS_OF, horizon).loc[7] == 0


def test_window_activity_reads_only_its_half_open_window():
    # The interval's hindsight reads app sessions of [start, start + days) and nothing else.
    members, _ = _hand_member()
    edge = AS_OF + pd.Timedelta(days=30)
    events = pd.DataFrame([
        _event(7, AS_OF - pd.Timedelta(seconds=1), "session", duration_seconds=9999),
        _event(7, AS_OF, "session", duration_seconds=100),
        _event(7, edge - pd.Timedelta(seconds=1), "session", duration_seconds=400),
        _event(7, edge, "session", duration_seconds=9999),
        _event(7, AS_OF + pd.Timedelta(days=3), "purchase", amount=10.0),
    ])
    activity = window_activity(members, events, AS_OF, 30)
    assert activity.loc[7, "sessions"] == 2
    assert activity.loc[7, "log_session_seconds"] == pytest.approx((np.log(100) + np.log(400)) / 2)
    quiet = window_activity(members, events.iloc[:1], AS_OF, 30)
    assert quiet.loc[7, "sessions"] == 0 and quiet.loc[7, "log_session_seconds"] == 0


def test_offer_exposures_only_closed_windows():
    _, events = _hand_member()
    exposures = offer_exposures(events, AS_OF)
    assert list(exposures["offer_code"]) == ["B500"]
    assert bool(exposures["responded"].iloc[0])
    later = offer_exposures(events, AS_OF + pd.Timedelta(days=20))
    assert sorted(later["offer_code"]) == ["B500", "D10"]
    assert not bool(later.set_index("offer_code").loc["D10", "responded"])


def test_one_redemption_answers_only_the_latest_send_of_its_offer():
    events = pd.DataFrame([
        _event(7, "2024-05-01 12:00", "offer_sent", offer_code="B500"),
        _event(7, "2024-05-06 12:00", "offer_sent", offer_code="B500"),  # inside the first's window
        _event(7, "2024-05-08 12:00", "offer_redeemed", offer_code="B500"),
        _event(7, "2024-05-20 12:00", "offer_sent", offer_code="B500"),
        _event(7, "2024-05-21 12:00", "offer_redeemed", offer_code="B500"),
    ])
    exposures = offer_exposures(events, AS_OF).sort_values("sent_at")
    assert exposures["responded"].tolist() == [False, True, True]


def test_members_at_rewinds_balance():
    members, events = _hand_member()
    rewound = members_at(members, events, pd.Timestamp("2024-06-15", tz="UTC"))
    # after 2024-06-15: +50 purchase, +999 purchase (at as_of)
    assert rewound["points_balance"].iloc[0] == 1200 - 50 - 999


def test_feature_spec_protected_and_speed():
    spec = {s.name: s for s in FEATURE_SPEC}
    assert spec["age"].protected and not spec["age"].actionable
    assert "gender" not in spec and "region" not in spec
    members, events = synth_frames(n_members=2000, seed=1, with_offers=True)
    import time

    start = time.perf_counter()
    frame = build_features(members, events, AS_OF)
    elapsed = time.perf_counter() - start
    assert frame.shape == (2000, len(FEATURE_NAMES))
    assert np.isfinite(frame.to_numpy()).all()
    assert elapsed < 2.0
