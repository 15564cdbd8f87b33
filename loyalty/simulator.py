"""A synthetic loyalty program with known ground truth, for the demo, tests and benchmarks.

`simulate_program` returns members, their event history up to `as_of`, the events of the
horizon window after it (`future_events`, kept apart so a later import "closes the loop"),
the offer catalog and the ground truth the desk can never see in production:

* ``p_engage``: the TRUE probability of at least one purchase in [as_of, as_of + horizon)
  GIVEN THE MEMBER'S LATENT STATE AT as_of (base rate, current OU level, a decline or
  recovery already under way), integrating over everything that has not happened yet: the
  OU shocks of the weeks that begin inside the horizon, declines that start inside it and
  when a pending recovery begins (``_engagement_truth``, Monte Carlo with antithetic paths).
  ``engaged`` is the outcome realized by the very same Poisson process that produced
  `future_events`, whose future path is drawn from those same distributions, so
  E[engaged | state at as_of] = p_engage: nothing in p_engage is knowable only later;
* ``p_response_<CODE>``: the TRUE probability that the member would redeem each offer if it
  were sent at ``as_of``;
* ``biased``: whether the member belongs to the planted-bias group (see below).

The latent process (per member, on a daily grid, vectorized over blocks of members):

* base purchase rate ``lambda0 ~ Gamma`` with a tier-dependent mean (higher tiers buy more);
* log engagement ``r(t) = trend(t) + ou(t)``: a weekly Ornstein-Uhlenbeck wander plus a
  trajectory: ~30% of members start declining at a random time (some inside the horizon,
  which nobody could foresee), ~10% start in a dip and recover, the rest are stable;
* purchase rate ``lambda0 * exp(r) * annual season * weekday profile`` after joining;
* app sessions follow ``lambda0 * exp(r)`` closely (about 10 per purchase, roughly weekly
  for a typical member, little member spread) and last longer when engaged
  (``duration_seconds`` ~ ``exp(r)``, modest noise): the app is where engagement, and a change of it, shows between sparse purchases;
* redemptions are driven by the points balance (path-dependent, simulated day by day over
  member vectors) and a per-member "points engagement"; redemption events carry the points
  spent as a NEGATIVE ``points`` value, purchases the points earned as a positive one;
* feedback events carry a 1-5 ``score`` that reflects the change of ``r`` over the past
  four weeks and its level (never the future); half of them have a short free-text
  ``comment`` whose sentiment (positive / neutral / negative) follows the same signal;
* the day a decline starts, the member complains (a negative comment; with probability
  TURN_SCORED_SHARE also a score 1-2, lower for a steeper decline) with probability
  TURN_FEEDBACK_SHARE; the day a recovery starts, they praise (positive comment, sometimes
  a score 4-5): the onset of a trajectory change is visible in the history, mostly in words,
  so the text of comments carries signal the numbers alone do not.

Offers and historical exposures: each member receives EXPOSURES (2-5) offers at random times
up to as_of, with the offer chosen uniformly at random (a randomized campaign, so responses are
unconfounded).
The member redeems (an ``offer_redeemed`` event with the same code within
RESPONSE_WINDOW_DAYS) with a probability that depends on observable state at send time:
discounts work on price-sensitive low tiers with small baskets, bonus points on members who
redeem points often and hold a balance, retention calls on high-value members whose
engagement is falling, tier upgrades on members whose trailing 12-month spend is just below
the next tier threshold; plus a small member-by-offer taste that nobody can observe.

Planted bias (``bias_group=("region", "north"), bias_rate=0.3``): for members of that group,
each purchase in the last ``2 * horizon_days`` days before ``as_of`` (the window training
labels are cut from) is dropped from the RECORDED `events` with probability ``bias_rate``,
as if the stores serving that group failed to record loyalty scans. Nothing else changes:
points, the latent process, ``future_events`` and the ground truth stay true, so a model
trained on the recorded history under-predicts engagement for that group and a fairness
check against ground truth can find it. The default is no bias.

Large programs: `simulate_program_blocks` yields the same program one block of
CHUNK_MEMBERS members at a time (`simulate_program` is those blocks joined), and
`program_blocks_write_db` loads such blocks as they come, so a program of any size is
simulated into the database in one block's memory (`manage.py bench` does this).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from loyalty.definitions import (
    DEFAULT_HORIZON_DAYS,
    EVENT_COLUMNS,
    MEMBER_COLUMNS,
    OFFER_COLUMNS,
    RESPONSE_WINDOW_DAYS,
    TIER_NEXT_SPEND,
    event_fingerprints,
)
from loyalty.pii import encrypt_series
from recommendations.text import feedback_sentiments

# A fixed default so the same seed gives the same data byte for byte, whenever it runs.
DEFAULT_AS_OF = date(2026, 6, 30)
DEFAULT_HISTORY_DAYS = 365

REGIONS = np.array(["north", "south", "east", "west", "central"])
REGION_SHARES = [0.22, 0.24, 0.18, 0.2, 0.16]
GENDERS = np.array(["female", "male", "other"])
GENDER_SHARES = [0.5, 0.47, 0.03]
TIERS = np.array(["bronze", "silver", "gold", "platinum"])
TIER_SHARES = [0.5, 0.3, 0.15, 0.05]
# Mean purchases per day and mean basket by tier: value rises with tier.
TIER_PURCHASE_RATE = np.array([0.012, 0.02, 0.03, 0.045])
TIER_BASKET = np.array([30.0, 42.0, 60.0, 90.0])
TIER_POINTS_PER_UNIT = np.array([1.0, 1.25, 1.5, 2.0])
# Trailing 12-month spend that qualifies for the NEXT tier (platinum has none).
TIER_NEXT_THRESHOLD = np.array([TIER_NEXT_SPEND[str(tier)] for tier in TIERS])
CONSENT_SHARE = 0.93

OFFERS = pd.DataFrame(
    [
        ("B500", "500 bonus points", "bonus_points", 5.0, 40.0, False, True),
        ("D10", "10% discount on next basket", "discount", 8.0, 45.0, False, True),
        ("TIERUP", "Tier upgrade", "tier_upgrade", 25.0, 120.0, True, True),
        ("CALL", "Retention call", "retention_call", 15.0, 90.0, False, True),
    ],
    columns=OFFER_COLUMNS,
)
OFFER_CODES = OFFERS["code"].to_numpy()

KINDS = np.array(["purchase", "redemption", "session", "feedback", "offer_sent", "offer_redeemed"])
K_PURCHASE, K_REDEMPTION, K_SESSION, K_FEEDBACK, K_SENT, K_REDEEMED = range(6)

# Comments are built from word lists: (opener, subject, phrase) with a sentiment class.
# Openers and subjects carry no sentiment of their own (no "honestly", "fair", "rewards": a
# lexicon model scores those words as positive), so a comment's tone is its phrase's.
_OPENERS = ["", "Frankly, ", "Lately ", "This month ", "Recently "]
_SUBJECTS = ["the app", "the member card", "checkout", "the staff", "the points program", "the offers"]
_PHRASES = {
    "positive": [
        "is great", "feels really rewarding", "works perfectly", "is excellent, thanks",
        "made me happy", "keeps getting better", "is very helpful",
    ],
    "neutral": ["is average", "is so-so", "has not changed much", "is as expected"],
    "negative": [
        "is frustrating", "is a waste of time", "keeps failing", "is disappointing",
        "is terrible now", "is getting worse", "is slow and annoying",
    ],
}
_FIRST_NAMES = [
    "Anna", "Ben", "Clara", "David", "Elena", "Felix", "Grace", "Hugo", "Iris", "Jonas",
    "Karin", "Leo", "Maria", "Nils", "Olga", "Paul", "Rosa", "Sam", "Tara", "Umar",
    "Vera", "Wim", "Yara", "Zoe", "Omar", "Lena", "Mateo", "Sofia", "Ravi", "Mei",
]
_LAST_NAMES = [
    "Andersen", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen", "Ivanova",
    "Jensen", "Kowalski", "Larsen", "Moreau", "Nowak", "Olsen", "Petrov", "Quinn", "Rossi",
    "Schmidt", "Tanaka", "Urban", "Vogel", "Weber", "Xu", "Young", "Zimmer", "Novak", "Silva",
]

# Members are simulated in fixed-size blocks (vectorized inside a block) to bound memory:
# a block's daily grid is CHUNK_MEMBERS x (history + horizon) floats. The block size is part
# of the random stream, so it is a constant, not a tuning knob.
CHUNK_MEMBERS = 20_000
_DAY = 86_400


@dataclass
class SimulatedProgram:
    members: pd.DataFrame  # MEMBER_COLUMNS; joined_at / birth_date as naive datetime64 dates
    events: pd.DataFrame  # EVENT_COLUMNS, occurred_at < as_of, sorted by member then time
    future_events: pd.DataFrame  # EVENT_COLUMNS, as_of <= occurred_at < as_of + horizon
    offers: pd.DataFrame  # OFFER_COLUMNS
    ground_truth: pd.DataFrame  # member_id, p_engage, engaged, p_response_<CODE>..., biased
    as_of: date
    horizon_days: int
    bias_group: tuple[str, str] | None = None
    bias_rate: float = 0.0
    # The ground truth at earlier dates (simulate_program's earlier_as_of), as ground_truth
    # plus ``points_balance`` (the balance on that date).
    earlier_truth: dict[date, pd.DataFrame] = field(default_factory=dict)


def _comment_vocabulary() -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """All possible comments (index 0 is "no comment") and each sentiment's index range."""
    texts = [""]
    ranges: dict[str, tuple[int, int]] = {}
    for sentiment, phrases in _PHRASES.items():
        start = len(texts)
        for opener in _OPENERS:
            for subject in _SUBJECTS:
                for phrase in phrases:
                    sentence = f"{opener}{subject} {phrase}."
                    texts.append(sentence[0].upper() + sentence[1:])
        ranges[sentiment] = (start, len(texts))
    return np.array(texts, dtype=object), ranges


