"""Definitions shared by the simulator, the importers and the prediction engine.

They live in the loyalty domain because data flows one way: loyalty -> recommendations.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# A member is "engaged" in a window when they make at least one purchase in it.
# Churn is its complement. The simulator's ground truth uses the same definition.
ENGAGEMENT_EVENT_KIND = "purchase"
DEFAULT_HORIZON_DAYS = 90

# The program's tier rule: trailing 12-month spend that qualifies for the next tier
# (platinum has none). The simulator plays by it and the features measure against it.
TIER_NEXT_SPEND = {"bronze": 250.0, "silver": 550.0, "gold": 1100.0, "platinum": float("inf")}

# An offer_sent counts as a response when an offer_redeemed with the same offer code
# follows within this many days.
RESPONSE_WINDOW_DAYS = 14

# Age bands of fairness reports and of routing's fairness alerts: upper age (exclusive), label.
AGE_BANDS = ((25, "<25"), (35, "25-34"), (45, "35-44"), (55, "45-54"), (65, "55-64"))


def age_band(birth_year: float | None, year: int) -> str:
    """The member's age band in ``year``; "unknown" without a birth year."""
    if birth_year is None or (isinstance(birth_year, float) and np.isnan(birth_year)):
        return "unknown"
    age = year - int(birth_year)
    for upper, label in AGE_BANDS:
        if age < upper:
            return label
    return "65+"


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

    Vectorized (Arrow string joins, integer-cent formatting) so 25M simulated events hash
    in minutes; rows the fast path cannot format provably identically (NaT, odd years,
    amounts that are not exact cents, infinite scores) fall back to the reference
    definition, `_event_fingerprints_exact`, which gives the same digests.
    """
    if len(events) == 0:
        return _event_fingerprints_exact(events)
    occurred = pd.to_datetime(events["occurred_at"], utc=True)
    amount = events["amount"].astype(float).to_numpy()
    score = events["score"].astype(float).to_numpy()
    cents = np.rint(amount * 100.0)
    exact_cents = (
        np.isfinite(amount)
        & (np.abs(amount) < 1e12)
        & (cents / 100.0 == amount)
        & ~((amount == 0) & np.signbit(amount))
    )
    if (
        occurred.isna().any()
        or not occurred.dt.year.between(1000, 9999).all()
        or not exact_cents.all()
        or np.isinf(score).any()
    ):
        return _event_fingerprints_exact(events)

    seconds = occurred.dt.tz_localize(None).dt.floor("s").to_numpy().astype("datetime64[s]")
    # Exact cents: sign, whole units, then two zero-padded cent digits, as f"{v:.2f}" prints.
    whole_cents = np.abs(cents).astype(np.int64)
    sign = pc.if_else(pa.array(amount < 0), pa.scalar("-", pa.large_string()), pa.scalar("", pa.large_string()))
    units = pc.cast(pa.array(whole_cents // 100), pa.large_string())
    fraction = pc.utf8_lpad(pc.cast(pa.array(whole_cents % 100), pa.large_string()), 2, "0")
    amount_text = _join([sign, _join([units, fraction], ".")], "")
    has_score = ~np.isnan(score)
    score_text = pc.if_else(
        pa.array(has_score),
        pc.cast(pa.array(np.where(has_score, score, 0).astype(np.int64)), pa.large_string()),
        pa.scalar("", pa.large_string()),
    )

    def text(values) -> pa.Array:
        return pc.cast(pa.array(values), pa.large_string())

    parts = [
        text(events["member_id"].astype(str)),
        text(np.datetime_as_string(seconds, unit="s")),
        text(events["kind"].astype(str)),
        amount_text,
        pc.cast(pa.array(events["points"].astype("int64").to_numpy()), pa.large_string()),
        pc.cast(pa.array(events["quantity"].astype("int64").to_numpy()), pa.large_string()),
        pc.cast(pa.array(events["duration_seconds"].astype("int64").to_numpy()), pa.large_string()),
        score_text,
        text(events["offer_code"].fillna("").astype(str)),
    ]
    joined = _join(parts, "|").to_pylist()
    digests = [hashlib.sha1(row.encode()).hexdigest() for row in joined]
    return pd.Series(digests, index=events.index, name=events["member_id"].name)


def _join(arrays: list[pa.Array], separator: str) -> pa.Array:
    return pc.binary_join_element_wise(*arrays, pa.scalar(separator, pa.large_string()))


def _event_fingerprints_exact(events: pd.DataFrame) -> pd.Series:
    """The reference definition of the fingerprint, one row at a time (the fallback path)."""
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
