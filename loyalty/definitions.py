"""Definitions shared by the simulator, the importers and the prediction engine.

They live in the loyalty domain because data flows one way: loyalty -> recommendations.
"""

from __future__ import annotations

import hashlib

import pandas as pd

# A member is "engaged" in a window when they make at least one purchase in it.
# Churn is its complement. The simulator's ground truth uses the same definition.
ENGAGEMENT_EVENT_KIND = "purchase"
DEFAULT_HORIZON_DAYS = 90

# An offer_sent counts as a response when an offer_redeemed with the same offer code
# follows within this many days.
RESPONSE_WINDOW_DAYS = 14

EVENT_COLUMNS = [
    "member_id", "occurred_at", "kind", "amount", "points", "quantity",
    "duration_seconds", "score", "offer_code", "comment",
]
MEMBER_COLUMNS = [
    "member_id", "joined_at", "birth_date", "gender", "region", "tier",
    "points_balance", "consent_profiling", "name", "email",
]
OFFER_COLUMNS = ["code", "name", "kind", "cost", "value", "high_stakes", "active"]

_FINGERPRINT_FIELDS = [
    "member_id", "occurred_at", "kind", "amount", "points", "quantity",
    "duration_seconds", "score", "offer_code",
]


def event_fingerprints(events: pd.DataFrame) -> pd.Series:
    """Content hash per event row, so the same event imported twice is stored once.

    Expects normalised columns: member_id str, occurred_at tz-aware UTC Timestamp, kind str,
    amount float, points/quantity/duration_seconds int, score float or NaN, offer_code str.
    """
    occurred = pd.to_datetime(events["occurred_at"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S")
    score = events["score"].map(lambda v: "" if pd.isna(v) else str(int(v)))
    amount = events["amount"].astype(float).map(lambda v: f"{v:.2f}")
    parts = [
        events["member_id"].astype(str),
        occurred,
        events["kind"].astype(str),
        amount,
        events["points"].astype("int64").astype(str),
        events["quantity"].astype("int64").astype(str),
        events["duration_seconds"].astype("int64").astype(str),
        score,
        events["offer_code"].fillna("").astype(str),
    ]
    joined = parts[0].str.cat(parts[1:], sep="|")
    return joined.map(lambda text: hashlib.sha1(text.encode()).hexdigest())