COMMENTS, _COMMENT_RANGES = _comment_vocabulary()


def _season(dates: pd.DatetimeIndex) -> np.ndarray:
    """Annual peak before Christmas, dip in late summer; weekends busier for purchases."""
    doy = dates.day_of_year.to_numpy()
    annual = 1.0 + 0.2 * np.cos(2 * np.pi * (doy - 355) / 365.25)
    weekday = np.array([0.9, 0.88, 0.92, 0.98, 1.1, 1.3, 0.92])[dates.day_of_week.to_numpy()]
    return annual * weekday / weekday.mean()


def _response_logits(
    *,
    tier: np.ndarray,
    basket: np.ndarray,
    rho: np.ndarray,
    redemptions365: np.ndarray,
    base_value: np.ndarray,
    eng: np.ndarray,
    decline: np.ndarray,
    balance: np.ndarray,
    spend365: np.ndarray,
    taste: np.ndarray,
) -> np.ndarray:
    """True response logits, one column per offer in OFFERS order (B500, D10, TIERUP, CALL).

    Every input except `taste` leaves traces in the recorded history: tier, basket size,
    redemptions of the past year (themselves events), spend level and its recent change,
    points balance.
    """
    eng = np.clip(eng, -3.0, 1.5)
    alive = 0.35 * eng  # churned members ignore everything
    # Bonus points appeal to members who actually use their points: the redemptions of the
    # past year (recorded events), the underlying habit and the balance they could top up.
    b500 = -3.6 + 1.4 * np.log1p(redemptions365) + 1.5 * rho + 0.5 * np.log1p(balance / 500.0) + alive
    d10 = (
        -2.3
        + np.array([1.1, 0.5, -0.4, -1.2])[tier]
        - 1.2 * np.log(basket / 40.0)
        + alive
    )
    ratio = spend365 / TIER_NEXT_THRESHOLD[tier]
    near = np.exp(-(((ratio - 0.85) / 0.2) ** 2))
    tierup = np.where(tier < 3, -3.8 + 3.6 * near + 0.5 * alive, -7.0)
    high_value = 1.0 / (1.0 + np.exp(-2.0 * (np.log(base_value) - np.log(700.0))))
    falling = np.clip(-2.0 * decline, 0.0, 2.5)
    call = -3.4 + 3.0 * high_value * falling + 0.6 * high_value + 0.2 * alive
    return np.stack([b500, d10, tierup, call], axis=1) + taste


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# Trajectory mix (decline / recover-from-dip / stable), onset window and speed, and the weekly
# Ornstein-Uhlenbeck wander: shared by the simulation and the truth that integrates over it.
DECLINE_SHARE, RECOVER_SHARE = 0.30, 0.10
ONSET_FROM = 0.25  # onsets are uniform on [ONSET_FROM * history_days, history + horizon days)
SLOPE_RANGE = (0.004, 0.018)
OU_PHI, OU_SHOCK_SD, OU_START_SD = 0.97, 0.11, 0.45
# App sessions per purchase (member spread around it), and how strongly session frequency and
# duration follow engagement: the app is where a change of engagement shows first. About ten
# sessions per purchase (roughly weekly visits) make more of the latent engagement learnable
# from the history: at 1.8 the model reached AUC 0.776 against a Bayes AUC of 0.837 (20k
# members, seed 1), at 10 it reaches 0.803. It triples the event volume (~74 events per
# member instead of ~24), which the loading and feature stages of scoring pay for.
SESSION_RATIO, SESSION_SPREAD, SESSION_ENGAGEMENT = 10.0, 0.2, 1.0
DURATION_ENGAGEMENT, DURATION_SD = 1.0, 0.3
# Redemption: daily hazard rho * REDEEM_HAZARD * min(balance / REDEEM_SCALE, 3) * activity;
# rewards of 1000, 500 or (small rewards, from REDEEM_SMALL points on) REDEEM_SMALL points.
# Small rewards from 100 points make the habit (rho) show as redemption events, ~2 a member
# a year, instead of ~0.5 when only 500-point rewards existed.
REDEEM_HAZARD, REDEEM_SMALL, REDEEM_FLOOR, REDEEM_SCALE = 0.08, 100, 0.0, 300.0
# Offers sent per member in the randomized campaigns (uniform between the two) and the mean
# daily rate of spontaneous feedback.
EXPOSURES = (2, 5)
FEEDBACK_RATE = 0.002
# Share of declines / recoveries whose first day brings a complaint / praise (feedback).
TURN_FEEDBACK_SHARE = 0.8
# Share of those that come with a 1-5 score; the others are a comment only.
TURN_SCORED_SHARE = 0.3
# Monte Carlo paths per member for p_engage (antithetic pairs): its error is ~0.003.
TRUTH_PATHS = 128


def _pending_decline_share(*, history_days: int, at: int, horizon_days: int) -> float:
    """P(a decline starts within [at, at + horizon) | the member is neither declining nor in a
    dip at ``at``). Onsets are uniform on [ONSET_FROM * history_days, history + horizon days)."""
    days = history_days + horizon_days
    lo = ONSET_FROM * history_days
    inside = DECLINE_SHARE * horizon_days / (days - lo)
    not_started = DECLINE_SHARE * (days - at) / (days - lo)
    stable = 1.0 - DECLINE_SHARE - RECOVER_SHARE
    return inside / (not_started + stable)


