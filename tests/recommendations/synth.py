"""Small synthetic member/event frames for the engine tests (pk-keyed, as the selectors return).

Each member has a latent purchase rate; purchases, sessions and feedback follow it, so the
features carry real signal. Offers are sent at random and answered with a probability that
depends on the member's rate and the offer, so a response model has something to learn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recommendations.scoring import OfferTerms

OFFERS = [
    OfferTerms(code="BONUS500", kind="bonus_points", cost=5.0, value=40.0, high_stakes=False),
    OfferTerms(code="DISC10", kind="discount", cost=8.0, value=45.0, high_stakes=False),
    OfferTerms(code="CALL", kind="retention_call", cost=20.0, value=60.0, high_stakes=True),
]
RESPONSE_BASE = {"BONUS500": 0.10, "DISC10": 0.18, "CALL": 0.30}


def synth_frames(
    n_members: int = 400, days: int = 540, seed: int = 0, with_offers: bool = True,
    end: str = "2024-07-01",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    end_ts = pd.Timestamp(end, tz="UTC")
    start_ts = end_ts - pd.Timedelta(days=days)
    pks = np.arange(1, n_members + 1)
    rate = rng.gamma(0.8, 1 / 20, n_members)  # purchases per day
    members = pd.DataFrame({
        "pk": pks,
        "member_id": [f"M{pk:05d}" for pk in pks],
        "birth_year": rng.integers(1950, 2004, n_members),
        "gender": rng.choice(["f", "m", ""], n_members),
        "region": rng.choice(["north", "south"], n_members),
        "tier": rng.choice(["bronze", "silver", "gold", "platinum"], n_members, p=[.5, .3, .15, .05]),
        "points_balance": rng.integers(0, 5000, n_members),
        "joined_at": (start_ts - pd.to_timedelta(rng.integers(0, 900, n_members), unit="D")).date,
        "consent_profiling": True,
    })
    rows = []
    for kind, mult in (("purchase", 1.0), ("session", 3.0), ("redemption", 0.1), ("feedback", 0.05)):
        counts = rng.poisson(rate * mult * days)
        member = np.repeat(pks, counts)
        offset = rng.uniform(0, days, counts.sum())
        frame = pd.DataFrame({
            "member_pk": member,
            "occurred_at": start_ts + pd.to_timedelta(offset, unit="D"),
            "kind": kind,
            "amount": rng.gamma(2, 20, counts.sum()) if kind == "purchase" else 0.0,
            "points": -rng.integers(100, 1000, counts.sum()) if kind == "redemption" else 0,
            "quantity": 1,
            "duration_seconds": rng.integers(30, 900, counts.sum()) if kind == "session" else 0,
            "score": rng.integers(1, 6, counts.sum()).astype(float) if kind == "feedback" else np.nan,
            "offer_code": "",
        })
        rows.append(frame)
    if with_offers:
        n_sent = n_members * 2
        member = rng.choice(pks, n_sent)
        codes = rng.choice([o.code for o in OFFERS], n_sent)
        sent_at = start_ts + pd.to_timedelta(rng.uniform(0, days - 20, n_sent), unit="D")
        base = np.array([RESPONSE_BASE[c] for c in codes])
        p = np.clip(base * (0.5 + 20 * rate[member - 1]), 0, 0.95)
        answered = rng.random(n_sent) < p
        rows.append(pd.DataFrame({
            "member_pk": member, "occurred_at": sent_at, "kind": "offer_sent", "amount": 0.0,
            "points": 0, "quantity": 0, "duration_seconds": 0, "score": np.nan, "offer_code": codes,
        }))
        rows.append(pd.DataFrame({
            "member_pk": member[answered],
            "occurred_at": sent_at[answered] + pd.to_timedelta(rng.uniform(0, 10, answered.sum()), unit="D"),
            "kind": "offer_redeemed", "amount": 0.0, "points": 0, "quantity": 0,
            "duration_seconds": 0, "score": np.nan, "offer_code": codes[answered],
        }))
    events = pd.concat(rows, ignore_index=True).sort_values("occurred_at", ignore_index=True)
    return members, events
