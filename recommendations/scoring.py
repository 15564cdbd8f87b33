"""The one scoring function (Celery worker, what-if page, API) and the model bundle. No Django.

``score_features(bundle, features, offers)`` turns a feature frame (recommendations.features)
into a ``ScoredBatch``: engagement probability with its 90% interval, SHAP values of the
engagement model, and for every offer the response probability, its interval and the
expected value ``EV = p_response * value - cost`` with ``[ev_low, ev_high]`` taken from the
response interval (EV is monotone in p_response). The next best offer is the argmax of EV
over the offers passed in; no action (-1) when no EV is > 0.

Offers whose code the response model never saw in training are scored by the default policy
(``default_offer_policy``) and ``ScoredBatch.offer_sources`` says so per offer. A bundle
trained without any offer exposures has no response model: every offer is scored by the
default policy and ``ScoredBatch.offer_policy == "default_policy"``.

What the intervals cover is documented in recommendations.training: ``EngagementInterval``
(engagement probability, split-conformal 90%) and ``IntervalCalibrator`` (response probability
and EV: Venn-ABERS calibration range, no per-member coverage claim).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

ALTERNATIVE_FIELDS = ("p_response", "p_low", "p_high", "ev", "ev_low", "ev_high")

# Editable by admins later (stored with each ModelVersion in params["default_policy"]).
DEFAULT_POLICY_PARAMS: dict[str, Any] = {
    # Prior response rate per offer kind for a member of middling churn risk and value.
    "base_response": {
        "bonus_points": 0.12, "discount": 0.15, "tier_upgrade": 0.10,
        "retention_call": 0.20, "no_action": 0.0,
    },
    # How strongly churn risk (1 - engagement probability) moves the rate, per kind:
    # retention offers work on members at risk, rewards on members already engaged.
    "churn_weight": {
        "bonus_points": -0.4, "discount": 0.4, "tier_upgrade": -0.6, "retention_call": 0.9,
    },
    # Members who spend more respond a little more; tanh keeps the effect bounded.
    "value_feature": "spend_365d",
    "value_reference": 500.0,
    "value_weight": 0.3,
    # The rule is a prior, not a measurement: its interval is +-50% of the rate.
    "relative_uncertainty": 0.5,
}


@dataclass(frozen=True)
class OfferTerms:
    code: str
    kind: str
    cost: float
    value: float
    high_stakes: bool = False


@dataclass(eq=False)
class ModelBundle:
    feature_names: list[str]
    engagement_model: Any
    engagement_interval: Any  # training.EngagementInterval
    response_model: Any | None = None
    response_interval: Any | None = None
    offer_codes: list[str] = field(default_factory=list)  # codes seen in training exposures
    offer_kinds: list[str] = field(default_factory=list)  # kinds one-hot encoded for the model
    default_policy_params: dict = field(default_factory=lambda: dict(DEFAULT_POLICY_PARAMS))
    algorithm: str = "hgb"
    metadata: dict = field(default_factory=dict)

    @property
    def offer_policy(self) -> str:
        return "learned" if self.response_model is not None else "default_policy"


@dataclass
class ScoredBatch:
    member_pks: np.ndarray  # (n,) in the order of the feature frame
    probability: np.ndarray  # (n,) engagement within the horizon; churn risk = 1 - probability
    p_low: np.ndarray
    p_high: np.ndarray
    shap_values: np.ndarray  # (n, n_features) float32, engagement log-odds
    shap_base: float
    offer_index: np.ndarray  # (n,) int, index into offers, -1 = no action
    expected_value: np.ndarray  # (n,) EV of the chosen offer, 0 for no action
    ev_low: np.ndarray
    ev_high: np.ndarray
    alternatives: np.ndarray  # (n, n_offers, 6), fields ALTERNATIVE_FIELDS
    offer_codes: list[str]
    offer_sources: list[str]  # per offer: "learned" | "default_policy"
    offer_policy: str  # "learned" when any offer was scored by the response model

    def __len__(self) -> int:
        return len(self.probability)


def engagement_margin(model: Any, X: np.ndarray) -> np.ndarray:
    """The engagement model's raw output: log-odds for HGB, P(engaged) for a RandomForest.

    SHAP explains exactly this quantity (recommendations.explain).
    """
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(X), dtype=float)
    return model.predict_proba(X)[:, 1].astype(float)


def engagement_raw_probability(model: Any, X: np.ndarray) -> np.ndarray:
    return model.predict_proba(X)[:, 1].astype(float)


def response_design(
    features: np.ndarray, offer_codes: list[str], offer_kinds: list[str], offers: list[OfferTerms]
) -> np.ndarray:
    """Rows (member x offer, offer-major) for the response model: features + offer attributes.

    Offer attributes: one-hot code (codes seen in training), one-hot kind, cost, value.
    """
    n, f = features.shape
    k = len(offers)
    extra = len(offer_codes) + len(offer_kinds) + 2
    design = np.zeros((n * k, f + extra), dtype=float)
    for j, offer in enumerate(offers):
        rows = slice(j * n, (j + 1) * n)
        design[rows, :f] = features
        if offer.code in offer_codes:
            design[rows, f + offer_codes.index(offer.code)] = 1.0
        if offer.kind in offer_kinds:
            design[rows, f + len(offer_codes) + offer_kinds.index(offer.kind)] = 1.0
        design[rows, -2] = float(offer.cost)
        design[rows, -1] = float(offer.value)
    return design


def default_offer_policy(
    *, probability: np.ndarray, member_value: np.ndarray, offers: list[OfferTerms], params: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rule-based P(response) per member and offer, with a +-relative_uncertainty interval.

    rate = base_response[kind] * (1 + churn_weight[kind] * 2 * (churn - 0.5))
                               * (1 + value_weight * tanh(member_value / value_reference - 1))
    with churn = 1 - engagement probability. Returns (p, p_low, p_high), each (n, n_offers).
    """
    churn = 1.0 - np.asarray(probability, dtype=float)
    value_term = 1.0 + float(params["value_weight"]) * np.tanh(
        np.asarray(member_value, dtype=float) / float(params["value_reference"]) - 1.0
    )
    rel = float(params["relative_uncertainty"])
    p = np.zeros((len(churn), len(offers)))
    for j, offer in enumerate(offers):
        base = float(params["base_response"].get(offer.kind, 0.0))
        weight = float(params["churn_weight"].get(offer.kind, 0.0))
        p[:, j] = base * (1.0 + weight * 2.0 * (churn - 0.5)) * value_term
    p = np.clip(p, 0.0, 1.0)
    return p, np.clip(p * (1 - rel), 0.0, 1.0), np.clip(p * (1 + rel), 0.0, 1.0)


