"""Train the model bundle: engagement model, offer-response model, interval calibrators. No Django.

Training set (engagement): features at ``t0 = as_of - horizon_days`` (events strictly before
t0, points balance rewound to t0, 180/365-day windows annualized when the recorded history is
shorter) and labels from ``[t0, as_of)``, so every label is known at ``as_of``. Members who
joined on or after t0 are left out of the training set. ``members.points_balance`` must be
the balance at ``as_of`` (the selectors return it so). Members are split
by pk into train (60%), calibration (20%) and holdout (20%); the holdout is used only for
the metrics.

Offer-response model: one row per offer exposure whose response window closed before
as_of (features.offer_exposures). Its member features are taken from the closest feature
snapshot at or before the send date (snapshots every ``SNAPSHOT_DAYS`` days counting back
from as_of), so no row sees events after its offer was sent. Offer attributes are appended
(one-hot code, one-hot kind, cost, value; scoring.response_design). Exposures are split by
member with the same split as the engagement model. Without any exposures there is no
response model and the bundle's offer policy is "default_policy" (scoring.default_offer_policy).

Intervals: ``EngagementInterval`` (engagement, split-conformal) and ``IntervalCalibrator``
(response and EV: Venn-ABERS calibration range).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from recommendations.features import (
    FEATURE_NAMES,
    build_features,
    engagement_labels,
    members_at,
    offer_exposures,
    purchase_counts,
    window_activity,
)
from recommendations.scoring import (
    DEFAULT_POLICY_PARAMS,
    ModelBundle,
    OfferTerms,
    score_features,
)

ALGORITHMS = ("hgb", "rf")
SNAPSHOT_DAYS = 7
INTERVAL_LEVEL = 0.90
# How many days of the horizon's purchases the interval's hindsight sees (EngagementInterval).
# 5 since the current-form features (they bring predictions closer to the truth, so the same
# hindsight left the interval wider than needed): coverage of the true probability at 40k
# members, seeds 1 / 2: 0.895 / 0.913 at 5 days, 0.911 / 0.930 at 6, 0.922 / 0.931 at 7.
HINDSIGHT_PURCHASE_DAYS = 5
# Sized for scoring throughput (TreeSHAP cost ~ trees x leaves x depth^2): see the report.
HGB_PARAMS = {
    "max_iter": 120, "learning_rate": 0.1, "max_leaf_nodes": 15, "max_depth": 5,
    "min_samples_leaf": 40, "l2_regularization": 1.0, "early_stopping": True,
    "validation_fraction": 0.15, "n_iter_no_change": 10,
}
RF_PARAMS = {"n_estimators": 60, "max_depth": 8, "min_samples_leaf": 30, "n_jobs": 1}
# Each member answers 2-5 offers yes or no, so the response models learn from few, noisy
# labels and small trees pick better offers. Offers that are clearly worse than the true best
# (simulator, seeds 0 / 1 / 2 at 5k members; seed 0 at 100k): 8 leaves and patience 10 gave
# 9.1 / 7.9 / 7.5% and 4.8%; 3 leaves and patience 30 give 7.4 / 6.4 / 5.7% and 4.2%
# (docs/learning-loop.md; measured before responses were attributed by last touch).
RESPONSE_PARAMS = {
    "max_iter": 300, "learning_rate": 0.05, "max_leaf_nodes": 3, "max_depth": None,
    "min_samples_leaf": 60, "l2_regularization": 1.0, "early_stopping": True,
    "validation_fraction": 0.15, "n_iter_no_change": 30,
}


class IntervalCalibrator:
    """Calibrated probability and its interval from a model's raw probability (offer response).

    Venn-ABERS (mapie._venn_abers.VennAbers, fitted on the calibration split) maps the raw
    score to a calibrated probability; the interval is the Venn-ABERS multiprobability
    [p0, p1]. What it covers: the RESPONSE RATE OF EXPOSURES WITH THIS SCORE, i.e. the
    calibration uncertainty (p0 and p1 are the calibrated probabilities had this exposure's
    outcome been 0 or 1; the well-calibrated rate lies between them). It does NOT cover one
    member's own true response probability, which varies among members with the same score
    and which a single yes/no response per exposure cannot identify, so no interval learned
    from such data can claim to. ``bench`` measures how often it contains the simulator's true
    p_response (``response_coverage_90``, a few percent): read the response and EV intervals
    as "how sure the model is about the rate for members like this", not as a range for this
    member. EngagementInterval below is the one with a coverage guarantee.
    """

    def __init__(self, level: float = INTERVAL_LEVEL) -> None:
        self.level = level
        self._va = None

    def fit(self, raw: np.ndarray, y: np.ndarray) -> IntervalCalibrator:
        from mapie._venn_abers import VennAbers

        raw = np.asarray(raw, dtype=float)
        self._va = VennAbers()
        self._va.fit(np.column_stack([1 - raw, raw]), np.asarray(y, dtype=int), precision=4)
        return self

    def predict_calibrated(self, raw: np.ndarray) -> np.ndarray:
        return IntervalCalibrator.predict(self, raw)[0]

    def predict(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raw = np.asarray(raw, dtype=float)
        p_prime, p0_p1 = self._va.predict_proba(np.column_stack([1 - raw, raw]))
        p = p_prime[:, 1]
        low = np.minimum(p0_p1[:, 0], p)
        high = np.maximum(p0_p1[:, 1], p)
        return p, low, high


class OfferResponseModels:
    """One response classifier per offer code behind the pooled design (scoring.response_design).

    Each offer has its own drivers (points habit, basket size, tier threshold, falling
    engagement of valuable members), so a model per offer learns them without spending its
    splits on telling offers apart. ``predict_proba(design)`` reads the one-hot code columns
    to route each row to its offer's model and uses only the member-feature columns.
    """

    def __init__(self, n_features: int, offer_codes: list[str], models: list[Any]) -> None:
        self.n_features = n_features
        self.offer_codes = list(offer_codes)
        self.models = list(models)

    def predict_proba(self, design: np.ndarray) -> np.ndarray:
        design = np.asarray(design, dtype=float)
        f = self.n_features
        which = design[:, f : f + len(self.offer_codes)].argmax(axis=1)
        p = np.zeros(len(design))
        for j, model in enumerate(self.models):
            rows = which == j
            if rows.any():
                p[rows] = model.predict_proba(design[rows, :f])[:, 1]
        return np.column_stack([1.0 - p, p])


def _fit_offer_models(
    design: np.ndarray, y: np.ndarray, n_features: int, offer_codes: list[str], seed: int,
    weights: np.ndarray | None = None,
):
    from sklearn.dummy import DummyClassifier

    which = design[:, n_features : n_features + len(offer_codes)].argmax(axis=1)
    models = []
    for j in range(len(offer_codes)):
        rows = which == j
        X, target = design[rows, :n_features], y[rows]
        if len(np.unique(target)) < 2 or rows.sum() < 50:
            model = DummyClassifier(strategy="prior").fit(design[:, :n_features], y) if not rows.any() else (
                DummyClassifier(strategy="prior").fit(X, target)
            )
        else:
            model = HistGradientBoostingClassifier(random_state=seed, **RESPONSE_PARAMS).fit(
                X, target, sample_weight=None if weights is None else weights[rows]
            )
        models.append(model)
    return OfferResponseModels(n_features, offer_codes, models)


def _history_start(events: pd.DataFrame) -> pd.Timestamp | None:
    if not len(events):
        return None
    return pd.to_datetime(events["occurred_at"], utc=True).min()


class EngagementInterval(IntervalCalibrator):
    """Engagement probability (Venn-ABERS calibrated) with a split-conformal 90% interval.

    What the interval covers, exactly: the member's HINDSIGHT engagement probability
    q = P(at least one purchase in the horizon | features at prediction time, the member's
    app sessions during the horizon (count, mean log duration), their purchases in its first
    HINDSIGHT_PURCHASE_DAYS days), estimated by a second classifier fitted on the training
    split (so out of sample on calibration and holdout). Guarantee (split conformal,
    exchangeable members): for a member drawn like the calibration members,
    P(low <= q <= high) >= 90%, separately within each fifth of predicted probability
    (Mondrian bins: surely-active and uncertain members differ in spread).

    Why q: the member's TRUE probability given their state today (p*) is never observed on a
    real program; q is the closest observable stand-in. A hindsight probability averages over
    what it does not see, so it spreads around the prediction LESS than p* when it sees little
    and MORE when it sees the outcome itself: on the simulator (20k members, seed 1) the
    interval contains p* for 0.84 of members when q sees only the sessions, 0.999 when it
    also sees the purchases of the first half of the horizon, 0.895-0.913 at
    HINDSIGHT_PURCHASE_DAYS = 5 (40k members, seeds 1 and 2). That choice is calibrated against
    the simulator; it is not a guarantee about p* on a real program. bench measures coverage of p* (``coverage_90``).

    Library: crepes.ConformalRegressor (Mondrian, residuals q - p on the calibration split;
    y_min 0, y_max 1); the point is mapie's VennAbers. Held-out check stored with the model:
    ``interval_coverage`` = share of holdout members whose q lies in their interval.
    """

    bins = 5

    def fit_conformal(self, p: np.ndarray, target: np.ndarray) -> EngagementInterval:
        """Fit the Mondrian conformal regressor on calibrated probabilities ``p`` and the
        calibration members' hindsight probabilities ``target``."""
        from crepes import ConformalRegressor

        p = np.asarray(p, dtype=float)
        self.edges_ = np.quantile(p, np.linspace(0, 1, self.bins + 1)[1:-1])
        self._cr = ConformalRegressor().fit(np.asarray(target, dtype=float) - p, bins=self._bin(p))
        return self

    def _bin(self, p: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.edges_, p, side="right")

    def predict(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self.predict_calibrated(raw)
        bounds = self._cr.predict_int(p, bins=self._bin(p), confidence=self.level, y_min=0.0, y_max=1.0)
        return p, np.minimum(bounds[:, 0], p), np.maximum(bounds[:, 1], p)


def population_at(members: pd.DataFrame, events: pd.DataFrame, t: pd.Timestamp) -> pd.DataFrame:
    """The members as they were at ``t`` (points balance rewound), without those who had not
    joined yet: their "no history" would mean "not yet a member", not "stopped buying"."""
    joined = pd.to_datetime(members["joined_at"], errors="coerce", utc=True)
    return members_at(members[~(joined >= t).to_numpy()], events, t)


def training_features(
    members: pd.DataFrame, events: pd.DataFrame, *, as_of: pd.Timestamp, horizon_days: int
) -> pd.DataFrame:
    """The engagement model's training snapshot exactly as train_bundle builds it (at as_of -
    horizon, counts annualized over the recorded history): what a model's stored feature ranges
    and drift reference describe. Built from anything else, the reference would differ from the
    model's own training data and a fresh program would raise drift alerts."""
    t0 = pd.Timestamp(as_of) - pd.Timedelta(days=horizon_days)
    t0 = t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")
    population = population_at(members, events, t0)
    return build_features(population, events, t0, history_start=_history_start(events))


def _engagement_window(
    members: pd.DataFrame, events: pd.DataFrame, t: pd.Timestamp, horizon_days: int, history_start
) -> dict[str, Any]:
    """Features at ``t`` and the outcomes of [t, t + horizon): labels, and what the interval
    judges predictions by in hindsight (app activity of the window; purchases of its first
    half where the program records no app sessions)."""
    # Members who had not joined by t cannot be scored at t: their "no history" would mean
    # "not yet a member", not "stopped buying".
    population = population_at(members, events, t)
    activity = window_activity(population, events, t, horizon_days)
    activity["purchases_early"] = purchase_counts(population, events, t, HINDSIGHT_PURCHASE_DAYS).to_numpy()
    return {
        "X": build_features(population, events, t, history_start=history_start),
        "y": engagement_labels(population, events, t, horizon_days).to_numpy(),
        "activity": activity.to_numpy(float),
    }



def _split_members(pks: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    u = rng.random(len(pks))
    return {"train": pks[u < 0.6], "calib": pks[(u >= 0.6) & (u < 0.8)], "holdout": pks[u >= 0.8]}


def _engagement_model(algorithm: str, seed: int):
    if algorithm == "hgb":
        return HistGradientBoostingClassifier(random_state=seed, **HGB_PARAMS)
    if algorithm == "rf":
        return RandomForestClassifier(random_state=seed, **RF_PARAMS)
    raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")


def _binary_metrics(y: np.ndarray, p: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict[str, Any]:
    from sklearn.calibration import calibration_curve

    y = np.asarray(y, dtype=int)
    pred = (p >= 0.5).astype(int)
    both = len(np.unique(y)) == 2
    out: dict[str, Any] = {
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "confusion_matrix": confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        "base_rate": float(y.mean()) if len(y) else float("nan"),
        "interval_mean_width": float(np.mean(high - low)) if len(y) else float("nan"),
    }
    if both:
        frac, mean_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
        out["calibration_curve"] = {"mean_predicted": mean_pred.tolist(), "fraction_positive": frac.tolist()}
    else:
        out["calibration_curve"] = {"mean_predicted": [], "fraction_positive": []}
    out["interval_coverage"] = interval_coverage_binned(y, p, low, high)
    return out


def interval_coverage_binned(y, p, low, high, bins: int = 20) -> float:
    """Held-out coverage estimate: share of members in probability bins whose bin's observed
    engagement rate lies inside their own interval."""
    y = np.asarray(y, dtype=float)
    if not len(y):
        return float("nan")
    order = np.argsort(p, kind="stable")
    covered = np.zeros(len(y), dtype=bool)
    for chunk in np.array_split(order, min(bins, len(y))):
        rate = y[chunk].mean()
        covered[chunk] = (low[chunk] <= rate) & (rate <= high[chunk])
    return float(covered.mean())


def response_training_rows(
    members: pd.DataFrame, events: pd.DataFrame, as_of: pd.Timestamp,
    feedback: pd.DataFrame | None = None,
    history_start: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(exposures, member feature rows aligned with them) for the response model.

    ``members.points_balance`` is the balance at as_of; each snapshot rewinds it.
    """
    exposures = offer_exposures(events, as_of)
    if feedback is not None and len(feedback):
        extra = feedback[["member_pk", "offer_code", "sent_at", "responded"]].copy()
        extra["sent_at"] = pd.to_datetime(extra["sent_at"], utc=True)
        extra = extra[extra["sent_at"] < as_of]
        exposures = pd.concat([exposures, extra], ignore_index=True).drop_duplicates(
            ["member_pk", "offer_code", "sent_at"]
        )
    exposures = exposures[exposures["member_pk"].isin(members["pk"])].reset_index(drop=True)
    if not len(exposures):
        return exposures, pd.DataFrame(columns=FEATURE_NAMES)
    # Snapshot grid counting back from as_of; each exposure uses the latest snapshot <= sent_at.
    sent = exposures["sent_at"]
    steps = np.floor((as_of - sent).dt.total_seconds() / 86_400 / SNAPSHOT_DAYS).astype(int) + 1
    exposures["snapshot"] = steps.to_numpy()
    parts = []
    for step, group in exposures.groupby("snapshot", sort=False):
        snapshot_at = as_of - pd.Timedelta(days=SNAPSHOT_DAYS * int(step))
        subset = members_at(members[members["pk"].isin(group["member_pk"].unique())], events, snapshot_at)
        snap = build_features(subset, events, snapshot_at, history_start=history_start)
        rows = snap.loc[group["member_pk"].to_numpy()]
        rows.index = group.index
        parts.append(rows)
    feats = pd.concat(parts).loc[exposures.index]
    return exposures, feats


def train_bundle(
    *,
    members: pd.DataFrame,
    events: pd.DataFrame,
    offers: list[OfferTerms],
    as_of: pd.Timestamp,
    horizon_days: int,
    algorithm: str = "hgb",
    seed: int = 0,
    feedback: pd.DataFrame | None = None,
    sample_weight=None,
    labeled_examples: pd.DataFrame | None = None,
) -> tuple[ModelBundle, dict]:
    """Train a bundle as of ``as_of``; returns (bundle, metrics).

    ``feedback``: optional realized outcomes of decided offers (member_pk, offer_code,
    sent_at, responded), added to the response training rows. ``sample_weight``: optional
    per-member weight (array aligned with ``members`` or Series indexed by pk) for the
    engagement model, e.g. fairness reweighing. ``labeled_examples``: optional rows labeled
    after the fact (recommendations.learning: decision feedback and realized outcomes), each
    with its own feature snapshot (FEATURE_NAMES columns, as scored), ``weight``, and either
    ``engaged`` (0/1) for the engagement model or ``offer_code`` + ``responded`` (0/1) for the
    response model (NaN where a row carries no such label). They are added to the TRAINING
    split only, never to calibration or the holdout, so held-out metrics stay comparable.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    t0 = as_of - pd.Timedelta(days=horizon_days)
    started = time.perf_counter()

    history_start = _history_start(events)
    window = _engagement_window(members, events, t0, horizon_days, history_start)
    X_all, y_all = window["X"], window["y"]
    if sample_weight is None:
        w_all = np.ones(len(X_all))
    else:
        if not isinstance(sample_weight, pd.Series):
            sample_weight = pd.Series(np.asarray(sample_weight, dtype=float), index=members["pk"].to_numpy())
        w_all = sample_weight.reindex(X_all.index).fillna(1.0).to_numpy(float)
    split = _split_members(X_all.index.to_numpy(), seed)
    masks = {name: X_all.index.isin(pks) for name, pks in split.items()}
    if len(np.unique(y_all[masks["train"]])) < 2:
        raise ValueError("training labels have a single class: need members who did and did not purchase")

    X_fit, y_fit, w_fit = X_all.to_numpy()[masks["train"]], y_all[masks["train"]], w_all[masks["train"]]
    eng_rows, resp_rows = _labeled_rows(labeled_examples)
    if len(eng_rows):
        X_fit = np.vstack([X_fit, eng_rows[FEATURE_NAMES].to_numpy(float)])
        y_fit = np.concatenate([y_fit, eng_rows["engaged"].to_numpy(int)])
        w_fit = np.concatenate([w_fit, eng_rows["weight"].to_numpy(float)])
    model = _engagement_model(algorithm, seed)
    model.fit(X_fit, y_fit, sample_weight=w_fit)
    cal = masks["calib"]
    raw_cal = model.predict_proba(X_all.to_numpy()[cal])[:, 1]
    # The hindsight model judges each prediction with the activity of the window that
    # followed it; fitted on the training split, it is out of sample on calibration/holdout.
    hindsight_X = np.column_stack([X_all.to_numpy(float), window["activity"]])
    hindsight = _engagement_model("hgb", seed).fit(hindsight_X[masks["train"]], y_all[masks["train"]])
    q_all = hindsight.predict_proba(hindsight_X)[:, 1]
    interval = EngagementInterval().fit(raw_cal, y_all[cal])
    interval.fit_conformal(interval.predict_calibrated(raw_cal), q_all[cal])

    response_model = None
    response_interval = None
    offer_codes: list[str] = []
    offer_kinds: list[str] = []
    exposures, exp_feats = response_training_rows(members, events, as_of, feedback, history_start)
    by_code = {o.code: o for o in offers}
    if len(exposures):
        # Exposures of offers no longer in the catalog carry no terms: they cannot be encoded.
        known = exposures["offer_code"].isin(by_code).to_numpy()
        exposures, exp_feats = exposures[known], exp_feats[known]
    response_metrics: dict[str, Any] = {"n_exposures": int(len(exposures)), "n_labeled_examples": 0}
    if len(exposures) and exposures["responded"].nunique() == 2:
        offer_codes = sorted(exposures["offer_code"].unique())
        offer_kinds = sorted({by_code[c].kind for c in offer_codes})
        design = _exposure_design(exp_feats.to_numpy(float), exposures, offer_codes, offer_kinds, by_code)
        y_resp = exposures["responded"].to_numpy(int)
        part = {name: exposures["member_pk"].isin(pks).to_numpy() for name, pks in split.items()}
        d_fit, y_fit_resp = design[part["train"]], y_resp[part["train"]]
        w_resp = np.ones(len(d_fit))
        resp_rows = resp_rows[resp_rows["offer_code"].isin(offer_codes)]
        if len(resp_rows):
            extra = _exposure_design(
                resp_rows[FEATURE_NAMES].to_numpy(float), resp_rows, offer_codes, offer_kinds, by_code
            )
            d_fit = np.vstack([d_fit, extra])
            y_fit_resp = np.concatenate([y_fit_resp, resp_rows["responded"].to_numpy(int)])
            w_resp = np.concatenate([w_resp, resp_rows["weight"].to_numpy(float)])
        # Without labeled rows no weights at all: the fit stays exactly what it was.
        response_model = _fit_offer_models(
            d_fit, y_fit_resp, len(FEATURE_NAMES), offer_codes, seed, weights=w_resp if len(resp_rows) else None
        )
        response_interval = IntervalCalibrator().fit(
            response_model.predict_proba(design[part["calib"]])[:, 1], y_resp[part["calib"]]
        )
        ph, lh, hh = response_interval.predict(response_model.predict_proba(design[part["holdout"]])[:, 1])
        response_metrics.update(_binary_metrics(y_resp[part["holdout"]], ph, lh, hh))
        response_metrics["n_train"] = int(part["train"].sum())
        response_metrics["n_labeled_examples"] = int(len(resp_rows))
        response_metrics["n_holdout"] = int(part["holdout"].sum())
        # Trees per offer's model (early stopping sets them): with the engagement model's
        # n_iter, what a recommendation costs to score.
        response_metrics["n_iter"] = {
            code: int(getattr(m, "n_iter_", getattr(m, "n_estimators", 0)))
            for code, m in zip(response_model.offer_codes, response_model.models, strict=True)
        }
    train_seconds = time.perf_counter() - started

    bundle = ModelBundle(
        feature_names=list(FEATURE_NAMES),
        engagement_model=model,
        engagement_interval=interval,
        response_model=response_model,
        response_interval=response_interval,
        offer_codes=offer_codes,
        offer_kinds=offer_kinds,
        default_policy_params=dict(DEFAULT_POLICY_PARAMS),
        algorithm=algorithm,
        metadata={
            "as_of": as_of.isoformat(), "t0": t0.isoformat(), "horizon_days": horizon_days,
            "seed": seed, "params": HGB_PARAMS if algorithm == "hgb" else RF_PARAMS,
            "response_params": RESPONSE_PARAMS if response_model is not None else None,
        },
    )

    holdout_X = X_all[masks["holdout"]]
    y_hold = y_all[masks["holdout"]]
    batch_start = time.perf_counter()
    scored = score_features(bundle, holdout_X, offers)
    score_seconds = time.perf_counter() - batch_start
    from recommendations.explain import shap_explain

    shap_start = time.perf_counter()
    shap_explain(bundle, holdout_X.to_numpy(float)[:2000])
    shap_seconds = time.perf_counter() - shap_start

    metrics = _binary_metrics(y_hold, scored.probability, scored.p_low, scored.p_high)
    metrics.update({
        "interval_coverage": float(np.mean(
            (scored.p_low <= q_all[masks["holdout"]]) & (q_all[masks["holdout"]] <= scored.p_high)
        )),
        "interval_coverage_method": (
            "held-out members whose hindsight probability (features + app activity in the "
            "horizon) lies in their 90% interval"
        ),
        "interval_coverage_binned_rate": metrics["interval_coverage"],
        "hindsight_auc_holdout": float(roc_auc_score(y_hold, q_all[masks["holdout"]]))
        if len(np.unique(y_hold)) == 2 else float("nan"),
        "n_train": int(masks["train"].sum()),
        "n_labeled_examples": int(len(eng_rows)),
        "n_calibration": int(masks["calib"].sum()),
        "n_holdout": int(masks["holdout"].sum()),
        "train_seconds": round(train_seconds, 3),
        "n_iter": int(getattr(model, "n_iter_", getattr(model, "n_estimators", 0))),
        "shap_rows_per_s": round(min(2000, len(holdout_X)) / max(shap_seconds, 1e-9), 1),
        "score_rows_per_s": round(len(holdout_X) / max(score_seconds, 1e-9), 1),
        "interval_level": INTERVAL_LEVEL,
        "offer_policy": bundle.offer_policy,
        "response": response_metrics,
        "policy": _holdout_policy_value(bundle, members, events, as_of, offers, split["holdout"], exposures, exp_feats),
    })
    return bundle, metrics


def _labeled_rows(labeled: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(engagement rows, response rows) of ``train_bundle``'s labeled_examples."""
    columns = [*FEATURE_NAMES, "engaged", "offer_code", "responded", "weight"]
    if labeled is None or not len(labeled):
        empty = pd.DataFrame(columns=columns)
        return empty, empty
    missing = [c for c in FEATURE_NAMES if c not in labeled]
    if missing:
        raise ValueError(f"labeled_examples lack feature column(s): {', '.join(missing)}")
    rows = labeled.copy()
    for name, default in (("engaged", np.nan), ("offer_code", ""), ("responded", np.nan), ("weight", 1.0)):
        if name not in rows:
            rows[name] = default
    rows["weight"] = pd.to_numeric(rows["weight"], errors="coerce").fillna(1.0).clip(lower=0.0)
    rows["offer_code"] = rows["offer_code"].fillna("").astype(str)
    finite = np.isfinite(rows[FEATURE_NAMES].to_numpy(float)).all(axis=1)
    rows = rows[finite & (rows["weight"] > 0).to_numpy()]
    engaged = pd.to_numeric(rows["engaged"], errors="coerce")
    responded = pd.to_numeric(rows["responded"], errors="coerce")
    eng = rows[engaged.notna().to_numpy()].assign(engaged=engaged.dropna().astype(int))
    resp = rows[(responded.notna() & (rows["offer_code"] != "")).to_numpy()]
    resp = resp.assign(responded=pd.to_numeric(resp["responded"]).astype(int))
    return eng.reset_index(drop=True), resp.reset_index(drop=True)


def _exposure_design(feats, exposures, offer_codes, offer_kinds, by_code) -> np.ndarray:
    """Design rows for logged exposures (each row its own offer), matching response_design."""
    n, f = feats.shape
    design = np.zeros((n, f + len(offer_codes) + len(offer_kinds) + 2))
    design[:, :f] = feats
    codes = exposures["offer_code"].to_numpy()
    code_pos = np.array([offer_codes.index(c) for c in codes])
    design[np.arange(n), f + code_pos] = 1.0
    kind_pos = np.array([offer_kinds.index(by_code[c].kind) for c in codes])
    design[np.arange(n), f + len(offer_codes) + kind_pos] = 1.0
    design[:, -2] = [float(by_code[c].cost) for c in codes]
    design[:, -1] = [float(by_code[c].value) for c in codes]
    return design


def _holdout_policy_value(bundle, members, events, as_of, offers, holdout_pks, exposures, exp_feats) -> dict:
    """Off-policy value of the model's offer choice on held-out logged exposures.

    For held-out exposures, the model picks an offer from the member's features at send time;
    where it matches the offer actually sent, the realized value (responded * value - cost)
    counts, weighted by the number of offers (inverse propensity under uniformly random
    sending). Also reports the realized value per exposure of the logged policy.
    """
    if not len(exposures) or bundle.response_model is None:
        return {"method": "none: no logged exposures"}
    mask = exposures["member_pk"].isin(holdout_pks).to_numpy()
    if not mask.any():
        return {"method": "none: no held-out exposures"}
    feats = exp_feats[mask]
    logged = exposures[mask]
    scored = score_features(bundle, feats.set_axis(np.arange(len(feats))), offers)
    codes = [o.code for o in offers]
    by_code = {o.code: o for o in offers}
    realized = np.array([
        r * float(by_code[c].value) - float(by_code[c].cost)
        for c, r in zip(logged["offer_code"], logged["responded"], strict=True)
    ])
    sent_idx = np.array([codes.index(c) for c in logged["offer_code"]])
    match = scored.offer_index == sent_idx
    k = len(offers)
    ips = float(np.where(match, realized * k, 0.0).mean())
    return {
        "method": "IPS on held-out exposures, assuming uniformly random sending",
        "n": int(mask.sum()),
        "model_value_per_member": ips,
        "logged_value_per_exposure": float(realized.mean()),
        "no_action_share": float((scored.offer_index < 0).mean()),
    }
