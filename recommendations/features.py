"""Point-in-time member features: the one module used by training, scoring and what-if.

No Django here. Input frames (the selectors and the simulator adapter produce them):

- ``members``: one row per member with columns ``pk`` (int, the database primary key: the
  feature frame is indexed by it), ``birth_year`` (int or NaN), ``tier`` (bronze..platinum),
  ``points_balance`` (int), ``joined_at`` (date, datetime or NaT). ``gender`` and ``region``
  may be present; they are never read here (see below).
- ``events``: one row per event with ``member_pk`` (int, = members.pk), ``occurred_at``
  (tz-aware UTC Timestamp), ``kind`` (loyalty.models.EventKind values), ``amount``,
  ``points``, ``duration_seconds``, ``score`` (float or NaN), ``offer_code`` (str) and
  ``sentiment``: the VADER compound score of a feedback comment (recommendations.text),
  NaN when the event has no comment. Loaders decrypt and score comments of feedback events
  only and keep the score, never the text; without the column there are no text signals.

Only events with ``occurred_at < as_of`` are read (strictly before), so a feature row for
``as_of`` is exactly what was knowable at that instant. ``points_balance`` must be the
balance AT ``as_of``: ``members_at`` rewinds it for historical snapshots (every point change
is an event). ``tier`` is the member's stored tier (no history is kept; slow-moving).

``history_start``: when the recorded history starts less than 365 days before ``as_of``
(training snapshots near the start of the data), the 180- and 365-day counts and spend are
annualized over the part of the window that was recorded, so a snapshot at the start of the
data and one a year later measure the same thing. Scoring leaves it None (full windows).

Protected attributes: ``gender`` and ``region`` are NOT model inputs. They carry no
legitimate signal for whether someone will keep buying, and feeding them would let the
model (and its explanations) treat members differently by group. ``age`` IS an input,
marked protected: life stage genuinely changes purchase rhythm, the fairness report
monitors outcomes by age band, and what-if locks it (a manager cannot "change" a member's
age to get a different offer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# loyalty.definitions has no Django imports: the label definitions are shared, not copied.
from loyalty.definitions import ENGAGEMENT_EVENT_KIND, RESPONSE_WINDOW_DAYS, TIER_NEXT_SPEND
from recommendations.text import NEGATIVE_AT, comment_sentiments

TIER_RANK = {"bronze": 0, "silver": 1, "gold": 2, "platinum": 3}
NO_HISTORY_DAYS = 730.0  # "days since" value for a member with no such event on record
# The longest count window: a snapshot with less recorded history than this annualizes its
# counts (history_start in build_features).
LONGEST_WINDOW_DAYS = 365
DAY_NS = 86_400 * 10**9
# Current form (_current_form): weeks of history it reads, how much a member's log visit length
# varies from visit to visit around their level at the time (sd 0.3) and how far that level
# moves in a week (sd ~0.17). The estimate is not sensitive to them: weekly drifts of sd 0.11
# to 0.25 give the same engagement AUC on the simulator.
FORM_WEEKS = 53
FORM_VISIT_VAR = 0.09
FORM_WEEKLY_DRIFT_VAR = 0.03


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    # Plain-language template, formatted with value=<feature value>.
    text: str
    min: float
    max: float
    actionable: bool = False
    protected: bool = False


FEATURE_SPEC: list[FeatureSpec] = [
    FeatureSpec("days_since_purchase", "last purchase {value:.0f} days ago", 0, NO_HISTORY_DAYS),
    FeatureSpec("purchases_30d", "made {value:.0f} purchases in 30 days", 0, 60, actionable=True),
    FeatureSpec("purchases_90d", "made {value:.0f} purchases in 90 days", 0, 150, actionable=True),
    FeatureSpec("purchases_180d", "made {value:.0f} purchases in 180 days", 0, 300),
    FeatureSpec("purchases_365d", "made {value:.0f} purchases in a year", 0, 500),
    FeatureSpec("spend_30d", "spent {value:.0f} in 30 days", 0, 5_000, actionable=True),
    FeatureSpec("spend_90d", "spent {value:.0f} in 90 days", 0, 15_000, actionable=True),
    FeatureSpec("spend_365d", "spent {value:.0f} in a year", 0, 50_000),
    FeatureSpec("avg_basket_365d", "average basket {value:.0f}", 0, 2_000),
    FeatureSpec(
        "purchase_trend_30_60",
        "purchase rate last 30 days vs the 60 before: {value:+.2f}/month",
        -30, 30,
    ),
    FeatureSpec(
        "spend_trend_90_90",
        "spend last 90 days vs the 90 before: {value:+.0f}",
        -10_000, 10_000,
    ),
    FeatureSpec("mean_gap_days", "buys every {value:.0f} days on average", 0, 365),
    FeatureSpec("gap_ratio", "current gap is {value:.1f}x the usual gap", 0, 50),
    FeatureSpec("sessions_30d", "visited {value:.0f} times in 30 days", 0, 200, actionable=True),
    FeatureSpec("sessions_90d", "visited {value:.0f} times in 90 days", 0, 500, actionable=True),
    FeatureSpec("session_minutes_90d", "spent {value:.0f} minutes in app in 90 days", 0, 5_000, actionable=True),
    FeatureSpec("days_since_session", "last visit {value:.0f} days ago", 0, NO_HISTORY_DAYS),
    FeatureSpec("redemptions_90d", "redeemed points {value:.0f} times in 90 days", 0, 50, actionable=True),
    FeatureSpec("points_redeemed_365d", "redeemed {value:.0f} points in a year", 0, 200_000),
    FeatureSpec("feedback_count_365d", "gave feedback {value:.0f} times in a year", 0, 50),
    FeatureSpec("feedback_mean_365d", "average feedback score {value:.1f} (0 = none)", 0, 5),
    FeatureSpec("last_feedback_score", "last feedback score {value:.0f} (0 = none)", 0, 5),
    FeatureSpec("days_since_complaint", "last low score (1-2) {value:.0f} days ago", 0, NO_HISTORY_DAYS),
    FeatureSpec("days_since_praise", "last high score (4-5) {value:.0f} days ago", 0, NO_HISTORY_DAYS),
    FeatureSpec("sessions_365d", "visited {value:.0f} times in a year", 0, 2_000),
    FeatureSpec("avg_session_minutes_90d", "average visit {value:.1f} minutes (90 days)", 0, 120),
    FeatureSpec(
        "session_trend_30_60",
        "visits last 30 days vs the 60 before: {value:+.1f}/month",
        -100, 100,
    ),
    FeatureSpec(
        "session_length_trend",
        "visit length last 30 days vs the 90 before: {value:+.2f} (log ratio)",
        -5, 5,
    ),
    FeatureSpec("redemptions_365d", "redeemed points {value:.0f} times in a year", 0, 100),
    FeatureSpec("points_earned_365d", "earned {value:.0f} points in a year", 0, 200_000),
    FeatureSpec("redeemed_share_365d", "redeemed {value:.0%} of the points available in a year", 0, 1),
    FeatureSpec(
        "spend_to_next_tier",
        "yearly spend is {value:.0%} of the next tier's threshold",
        0, 10,
    ),
    FeatureSpec("points_balance", "holds {value:.0f} points", 0, 500_000, actionable=True),
    FeatureSpec("tenure_days", "member for {value:.0f} days", 0, 10_000),
    FeatureSpec("tier_rank", "tier rank {value:.0f} (0 bronze .. 3 platinum)", 0, 3, actionable=True),
    FeatureSpec("age", "aged {value:.0f}", 16, 100, protected=True),
    FeatureSpec("offers_received_365d", "received {value:.0f} offers in a year", 0, 100),
    FeatureSpec("offer_response_rate", "responded to {value:.0%} of past offers", 0, 1),
    FeatureSpec("days_since_offer", "last offer {value:.0f} days ago", 0, NO_HISTORY_DAYS),
    # Text signals: VADER sentiment of feedback comments (recommendations.text; -1 .. +1).
    FeatureSpec("comments_365d", "left {value:.0f} feedback comments in a year", 0, 50),
    FeatureSpec(
        "comment_sentiment_90d", "tone of comments in 90 days {value:+.2f} (-1 negative .. +1 positive, 0 = none)",
        -1, 1,
    ),
    FeatureSpec(
        "comment_sentiment_trend", "comment tone last 90 days vs the 275 before: {value:+.2f}", -2, 2,
    ),
    FeatureSpec("negative_comment_share_365d", "{value:.0%} of the year's comments were negative", 0, 1),
    FeatureSpec(
        "days_since_negative_comment", "last negative comment {value:.0f} days ago", 0, NO_HISTORY_DAYS,
    ),
    # Current form (_current_form): engagement now, read from visit length week by week.
    FeatureSpec("visit_minutes_now", "visits currently last about {value:.1f} minutes (0 = no visit in a year)", 0, 120),
    FeatureSpec("visits_per_week_now", "at current engagement, about {value:.1f} visits a week", 0, 50),
    FeatureSpec("purchases_per_month_now", "at current engagement, about {value:.1f} purchases a month", 0, 60),
]
FEATURE_NAMES: list[str] = [spec.name for spec in FEATURE_SPEC]
# The features read from comment text (bench compares models with and without them; the desk
# shows the comments behind them).
TEXT_FEATURES: frozenset[str] = frozenset({
    "comments_365d", "comment_sentiment_90d", "comment_sentiment_trend",
    "negative_comment_share_365d", "days_since_negative_comment",
})
FEATURE_BY_NAME: dict[str, FeatureSpec] = {spec.name: spec for spec in FEATURE_SPEC}


def _as_utc(ts) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _event_times_ns(events: pd.DataFrame) -> np.ndarray:
    occurred = events["occurred_at"]
    if not isinstance(occurred.dtype, pd.DatetimeTZDtype):
        occurred = pd.to_datetime(occurred, utc=True)
    return occurred.dt.tz_convert("UTC").astype("datetime64[ns, UTC]").array.asi8


def _date_days_before(values: pd.Series, as_of: pd.Timestamp) -> np.ndarray:
    """Days from a date column to as_of (NaN when missing)."""
    dates = pd.to_datetime(values, errors="coerce", utc=True)
    return ((as_of - dates).dt.total_seconds() / 86_400).to_numpy(dtype=float)


def _latest_value(pos: np.ndarray, days: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Per member position, the value of its most recent event (smallest days); 0 when none."""
    out = np.zeros(n)
    if len(pos):
        order = np.lexsort((-days, pos))  # by member, latest last
        last = np.r_[pos[order][1:] != pos[order][:-1], True]
        out[pos[order][last]] = values[order][last]
    return out