def score_features(
    bundle: ModelBundle,
    features: pd.DataFrame,
    offers: list[OfferTerms],
    *,
    eligible: np.ndarray | None = None,
    explain: bool | int = True,
) -> ScoredBatch:
    """Score every row of ``features`` (indexed by member pk) against ``offers``.

    ``eligible`` (n, n_offers) bool: offers a member may be recommended (an offer behind a
    feature flag is only for the flag's members); every offer is still scored and listed as an
    alternative. ``explain`` says which rows get SHAP values: True every row, False none, a
    number that many leading rows; the others get zeros. SHAP is most of a row's cost, so rows
    nobody is shown are not explained (what-if's recourse candidates, segment totals).
    """
    from recommendations.explain import shap_explain

    X = features[bundle.feature_names].to_numpy(dtype=float)
    n, k = len(X), len(offers)
    raw = engagement_raw_probability(bundle.engagement_model, X)
    probability, p_low, p_high = bundle.engagement_interval.predict(raw)
    # A bool (numpy's too) means all or none; only a true number is a count of rows.
    explained = (n if explain else 0) if isinstance(explain, (bool, np.bool_)) else min(int(explain), n)
    shap_values, shap_base = np.zeros((n, len(bundle.feature_names)), dtype=np.float32), 0.0
    if explained:
        shap_values[:explained], shap_base = shap_explain(bundle, X[:explained])

    resp = np.zeros((n, k))
    resp_low = np.zeros((n, k))
    resp_high = np.zeros((n, k))
    sources = []
    learned = [j for j, o in enumerate(offers) if bundle.response_model is not None and o.code in bundle.offer_codes]
    if learned:
        chosen = [offers[j] for j in learned]
        design = response_design(X, bundle.offer_codes, bundle.offer_kinds, chosen)
        raw_resp = bundle.response_model.predict_proba(design)[:, 1]
        pr, lo, hi = bundle.response_interval.predict(raw_resp)
        for i, j in enumerate(learned):
            rows = slice(i * n, (i + 1) * n)
            resp[:, j], resp_low[:, j], resp_high[:, j] = pr[rows], lo[rows], hi[rows]
    fallback = [j for j in range(k) if j not in learned]
    if fallback:
        params = bundle.default_policy_params
        value_name = params.get("value_feature", "spend_365d")
        member_value = features[value_name].to_numpy(float) if value_name in features else np.zeros(n)
        pr, lo, hi = default_offer_policy(
            probability=probability, member_value=member_value,
            offers=[offers[j] for j in fallback], params=params,
        )
        resp[:, fallback], resp_low[:, fallback], resp_high[:, fallback] = pr, lo, hi
    for j in range(k):
        sources.append("learned" if j in learned else "default_policy")

    value = np.array([float(o.value) for o in offers])
    cost = np.array([float(o.cost) for o in offers])
    ev = resp * value - cost
    ev_low = resp_low * value - cost
    ev_high = resp_high * value - cost
    alternatives = np.stack([resp, resp_low, resp_high, ev, ev_low, ev_high], axis=2) if k else np.zeros((n, 0, 6))
    if k:
        pick_from = ev if eligible is None else np.where(np.asarray(eligible, dtype=bool), ev, -np.inf)
        best = pick_from.argmax(axis=1)
        best_ev = pick_from[np.arange(n), best]
        offer_index = np.where(best_ev > 0, best, -1)
    else:
        offer_index = np.full(n, -1)
    act = offer_index >= 0
    pick = np.clip(offer_index, 0, None)
    rows = np.arange(n)
    chosen_ev = np.where(act, ev[rows, pick] if k else 0.0, 0.0)
    chosen_low = np.where(act, ev_low[rows, pick] if k else 0.0, 0.0)
    chosen_high = np.where(act, ev_high[rows, pick] if k else 0.0, 0.0)
    return ScoredBatch(
        member_pks=features.index.to_numpy(),
        probability=probability, p_low=p_low, p_high=p_high,
        shap_values=shap_values, shap_base=shap_base,
        offer_index=offer_index.astype(int),
        expected_value=chosen_ev, ev_low=chosen_low, ev_high=chosen_high,
        alternatives=alternatives,
        offer_codes=[o.code for o in offers], offer_sources=sources,
        offer_policy="learned" if learned else "default_policy",
    )


