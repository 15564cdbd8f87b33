"""What-if analysis: one member edited feature by feature, or a whole segment changed at once.

``whatif_evaluate`` is THE what-if service: the page, the API and the bench call it. It scores
the member as they are, the edited member and the recourse candidates in ONE call of
``recommendations.scoring.score_features`` (the worker's function; no second copy) with the
model bundle cached per process (``model_store.bundle_load``).

Linked features (the choice documented on the page): an edit PROPAGATES so the vector stays
one that ``build_features`` could have produced.

* Count windows are nested: purchases in 30 days <= 90 <= 180 <= 365 (spend and sessions
  likewise). Extra purchases in a short window are recent, so they are added to every
  longer window; lowering a longer window lowers the shorter ones down to it.
* Spend follows purchases at the member's own average basket (unless spend is edited too),
  and session minutes follow sessions at the member's minutes per session.
* Days since the last purchase/visit moves into the window the counts imply (a purchase in
  the last 30 days means the last purchase was at most 30 days ago).
* Derived features (average basket, the two trends, the gap ratio) are recomputed and locked.
* The rates "at current engagement" follow the 30-day counts (unless edited themselves): a
  year's visits and purchases over the engagement-weighted days of the year, so extra ones add
  their number over those days (recovered from the visit rate; extra visits are taken to be
  of the member's current length).
* Age is protected and tenure is a fact of the past: both are locked.

Features changed by propagation are reported as ``adjusted``. Values are clipped to the
feasible range of ``FEATURE_SPEC``; the API refuses values outside it (400 naming the
field). The model's training range (``ModelVersion.feature_schema``) only warns.

Segment scenarios (``segment_scenario_start`` / ``segment_scenario_run``) apply one change to
every member of a segment (tier, region, risk band, recommended offer, as in the queue), or
change an offer's cost, and add up the predicted effect with the members' bounds added up
(not a 90% interval of the total: see the README's what-if section), chunk by chunk with
progress, in a Celery task.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from threadpoolctl import ThreadpoolController

from governance.audit import audit_log
from loyalty.models import Member, Tier
from recommendations.explain import describe_drivers
from recommendations.features import FEATURE_BY_NAME, TIER_RANK, build_features
from recommendations.model_store import bundle_load
from recommendations.models import ModelVersion, Recommendation, Scenario
from recommendations.queue import RISK_BANDS
from recommendations.rollout import member_offer_eligibility
from recommendations.scoring import ALTERNATIVE_FIELDS, ModelBundle, OfferTerms, score_features
from recommendations.selectors import member_frames_load, model_version_champion, offer_terms_list

# ---------------------------------------------------------------- feature rules

INTEGER_FEATURES = frozenset({
    "purchases_30d", "purchases_90d", "purchases_180d", "purchases_365d", "sessions_30d",
    "sessions_90d", "redemptions_90d", "feedback_count_365d", "offers_received_365d",
    "points_balance", "tier_rank",
})
DERIVED = {
    "avg_basket_365d": "derived: spend in a year / purchases in a year",
    "purchase_trend_30_60": "derived: purchases in 30 days against the 60 before",
    "spend_trend_90_90": "derived: follows spend in 90 days",
    "gap_ratio": "derived: days since purchase / usual gap",
}
IMMUTABLE = {"tenure_days": "a fact of the past: the join date cannot change"}
# Nested count windows, shortest first.
CHAINS = (
    ("purchases_30d", "purchases_90d", "purchases_180d", "purchases_365d"),
    ("spend_30d", "spend_90d", "spend_365d"),
    ("sessions_30d", "sessions_90d"),
)
# Rates at current engagement (features._current_form): the 30-day count each follows and its
# period in days (visits a week, purchases a month).
CURRENT_RATES = {"visits_per_week_now": ("sessions_30d", 7.0), "purchases_per_month_now": ("purchases_30d", 30.0)}
SPEND_FOR = {"spend_30d": "purchases_30d", "spend_90d": "purchases_90d", "spend_365d": "purchases_365d"}
RECENCY = (
    ("days_since_purchase", (("purchases_30d", 30), ("purchases_90d", 90), ("purchases_180d", 180),
                             ("purchases_365d", 365))),
    ("days_since_session", (("sessions_30d", 30), ("sessions_90d", 90))),
)
TIER_NAMES = {rank: name for name, rank in TIER_RANK.items()}
BASE_CACHE_SECONDS = 600
# Recourse: single-feature steps, as fractions of the training range, in both directions.
RECOURSE_STEPS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)
SEGMENT_CHUNK = 2_000
SEGMENT_OPS = ("scale", "add", "set")

# Tiny inputs: OpenMP threads only add contention (27 ms -> 0.8 ms for one row on a busy
# 2-core box), so the interactive path scores on one thread. The controller is built after
# the model is loaded: it only sees the thread pools of libraries loaded by then.
_THREADPOOLS: list[ThreadpoolController] = []


class WhatIfError(ValueError):
    """Invalid what-if input; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def lock_reason(name: str) -> str:
    """Why a feature cannot be edited, or "" when it can."""
    spec = FEATURE_BY_NAME.get(name)
    if spec is None:
        return "not described in the feature specification"
    if spec.protected:
        return "protected attribute: never changed to get a different offer"
    return DERIVED.get(name) or IMMUTABLE.get(name, "")