def events_before(events: pd.DataFrame, as_of) -> pd.DataFrame:
    """The events knowable at as_of: strictly before it."""
    as_of = _as_utc(as_of)
    return events[_event_times_ns(events) < as_of.value]


def members_at(members: pd.DataFrame, events: pd.DataFrame, at) -> pd.DataFrame:
    """Members with ``points_balance`` rewound to ``at``: minus the points of events at/after it.

    ``members.points_balance`` must be the balance after the last event in ``events``.
    """
    at = _as_utc(at)
    later = events[_event_times_ns(events) >= at.value] if len(events) else events
    out = members.copy()
    if len(later):
        delta = later.groupby("member_pk")["points"].sum()
        out["points_balance"] = out["points_balance"].fillna(0).to_numpy(float) - (
            out["pk"].map(delta).fillna(0).to_numpy(float)
        )
    return out


def build_features(
    members: pd.DataFrame, events: pd.DataFrame, as_of, history_start=None
) -> pd.DataFrame:
    """Feature frame indexed by member pk, columns in FEATURE_SPEC order (float64).

    Vectorized with np.bincount over integer member positions: one pass per feature family.
    """
    as_of = _as_utc(as_of)
    recorded_days = np.inf
    if history_start is not None:
        recorded_days = max((as_of - _as_utc(history_start)).total_seconds() / 86_400, 1.0)
    pks = members["pk"].to_numpy()
    n = len(pks)
    index = pd.Index(pks, name="member_pk")

    t_ns = _event_times_ns(events) if len(events) else np.zeros(0, dtype=np.int64)
    pos = index.get_indexer(events["member_pk"].to_numpy()) if len(events) else np.zeros(0, int)
    keep = (t_ns < as_of.value) & (pos >= 0)
    days = (as_of.value - t_ns[keep]) / DAY_NS  # > 0
    pos = pos[keep]
    ev = events.loc[keep] if len(events) else events
    kind = ev["kind"].to_numpy() if len(ev) else np.zeros(0, dtype=object)
    amount = ev["amount"].to_numpy(dtype=float) if len(ev) else np.zeros(0)

    def count(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        w = None if weights is None else weights[mask]
        return np.bincount(pos[mask], weights=w, minlength=n).astype(float)

    def min_days(mask: np.ndarray) -> np.ndarray:
        out = np.full(n, np.inf)
        np.minimum.at(out, pos[mask], days[mask])
        return out

    out: dict[str, np.ndarray] = {}
    purchase = kind == ENGAGEMENT_EVENT_KIND
    within = {w: days <= w for w in (30, 60, 90, 120, 180, 365)}
    scale = {w: w / min(w, recorded_days) for w in (30, 90, 180, 365)}
    for w in (30, 90, 180, 365):
        out[f"purchases_{w}d"] = count(purchase & within[w]) * scale[w]
    for w in (30, 90, 365):
        out[f"spend_{w}d"] = count(purchase & within[w], amount) * scale[w]
    last_purchase = min_days(purchase)
    out["days_since_purchase"] = np.minimum(last_purchase, NO_HISTORY_DAYS)
    out["avg_basket_365d"] = np.divide(
        out["spend_365d"], out["purchases_365d"], out=np.zeros(n), where=out["purchases_365d"] > 0
    )
    prev_60 = count(purchase & ~within[30] & within[90])
    out["purchase_trend_30_60"] = out["purchases_30d"] - prev_60 / 2.0
    spend_prev_90 = count(purchase & ~within[90] & within[180], amount)
    out["spend_trend_90_90"] = out["spend_90d"] - spend_prev_90

    # Mean inter-purchase gap over the last year: (last - first) / (n - 1).
    first_365 = np.full(n, -np.inf)
    sel = purchase & within[365]
    np.maximum.at(first_365, pos[sel], days[sel])
    n365 = count(sel)  # raw count, not annualized
    mean_gap = np.where(n365 >= 2, (first_365 - np.minimum(last_purchase, 365)) / np.maximum(n365 - 1, 1), 365.0)
    out["mean_gap_days"] = np.clip(mean_gap, 0.0, 365.0)
    out["gap_ratio"] = np.clip(
        out["days_since_purchase"] / np.maximum(out["mean_gap_days"], 1.0), 0.0, 50.0
    )

    session = kind == "session"
    out["sessions_30d"] = count(session & within[30])
    out["sessions_90d"] = count(session & within[90])
    duration = ev["duration_seconds"].to_numpy(dtype=float) if len(ev) else np.zeros(0)
    out["session_minutes_90d"] = count(session & within[90], duration) / 60.0
    out["days_since_session"] = np.minimum(min_days(session), NO_HISTORY_DAYS)
    out["sessions_365d"] = count(session & within[365]) * scale[365]
    out["session_trend_30_60"] = out["sessions_30d"] - count(session & ~within[30] & within[90]) / 2.0
    # Visit length follows engagement: mean log duration of the last 30 days minus that of the
    # 90 days before (0 when either window has no visit).
    log_dur = np.log(np.clip(duration, 1.0, None))
    recent_n, older_n = count(session & within[30]), count(session & ~within[30] & within[120])
    recent_mean = np.divide(count(session & within[30], log_dur), recent_n, out=np.zeros(n), where=recent_n > 0)
    older_mean = np.divide(
        count(session & ~within[30] & within[120], log_dur), older_n, out=np.zeros(n), where=older_n > 0
    )
    out["session_length_trend"] = np.where((recent_n > 0) & (older_n > 0), recent_mean - older_mean, 0.0)
    out["avg_session_minutes_90d"] = np.divide(
        out["session_minutes_90d"], out["sessions_90d"], out=np.zeros(n), where=out["sessions_90d"] > 0
    )
    tenure = np.clip(np.nan_to_num(_date_days_before(members["joined_at"], as_of), nan=0.0), 0.0, None)
    observed = np.clip(np.minimum(np.minimum(tenure, 365.0), recorded_days), 7.0, None)
    out.update(_current_form(pos, days, session, log_dur, purchase, observed, n))

    redemption = kind == "redemption"
    points = ev["points"].to_numpy(dtype=float) if len(ev) else np.zeros(0)
    out["redemptions_90d"] = count(redemption & within[90])
    out["points_redeemed_365d"] = count(redemption & within[365], np.abs(points)) * scale[365]
    out["redemptions_365d"] = count(redemption & within[365]) * scale[365]
    out["points_earned_365d"] = count(purchase & within[365], np.clip(points, 0, None)) * scale[365]

    score = ev["score"].to_numpy(dtype=float) if len(ev) else np.zeros(0)
    feedback = (kind == "feedback") & within[365] & ~np.isnan(score)
    out["feedback_count_365d"] = count(feedback)
    score_sum = count(feedback, np.nan_to_num(score))
    out["feedback_mean_365d"] = np.divide(
        score_sum, out["feedback_count_365d"], out=np.zeros(n), where=out["feedback_count_365d"] > 0
    )
    # A complaint or praise often marks the start of a decline or a recovery.
    scored = (kind == "feedback") & ~np.isnan(score)
    out["last_feedback_score"] = _latest_value(pos[scored], days[scored], score[scored], n)
    out["days_since_complaint"] = np.minimum(min_days(scored & (score <= 2)), NO_HISTORY_DAYS)
    out["days_since_praise"] = np.minimum(min_days(scored & (score >= 4)), NO_HISTORY_DAYS)

    sentiment = ev["sentiment"].to_numpy(dtype=float) if "sentiment" in ev else np.full(len(ev), np.nan)
    out.update(_comment_features(pos, days, (kind == "feedback") & ~np.isnan(sentiment), sentiment, n, scale[365]))

    out["points_balance"] = members["points_balance"].fillna(0).to_numpy(dtype=float)
    out["tenure_days"] = tenure
    out["tier_rank"] = members["tier"].map(TIER_RANK).fillna(0).to_numpy(dtype=float)
    # Program rule: trailing 12-month spend that qualifies for the next tier (none above
    # platinum). Members who joined less than a year ago are annualized over their tenure.
    threshold = members["tier"].map(TIER_NEXT_SPEND).to_numpy(dtype=float)
    yearly = out["spend_365d"] * 365.0 / np.clip(np.minimum(out["tenure_days"], 365.0), 30.0, None)
    out["spend_to_next_tier"] = np.where(
        np.isfinite(threshold), np.clip(yearly / np.where(np.isfinite(threshold), threshold, 1.0), 0, 10), 0.0
    )
    # Redemption habit: points redeemed in the year over the points there were to redeem
    # (the balance a year ago plus what was earned = today's balance plus what was redeemed).
    pool = np.clip(out["points_balance"], 0, None) + out["points_redeemed_365d"]
    out["redeemed_share_365d"] = np.divide(out["points_redeemed_365d"], pool, out=np.zeros(n), where=pool > 0)
    birth_year = pd.to_numeric(members["birth_year"], errors="coerce").to_numpy(dtype=float)
    age = as_of.year - birth_year
    # Unknown age gets the middle of the sensible range, not 0 (which would look like a child).
    out["age"] = np.where(np.isnan(age), 45.0, age)

    sent = kind == "offer_sent"
    out["offers_received_365d"] = count(sent & within[365]) * scale[365]
    out["days_since_offer"] = np.minimum(min_days(sent), NO_HISTORY_DAYS)
    exposures = offer_exposures(ev.assign(member_pk=pks[pos]) if len(ev) else events, as_of)
    if len(exposures):
        e_pos = index.get_indexer(exposures["member_pk"].to_numpy())
        closed = np.bincount(e_pos, minlength=n).astype(float)
        responded = np.bincount(e_pos, weights=exposures["responded"].to_numpy(float), minlength=n)
        out["offer_response_rate"] = np.divide(responded, closed, out=np.zeros(n), where=closed > 0)
    else:
        out["offer_response_rate"] = np.zeros(n)

    frame = pd.DataFrame({name: out[name] for name in FEATURE_NAMES}, index=index)
    return frame.astype(float)


def _current_form(
    pos: np.ndarray, days: np.ndarray, session: np.ndarray, log_dur: np.ndarray, purchase: np.ndarray,
    observed: np.ndarray, n: int,
) -> dict[str, np.ndarray]:
    """Engagement now, from visit length: a member visits longer when engaged, so the log
    length of each visit is a noisy reading of their engagement at the time.

    A Kalman filter over weekly bins (oldest first, vectorized over members) follows that level:
    a week of many visits moves it a lot, a single visit a little, a week without visits not at
    all, and its own uncertainty grows between readings (FORM_* constants). Count windows weigh
    a visit of today like one of 29 days ago; this weighs by what each reading says now.

    Visit and purchase counts of the ``observed`` days (the year, or the tenure or recorded
    history if shorter), divided by the exposure those days had at the engagement of their week
    relative to now, give the rates "at current engagement": a member who used to visit daily
    but whose visits have shortened a lot is expected to visit (and buy) less from here on.
    Members without a visit read 0 minutes and their plain rates.
    """
    weeks = FORM_WEEKS
    in_window = days <= observed[pos]
    visit = session & in_window
    # (weeks, members): one contiguous row per week for the loop below.
    cell = np.minimum(days[visit] // 7, weeks - 1).astype(np.int64) * n + pos[visit]
    count = np.bincount(cell, minlength=n * weeks).reshape(weeks, n).astype(float)
    # (float even when there is no visit at all: bincount of nothing is int)
    total = np.bincount(cell, weights=log_dur[visit], minlength=n * weeks).reshape(weeks, n).astype(float)
    visits = count.sum(axis=0)
    seen = visits > 0
    # Start from the member's mean over the window, uncertain (variance 1) before any reading.
    prior = np.divide(total.sum(axis=0), visits, out=np.zeros(n), where=seen)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    level, var = prior.copy(), np.ones(n)
    exposure = np.zeros(n)  # sum over weeks of observed days x exp(level of the week - prior)
    for w in range(weeks - 1, -1, -1):
        var += FORM_WEEKLY_DRIFT_VAR
        c = count[w]
        gain = var * c / (var * c + FORM_VISIT_VAR)  # 0 in a week without visits
        level += gain * (mean[w] - level)
        var *= 1.0 - gain
        exposure += np.clip(observed - 7.0 * w, 0.0, 7.0) * np.exp(level - prior)
    exposure /= np.exp(level - prior)  # in days at the current level
    buys = np.bincount(pos[purchase & in_window], minlength=n)
    return {
        "visit_minutes_now": np.where(seen, np.exp(level) / 60.0, 0.0),
        "visits_per_week_now": 7.0 * visits / exposure,
        "purchases_per_month_now": 30.0 * buys / exposure,
    }


def _comment_features(
    pos: np.ndarray, days: np.ndarray, commented: np.ndarray, sentiment: np.ndarray, n: int, year_scale: float
) -> dict[str, np.ndarray]:
    """Text signals from the VADER compound score of each feedback comment (``sentiment``).

    Tone of the last 90 days, its change against the 90-365 days before (0 when either window
    has no comment), the share of negative comments in the year and the days since the last
    one. A member without comments reads as neutral (0); ``comments_365d`` tells them apart.
    """
    def per_member(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        w = None if weights is None else weights[mask]
        return np.bincount(pos[mask], weights=w, minlength=n).astype(float)

    def mean(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = per_member(mask)
        total = per_member(mask, np.nan_to_num(sentiment))
        return np.divide(total, count, out=np.zeros(n), where=count > 0), count

    recent, older = commented & (days <= 90), commented & (days > 90) & (days <= 365)
    recent_mean, recent_n = mean(recent)
    older_mean, older_n = mean(older)
    year_n = recent_n + older_n
    negative = commented & (sentiment <= NEGATIVE_AT)
    last_negative = np.full(n, np.inf)
    np.minimum.at(last_negative, pos[negative], days[negative])
    return {
        "comments_365d": year_n * year_scale,
        "comment_sentiment_90d": recent_mean,
        "comment_sentiment_trend": np.where((recent_n > 0) & (older_n > 0), recent_mean - older_mean, 0.0),
        "negative_comment_share_365d": np.divide(
            per_member(negative & (days <= 365)), year_n, out=np.zeros(n), where=year_n > 0
        ),
        "days_since_negative_comment": np.minimum(last_negative, NO_HISTORY_DAYS),
    }


def offer_exposures(events: pd.DataFrame, as_of) -> pd.DataFrame:
    """Offers sent whose RESPONSE_WINDOW_DAYS window closed before as_of, and whether answered.

    Columns: member_pk, offer_code, sent_at (UTC Timestamp), responded (bool). A send counts
    as answered when an offer_redeemed with the same member and offer code follows within
    [sent_at, sent_at + RESPONSE_WINDOW_DAYS days] and no later send of that offer came before
    it (last touch): one redemption answers one send. Only events before as_of are read.
    """
    as_of = _as_utc(as_of)
    columns = ["member_pk", "offer_code", "sent_at", "responded"]
    if not len(events):
        return pd.DataFrame(columns=columns)
    t_ns = _event_times_ns(events)
    window_ns = RESPONSE_WINDOW_DAYS * DAY_NS
    kinds = events["kind"].to_numpy()
    sent_mask = (kinds == "offer_sent") & (t_ns + window_ns <= as_of.value)
    red_mask = (kinds == "offer_redeemed") & (t_ns < as_of.value)
    sent = pd.DataFrame({
        "member_pk": events["member_pk"].to_numpy()[sent_mask],
        "offer_code": events["offer_code"].to_numpy()[sent_mask].astype(str),
        "t": t_ns[sent_mask],
    })
    sent["row"] = np.arange(len(sent))
    red = pd.DataFrame({
        "member_pk": events["member_pk"].to_numpy()[red_mask],
        "offer_code": events["offer_code"].to_numpy()[red_mask].astype(str),
        "t_red": t_ns[red_mask],
    })
    red["redemption"] = np.arange(len(red))
    pairs = sent.merge(red, on=["member_pk", "offer_code"], how="inner")
    hit = pairs[(pairs["t_red"] >= pairs["t"]) & (pairs["t_red"] <= pairs["t"] + window_ns)]
    # Two sends of one offer less than a window apart would otherwise both count the same
    # redemption: a response nobody gave, and answers of one member that agree by construction
    # (a pair of one member's answers looked far more alike than members are).
    hit = hit.sort_values(["t", "row"]).drop_duplicates("redemption", keep="last")
    responded = np.zeros(len(sent), dtype=bool)
    responded[hit["row"].to_numpy()] = True
    return pd.DataFrame({
        "member_pk": sent["member_pk"].to_numpy(),
        "offer_code": sent["offer_code"].to_numpy(),
        "sent_at": pd.to_datetime(sent["t"].to_numpy(), utc=True),
        "responded": responded,
    })


def engagement_labels(members: pd.DataFrame, events: pd.DataFrame, as_of, horizon_days: int) -> pd.Series:
    """1 when the member made >= 1 purchase in [as_of, as_of + horizon_days), else 0.

    Indexed by member pk, in the order of ``members`` (loyalty.definitions: engaged).
    """
    counts = purchase_counts(members, events, as_of, horizon_days)
    return (counts >= 1).astype(int).rename("engaged")


def purchase_counts(members: pd.DataFrame, events: pd.DataFrame, as_of, horizon_days: int) -> pd.Series:
    """Number of purchases in [as_of, as_of + horizon_days) per member pk (engaged = count >= 1)."""
    start = _as_utc(as_of)
    end = start + pd.Timedelta(days=horizon_days)
    index = pd.Index(members["pk"].to_numpy(), name="member_pk")
    if not len(events):
        return pd.Series(np.zeros(len(index), dtype=int), index=index, name="purchases")
    t_ns = _event_times_ns(events)
    mask = (
        (events["kind"].to_numpy() == ENGAGEMENT_EVENT_KIND)
        & (t_ns >= start.value) & (t_ns < end.value)
    )
    pos = index.get_indexer(events["member_pk"].to_numpy()[mask])
    counts = np.bincount(pos[pos >= 0], minlength=len(index))
    return pd.Series(counts, index=index, name="purchases")


def frames_from_program(members: pd.DataFrame, events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Adapt simulator/CSV frames (keyed by member_id) to the pk-keyed frames used here.

    Members without a ``pk`` get 1..n in their order; ``birth_year`` is derived from
    ``birth_date`` when absent; events get ``member_pk`` through member_id.
    """
    members = members.copy()
    if "pk" not in members:
        members["pk"] = np.arange(1, len(members) + 1)
    if "birth_year" not in members:
        members["birth_year"] = pd.to_datetime(members["birth_date"], errors="coerce").dt.year
    pk_by_id = pd.Series(members["pk"].to_numpy(), index=members["member_id"].astype(str))
    events = events.copy()
    events["member_pk"] = events["member_id"].astype(str).map(pk_by_id)
    events = events[events["member_pk"].notna()]
    events["member_pk"] = events["member_pk"].astype("int64")
    if "score" in events:
        events["score"] = pd.to_numeric(events["score"], errors="coerce")
    events["offer_code"] = events["offer_code"].fillna("").astype(str)
    if "comment" in events:
        # Only feedback carries comments; the text becomes its score, as the loaders do.
        feedback = (events["kind"] == "feedback").to_numpy()
        events["sentiment"] = np.nan
        events.loc[feedback, "sentiment"] = comment_sentiments(events.loc[feedback, "comment"])
        events = events.drop(columns="comment")
    return members, events


def window_activity(members: pd.DataFrame, events: pd.DataFrame, start, days: int) -> pd.DataFrame:
    """App activity in [start, start + days) per member pk: ``sessions`` (count) and
    ``log_session_seconds`` (mean log duration, 0 without sessions).

    Label-side, like ``purchase_counts``: it reads the window AFTER a snapshot and is used
    only to judge predictions made at ``start`` in hindsight (training.EngagementInterval),
    never as a model input.
    """
    begin = _as_utc(start)
    end = begin + pd.Timedelta(days=days)
    index = pd.Index(members["pk"].to_numpy(), name="member_pk")
    n = len(index)
    if not len(events):
        return pd.DataFrame({"sessions": np.zeros(n), "log_session_seconds": np.zeros(n)}, index=index)
    t_ns = _event_times_ns(events)
    mask = (events["kind"].to_numpy() == "session") & (t_ns >= begin.value) & (t_ns < end.value)
    pos = index.get_indexer(events["member_pk"].to_numpy()[mask])
    log_dur = np.log(np.clip(events["duration_seconds"].to_numpy(dtype=float)[mask], 1.0, None))
    ok = pos >= 0
    sessions = np.bincount(pos[ok], minlength=n).astype(float)
    total = np.bincount(pos[ok], weights=log_dur[ok], minlength=n)
    mean = np.divide(total, sessions, out=np.zeros(n), where=sessions > 0)
    return pd.DataFrame({"sessions": sessions, "log_session_seconds": mean}, index=index)