def _engagement_truth(
    rng: np.random.Generator,
    *,
    lambda0: np.ndarray,
    trend_known: np.ndarray,
    ou_now: np.ndarray,
    pending_decline: np.ndarray,
    pending_recovery: np.ndarray,
    dip: np.ndarray,
    season: np.ndarray,
    future_week: np.ndarray,
    decline_share: float,
    recovery_share: float = 1.0,
) -> np.ndarray:
    """P(at least one purchase in the horizon | latent state at as_of), by Monte Carlo.

    The state at as_of: base rate ``lambda0``, the OU level of the last week that began before
    as_of, and the trend where it is already under way (a decline that has started continues
    at its slope; a recovery that has started continues). What has not happened yet is
    integrated over, with the distributions the simulation itself draws from: OU shocks of
    the weeks that begin inside the horizon, a decline that starts inside the horizon
    (probability ``decline_share`` for members neither declining nor in a dip) at a uniform
    onset with a uniform slope, and for members still in their starting dip, whether their
    recovery begins inside the horizon (``recovery_share``: 1 at the program's as_of, where
    every pending recovery does by construction; less at an earlier date), the day (uniform
    over the horizon) and its slope.

    ``p = 1 - E[exp(-L)]`` with ``L`` the integrated purchase rate over the horizon, averaged
    over TRUTH_PATHS antithetic paths, so E[engaged | state] = p for the realized outcome.
    ``trend_known``/``season``: (n, horizon) arrays (season includes "has joined"),
    ``future_week``: per horizon day, weeks since the last begun week (0 = that week).
    """
    n, horizon = trend_known.shape
    weeks = int(future_week.max()) + 1
    # Days of each future week, and the known part of the rate per week: exp(trend) * season.
    week_sum = np.zeros((weeks, horizon))
    week_sum[future_week, np.arange(horizon)] = 1.0
    known_weekly = (np.exp(trend_known) * season) @ week_sum.T  # (n, weeks)
    sampled = pending_decline | pending_recovery
    day = np.arange(horizon, dtype=float)
    lo_slope, hi_slope = SLOPE_RANGE
    survive = np.zeros(n)
    half = TRUTH_PATHS // 2
    for _ in range(half):
        z = rng.normal(0.0, OU_SHOCK_SD, (n, weeks))
        z[:, 0] = 0.0  # the last begun week is known
        # Trend paths for members whose trajectory has not started: onset (days into the
        # horizon, uniform) and slope; a pending decline starts inside it with decline_share.
        onset = rng.uniform(0.0, horizon, n)
        slope = rng.uniform(lo_slope, hi_slope, n)
        # One uniform serves both (the two groups are disjoint): with recovery_share 1 the
        # stream is the one drawn before earlier dates were supported.
        u = rng.random(n)
        starts = (pending_recovery & (u < recovery_share)) | (pending_decline & (u < decline_share))
        weekly = known_weekly.copy()
        rows = np.nonzero(sampled & starts)[0]
        if len(rows):
            since = np.clip(day[None, :] - onset[rows, None], 0.0, None)
            path = -slope[rows, None] * since
            rec = pending_recovery[rows]
            path[rec] = np.minimum(0.0, -dip[rows[rec], None] + slope[rows[rec], None] * since[rec])
            weekly[rows] = (np.exp(path) * season[rows]) @ week_sum.T
        for sign in (1.0, -1.0):
            ou = np.empty((n, weeks))
            ou[:, 0] = ou_now
            for w in range(1, weeks):
                ou[:, w] = OU_PHI * ou[:, w - 1] + sign * z[:, w]
            rate = lambda0 * (weekly * np.exp(ou)).sum(axis=1)
            survive += np.exp(-rate)
    return 1.0 - survive / (2 * half)


@dataclass
class _Chunk:
    member: np.ndarray  # global member index per event
    seconds: np.ndarray  # seconds since day 0 (history start) midnight UTC
    kind: np.ndarray
    amount: np.ndarray
    points: np.ndarray
    quantity: np.ndarray
    duration: np.ndarray
    score: np.ndarray
    offer: np.ndarray  # index into OFFER_CODES, -1 for none
    comment: np.ndarray  # index into COMMENTS, 0 for none
    p_engage: np.ndarray
    engaged: np.ndarray
    p_response: np.ndarray
    balance: np.ndarray
    # The truth at earlier days (history_days - k): p_engage, engaged, p_response, balance.
    earlier: dict[int, dict[str, np.ndarray]]


# The per-event fields of _Chunk.
_EVENT_FIELDS = ("member", "seconds", "kind", "amount", "points", "quantity", "duration", "score", "offer", "comment")