def training_ranges(model_version: ModelVersion) -> dict[str, tuple[float, float]]:
    return {
        f["name"]: (float(f["min"]), float(f["max"]))
        for f in (model_version.feature_schema or {}).get("features", [])
        if f.get("min") is not None and f.get("max") is not None
    }


def feature_controls(*, model_version: ModelVersion, base: Mapping[str, float]) -> list[dict]:
    """One control per model feature: slider range, step, lock reason, training range."""
    ranges = training_ranges(model_version)
    controls = []
    for name in bundle_for(model_version).feature_names:
        spec = FEATURE_BY_NAME.get(name)
        lo, hi = (spec.min, spec.max) if spec else (0.0, 1.0)
        t_lo, t_hi = ranges.get(name, (lo, hi))
        value = float(base[name])
        # The slider spans the training range with headroom, never past the feasible range.
        s_hi = min(hi, max(t_hi * 1.5, value, t_lo + 1))
        s_lo = max(lo, min(t_lo, value))
        integer = name in INTEGER_FEATURES
        step = 1.0 if integer else _nice_step((s_hi - s_lo) / 200)
        controls.append({
            "name": name,
            "label": name.replace("_", " "),
            "text": spec.text.format(value=value) if spec else name,
            "value": value,
            "min": s_lo, "max": s_hi, "step": step,
            "feasible_min": lo, "feasible_max": hi,
            "train_min": t_lo, "train_max": t_hi,
            "integer": integer,
            "actionable": bool(spec and spec.actionable),
            "locked": lock_reason(name),
            "is_tier": name == "tier_rank",
            "int_value": int(round(value)),
        })
    return controls


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 0.01
    exponent = math.floor(math.log10(raw))
    return float(10**exponent)