def bare_score_rate(bundle: ModelBundle, features: pd.DataFrame, offers: list[OfferTerms]) -> float:
    """Rows per second of score_features on in-memory data (single call, wall clock)."""
    start = time.perf_counter()
    score_features(bundle, features, offers)
    return len(features) / max(time.perf_counter() - start, 1e-9)


# ---- policy evaluation (offline, with known or estimated response probabilities) ----------

def policy_value(chosen: np.ndarray, p_response: np.ndarray, offers: list[OfferTerms]) -> float:
    """Sum over members of p_response[i, chosen] * value - cost; 0 for no action (-1)."""
    chosen = np.asarray(chosen, dtype=int)
    value = np.array([float(o.value) for o in offers])
    cost = np.array([float(o.cost) for o in offers])
    act = chosen >= 0
    idx = np.clip(chosen, 0, None)
    rows = np.arange(len(chosen))
    gain = p_response[rows, idx] * value[idx] - cost[idx]
    return float(np.where(act, gain, 0.0).sum())


def oracle_choice(p_response: np.ndarray, offers: list[OfferTerms]) -> np.ndarray:
    """Best offer by the given (true) response probabilities; -1 when no EV > 0."""
    value = np.array([float(o.value) for o in offers])
    cost = np.array([float(o.cost) for o in offers])
    ev = p_response * value - cost
    best = ev.argmax(axis=1)
    return np.where(ev[np.arange(len(ev)), best] > 0, best, -1)


def policy_report(
    chosen: np.ndarray, true_p_response: np.ndarray, offers: list[OfferTerms], seed: int = 0
) -> dict[str, float]:
    """Value of a policy against the oracle and two baselines, all under the true probabilities.

    same_offer: the single offer with the highest total true value, sent to everyone (an
    optimistic baseline: it knows which offer is best on average). random: a uniformly random
    offer per member.
    """
    rng = np.random.default_rng(seed)
    n, k = true_p_response.shape
    oracle = policy_value(oracle_choice(true_p_response, offers), true_p_response, offers)
    model = policy_value(chosen, true_p_response, offers)
    same = max(policy_value(np.full(n, j), true_p_response, offers) for j in range(k))
    random = policy_value(rng.integers(0, k, n), true_p_response, offers)
    return {
        "model": model, "oracle": oracle, "same_offer": same, "random": random,
        "capture": model / oracle if oracle > 0 else float("nan"),
        "same_offer_capture": same / oracle if oracle > 0 else float("nan"),
        "random_capture": random / oracle if oracle > 0 else float("nan"),
    }