def _simulate_block(
    rng: np.random.Generator,
    *,
    truth_rng: np.random.Generator,
    first: int,
    attrs: dict[str, np.ndarray],
    season: np.ndarray,
    history_days: int,
    horizon_days: int,
    earlier_days: tuple[int, ...] = (),
) -> _Chunk:
    n = len(attrs["tier"])
    days = history_days + horizon_days
    h = history_days
    d = np.arange(days)
    tier = attrs["tier"]
    join_day = attrs["join_day"]
    alive = d[None, :] >= join_day[:, None]

    # Trajectory: decline from a random onset, recover from a dip, or stay stable.
    kind_u = rng.random(n)
    decliner = kind_u < DECLINE_SHARE
    recoverer = (kind_u >= DECLINE_SHARE) & (kind_u < DECLINE_SHARE + RECOVER_SHARE)
    onset = rng.uniform(ONSET_FROM * h, days, n)
    slope = rng.uniform(*SLOPE_RANGE, n)
    dip = rng.uniform(1.0, 2.5, n)
    since = np.clip(d[None, :] - onset[:, None], 0.0, None)
    trend = np.zeros((n, days), dtype=np.float32)
    trend[decliner] = -slope[decliner, None] * since[decliner]
    trend[recoverer] = np.minimum(0.0, -dip[recoverer, None] + slope[recoverer, None] * since[recoverer])
    del since

    # Weekly Ornstein-Uhlenbeck wander (stationary sd ~0.45): slow, partly unpredictable drift.
    weeks = days // 7 + 1
    ou = np.empty((n, weeks), dtype=np.float32)
    ou[:, 0] = rng.normal(0.0, OU_START_SD, n)
    shocks = rng.normal(0.0, OU_SHOCK_SD, (n, weeks)).astype(np.float32)
    for w in range(1, weeks):
        ou[:, w] = OU_PHI * ou[:, w - 1] + shocks[:, w]
    r = trend + ou[:, d // 7]

    def engagement_truth(at: int, trend: np.ndarray, ou: np.ndarray) -> np.ndarray:
        """p_engage at day `at`: integrates over what has not happened yet (see
        _engagement_truth); the trend is known where it has started, and the OU level of the
        last week begun."""
        started = onset < at
        pending_decline = ~recoverer & ~(decliner & started)
        pending_recovery = recoverer & ~started
        window = slice(at, at + horizon_days)
        trend_known = trend[:, window].copy()
        trend_known[pending_decline] = 0.0
        trend_known[pending_recovery] = -dip[pending_recovery, None]
        last_week = (at - 1) // 7
        return _engagement_truth(
            truth_rng,
            lambda0=attrs["lambda0"],
            trend_known=trend_known,
            ou_now=ou[:, last_week].astype(np.float64),
            pending_decline=pending_decline,
            pending_recovery=pending_recovery,
            dip=dip,
            season=season[window] * alive[:, window],
            future_week=d[window] // 7 - last_week,
            decline_share=_pending_decline_share(history_days=h, at=at, horizon_days=horizon_days),
            recovery_share=horizon_days / (days - at),
        )

    # The truth at as_of first, then at the earlier dates: the truth's stream is consumed in
    # that order, so asking for earlier dates leaves the as_of truth unchanged.
    p_engage = engagement_truth(h, trend, ou)
    earlier = {at: {"p_engage": engagement_truth(at, trend, ou)} for at in earlier_days}
    del trend, ou, shocks

    lam = (attrs["lambda0"][:, None] * np.exp(r) * season[None, :] * alive).astype(np.float64)
    purchases = rng.poisson(lam)
    engaged = purchases[:, h:].sum(axis=1) > 0
    for at, truth in earlier.items():
        truth["engaged"] = purchases[:, at : at + horizon_days].sum(axis=1) > 0
    del lam

    weekday_flat = season / season.mean()
    sessions = rng.poisson(attrs["session0"][:, None] * np.exp(SESSION_ENGAGEMENT * r) * weekday_flat[None, :] * alive)
    feedback = rng.poisson(np.broadcast_to(attrs["feedback0"][:, None], (n, days)) * alive)

    # Purchases.
    pm, pd_ = np.nonzero(purchases)
    reps = purchases[pm, pd_]
    pm, pd_ = np.repeat(pm, reps), np.repeat(pd_, reps)
    np_ = len(pm)
    p_amount = np.round(np.maximum(1.0, attrs["basket"][pm] * rng.lognormal(-0.1, 0.45, np_)), 2)
    p_points = np.floor(p_amount * TIER_POINTS_PER_UNIT[tier[pm]]).astype(np.int64)
    p_qty = 1 + rng.poisson(1.2, np_)
    p_sec = pd_ * _DAY + rng.integers(8 * 3600, 21 * 3600, np_)
    flat = pm * days + pd_
    earned = np.bincount(flat, weights=p_points, minlength=n * days).reshape(n, days)
    spend = np.bincount(flat, weights=p_amount, minlength=n * days).reshape(n, days)
    del purchases

    # Redemptions depend on the running balance, so step through days over member vectors.
    balance = attrs["balance0"].astype(np.float64)
    bal_end = np.empty((n, days), dtype=np.float64)
    redeemed = np.zeros((n, days), dtype=np.int64)
    u = rng.random((n, days), dtype=np.float32)
    big = rng.random((n, days), dtype=np.float32) < 0.5
    act = np.minimum(np.exp(r), 2.0)
    for day in range(days):
        balance += earned[:, day]
        hazard = attrs["rho"] * REDEEM_HAZARD * np.clip(balance / REDEEM_SCALE, REDEEM_FLOOR, 3.0) * act[:, day]
        go = alive[:, day] & (balance >= REDEEM_SMALL) & (u[:, day] < hazard)
        pts = np.where(big[:, day] & (balance >= 2000), 1000, np.where(balance >= 500, 500, REDEEM_SMALL)) * go
        balance -= pts
        redeemed[:, day] = pts
        bal_end[:, day] = balance
    del u, big, act, earned
    # Redemption events up to the end of each day (the B500 response reads the past year's).
    cum_red = np.concatenate([np.zeros((n, 1)), np.cumsum(redeemed > 0, axis=1)], axis=1)
    rm, rd = np.nonzero(redeemed)
    r_points = -redeemed[rm, rd]
    r_sec = rd * _DAY + rng.integers(7 * 3600, 22 * 3600, len(rm))
    del redeemed

    # Sessions: longer when engaged.
    sm, sd = np.nonzero(sessions)
    reps = sessions[sm, sd]
    sm, sd = np.repeat(sm, reps), np.repeat(sd, reps)
    s_dur = np.clip(
        np.exp(np.log(240.0) + DURATION_ENGAGEMENT * r[sm, sd] + rng.normal(0, DURATION_SD, len(sm))), 5, 7200
    )
    s_sec = sd * _DAY + rng.integers(6 * 3600, 24 * 3600, len(sm))
    del sessions

    # Feedback reflects how the member's experience has been going: the change of r over the
    # past four weeks (a decline under way shows as falling scores) and its level.
    fm, fd = np.nonzero(feedback)
    reps = feedback[fm, fd]
    fm, fd = np.repeat(fm, reps), np.repeat(fd, reps)
    lead = r[fm, fd] - r[fm, np.maximum(fd - 28, 0)]
    nf = len(fm)
    f_score = np.clip(np.round(3.3 + 2.2 * lead + 0.3 * r[fm, fd] + rng.normal(0, 0.6, nf)), 1, 5)
    mood = lead + rng.normal(0, 0.12, nf)
    sentiment = np.where(mood > 0.08, "positive", np.where(mood < -0.08, "negative", "neutral"))
    f_comment = np.zeros(nf, dtype=np.int64)
    for name, (lo, hi) in _COMMENT_RANGES.items():
        chosen = sentiment == name
        f_comment[chosen] = rng.integers(lo, hi, int(chosen.sum()))
    f_comment[rng.random(nf) < 0.5] = 0
    f_sec = fd * _DAY + rng.integers(8 * 3600, 23 * 3600, nf)
    del feedback

    # A trajectory change starts with an experience the member tells about (most of the
    # time): a complaint (score 1-2, the steeper the decline the lower) on the day a decline
    # starts, praise (score 4-5) on the day a recovery starts.
    turn = (decliner | recoverer) & (onset < days) & (onset >= np.maximum(join_day, 0))
    u_turn = rng.random(n)
    turn &= u_turn < TURN_FEEDBACK_SHARE
    tm = np.nonzero(turn)[0]
    td = np.floor(onset[tm]).astype(np.int64)
    steep = (slope[tm] - SLOPE_RANGE[0]) / (SLOPE_RANGE[1] - SLOPE_RANGE[0])
    worse = decliner[tm]
    t_score = np.where(
        worse,
        np.clip(np.round(2.3 - steep + rng.normal(0, 0.25, len(tm))), 1, 2),
        np.clip(np.round(4.2 + 0.6 * steep + rng.normal(0, 0.25, len(tm))), 4, 5),
    )
    # Most of these are told in words (a support message, a review), not as a rating: only
    # TURN_SCORED_SHARE of them carry a score, so the comment is where the turn shows.
    # (u_turn is reused, uniform below TURN_FEEDBACK_SHARE: no extra draw shifts the stream.)
    t_score = np.where(u_turn[tm] < TURN_FEEDBACK_SHARE * TURN_SCORED_SHARE, t_score, np.nan)
    t_comment = np.where(
        worse,
        rng.integers(*_COMMENT_RANGES["negative"], len(tm)),
        rng.integers(*_COMMENT_RANGES["positive"], len(tm)),
    )
    fm, fd = np.concatenate([fm, tm]), np.concatenate([fd, td])
    f_score = np.concatenate([f_score, t_score])
    f_comment = np.concatenate([f_comment, t_comment])
    f_sec = np.concatenate([f_sec, td * _DAY + rng.integers(8 * 3600, 23 * 3600, len(tm))])
    nf = len(fm)

    # Randomized offer exposures: EXPOSURES per member, uniform offer, uniform time in the
    # history up to as_of, as a running campaign sends them. (They once stopped a response
    # window before as_of: then every member looked offer-starved at scoring against the
    # training snapshot, and a fresh program raised a drift alert on its offer features.)
    # A response to a late send falls in the horizon, with the future events.
    n_exp = rng.integers(EXPOSURES[0], EXPOSURES[1] + 1, n)
    em = np.repeat(np.arange(n), n_exp)
    ne = len(em)
    hi_day = max(h, 2)
    lo_day = np.clip(np.maximum(join_day[em], min(30, hi_day - 1)), 0, hi_day - 1)
    ed = (lo_day + rng.random(ne) * (hi_day - lo_day)).astype(np.int64)
    eo = rng.integers(0, len(OFFER_CODES), ne)

    cum_spend = np.concatenate([np.zeros((n, 1)), np.cumsum(spend, axis=1)], axis=1)
    del spend

    def state(rows: np.ndarray, at: np.ndarray) -> dict[str, np.ndarray]:
        start = np.maximum(np.maximum(at - 365, 0), np.maximum(join_day[rows], 0))
        window = np.maximum(at - start, 1)
        return {
            "tier": tier[rows],
            "basket": attrs["basket"][rows],
            "rho": attrs["rho"][rows],
            "redemptions365": (cum_red[rows, at] - cum_red[rows, start]) * 365.0 / window,
            "base_value": attrs["lambda0"][rows] * 365 * attrs["basket"][rows],
            "eng": r[rows, np.minimum(at, days - 1)],
            "decline": r[rows, np.minimum(at, days - 1)] - r[rows, np.maximum(at - 60, 0)],
            "balance": np.where(at > 0, bal_end[rows, np.maximum(at - 1, 0)], attrs["balance0"][rows]),
            "spend365": (cum_spend[rows, at] - cum_spend[rows, start]) * 365.0 / window,
            "taste": attrs["taste"][rows],
        }

    logits = _response_logits(**state(em, ed))
    e_prob = _sigmoid(logits[np.arange(ne), eo])
    responded = rng.random(ne) < e_prob
    e_sec = ed * _DAY + rng.integers(9 * 3600, 18 * 3600, ne)
    delay = rng.integers(600, RESPONSE_WINDOW_DAYS * _DAY - 600, ne)
    rr = np.nonzero(responded)[0]

    everyone = np.arange(n)
    p_response = _sigmoid(_response_logits(**state(everyone, np.full(n, h))))
    balance_as_of = bal_end[:, h - 1] if h > 0 else attrs["balance0"]
    for at, truth in earlier.items():
        truth["p_response"] = _sigmoid(_response_logits(**state(everyone, np.full(n, at))))
        truth["balance"] = np.round(bal_end[:, at - 1]).astype(np.int64)

    def full(size: int, value, dtype) -> np.ndarray:
        return np.full(size, value, dtype=dtype)

    nr, ns, nx = len(rm), len(sm), len(rr)
    parts = [
        # member, seconds, kind, amount, points, quantity, duration, score, offer, comment
        (pm, p_sec, K_PURCHASE, p_amount, p_points, p_qty, full(np_, 0, np.int64), full(np_, np.nan, float), -1, 0),
        (rm, r_sec, K_REDEMPTION, full(nr, 0.0, float), r_points, full(nr, 0, np.int64), full(nr, 0, np.int64), full(nr, np.nan, float), -1, 0),
        (sm, s_sec, K_SESSION, full(ns, 0.0, float), full(ns, 0, np.int64), full(ns, 0, np.int64), s_dur.astype(np.int64), full(ns, np.nan, float), -1, 0),
        (fm, f_sec, K_FEEDBACK, full(nf, 0.0, float), full(nf, 0, np.int64), full(nf, 0, np.int64), full(nf, 0, np.int64), f_score, -1, f_comment),
        (em, e_sec, K_SENT, full(ne, 0.0, float), full(ne, 0, np.int64), full(ne, 0, np.int64), full(ne, 0, np.int64), full(ne, np.nan, float), eo, 0),
        (em[rr], e_sec[rr] + delay[rr], K_REDEEMED, full(nx, 0.0, float), full(nx, 0, np.int64), full(nx, 0, np.int64), full(nx, 0, np.int64), full(nx, np.nan, float), eo[rr], 0),
    ]

    def cat(i: int, dtype) -> np.ndarray:
        return np.concatenate([np.broadcast_to(np.asarray(p[i], dtype=dtype), (len(p[0]),)) for p in parts])

    return _Chunk(
        member=cat(0, np.int64) + first,
        seconds=cat(1, np.int64),
        kind=cat(2, np.int8),
        amount=cat(3, np.float64),
        points=cat(4, np.int64),
        quantity=cat(5, np.int64),
        duration=cat(6, np.int64),
        score=cat(7, np.float64),
        offer=cat(8, np.int8),
        comment=cat(9, np.int64),
        p_engage=p_engage,
        engaged=engaged,
        p_response=p_response,
        balance=np.round(balance_as_of).astype(np.int64),
        earlier=earlier,
    )


def _member_attributes(rng: np.random.Generator, *, members: int, history_days: int) -> dict[str, np.ndarray]:
    n = members
    tier = rng.choice(len(TIERS), n, p=TIER_SHARES)
    lambda0 = rng.gamma(3.5, TIER_PURCHASE_RATE[tier] / 3.5)
    basket = TIER_BASKET[tier] * rng.lognormal(0.0, 0.3, n)
    # 80% joined before the history window, 20% during it (their history starts at joining).
    old = rng.random(n) < 0.8
    join_day = np.where(
        old,
        -rng.integers(1, 6 * 365, n),
        rng.integers(0, max(history_days - 30, 1), n),
    )
    balance0 = np.where(
        old, np.round(rng.gamma(1.5, lambda0 * 365 * basket * TIER_POINTS_PER_UNIT[tier] * 0.25 / 1.5)), 0
    )
    return {
        "tier": tier,
        "region": rng.choice(len(REGIONS), n, p=REGION_SHARES),
        "gender": rng.choice(len(GENDERS), n, p=GENDER_SHARES),
        "age_days": rng.integers(18 * 365, 82 * 365, n),
        "consent": rng.random(n) < CONSENT_SHARE,
        "first": rng.integers(0, len(_FIRST_NAMES), n),
        "last": rng.integers(0, len(_LAST_NAMES), n),
        "lambda0": lambda0,
        "basket": basket,
        "session0": lambda0 * SESSION_RATIO * rng.lognormal(-0.5 * SESSION_SPREAD**2, SESSION_SPREAD, n),
        "feedback0": rng.gamma(2.0, FEEDBACK_RATE / 2.0, n),
        "rho": rng.beta(2.0, 5.0, n),
        "join_day": join_day,
        "balance0": balance0,
        "taste": rng.normal(0.0, 0.35, (n, len(OFFER_CODES))),
    }


def _str_take(values: np.ndarray, codes: np.ndarray) -> pd.Series:
    """A str Series of values[codes], built with one vectorized take."""
    return pd.Series(values, dtype="str").take(codes).reset_index(drop=True)


def _events_frame(
    *, member_ids: pd.Series, first: int, cols: dict[str, np.ndarray], day0: pd.Timestamp, mask: np.ndarray
) -> pd.DataFrame:
    """The events selected by `mask`, sorted by member, time and kind; `member_ids[i]` is the
    id of member `first + i` (cols["member"] holds program-wide member indexes)."""
    member = cols["member"][mask]
    seconds = cols["seconds"][mask]
    kind = cols["kind"][mask]
    order = np.lexsort((kind, seconds, member))
    member, seconds, kind = member[order], seconds[order], kind[order]
    # Two events of one kind for one member in the same second would share a fingerprint
    # (the unique key in the database): vanishingly rare, but keep only the first.
    repeat = np.zeros(len(order), dtype=bool)
    repeat[1:] = (member[1:] == member[:-1]) & (seconds[1:] == seconds[:-1]) & (kind[1:] == kind[:-1])
    if repeat.any():
        order, member, seconds, kind = order[~repeat], member[~repeat], seconds[~repeat], kind[~repeat]
    offer = cols["offer"][mask][order]
    occurred = pd.Series(
        day0.to_datetime64().astype("datetime64[s]") + seconds.astype("timedelta64[s]")
    ).dt.tz_localize("UTC")
    return pd.DataFrame(
        {
            "member_id": member_ids.take(member - first).reset_index(drop=True),
            "occurred_at": occurred,
            "kind": _str_take(KINDS, kind),
            "amount": cols["amount"][mask][order],
            "points": cols["points"][mask][order],
            "quantity": cols["quantity"][mask][order],
            "duration_seconds": cols["duration"][mask][order],
            "score": cols["score"][mask][order],
            "offer_code": _str_take(np.append(OFFER_CODES, ""), np.where(offer < 0, len(OFFER_CODES), offer)),
            "comment": _str_take(COMMENTS, cols["comment"][mask][order]),
        },
        columns=EVENT_COLUMNS,
    )


def _members_frame(
    attrs: dict[str, np.ndarray], *, first: int, balance: np.ndarray, day0: pd.Timestamp, as_of: date
) -> pd.DataFrame:
    """Members `first + 1`, ... (ids M0000001, ...) from their attributes and balance at as_of."""
    numbers = np.arange(first + 1, first + len(balance) + 1)
    member_ids = pd.Series(np.char.add("M", np.char.zfill(numbers.astype(str), 7)), dtype="str")
    as_of_ts = pd.Timestamp(as_of)
    first_names = np.array(_FIRST_NAMES)[attrs["first"]]
    last_names = np.array(_LAST_NAMES)[attrs["last"]]
    emails = np.char.add(
        np.char.add(np.char.add(np.char.lower(first_names), "."), np.char.lower(last_names)),
        np.char.add(numbers.astype(str), "@example.com"),
    )
    return pd.DataFrame(
        {
            "member_id": member_ids,
            "joined_at": (day0 + pd.to_timedelta(attrs["join_day"], unit="D")).normalize(),
            "birth_date": as_of_ts - pd.to_timedelta(attrs["age_days"], unit="D"),
            "gender": _str_take(GENDERS, attrs["gender"]),
            "region": _str_take(REGIONS, attrs["region"]),
            "tier": _str_take(TIERS, attrs["tier"]),
            "points_balance": balance,
            "consent_profiling": attrs["consent"],
            "name": pd.Series(np.char.add(np.char.add(first_names, " "), last_names), dtype="str"),
            "email": pd.Series(emails, dtype="str"),
        },
        columns=MEMBER_COLUMNS,
    )


@dataclass
class ProgramBlock:
    """One block of CHUNK_MEMBERS members (the last one smaller) with everything simulated
    for them: the block's rows of each SimulatedProgram frame, events built on demand."""

    members: pd.DataFrame  # MEMBER_COLUMNS, members first + 1 ... in order
    ground_truth: pd.DataFrame  # as SimulatedProgram.ground_truth, these members only
    first: int  # program-wide index of the block's first member
    day0: pd.Timestamp
    cols: dict[str, np.ndarray]  # every simulated event, numeric (see _Chunk)
    history: np.ndarray  # per event: before as_of
    recorded: np.ndarray  # per event: in the recorded history (history minus planted-bias losses)
    earlier_truth: dict[date, pd.DataFrame]  # as ground_truth, at each earlier_as_of date, + points_balance

    def events(self) -> pd.DataFrame:
        return self._frame(self.recorded)

    def future_events(self) -> pd.DataFrame:
        return self._frame(~self.history)

    def _frame(self, mask: np.ndarray) -> pd.DataFrame:
        return _events_frame(
            member_ids=self.members["member_id"], first=self.first, cols=self.cols, day0=self.day0, mask=mask
        )


def simulate_program_blocks(
    *,
    members: int,
    seed: int,
    as_of: date = DEFAULT_AS_OF,
    history_days: int = DEFAULT_HISTORY_DAYS,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    bias_group: tuple[str, str] | None = None,
    bias_rate: float = 0.0,
    earlier_as_of: tuple[date, ...] = (),
) -> Iterator[ProgramBlock]:
    """The program `simulate_program` returns, one block of members at a time.

    Members are independent and every block draws from its own stream, so a caller can
    write each block away and drop it: memory stays at one block's worth whatever
    `members` is. Concatenated, the blocks are exactly simulate_program's frames.

    ``earlier_as_of``: dates before as_of at which the ground truth is also wanted (a desk
    that scores the same program again month after month); the as_of truth and the events
    do not depend on them.
    """
    if members < 1:
        raise ValueError("members must be at least 1")
    if history_days < 2 * RESPONSE_WINDOW_DAYS + 2 or horizon_days < 1:
        raise ValueError(f"history_days must be >= {2 * RESPONSE_WINDOW_DAYS + 2} and horizon_days >= 1")
    if not 0.0 <= bias_rate <= 1.0:
        raise ValueError("bias_rate must be within [0, 1]")
    if bias_group is not None and bias_group[0] not in MEMBER_COLUMNS:
        raise ValueError(f"bias group column must be one of {MEMBER_COLUMNS}")
    earlier_days = tuple(history_days - (as_of - d).days for d in earlier_as_of)
    if any(not 0 < at < history_days for at in earlier_days):
        raise ValueError(f"earlier_as_of dates must lie within the {history_days} history days before as_of")

    root = np.random.SeedSequence(seed)
    attr_seq, bias_seq, *block_seqs = root.spawn(2 + (members + CHUNK_MEMBERS - 1) // CHUNK_MEMBERS)
    attrs = _member_attributes(np.random.default_rng(attr_seq), members=members, history_days=history_days)
    day0 = pd.Timestamp(as_of) - pd.Timedelta(days=history_days)
    dates = pd.date_range(day0, periods=history_days + horizon_days, freq="D")
    season = _season(dates)
    # One stream for the planted bias across blocks, one uniform per event in block order:
    # consecutive draws continue the stream, so they are those of one draw over all events.
    bias_rng = np.random.default_rng(bias_seq)

    for b, seq in enumerate(block_seqs):
        lo, hi = b * CHUNK_MEMBERS, min((b + 1) * CHUNK_MEMBERS, members)
        # Built in a function, so nothing of this block stays referenced from here while the
        # next one is simulated.
        yield _program_block(
            seq, attrs={k: v[lo:hi] for k, v in attrs.items()}, first=lo, season=season, day0=day0, as_of=as_of,
            history_days=history_days, horizon_days=horizon_days,
            bias=(bias_group, bias_rate, bias_rng) if bias_group is not None and bias_rate > 0 else None,
            earlier=dict(zip(earlier_as_of, earlier_days, strict=True)),
        )


def _program_block(
    seq: np.random.SeedSequence,
    *,
    attrs: dict[str, np.ndarray],
    first: int,
    season: np.ndarray,
    day0: pd.Timestamp,
    as_of: date,
    history_days: int,
    horizon_days: int,
    bias: tuple[tuple[str, str], float, np.random.Generator] | None,
    earlier: dict[date, int],
) -> ProgramBlock:
    # The truth's Monte Carlo draws from its own stream, so it never shifts the events.
    chunk = _simulate_block(
        np.random.default_rng(seq), truth_rng=np.random.default_rng(seq.spawn(1)[0]), first=first, attrs=attrs,
        season=season, history_days=history_days, horizon_days=horizon_days, earlier_days=tuple(earlier.values()),
    )
    member_frame = _members_frame(attrs, first=first, balance=chunk.balance, day0=day0, as_of=as_of)
    cols = {name: getattr(chunk, name) for name in _EVENT_FIELDS}

    in_group = np.zeros(len(member_frame), dtype=bool)
    history = cols["seconds"] < history_days * _DAY
    recorded = history.copy()
    if bias is not None:
        (column, value), rate, bias_rng = bias
        in_group = (member_frame[column].astype(str) == str(value)).to_numpy()
        # The planted bias: lost loyalty scans in the label window, for the group only.
        label_start = max(history_days - 2 * horizon_days, 0) * _DAY
        hit = (
            history
            & (cols["kind"] == K_PURCHASE)
            & (cols["seconds"] >= label_start)
            & in_group[cols["member"] - first]
        )
        lost = bias_rng.random(len(hit)) < rate
        recorded &= ~(hit & lost)

    def truth_frame(p_engage: np.ndarray, engaged: np.ndarray, p_response: np.ndarray) -> pd.DataFrame:
        truth = pd.DataFrame({"member_id": member_frame["member_id"], "p_engage": p_engage, "engaged": engaged})
        for j, code in enumerate(OFFER_CODES):
            truth[f"p_response_{code}"] = p_response[:, j]
        truth["biased"] = in_group
        return truth

    earlier_truth = {}
    for when, at in earlier.items():
        values = chunk.earlier[at]
        earlier_truth[when] = truth_frame(values["p_engage"], values["engaged"], values["p_response"]).assign(
            points_balance=values["balance"])
    return ProgramBlock(
        members=member_frame, ground_truth=truth_frame(chunk.p_engage, chunk.engaged, chunk.p_response),
        first=first, day0=day0, cols=cols, history=history, recorded=recorded, earlier_truth=earlier_truth,
    )


def simulate_program(
    *,
    members: int,
    seed: int,
    as_of: date = DEFAULT_AS_OF,
    history_days: int = DEFAULT_HISTORY_DAYS,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    bias_group: tuple[str, str] | None = None,
    bias_rate: float = 0.0,
    earlier_as_of: tuple[date, ...] = (),
) -> SimulatedProgram:
    """Simulate a program of `members` members; the same arguments give identical frames."""
    blocks = list(
        simulate_program_blocks(
            members=members, seed=seed, as_of=as_of, history_days=history_days, horizon_days=horizon_days,
            bias_group=bias_group, bias_rate=bias_rate, earlier_as_of=earlier_as_of,
        )
    )
    # Event frames are built once from the joined numeric columns (cheaper than joining
    # per-block frames); members are block-ordered, so the order is the same either way.
    cols = {name: np.concatenate([block.cols[name] for block in blocks]) for name in _EVENT_FIELDS}
    history = np.concatenate([block.history for block in blocks])
    recorded = np.concatenate([block.recorded for block in blocks])
    member_frame = pd.concat([block.members for block in blocks], ignore_index=True)
    truth = pd.concat([block.ground_truth for block in blocks], ignore_index=True)
    earlier_truth = {
        when: pd.concat([block.earlier_truth[when] for block in blocks], ignore_index=True) for when in earlier_as_of
    }
    day0 = blocks[0].day0
    del blocks

    def events(mask: np.ndarray) -> pd.DataFrame:
        return _events_frame(member_ids=member_frame["member_id"], first=0, cols=cols, day0=day0, mask=mask)

    return SimulatedProgram(
        members=member_frame,
        events=events(recorded),
        future_events=events(~history),
        offers=OFFERS.copy(),
        ground_truth=truth,
        as_of=as_of,
        horizon_days=horizon_days,
        bias_group=bias_group if bias_group is not None and bias_rate > 0 else None,
        bias_rate=float(bias_rate) if bias_group is not None else 0.0,
        earlier_truth=earlier_truth,
    )


class SimulatorTargetError(Exception):
    """The database is not in a state the simulator may write into."""


def _iso(series: pd.Series, fmt: str) -> pd.Series:
    return series.dt.strftime(fmt)


def events_write_csv(events: pd.DataFrame, path: Path, *, append: bool = False) -> None:
    """Events in the import format (events.csv, future_events.csv); `append` adds rows, without
    a header, to a file begun by an earlier call (a program written block by block)."""
    out = events.copy()
    out["occurred_at"] = _iso(out["occurred_at"], "%Y-%m-%dT%H:%M:%S+00:00")
    out["score"] = out["score"].astype("Int64")
    out.to_csv(
        path, columns=EVENT_COLUMNS, index=False, float_format="%.2f", lineterminator="\n",
        mode="a" if append else "w", header=not append,
    )


def program_write_files(
    program: SimulatedProgram, out_dir: Path, only: tuple[str, ...] | None = None
) -> dict[str, Path]:
    """Write the five CSV files in the import format (or the `only` ones); returns name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def table(frame: pd.DataFrame, path: Path, float_format: str | None = None) -> None:
        frame.to_csv(path, index=False, float_format=float_format, lineterminator="\n")

    def members(path: Path) -> None:
        frame = program.members.copy()
        for column in ("joined_at", "birth_date"):
            frame[column] = _iso(frame[column], "%Y-%m-%d")
        table(frame[MEMBER_COLUMNS], path)

    # Built only when written: the full event history of a large program is big.
    writers = {
        "members": members,
        "events": lambda path: events_write_csv(program.events, path),
        "future_events": lambda path: events_write_csv(program.future_events, path),
        "offers": lambda path: table(program.offers[OFFER_COLUMNS], path, "%.2f"),
        "ground_truth": lambda path: table(program.ground_truth, path),
    }
    paths = {}
    for name, write in writers.items():
        if only is not None and name not in only:
            continue
        path = out_dir / f"{name}.csv"
        write(path)
        paths[name] = path
    return paths


def _uuid4_hex(count: int) -> np.ndarray:
    """`count` random version-4 UUIDs as 32-digit hex strings, without a Python loop."""
    raw = np.frombuffer(np.random.default_rng().bytes(16 * count), dtype=np.uint8).reshape(count, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    return np.frombuffer(raw.tobytes().hex().encode(), dtype="S32").astype(str)


def _member_rows(members: pd.DataFrame, *, tz_suffix: str) -> pd.DataFrame:
    """Member rows with the table's columns, as values both Postgres COPY and SQLite accept."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S") + tz_suffix
    joined = members["joined_at"]
    consent = members["consent_profiling"].to_numpy(dtype=bool)
    consent_at = (joined.dt.strftime("%Y-%m-%d %H:%M:%S") + tz_suffix).astype(object)
    consent_at[~consent] = None
    return pd.DataFrame(
        {
            "member_id": members["member_id"],
            "pseudo_id": _uuid4_hex(len(members)),
            "joined_at": joined.dt.strftime("%Y-%m-%d"),
            "birth_date": encrypt_series(members["birth_date"].dt.strftime("%Y-%m-%d")),
            "birth_year": members["birth_date"].dt.year.astype("int64"),
            "gender": members["gender"],
            "region": members["region"],
            "tier": members["tier"],
            "points_balance": members["points_balance"].astype("int64"),
            "consent_profiling": consent.astype(np.int64),
            "consent_at": consent_at,
            "name": encrypt_series(members["name"]),
            "email": encrypt_series(members["email"]),
            "created_at": now,
            "updated_at": now,
        }
    )


def _timestamp_text(values: pd.Series, *, tz_suffix: str) -> np.ndarray:
    """UTC timestamps as "YYYY-MM-DD HH:MM:SS" + tz_suffix, formatted in C (not strftime)."""
    seconds = values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[s]")
    text = np.datetime_as_string(seconds, unit="s")  # "YYYY-MM-DDTHH:MM:SS"
    # The separator the table's other writers use (SQLite compares timestamps as text).
    text.view(np.uint32).reshape(len(text), -1)[:, 10] = ord(" ")
    return np.char.add(text, tz_suffix).astype(object) if tz_suffix else text.astype(object)


def _event_rows(events: pd.DataFrame, member_pk: pd.Series, *, tz_suffix: str) -> pd.DataFrame:
    score = events["score"].astype("Int64").astype(object)
    score[events["score"].isna().to_numpy()] = None
    return pd.DataFrame(
        {
            "member_id": member_pk.reindex(events["member_id"]).to_numpy(),
            "occurred_at": _timestamp_text(events["occurred_at"], tz_suffix=tz_suffix),
            "kind": events["kind"],
            "amount": events["amount"].astype(float),
            "points": events["points"].astype("int64"),
            "quantity": events["quantity"].astype("int64"),
            "duration_seconds": events["duration_seconds"].astype("int64"),
            "score": score,
            "offer_code": events["offer_code"],
            "comment": encrypt_series(events["comment"]),
            "fingerprint": event_fingerprints(events).to_numpy(),
            "sentiment": feedback_sentiments(events["kind"], events["comment"]),
        }
    )


_COPY_BATCH = 250_000


def _copy_rows(cursor, *, table: str, rows: pd.DataFrame, not_null: list[str]) -> None:
    """COPY a frame into `table` in CSV batches (psycopg 3), written by Arrow's C++ CSV writer.

    Arrow quotes every string (so "" stays an empty string) and leaves nulls empty and
    unquoted, which is exactly Postgres' CSV reading of empty string versus NULL.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    columns = ", ".join(rows.columns)
    force = f", FORCE_NOT_NULL ({', '.join(not_null)})" if not_null else ""
    options = pa_csv.WriteOptions(include_header=False)
    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv{force})") as copy:
        for start in range(0, len(rows), _COPY_BATCH):
            batch = pa.Table.from_pandas(rows.iloc[start : start + _COPY_BATCH], preserve_index=False)
            sink = pa.BufferOutputStream()
            pa_csv.write_csv(batch, sink, options)
            copy.write(memoryview(sink.getvalue()))


def _insert_rows(cursor, *, table: str, rows: pd.DataFrame) -> None:
    """executemany in large batches (SQLite and other backends without COPY)."""
    columns = ", ".join(rows.columns)
    placeholders = ", ".join(["%s"] * len(rows.columns))
    sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"
    for start in range(0, len(rows), _COPY_BATCH):
        batch = rows.iloc[start : start + _COPY_BATCH].astype(object)
        batch = batch.where(batch.notna(), None)
        cursor.executemany(sql, list(batch.itertuples(index=False, name=None)))


def _secondary_indexes_drop(cursor, *, tables: list[str]) -> list[str]:
    """Drop every index and unique/foreign-key constraint of `tables` except primary keys;
    return the statements that recreate them (indexes and unique constraints first).

    Loading into an empty table and then building each index once (a sort) is many times
    faster than maintaining ~8 b-trees and one deferred foreign-key check per copied row.
    Postgres only; DDL is transactional, so a failed load restores everything on rollback.
    """
    creates: list[str] = []
    foreign: list[str] = []
    for table in tables:
        cursor.execute(
            "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype IN ('u', 'f') ORDER BY conname",
            [table],
        )
        for name, kind, definition in cursor.fetchall():
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            (foreign if kind == "f" else creates).append(
                f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'
            )
        # Plain indexes: not the primary key, not backing a constraint of this table.
        cursor.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = %s::regclass AND NOT i.indisprimary AND NOT EXISTS ("
            "  SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid"
            ") ORDER BY c.relname",
            [table],
        )
        for name, definition in cursor.fetchall():
            cursor.execute(f'DROP INDEX "{name}"')
            creates.append(definition)
    return creates + foreign


def program_write_db(program: SimulatedProgram, *, replace: bool = False) -> dict[str, int]:
    """Load offers, members and events into the database in one transaction.

    Refuses to write into a database that already holds members unless `replace`, and
    refuses `replace` while any Decision exists (decisions are protected records).
    """
    return program_blocks_write_db([(program.members, program.events)], offers=program.offers, replace=replace)


def program_blocks_write_db(
    blocks: Iterable[tuple[pd.DataFrame, pd.DataFrame]], *, offers: pd.DataFrame, replace: bool = False
) -> dict[str, int]:
    """program_write_db for a program that arrives in blocks of (members, their events), as
    `simulate_program_blocks` yields them: each block is written, then dropped, so a program
    of any size loads in one block's memory. One transaction, like program_write_db.
    """
    from django.db import connection, transaction

    from loyalty.models import Event, Member, Offer
    from recommendations.models import Decision

    postgres = connection.vendor == "postgresql"
    tz_suffix = "+00" if postgres else ""
    member_table, event_table = Member._meta.db_table, Event._meta.db_table
    written = {"members": 0, "events": 0, "offers": len(offers)}
    with transaction.atomic():
        if replace:
            if Decision.objects.exists():
                raise SimulatorTargetError(
                    "refusing --replace: the database holds manager decisions, which are "
                    "protected records; simulate into an empty database instead"
                )
            Event.objects.all().delete()
            Member.objects.all().delete()
            Offer.objects.all().delete()
        else:
            existing = Member.objects.count()
            if existing:
                raise SimulatorTargetError(
                    f"the database already holds {existing} members; pass --replace to delete "
                    "members, events and offers first, or use an empty database"
                )
        for row in offers.to_dict("records"):
            Offer.objects.update_or_create(
                code=row["code"],
                defaults={k: row[k] for k in ("name", "kind", "cost", "value", "high_stakes", "active")},
            )
        recreate: list[str] = []
        if postgres:
            with connection.cursor() as cursor:
                if replace:
                    # ALTER TABLE refuses tables with pending deferred checks: run the ones the
                    # deletes queued now, then defer again (Django's foreign keys are deferred).
                    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                    cursor.execute("SET CONSTRAINTS ALL DEFERRED")
                cursor.execute("SET LOCAL maintenance_work_mem = '512MB'")
                # Dropped once for the whole load, whatever the number of blocks.
                recreate = _secondary_indexes_drop(cursor, tables=[member_table, event_table])
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {member_table}")
            (last_pk,) = cursor.fetchone()
        for members, events in blocks:
            last_pk = _block_write(
                members, events, member_table=member_table, event_table=event_table, last_pk=last_pk,
                tz_suffix=tz_suffix,
            )
            written["members"] += len(members)
            written["events"] += len(events)
            del members, events  # not held while the next block is simulated
        with connection.cursor() as cursor:
            # Rebuilt once each, over all rows: unique and foreign keys are verified here.
            for statement in recreate:
                cursor.execute(statement)
            if postgres:
                # Fresh statistics, so the first scoring run's plans see the real row counts.
                cursor.execute(f"ANALYZE {member_table}, {event_table}")
    return written


def _block_write(
    members: pd.DataFrame, events: pd.DataFrame, *, member_table: str, event_table: str, last_pk: int,
    tz_suffix: str,
) -> int:
    """Write one block's members, then their events; return the largest member pk so far."""
    from django.db import connection

    postgres = connection.vendor == "postgresql"
    member_rows = _member_rows(members, tz_suffix=tz_suffix)
    with connection.cursor() as cursor:
        if postgres:
            # cursor.connection is the psycopg 3 connection: COPY needs its own cursor.
            with cursor.connection.cursor() as raw:
                _copy_rows(raw, table=member_table, rows=member_rows, not_null=["gender", "region", "name", "email"])
        else:
            _insert_rows(cursor, table=member_table, rows=member_rows)
        # This block's members got the keys after the previous largest: a primary-key range
        # scan (the member_id index is dropped during the load).
        cursor.execute(f"SELECT member_id, id FROM {member_table} WHERE id > %s", [last_pk])
        pairs = cursor.fetchall()
    del member_rows
    member_pk = pd.Series([pk for _, pk in pairs], index=[mid for mid, _ in pairs])
    event_rows = _event_rows(events, member_pk, tz_suffix=tz_suffix)
    with connection.cursor() as cursor:
        if postgres:
            with cursor.connection.cursor() as raw:
                _copy_rows(raw, table=event_table, rows=event_rows, not_null=["offer_code", "comment"])
        else:
            _insert_rows(cursor, table=event_table, rows=event_rows)
    return max([last_pk, *member_pk.to_list()])


__all__ = [
    "DEFAULT_AS_OF",
    "OFFERS",
    "SimulatedProgram",
    "ProgramBlock",
    "SimulatorTargetError",
    "events_write_csv",
    "program_blocks_write_db",
    "program_write_db",
    "program_write_files",
    "simulate_program",
    "simulate_program_blocks",
]