def _to_number(field: str, value: Any) -> float:
    if isinstance(value, bool) or value is None:
        raise WhatIfError(field, "must be a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError as exc:
            raise WhatIfError(field, "must be a number") from exc
    if not isinstance(value, int | float):
        raise WhatIfError(field, "must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise WhatIfError(field, "must be a finite number")
    return value


def _check_value(name: str, value: Any) -> float:
    number = _to_number(name, value)
    spec = FEATURE_BY_NAME[name]
    if name in INTEGER_FEATURES and number != round(number):
        raise WhatIfError(name, "must be a whole number")
    if not spec.min <= number <= spec.max:
        raise WhatIfError(name, f"must be between {spec.min:g} and {spec.max:g}")
    return number


def changes_validate(*, feature_names: list[str], changes: Any) -> dict[str, float]:
    """The requested edits as numbers; WhatIfError naming the field for anything invalid."""
    if changes is None:
        return {}
    if not isinstance(changes, Mapping):
        raise WhatIfError("changes", "must be an object of feature name to value")
    out = {}
    for name, value in changes.items():
        if name not in feature_names:
            raise WhatIfError(str(name), "unknown feature")
        reason = lock_reason(name)
        if reason:
            raise WhatIfError(name, f"is locked ({reason})")
        out[name] = _check_value(name, value)
    return out


def base_validate(*, feature_names: list[str], features: Any) -> dict[str, float]:
    """A complete feature vector (API callers may describe a hypothetical member)."""
    if not isinstance(features, Mapping):
        raise WhatIfError("features", "must be an object of feature name to value")
    unknown = sorted(set(features) - set(feature_names))
    if unknown:
        raise WhatIfError(str(unknown[0]), "unknown feature")
    missing = [name for name in feature_names if name not in features]
    if missing:
        raise WhatIfError(missing[0], "is missing: give every feature of the model")
    return {name: _check_value(name, features[name]) for name in feature_names}


def features_propagate(base: pd.DataFrame, targets: Mapping[str, Any]) -> pd.DataFrame:
    """``base`` with ``targets`` (name -> value or per-row values) applied, kept consistent.

    Vectorized over rows: the single-member page, recourse candidates and segment scenarios
    all go through here. The rules are in the module docstring. Works on plain arrays (a
    pandas column assignment costs more than the arithmetic at this size).
    """
    n = len(base)
    matrix = base.to_numpy(dtype=float)
    b = {name: matrix[:, j] for j, name in enumerate(base.columns)}
    out = dict(b)
    changed = {name for name in targets if name in out}
    for name in changed:
        out[name] = np.broadcast_to(np.asarray(targets[name], dtype=float), n).copy()

    def has(*names: str) -> bool:
        return all(name in out for name in names)

    # An edited "days since" empties the windows shorter than it and fills the longer ones.
    for days_name, windows in RECENCY:
        if days_name not in targets or any(w in targets for w, _ in windows) or days_name not in out:
            continue
        days = out[days_name]
        for window, length in windows:
            if window in out:
                out[window] = np.where(days > length, 0.0, np.maximum(out[window], 1.0))
                changed.add(window)
    # Purchases first: longer windows carry the change of the nearest edited shorter one.
    _chain(out, b, CHAINS[0], changed)
    # Spend follows purchases at the member's own average basket.
    if has("spend_365d", "purchases_365d"):
        p365 = b["purchases_365d"]
        basket = np.divide(b["spend_365d"], p365, out=np.zeros(n), where=p365 > 0)
        for spend, purchases in SPEND_FOR.items():
            if has(spend, purchases) and spend not in changed:
                moved = out[purchases] - b[purchases]
                if np.any(moved != 0):
                    out[spend] = np.maximum(b[spend] + moved * basket, 0.0)
                    changed.add(spend)
    _chain(out, b, CHAINS[1], changed)
    for spend, purchases in SPEND_FOR.items():
        if has(spend, purchases):
            out[spend] = np.where(out[purchases] <= 0, 0.0, out[spend])
    _chain(out, b, CHAINS[2], changed)
    # Session minutes follow sessions at the member's minutes per session.
    if has("sessions_90d", "session_minutes_90d"):
        if "session_minutes_90d" not in changed:
            s_base = b["sessions_90d"]
            per = np.divide(b["session_minutes_90d"], s_base, out=np.zeros(n), where=s_base > 0)
            out["session_minutes_90d"] = np.where(
                out["sessions_90d"] != s_base, out["sessions_90d"] * per, b["session_minutes_90d"]
            )
        out["session_minutes_90d"] = np.where(out["sessions_90d"] <= 0, 0.0, out["session_minutes_90d"])

    # "Days since" lands in the window the counts imply (unless it was the edit itself).
    for days_name, windows in RECENCY:
        names = [days_name, *(w for w, _ in windows)]
        if days_name in targets or not has(*names) or not (changed & set(names)):
            continue
        lower = np.zeros(n)
        upper = np.full(n, FEATURE_BY_NAME[days_name].max)
        settled = np.zeros(n, dtype=bool)
        previous = 0.0
        for window, length in windows:
            hit = ~settled & (out[window] > 0)
            lower = np.where(hit, previous, lower)
            upper = np.where(hit, float(length), upper)
            settled |= hit
            previous = float(length)
        # Nothing in the longest window: the last one was longer ago than that.
        lower = np.where(settled, lower, previous)
        days = out[days_name]
        days = np.where(days <= lower, np.minimum(lower + 1, upper), days)
        out[days_name] = np.minimum(days, upper)

    # Derived features: recomputed where an input moved, so an untouched row stays exact.
    if has("avg_basket_365d", "spend_365d", "purchases_365d"):
        moved = (out["spend_365d"] != b["spend_365d"]) | (out["purchases_365d"] != b["purchases_365d"])
        p = out["purchases_365d"]
        fresh = np.divide(out["spend_365d"], p, out=np.zeros(n), where=p > 0)
        out["avg_basket_365d"] = np.where(moved, fresh, b["avg_basket_365d"])
    if has("purchase_trend_30_60", "purchases_30d", "purchases_90d"):
        def trend(f: dict) -> np.ndarray:
            return f["purchases_30d"] - (f["purchases_90d"] - f["purchases_30d"]) / 2.0

        out["purchase_trend_30_60"] = b["purchase_trend_30_60"] + trend(out) - trend(b)
    if has("spend_trend_90_90", "spend_90d"):
        out["spend_trend_90_90"] = b["spend_trend_90_90"] + out["spend_90d"] - b["spend_90d"]
    if has("gap_ratio", "days_since_purchase", "mean_gap_days"):
        moved = (out["days_since_purchase"] != b["days_since_purchase"]) | (
            out["mean_gap_days"] != b["mean_gap_days"]
        )
        fresh = np.clip(out["days_since_purchase"] / np.maximum(out["mean_gap_days"], 1.0), 0.0, 50.0)
        out["gap_ratio"] = np.where(moved, fresh, b["gap_ratio"])

    if has("visits_per_week_now", "sessions_365d", "tenure_days"):
        # Engagement-weighted days the base rates were taken over (features._current_form).
        visits, rate = b["sessions_365d"], b["visits_per_week_now"]
        days = np.where(
            (visits > 0) & (rate > 0), 7.0 * visits / np.where(rate > 0, rate, 1.0),
            np.clip(np.minimum(b["tenure_days"], 365.0), 7.0, None),
        )
        for rate_name, (count, period) in CURRENT_RATES.items():
            if has(rate_name, count) and rate_name not in targets:
                out[rate_name] = b[rate_name] + (out[count] - b[count]) * period / days

    for name, values in out.items():
        spec = FEATURE_BY_NAME.get(name)
        if spec is not None:
            values = np.clip(values, spec.min, spec.max)
            out[name] = np.round(values) if name in INTEGER_FEATURES else values
    return pd.DataFrame(
        np.column_stack([out[name] for name in base.columns]) if n else matrix,
        index=base.index, columns=base.columns,
    )


def _chain(out: dict, base: dict, chain: tuple[str, ...], changed: set[str]) -> None:
    names = [name for name in chain if name in out]
    if not names or not (changed & set(names)):
        return
    carry = np.zeros(len(out[names[0]]))
    for name in names:
        if name in changed:
            carry = out[name] - base[name]
        elif np.any(carry != 0):
            out[name] = np.maximum(base[name] + carry, 0.0)
            changed.add(name)
    # A lowered longer window pulls the shorter ones down to it.
    for shorter, longer in zip(reversed(names[:-1]), reversed(names[1:]), strict=True):
        lowered = np.minimum(out[shorter], out[longer])
        if np.any(lowered != out[shorter]):
            changed.add(shorter)
        out[shorter] = lowered


# ---------------------------------------------------------------- model and member


def model_feature_names(model_version: ModelVersion) -> list[str]:
    """The model's features as recorded with it (no artifact load): enough to validate input."""
    names = [f["name"] for f in (model_version.feature_schema or {}).get("features", [])]
    return names or list(bundle_for(model_version).feature_names)


def bundle_for(model_version: ModelVersion) -> ModelBundle:
    return bundle_load(model_version.pk, model_version.artifact_path, model_version.sha256)


def model_version_for_whatif(model_version_id: int | None = None) -> ModelVersion:
    """The requested model version, or the champion; WhatIfError when there is none."""
    if model_version_id is not None:
        version = ModelVersion.objects.filter(pk=model_version_id).first()
        if version is None:
            raise WhatIfError("model_version", f"model version {model_version_id} does not exist")
        return version
    champion = model_version_champion()
    if champion is None:
        raise WhatIfError("model_version", "no champion model: train one first")
    return champion


def member_for_whatif(*, member_id: str) -> Member:
    """A member who may be profiled: consented and not erased; WhatIfError otherwise."""
    member = Member.objects.filter(member_id=member_id).only(
        "pk", "member_id", "pseudo_id", "tier", "region", "points_balance", "consent_profiling",
        "erased_at", "joined_at",
    ).first()
    if member is None:
        raise WhatIfError("member_id", f"no member {member_id!r}")
    if member.erased_at is not None or not member.consent_profiling:
        raise WhatIfError("member_id", "this member has not consented to profiling: no what-if")
    return member


def member_as_of(*, member: Member, model_version: ModelVersion) -> date:
    """The date of the member's latest recommendation, else the model's own as-of date."""
    latest = (
        Recommendation.objects.filter(member_id=member.pk).order_by("-as_of", "-id")
        .values_list("as_of", flat=True).first()
    )
    return latest or model_version.as_of


def member_base_features(*, member: Member, model_version: ModelVersion, as_of: date) -> dict[str, float]:
    """The member's features as of ``as_of`` (build_features, the worker's code), cached."""
    key = f"whatif:base:{model_version.pk}:{member.pk}:{as_of.isoformat()}"
    cached = cache.get(key)
    if cached is not None:
        return cached
    members, events = member_frames_load(as_of=as_of, pk_from=member.pk, pk_to=member.pk)
    if not len(members):
        raise WhatIfError("member_id", "this member has not consented to profiling: no what-if")
    frame = build_features(members, events, pd.Timestamp(as_of, tz="UTC"))
    names = bundle_for(model_version).feature_names
    base = {name: float(frame.iloc[0][name]) for name in names}
    cache.set(key, base, BASE_CACHE_SECONDS)
    return base


# ---------------------------------------------------------------- evaluate


def _score(
    bundle: ModelBundle, frame: pd.DataFrame, offers: list[OfferTerms], eligible: np.ndarray | None = None,
    *, explain: bool | int = False,
):
    """score_features on one thread; ``eligible`` (n_offers,) bool: the member's offer flags;
    ``explain``: the rows that get SHAP values (score_features), none unless asked."""
    if not _THREADPOOLS:
        _THREADPOOLS.append(ThreadpoolController())
    rows = None if eligible is None else np.broadcast_to(eligible, (len(frame), len(offers)))
    with _THREADPOOLS[0].limit(limits=1):
        return score_features(bundle, frame, offers, eligible=rows, explain=explain)


def _row_summary(batch, i: int, *, names: list[str], values: np.ndarray, offers: list[OfferTerms]) -> dict:
    pick = int(batch.offer_index[i])
    alternatives = [
        {"code": o.code, "kind": o.kind, "cost": o.cost, "value": o.value, "source": batch.offer_sources[j],
         **{f: float(batch.alternatives[i, j, k]) for k, f in enumerate(ALTERNATIVE_FIELDS)}}
        for j, o in enumerate(offers)
    ]
    shap = np.asarray(batch.shap_values[i], dtype=float)
    return {
        "probability": float(batch.probability[i]),
        "p_low": float(batch.p_low[i]),
        "p_high": float(batch.p_high[i]),
        "offer": offers[pick].code if pick >= 0 else None,
        "expected_value": float(batch.expected_value[i]),
        "ev_low": float(batch.ev_low[i]),
        "ev_high": float(batch.ev_high[i]),
        "alternatives": alternatives,
        "shap": [float(v) for v in shap],
        "shap_base": float(batch.shap_base),
        "drivers": describe_drivers(names, values, shap, top=3),
    }


def whatif_evaluate(
    *,
    model_version: ModelVersion,
    base_features: Mapping[str, Any],
    changes: Mapping[str, Any] | None,
    offers: list[OfferTerms] | None = None,
    recourse: bool = True,
    eligible: np.ndarray | None = None,
) -> dict:
    """Score ``base_features`` as they are and with ``changes``, side by side.

    ``eligible`` (one bool per offer): the offers this member may be recommended (an offer
    behind a flag only for the flag's members, as in scoring); None: every offer.

    Returns the engagement probability with its 90% interval, every offer's expected value
    with its range for members like this, the recommended offer and SHAP values for both, the edited vector
    (with what propagation adjusted), warnings for values outside the training range and,
    with ``recourse``, the smallest single actionable change that flips the recommendation.
    Raises WhatIfError naming the field on invalid input.
    """
    started = time.perf_counter()
    bundle = bundle_for(model_version)
    names = list(bundle.feature_names)
    base = base_validate(feature_names=names, features=base_features)
    targets = changes_validate(feature_names=names, changes=changes)
    offers = offer_terms_list() if offers is None else offers
    base_frame = pd.DataFrame([base], columns=names, index=pd.Index([0], name="member_pk"))
    edited_frame = features_propagate(base_frame, targets)
    ranges = training_ranges(model_version)

    frames = [base_frame, edited_frame]
    candidates: list[dict] = []
    if recourse:
        block, candidates = _recourse_candidates(edited_frame, names=names, ranges=ranges)
        if len(block):
            frames.append(block)
    frame = pd.concat(frames)
    frame.index = pd.RangeIndex(len(frame), name="member_pk")
    # SHAP for the base and the edited member only: the recourse rows are compared by offer.
    batch = _score(bundle, frame, offers, eligible, explain=2)

    edited = edited_frame.iloc[0].to_numpy(dtype=float)
    base_values = base_frame.iloc[0].to_numpy(dtype=float)
    before = _row_summary(batch, 0, names=names, values=base_values, offers=offers)
    after = _row_summary(batch, 1, names=names, values=edited, offers=offers)
    features = []
    warnings = []
    for j, name in enumerate(names):
        value = float(edited[j])
        t_lo, t_hi = ranges.get(name, (-math.inf, math.inf))
        outside = not (t_lo <= value <= t_hi)
        features.append({
            "name": name,
            "base": float(base_values[j]),
            "value": value,
            "changed": name in targets,
            "adjusted": name not in targets and value != float(base_values[j]),
            "locked": lock_reason(name),
            "outside_training_range": outside,
        })
        if outside:
            warnings.append({
                "feature": name, "value": value, "train_min": t_lo, "train_max": t_hi,
                "text": f"{name.replace('_', ' ')} = {value:g} is outside the range the model was "
                        f"trained on ({t_lo:g} to {t_hi:g}): treat this prediction with care",
            })
    result = {
        "model_version": model_version.pk,
        "feature_names": names,
        "changes": targets,
        "features": features,
        "base": before,
        "scenario": after,
        "delta": {
            "probability": after["probability"] - before["probability"],
            "expected_value": after["expected_value"] - before["expected_value"],
        },
        "recommendation_changed": before["offer"] != after["offer"],
        "warnings": warnings,
        "recourse": _recourse_pick(batch, candidates, offset=2, current=after, offers=offers) if recourse else None,
    }
    result["server_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


def _recourse_candidates(
    edited: pd.DataFrame, *, names: list[str], ranges: dict[str, tuple[float, float]]
) -> tuple[pd.DataFrame, list[dict]]:
    """Single-feature moves of every actionable, unlocked feature, both directions."""
    blocks = []
    candidates: list[dict] = []
    for name in names:
        spec = FEATURE_BY_NAME.get(name)
        if spec is None or not spec.actionable or lock_reason(name):
            continue
        t_lo, t_hi = ranges.get(name, (spec.min, spec.max))
        span = max(t_hi - t_lo, 1.0)
        current = float(edited[name].iloc[0])
        values = set()
        for step in RECOURSE_STEPS:
            for sign in (-1, 1):
                value = current + sign * step * span
                if name in INTEGER_FEATURES:
                    value = float(round(value)) if round(value) != current else current + sign
                value = min(max(value, spec.min, min(t_lo, current)), spec.max, max(t_hi, current))
                if value != current:
                    values.add(value)
        if not values:
            continue
        ordered = sorted(values)
        repeated = pd.DataFrame(
            np.repeat(edited.to_numpy(dtype=float), len(ordered), axis=0), columns=edited.columns
        )
        block = features_propagate(repeated, {name: np.array(ordered)})
        blocks.append(block)
        candidates += [
            {"feature": name, "from": current, "to": v, "cost": abs(v - current) / span} for v in ordered
        ]
    if not blocks:
        return pd.DataFrame(columns=names), []
    return pd.concat(blocks), candidates


def _recourse_pick(batch, candidates: list[dict], *, offset: int, current: dict, offers) -> dict:
    """The cheapest candidate (change / training range) whose recommendation differs."""
    current_index = -1 if current["offer"] is None else [o.code for o in offers].index(current["offer"])
    best = None
    for i, cand in enumerate(candidates):
        pick = int(batch.offer_index[offset + i])
        if pick != current_index and (best is None or cand["cost"] < best[0]["cost"]):
            best = (cand, offset + i, pick)
    if best is None:
        return {
            "found": False, "searched": len(candidates),
            "text": "No single change to an actionable feature within the training range "
                    "changes the recommendation.",
        }
    cand, row, pick = best
    offer = offers[pick].code if pick >= 0 else None
    direction = "Raising" if cand["to"] > cand["from"] else "Lowering"
    label = cand["feature"].replace("_", " ")
    return {
        "found": True, "searched": len(candidates), **cand,
        "offer": offer,
        "probability": float(batch.probability[row]),
        "expected_value": float(batch.expected_value[row]),
        "text": f"{direction} {label} from {cand['from']:g} to {cand['to']:g} would change the "
                f"recommendation from {current['offer'] or 'no action'} to {offer or 'no action'}.",
    }


def member_whatif_evaluate(
    *, member: Member, model_version: ModelVersion, changes: Mapping[str, Any] | None,
    as_of: date | None = None, recourse: bool = True,
) -> dict:
    """whatif_evaluate for a stored member (base features built as the worker builds them)."""
    as_of = as_of or member_as_of(member=member, model_version=model_version)
    base = member_base_features(member=member, model_version=model_version, as_of=as_of)
    offers = offer_terms_list()
    result = whatif_evaluate(model_version=model_version, base_features=base, changes=changes, recourse=recourse,
                             offers=offers, eligible=member_offer_eligibility(member_pk=member.pk, offers=offers))
    result["member_id"] = member.member_id
    result["as_of"] = as_of.isoformat()
    return result


# ---------------------------------------------------------------- scenarios


def _result_summary(result: dict) -> dict:
    """What a saved member scenario keeps: numbers, no feature values of the member."""
    keep = ("probability", "p_low", "p_high", "offer", "expected_value", "ev_low", "ev_high")
    return {
        "base": {k: result["base"][k] for k in keep},
        "scenario": {k: result["scenario"][k] for k in keep},
        "delta": result["delta"],
        "recommendation_changed": result["recommendation_changed"],
        "warnings": [w["feature"] for w in result["warnings"]],
    }


def member_scenario_save(
    *, actor, name: str, member: Member, model_version: ModelVersion, changes: Mapping[str, Any],
    as_of: date | None = None,
) -> Scenario:
    """Save a named member scenario (inputs, model version, result) with an audit row."""
    name = (name or "").strip()[:120]
    if not name:
        raise WhatIfError("name", "give the scenario a name")
    as_of = as_of or member_as_of(member=member, model_version=model_version)
    result = member_whatif_evaluate(member=member, model_version=model_version, changes=changes, as_of=as_of,
                                    recourse=False)
    with transaction.atomic():
        scenario = Scenario.objects.create(
            name=name, kind=Scenario.Kind.MEMBER, created_by=actor, model_version=model_version,
            member=member, as_of=as_of, inputs={"changes": result["changes"]},
            result=_result_summary(result), status=Scenario.Status.SUCCEEDED, progress=1.0,
            members_total=1, members_done=1, finished_at=timezone.now(),
        )
        _audit_save(actor=actor, scenario=scenario, member=member)
    return scenario


def _audit_save(*, actor, scenario: Scenario, member: Member | None) -> None:
    audit_log(
        actor=actor, action="whatif.save", object_type="scenario", object_id=scenario.pk,
        member_pseudo_id=member.pseudo_id if member is not None else None,
        new={"name": scenario.name, "kind": scenario.kind, "model_version": scenario.model_version_id,
             "as_of": scenario.as_of.isoformat(), "inputs": scenario.inputs},
    )


@dataclass(frozen=True)
class SegmentSpec:
    """Who is in the segment and what changes for them."""

    tier: str = ""
    region: str = ""
    risk: str = ""
    offer: str = ""  # the recommended offer before the change; "none" = no action
    feature: str = ""
    op: str = "scale"
    amount: float = 1.0
    offer_costs: tuple[tuple[str, float], ...] = ()

    def as_inputs(self) -> dict:
        return {
            "filters": {k: getattr(self, k) for k in ("tier", "region", "risk", "offer") if getattr(self, k)},
            "change": {"feature": self.feature, "op": self.op, "amount": self.amount} if self.feature else None,
            "offer_costs": dict(self.offer_costs),
        }


def segment_spec_validate(data: Mapping[str, Any], *, feature_names: list[str]) -> SegmentSpec:
    """Parse a segment request (form or JSON); WhatIfError naming the field."""
    def text(name: str) -> str:
        value = data.get(name) or ""
        if not isinstance(value, str):
            raise WhatIfError(name, "must be a string")
        return value.strip()

    tier, region, risk, offer = text("tier"), text("region")[:32], text("risk"), text("offer")[:32]
    if tier and tier not in Tier.values:
        raise WhatIfError("tier", f"must be one of {', '.join(Tier.values)}")
    if risk and risk not in RISK_BANDS:
        raise WhatIfError("risk", f"must be one of {', '.join(RISK_BANDS)}")
    codes = [o.code for o in offer_terms_list()]
    if offer and offer != "none" and offer not in codes:
        raise WhatIfError("offer", "unknown or inactive offer")
    feature, op = text("feature"), text("op") or "scale"
    amount = 1.0
    if feature:
        if feature not in feature_names:
            raise WhatIfError("feature", "unknown feature")
        if lock_reason(feature):
            raise WhatIfError("feature", f"is locked ({lock_reason(feature)})")
        if op not in SEGMENT_OPS:
            raise WhatIfError("op", f"must be one of {', '.join(SEGMENT_OPS)}")
        amount = _to_number("amount", data.get("amount"))
        if op == "scale" and not 0 <= amount <= 10:
            raise WhatIfError("amount", "a scale factor must be between 0 and 10")
        if op == "set":
            _check_value(feature, amount)
    costs_in = data.get("offer_costs") or {}
    if not isinstance(costs_in, Mapping):
        raise WhatIfError("offer_costs", "must be an object of offer code to cost")
    costs = []
    for code, cost in costs_in.items():
        if code not in codes:
            raise WhatIfError("offer_costs", f"unknown or inactive offer {code!r}")
        value = _to_number(f"offer_costs.{code}", cost)
        if value < 0:
            raise WhatIfError(f"offer_costs.{code}", "a cost cannot be negative")
        costs.append((code, value))
    if not feature and not costs:
        raise WhatIfError("feature", "choose a feature change or an offer cost change")
    return SegmentSpec(tier=tier, region=region, risk=risk, offer=offer, feature=feature, op=op,
                       amount=amount, offer_costs=tuple(sorted(costs)))


def segment_scenario_start(
    *, actor, name: str, spec: SegmentSpec, model_version: ModelVersion, as_of: date | None = None
) -> Scenario:
    """Record the scenario (audited) and enqueue its run after commit."""
    from recommendations.whatif_tasks import run_segment_scenario

    name = (name or "").strip()[:120] or _segment_name(spec)
    as_of = as_of or _segment_as_of(model_version)
    with transaction.atomic():
        scenario = Scenario.objects.create(
            name=name, kind=Scenario.Kind.SEGMENT, created_by=actor, model_version=model_version,
            as_of=as_of, inputs=spec.as_inputs(), status=Scenario.Status.PENDING,
        )
        _audit_save(actor=actor, scenario=scenario, member=None)
        run_segment_scenario.delay_on_commit(scenario.pk)
    return scenario


def _segment_name(spec: SegmentSpec) -> str:
    who = " ".join(v for v in (spec.tier, spec.region, spec.risk and f"{spec.risk} risk",
                               spec.offer and f"offer {spec.offer}") if v) or "everyone"
    what = []
    if spec.feature:
        sign = {"scale": "x", "add": "+", "set": "="}[spec.op]
        what.append(f"{spec.feature} {sign}{spec.amount:g}")
    what += [f"{code} cost {cost:g}" for code, cost in spec.offer_costs]
    return f"{who}: {', '.join(what)}"[:120]


def _segment_as_of(model_version: ModelVersion) -> date:
    latest = Recommendation.objects.order_by("-as_of").values_list("as_of", flat=True).first()
    return latest or model_version.as_of


def _segment_chunks(spec: SegmentSpec) -> list[tuple[int, int, int]]:
    qs = Member.objects.filter(consent_profiling=True, erased_at__isnull=True)
    if spec.tier:
        qs = qs.filter(tier=spec.tier)
    if spec.region:
        qs = qs.filter(region=spec.region)
    pks = list(qs.order_by("pk").values_list("pk", flat=True))
    return [
        (pks[i], pks[min(i + SEGMENT_CHUNK, len(pks)) - 1], min(SEGMENT_CHUNK, len(pks) - i))
        for i in range(0, len(pks), SEGMENT_CHUNK)
    ]


def _segment_targets(spec: SegmentSpec, base: pd.DataFrame) -> dict[str, np.ndarray]:
    if not spec.feature:
        return {}
    values = base[spec.feature].to_numpy(dtype=float)
    new = {"scale": values * spec.amount, "add": values + spec.amount}.get(spec.op)
    if new is None:
        new = np.full(len(values), spec.amount)
    return {spec.feature: new}


def _totals(batch, rows: np.ndarray, offers: list[OfferTerms]) -> dict:
    """Sums over members of one side: engagement, EV with bounds, cost and offer mix."""
    pick = batch.offer_index[rows]
    cost = np.array([o.cost for o in offers] + [0.0])[pick]
    mix = {o.code: int((pick == j).sum()) for j, o in enumerate(offers)}
    mix["none"] = int((pick < 0).sum())
    return {
        "engaged": float(batch.probability[rows].sum()),
        "engaged_low": float(batch.p_low[rows].sum()),
        "engaged_high": float(batch.p_high[rows].sum()),
        "ev": float(batch.expected_value[rows].sum()),
        "ev_low": float(batch.ev_low[rows].sum()),
        "ev_high": float(batch.ev_high[rows].sum()),
        "cost": float(cost.sum()),
        "mix": mix,
    }


def _add(total: dict, part: dict) -> dict:
    out = dict(total)
    for key, value in part.items():
        if key == "mix":
            out["mix"] = {c: total.get("mix", {}).get(c, 0) + n for c, n in value.items()}
        else:
            out[key] = total.get(key, 0.0) + value
    return out


def segment_scenario_run(*, scenario_id: int) -> Scenario:
    """Run a segment scenario chunk by chunk, recording progress; idempotent on re-delivery.

    Per member, the base and the changed vector are scored by score_features; the engagement
    and EV intervals of the segment are the per-member bounds added up, paired (the same
    calibration bound before and after the change), so they assume the errors move together:
    conservative for totals.
    """
    claimed = Scenario.objects.filter(
        pk=scenario_id, kind=Scenario.Kind.SEGMENT,
        status__in=[Scenario.Status.PENDING, Scenario.Status.RUNNING],
    ).update(status=Scenario.Status.RUNNING, started_at=timezone.now(), members_done=0, progress=0.0)
    scenario = Scenario.objects.select_related("model_version").get(pk=scenario_id)
    if not claimed:
        return scenario
    try:
        _segment_compute(scenario)
    except Exception as exc:
        Scenario.objects.filter(pk=scenario_id).update(
            status=Scenario.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000], finished_at=timezone.now()
        )
        raise
    scenario.refresh_from_db()
    return scenario


def _segment_compute(scenario: Scenario) -> None:
    version = scenario.model_version
    bundle = bundle_for(version)
    names = list(bundle.feature_names)
    inputs = scenario.inputs
    change = inputs.get("change") or {}
    spec = SegmentSpec(
        **inputs.get("filters", {}),
        feature=change.get("feature", ""), op=change.get("op", "scale"), amount=float(change.get("amount", 1.0)),
        offer_costs=tuple((inputs.get("offer_costs") or {}).items()),
    )
    offers = offer_terms_list()
    costs = dict(spec.offer_costs)
    changed_offers = [
        OfferTerms(code=o.code, kind=o.kind, cost=costs.get(o.code, o.cost), value=o.value, high_stakes=o.high_stakes)
        for o in offers
    ]
    chunks = _segment_chunks(spec)
    total_members = sum(n for _, _, n in chunks)
    Scenario.objects.filter(pk=scenario.pk).update(members_total=total_members)
    before: dict = {}
    after: dict = {}
    deltas: list[np.ndarray] = []
    ranges = training_ranges(version)
    outside = 0
    done = 0
    as_of = pd.Timestamp(scenario.as_of, tz="UTC")
    in_segment = 0
    for pk_from, pk_to, n in chunks:
        members, events = member_frames_load(as_of=scenario.as_of, pk_from=pk_from, pk_to=pk_to)
        if spec.tier:
            members = members[members["tier"] == spec.tier]
        if spec.region:
            members = members[members["region"] == spec.region]
        if len(members):
            base = build_features(members, events, as_of)[names]
            edited = features_propagate(base, _segment_targets(spec, base))
            if costs:
                b = _score(bundle, base, offers)
                a = _score(bundle, edited, changed_offers)
                rows_b = rows_a = np.arange(len(base))
            else:
                both = pd.concat([base, edited])
                b = a = _score(bundle, both, offers)
                rows_b, rows_a = np.arange(len(base)), np.arange(len(base), 2 * len(base))
            keep = np.ones(len(base), dtype=bool)
            if spec.risk:
                low, high = RISK_BANDS[spec.risk]
                keep &= (b.probability[rows_b] > low) & (b.probability[rows_b] <= high)
            if spec.offer:
                pick = b.offer_index[rows_b]
                want = -1 if spec.offer == "none" else [o.code for o in offers].index(spec.offer)
                keep &= pick == want
            rows_b, rows_a = rows_b[keep], rows_a[keep]
            in_segment += int(keep.sum())
            before = _add(before, _totals(b, rows_b, offers))
            after = _add(after, _totals(a, rows_a, changed_offers))
            deltas.append(a.probability[rows_a] - b.probability[rows_b])
            if spec.feature in ranges:
                lo, hi = ranges[spec.feature]
                values = edited[spec.feature].to_numpy(dtype=float)[keep]
                outside += int(((values < lo) | (values > hi)).sum())
        done += n
        Scenario.objects.filter(pk=scenario.pk).update(
            members_done=done, progress=done / max(total_members, 1)
        )
    delta = np.concatenate(deltas) if deltas else np.zeros(0)
    result = {
        "members": in_segment,
        "before": before, "after": after,
        "change": {
            key: after.get(key, 0.0) - before.get(key, 0.0)
            for key in ("engaged", "engaged_low", "engaged_high", "ev", "ev_low", "ev_high", "cost")
        },
        "delta_histogram": _histogram(delta),
        "outside_training_range": outside,
        "offer_codes": [o.code for o in offers],
    }
    Scenario.objects.filter(pk=scenario.pk).update(
        status=Scenario.Status.SUCCEEDED, result=result, progress=1.0, finished_at=timezone.now()
    )


def _histogram(delta: np.ndarray, bins: int = 20) -> dict:
    if not len(delta):
        return {"edges": [], "counts": []}
    lo, hi = float(delta.min()), float(delta.max())
    if lo == hi:
        lo, hi = lo - 0.005, hi + 0.005
    counts, edges = np.histogram(delta, bins=bins, range=(lo, hi))
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def scenario_get(*, scenario_id: int) -> Scenario:
    return Scenario.objects.select_related("model_version", "member", "created_by").get(pk=scenario_id)


def scenarios_list(*, ids: list[int] | None = None, limit: int = 50) -> list[Scenario]:
    qs = Scenario.objects.select_related("model_version", "member", "created_by").order_by("-id")
    if ids is not None:
        qs = qs.filter(pk__in=ids)
    return list(qs[:limit])


def tier_name(rank: float) -> str:
    return TIER_NAMES.get(int(round(rank)), str(rank))


def whatif_latency(*, model_version: ModelVersion, samples: int = 40, seed: int = 0) -> dict:
    """Server time of whatif_evaluate (with recourse) on random edits of random members.

    The members' base features are built (and cached) first, as the page does on load; the
    timings are the recomputes a slider move triggers. Returns p50/p95 in milliseconds.
    """
    rng = np.random.default_rng(seed)
    pks = list(
        Member.objects.filter(consent_profiling=True, erased_at__isnull=True).order_by("pk")
        .values_list("pk", flat=True)[:2000]
    )
    members = Member.objects.filter(pk__in=[int(p) for p in rng.choice(pks, size=min(8, len(pks)), replace=False)])
    bases = [
        member_base_features(member=m, model_version=model_version, as_of=member_as_of(member=m, model_version=model_version))
        for m in members
    ]
    editable = [
        name for name in bundle_for(model_version).feature_names
        if not lock_reason(name) and FEATURE_BY_NAME[name].actionable
    ]
    offers = offer_terms_list()
    timings = []
    for i in range(samples + 1):
        base = bases[i % len(bases)]
        name = editable[int(rng.integers(len(editable)))]
        spec = FEATURE_BY_NAME[name]
        value = float(np.clip(base[name] * rng.uniform(0.5, 1.5) + rng.integers(0, 3), spec.min, spec.max))
        value = float(round(value)) if name in INTEGER_FEATURES else value
        start = time.perf_counter()
        whatif_evaluate(model_version=model_version, base_features=base, changes={name: value}, offers=offers)
        timings.append((time.perf_counter() - start) * 1000)
    timings = timings[1:]  # the first call builds the SHAP explainer
    return {
        "whatif_p50_ms": round(float(np.percentile(timings, 50)), 1),
        "whatif_p95_ms": round(float(np.percentile(timings, 95)), 1),
    }
