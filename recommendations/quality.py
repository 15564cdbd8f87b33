"""Quality of the prediction engine against the simulator's ground truth. No Django.

``quality_report(program)`` trains a bundle on a ``loyalty.simulator.SimulatedProgram``
exactly as production would (recorded history only, labels cut from before ``as_of``),
scores every member at ``program.as_of`` with the one scoring function, and only then
compares with the ground truth the desk never sees:

* ``auc``: ROC AUC of the predicted engagement probability against the realized outcome
  ``engaged``; ``bayes_auc``: the AUC of the TRUE probability ``p_engage`` against the same
  outcomes, the best any model could reach (both over the members who joined before as_of).
* ``coverage_90``: share of members whose TRUE ``p_engage`` lies in the stated 90% interval.
  ``heldout_coverage_90`` is the coverage the model measured on its own held-out data at
  training time (no ground truth involved; stored with the model as interval_coverage).
* ``policy_capture``: the true incremental value (sum of true p_response * value - cost) of
  the model's next best offers as a share of the oracle's (best offer by true response);
  ``same_offer_capture`` (best single offer for everyone) and ``random_capture`` likewise.
* ``text_signal_auc`` (a separate call): the engagement AUC with and without the comment
  features, two models trained alike on the same rows and compared on the same members.
* ``response_coverage_90``: share of (member, offer) pairs whose true response probability
  lies in the response interval (so the true EV lies in [ev_low, ev_high]). That interval
  does not claim to cover it (training.IntervalCalibrator); the figure shows how far apart
  "calibration range" and "this member's true probability" are.
* timings: training seconds, scoring rows per second (features + probability + interval +
  SHAP + every offer's response).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from recommendations.features import (
    FEATURE_NAMES,
    TEXT_FEATURES,
    build_features,
    frames_from_program,
)
from recommendations.scoring import OfferTerms, policy_report, score_features
from recommendations.training import (
    _engagement_model,
    _engagement_window,
    _history_start,
    _split_members,
    train_bundle,
)


def offer_terms(offers: pd.DataFrame) -> list[OfferTerms]:
    """OfferTerms of an offers frame (loyalty.definitions.OFFER_COLUMNS), active ones only."""
    active = offers[offers["active"].astype(bool)]
    return [
        OfferTerms(code=str(r.code), kind=str(r.kind), cost=float(r.cost), value=float(r.value),
                   high_stakes=bool(r.high_stakes))
        for r in active.itertuples(index=False)
    ]


def quality_report(program: Any, *, algorithm: str = "hgb", seed: int = 0) -> dict[str, Any]:
    """Train on ``program`` (a SimulatedProgram), score at its as_of, compare with the truth."""
    members, events = frames_from_program(program.members, program.events)
    offers = offer_terms(program.offers)
    as_of = pd.Timestamp(program.as_of, tz="UTC")

    started = time.perf_counter()
    bundle, metrics = train_bundle(
        members=members, events=events, offers=offers, as_of=as_of,
        horizon_days=program.horizon_days, algorithm=algorithm, seed=seed,
    )
    train_seconds = time.perf_counter() - started

    started = time.perf_counter()
    features = build_features(members, events, as_of)
    feature_seconds = time.perf_counter() - started
    started = time.perf_counter()
    scored = score_features(bundle, features, offers)
    score_seconds = time.perf_counter() - started

    truth = program.ground_truth.set_index("member_id").loc[members["member_id"].astype(str)]
    joined = pd.to_datetime(members["joined_at"], utc=True) < as_of
    keep = joined.to_numpy()
    p_true = truth["p_engage"].to_numpy(float)[keep]
    engaged = truth["engaged"].to_numpy(int)[keep]
    prob = scored.probability[keep]
    low, high = scored.p_low[keep], scored.p_high[keep]

    codes = [o.code for o in offers]
    true_resp = truth[[f"p_response_{c}" for c in codes]].to_numpy(float)
    policy = policy_report(scored.offer_index, true_resp, offers, seed=seed)
    resp = scored.alternatives
    ev_covered = (resp[:, :, 1] <= true_resp) & (true_resp <= resp[:, :, 2])
    rows = len(features)
    total_seconds = feature_seconds + score_seconds
    return {
        "members": int(len(members)),
        "seed": seed,
        "algorithm": algorithm,
        "auc": float(roc_auc_score(engaged, prob)),
        "bayes_auc": float(roc_auc_score(engaged, p_true)),
        "brier": float(np.mean((prob - engaged) ** 2)),
        "bayes_brier": float(np.mean((p_true - engaged) ** 2)),
        "mean_abs_error_p": float(np.mean(np.abs(prob - p_true))),
        "coverage_90": float(np.mean((low <= p_true) & (p_true <= high))),
        "interval_mean_width": float(np.mean(high - low)),
        "heldout_coverage_90": float(metrics.get("interval_coverage", float("nan"))),
        "interval_coverage_method": metrics.get("interval_coverage_method", ""),
        "policy_capture": float(policy["capture"]),
        "same_offer_capture": float(policy["same_offer_capture"]),
        "random_capture": float(policy["random_capture"]),
        "policy_value": {k: float(policy[k]) for k in ("model", "oracle", "same_offer", "random")},
        "response_coverage_90": float(ev_covered.mean()),
        "response_coverage_by_offer": {c: float(ev_covered[:, j].mean()) for j, c in enumerate(codes)},
        "response_corr_by_offer": {
            c: float(np.corrcoef(resp[:, j, 0], true_resp[:, j])[0, 1]) for j, c in enumerate(codes)
        },
        "response_auc_heldout": float(metrics.get("response", {}).get("auc", float("nan"))),
        "train_seconds": round(train_seconds, 2),
        "feature_rows_per_s": round(rows / max(feature_seconds, 1e-9), 1),
        "score_rows_per_s": round(rows / max(score_seconds, 1e-9), 1),
        "rows_per_s": round(rows / max(total_seconds, 1e-9), 1),
    }


# Members text_signal_auc compares on at most (a seeded sample of a larger program).
TEXT_MAX_MEMBERS = 50_000


def text_sample_positions(member_count: int, *, seed: int, max_members: int | None = None) -> np.ndarray:
    """Positions (0-based, in program order) of the members text_signal_auc compares on
    (``max_members`` None: TEXT_MAX_MEMBERS, read at call time).

    Depends only on the count and the seed, so a caller that streams a large program can
    keep just these members' events (loyalty.bench) and get the same comparison.
    """
    max_members = TEXT_MAX_MEMBERS if max_members is None else max_members
    if member_count <= max_members:
        return np.arange(member_count)
    return np.random.default_rng(seed).choice(member_count, max_members, replace=False)


def text_signal_auc(
    program: Any, *, algorithm: str = "hgb", seed: int = 0, max_members: int | None = None
) -> dict[str, Any]:
    """Engagement AUC with and without the text features (features.TEXT_FEATURES).

    Two engagement models, trained exactly alike (training._engagement_model on the training
    split of the window before as_of, as train_bundle does) on the same rows, one on every
    feature and one without the comment columns, then both scored at ``program.as_of`` on
    the same held-out members (the holdout split, joined before as_of) and compared with
    the simulator's realized outcome ``engaged``. The AUC of the raw model score is used:
    calibration is monotone and would only add ties. Programs larger than ``max_members``
    (None: TEXT_MAX_MEMBERS) are compared on a seeded sample of members
    (text_sample_positions; the gap is a property of the data, not of its size).
    ``program.members`` may carry a ``pk`` column (1-based positions in the program): a
    caller that kept only the sample's members passes them that way (loyalty.bench).
    """
    members, events = frames_from_program(program.members, program.events)
    keep = members["pk"].to_numpy()[text_sample_positions(len(members), seed=seed, max_members=max_members)]
    if len(keep) < len(members):
        members = members[members["pk"].isin(keep)].reset_index(drop=True)
        events = events[events["member_pk"].isin(keep)]
    as_of = pd.Timestamp(program.as_of, tz="UTC")
    t0 = as_of - pd.Timedelta(days=program.horizon_days)
    window = _engagement_window(members, events, t0, program.horizon_days, _history_start(events))
    split = _split_members(window["X"].index.to_numpy(), seed)  # train_bundle's split
    train = window["X"].index.isin(split["train"])

    now = build_features(members, events, as_of)
    joined = (pd.to_datetime(members["joined_at"], utc=True) < as_of).to_numpy()
    rows = now.index.isin(split["holdout"]) & joined
    truth = program.ground_truth.set_index("member_id")["engaged"]
    engaged = truth.loc[members["member_id"].astype(str)].to_numpy(int)[rows]

    without = [name for name in FEATURE_NAMES if name not in TEXT_FEATURES]
    auc = {}
    for key, columns in (("auc_with_text", FEATURE_NAMES), ("auc_without_text", without)):
        model = _engagement_model(algorithm, seed).fit(window["X"][columns].to_numpy()[train], window["y"][train])
        auc[key] = float(roc_auc_score(engaged, model.predict_proba(now[columns].to_numpy()[rows])[:, 1]))
    return {
        **auc,
        "text_auc_gain": auc["auc_with_text"] - auc["auc_without_text"],
        "text_auc_members": int(rows.sum()),
        "members_with_comments": float((now["comments_365d"] > 0).mean()),
    }
