"""The learning loop: decision feedback and realized outcomes -> challenger -> gate -> champion.

How feedback becomes training labels (and why it is honest)
----------------------------------------------------------
The champion is trained on recorded history: features as of ``as_of - horizon`` and the
label "purchased within the horizon" read from the recorded events. When recording is
biased (a group's purchases go missing), those labels are wrong for that group. Two later
sources of labels can correct them, and nothing else reaches the model:

* **Manager decisions.** A decision that stands (approve or override; undone decisions are
  skipped) is a labeled example with the feature snapshot the manager saw
  (``Recommendation.features``): ``Decision.label_engaged`` (the manager's judgement of
  whether the member will engage, optional, e.g. with an override for reason
  ``model_wrong``) labels the engagement model. An override also labels the response model:
  the manager's offer beats the recommended one for this member, taught as the smallest
  change of the two response rates that reverses their shown expected values
  (``override_response_targets``).
* **Realized outcomes** (recommendations.outcomes, from imported events): once the horizon
  after the run's as_of is covered, ``Outcome.engaged`` replaces the manager's label; once a
  sent offer's response window has closed, ``Outcome.responded`` is a response example for
  the offer actually sent (the manager's choice on an override).

Each example carries a weight from LearningSettings (override / approval / outcome / choice weight,
admin-editable, audited) and goes into the TRAINING split of train_bundle only
(``labeled_examples``). Examples of members in the evaluation partition (a hash of
pseudo_id) are never trained on: champion and challenger are both scored on them, the same
rows for both, and the gate compares AUC, Brier, interval coverage, agreement with the
offers the managers chose when they overrode, and fairness differences (fairlearn:
demographic parity and equalized odds differences by region, tier, gender and age band).
With too few labeled evaluation rows the gate falls back to the two models' own held-out
metrics (same member split: same seed and population).

The randomized holdout (another hash of pseudo_id, LearningSettings.holdout_share) is
recorded at scoring with status "holdout" and never routed or offered; outcomes.holdout_lift
measures approved offers against it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from django.db import connection, transaction
from django.db.models import Max, Q

from governance.audit import audit_log
from loyalty.definitions import ENGAGEMENT_EVENT_KIND
from loyalty.models import Event, Member
from recommendations.features import FEATURE_NAMES
from recommendations.models import (
    Decision,
    LearningSettings,
    ModelVersion,
    Outcome,
    Recommendation,
)
from recommendations.selectors import offer_terms_list, standing_decisions_frame

logger = logging.getLogger(__name__)

HOLDOUT_REASON = {
    "code": "holdout",
    "route": "holdout",
    "text": "Randomized holdout: recorded to measure lift, never offered.",
}
# The group columns the fairness reports monitor (governance.fairness.GROUP_COLUMNS): the gate
# checks every one of them.
FAIRNESS_COLUMNS = ("region", "tier", "gender", "age_band")
SETTINGS_FIELDS = (
    "override_weight", "approval_weight", "outcome_weight", "choice_weight", "holdout_share", "evaluation_share",
    "auc_tolerance", "brier_tolerance", "coverage_tolerance", "policy_tolerance", "fairness_tolerance",
    "min_evaluation_examples", "auto_promote",
)
RETRAIN_LOCK = 7_401_001


class LearningError(ValueError):
    """A learning-loop request that cannot be carried out, with a message for the operator."""


# ------------------------------------------------------------------------------ settings


def learning_settings_get() -> LearningSettings:
    settings_row, _ = LearningSettings.objects.get_or_create(pk=1)
    return settings_row


def _settings_values(row: LearningSettings) -> dict[str, Any]:
    return {name: getattr(row, name) for name in SETTINGS_FIELDS}


def learning_settings_update(*, actor, values: dict[str, Any]) -> LearningSettings:
    """Change feedback weights, holdout/evaluation shares or gate tolerances; audited."""
    unknown = sorted(set(values) - set(SETTINGS_FIELDS))
    if unknown:
        raise LearningError(f"unknown setting(s): {', '.join(unknown)}")
    clean: dict[str, Any] = {}
    for name, raw in values.items():
        if name == "auto_promote":
            clean[name] = bool(raw)
            continue
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise LearningError(f"{name} must be a number") from None
        if not np.isfinite(number) or number < 0:
            raise LearningError(f"{name} must be a number of 0 or more")
        if name in ("holdout_share", "evaluation_share") and number > 0.5:
            raise LearningError(f"{name} must be a share between 0 and 0.5")
        clean[name] = int(number) if name == "min_evaluation_examples" else number
    with transaction.atomic():
        learning_settings_get()
        row = LearningSettings.objects.select_for_update().get(pk=1)
        old = _settings_values(row)
        changed = {k: v for k, v in clean.items() if old[k] != v}
        if not changed:
            return row
        for name, value in changed.items():
            setattr(row, name, value)
        row.updated_by = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
        row.save()
        audit_log(
            actor=actor, action="learning.settings_update", object_type="learning_settings", object_id=1,
            old={k: old[k] for k in changed}, new=changed,
        )
    return row


# ------------------------------------------------------------------------------ partitions


def hash_fraction(pseudo_id: Any, salt: str) -> float:
    """A uniform number in [0, 1) fixed by the member's pseudonymous id and a salt."""
    digest = hashlib.sha256(f"{salt}:{pseudo_id}".encode()).hexdigest()
    return int(digest[:13], 16) / float(16**13)


def _members_by_hash(member_pks: Iterable[int] | None, salt: str, share: float) -> set[int]:
    if share <= 0:
        return set()
    qs = Member.objects.all()
    if member_pks is not None:
        qs = qs.filter(pk__in=list(member_pks))
    return {pk for pk, pseudo in qs.values_list("pk", "pseudo_id").iterator(chunk_size=20_000)
            if hash_fraction(pseudo, salt) < share}


def holdout_member_pks(*, member_pks: Iterable[int] | None = None) -> set[int]:
    """Members (among ``member_pks``) in the randomized holdout: never sent an offer."""
    return _members_by_hash(member_pks, "holdout", learning_settings_get().holdout_share)


def evaluation_member_pks(*, member_pks: Iterable[int] | None = None) -> set[int]:
    """Members whose feedback is kept out of training to evaluate champion and challenger."""
    return _members_by_hash(member_pks, "evaluation", learning_settings_get().evaluation_share)


# ------------------------------------------------------------------------------ examples


@dataclass
class LabeledExamples:
    train: pd.DataFrame
    evaluation: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def _feature_frame(rec_rows: pd.DataFrame) -> pd.DataFrame:
    """Decode the stored float32 feature snapshots into FEATURE_NAMES columns (NaN if absent)."""
    schemas = {
        pk: [f["name"] for f in (schema or {}).get("features", [])]
        for pk, schema in ModelVersion.objects.filter(
            pk__in=rec_rows["model_version_id"].unique().tolist()
        ).values_list("pk", "feature_schema")
    }
    out = np.full((len(rec_rows), len(FEATURE_NAMES)), np.nan)
    position = {name: j for j, name in enumerate(FEATURE_NAMES)}
    for i, (blob, version) in enumerate(zip(rec_rows["features"], rec_rows["model_version_id"], strict=True)):
        values = np.frombuffer(bytes(blob), dtype=np.float32)
        names = schemas.get(version, [])
        if len(values) != len(names):
            continue
        for name, value in zip(names, values, strict=True):
            if name in position:
                out[i, position[name]] = float(value)
    return pd.DataFrame(out, columns=FEATURE_NAMES, index=rec_rows.index)


def override_response_targets(
    *, chosen: str, rejected: str, shown: list[dict[str, Any]], terms: dict[str, Any]
) -> dict[str, float]:
    """Response-rate labels an override teaches: {offer code: target rate}.

    The manager says the model ranked the two actions the wrong way round, not which of the
    two estimates was wrong. The lesson reverses the order as shown (``shown``: the
    recommendation's alternatives, EV = p * value - cost, "no action" = 0): the EV gap
    between them turns by twice the gap the model showed, the smallest change of the two
    RESPONSE RATES (the quantities the model learns) that does it. A response-rate error
    costs an offer EV in proportion to its value, so each rate moves in proportion to its
    offer's value and the EV correction is split by value squared: between a 120-value
    tier upgrade and a 40-value bonus, nine tenths of it go to the upgrade.

    Splitting it evenly instead (swapping the two EVs) mislearns in the common case: in the
    simulated loop (5,000 members, seed 0) the model had under-valued the chosen offer by 18
    EV on average and over-valued the rejected one by 5, almost always a high-value offer
    (tier upgrade, retention call) under-predicted against a correctly predicted cheap one;
    the swap taught the cheap offer's response rate down by up to 0.25, the next model
    stopped recommending it, and overrides rose. Labeling the chosen offer 1 and the
    rejected 0 overshoots further: it claims certainty no manager has. An override of a
    recommendation the model itself ranked below the manager's choice (an offer policy
    picked it) teaches no response rates.
    """
    ev = {a.get("code"): float(a.get("ev", 0.0)) for a in shown or []}
    ev[""] = 0.0
    if chosen not in ev or rejected not in ev:
        return {}
    gap = ev[rejected] - ev[chosen]
    value = {code: float(terms[code].value) if code and code in terms else 0.0 for code in (chosen, rejected)}
    norm = value[chosen] ** 2 + value[rejected] ** 2
    if gap <= 0 or norm <= 0:
        return {}
    out = {}
    for code, sign in ((chosen, 1.0), (rejected, -1.0)):
        if value[code] > 0:
            shown_rate = (ev[code] + float(terms[code].cost)) / value[code]
            out[code] = float(np.clip(shown_rate + sign * 2.0 * gap * value[code] / norm, 0.0, 1.0))
    return out


def labeled_examples_load(*, settings_row: LearningSettings | None = None) -> LabeledExamples:
    """Training and evaluation examples from standing decisions and realized outcomes.

    One row per label: engagement rows (``engaged``) and response rows (``offer_code``,
    ``responded``), with the recommendation's feature snapshot, ``weight``, ``source``
    (outcome | manager), ``member_pk``, ``recommendation_id``, ``recommended_offer_code``
    and ``label_offer_code`` (the offer the manager stood behind; None without a decision).
    """
    cfg = settings_row or learning_settings_get()
    # A person's approval or override (not the system's auto-approval) is a label.
    decisions = standing_decisions_frame(Decision.objects.all(), {
        "action": "action", "actor_label": "actor_label", "label_engaged": "label_engaged",
        "label_offer_code": "label_offer_code", "is_feedback": "is_feedback",
    })
    decisions = decisions[decisions["is_feedback"].astype(bool)].drop(columns=["is_feedback"])
    outcomes = pd.DataFrame.from_records(
        Outcome.objects.filter(Q(engaged__isnull=False) | Q(responded__isnull=False))
        .values_list("recommendation_id", "engaged", "decided_offer_code", "responded", "decision_action")
        .iterator(chunk_size=20_000),
        columns=["recommendation_id", "engaged", "decided_offer_code", "responded", "decision_action"],
    ).set_index("recommendation_id")
    rec_ids = sorted(set(decisions.index) | set(outcomes.index))
    empty = pd.DataFrame(columns=[*FEATURE_NAMES, "engaged", "offer_code", "responded", "weight"])
    if not rec_ids:
        return LabeledExamples(empty, empty.copy(), {"engagement": 0, "response": 0})
    recs = pd.DataFrame.from_records(
        # In pk order: the rows' order is the order the models are fitted on.
        Recommendation.objects.filter(pk__in=rec_ids).order_by("pk")
        .values_list("pk", "member_id", "model_version_id", "offer__code", "features", "alternatives")
        .iterator(chunk_size=5000),
        columns=["recommendation_id", "member_pk", "model_version_id", "recommended_offer_code", "features",
                 "alternatives"],
    )
    terms = {o.code: o for o in offer_terms_list(active_only=False)}
    recs["recommended_offer_code"] = recs["recommended_offer_code"].fillna("")
    feats = _feature_frame(recs)
    recs = pd.concat([recs.drop(columns=["features"]), feats], axis=1).set_index("recommendation_id")
    recs = recs[np.isfinite(recs[FEATURE_NAMES].to_numpy(float)).all(axis=1)]
    recs = recs.join(decisions, how="left").join(outcomes, how="left")

    weight_of_action = {
        Decision.Action.OVERRIDE: cfg.override_weight, Decision.Action.APPROVE: cfg.approval_weight,
    }
    rows: list[dict[str, Any]] = []
    for rec_id, r in recs.iterrows():
        base = {name: r[name] for name in FEATURE_NAMES}
        base.update(
            recommendation_id=int(rec_id), member_pk=int(r["member_pk"]), model_version_id=int(r["model_version_id"]),
            recommended_offer_code=r["recommended_offer_code"],
            label_offer_code=None if pd.isna(r.get("action")) else (r["label_offer_code"] or ""),
            decision_action=None if pd.isna(r.get("action")) else r["action"],
        )
        # Engagement: the realized outcome beats the manager's judgement.
        if not pd.isna(r.get("engaged")):
            rows.append({**base, "engaged": int(bool(r["engaged"])), "offer_code": "", "responded": np.nan,
                         "weight": cfg.outcome_weight, "source": "outcome"})
        elif not pd.isna(r.get("label_engaged")):
            rows.append({**base, "engaged": int(bool(r["label_engaged"])), "offer_code": "", "responded": np.nan,
                         "weight": weight_of_action.get(r["action"], cfg.approval_weight), "source": "manager"})
        elif base["label_offer_code"] is not None:
            # A decision without an engagement label still labels the offer choice (evaluation).
            rows.append({**base, "engaged": np.nan, "offer_code": "", "responded": np.nan,
                         "weight": 0.0, "source": "manager"})
        if r.get("action") == Decision.Action.OVERRIDE and cfg.choice_weight > 0:
            for code, target in override_response_targets(
                chosen=base["label_offer_code"], rejected=base["recommended_offer_code"],
                shown=r["alternatives"], terms=terms,
            ).items():
                # A response rate as a label: two rows whose weights split choice_weight.
                for label, share in ((1, target), (0, 1.0 - target)):
                    if share > 0:
                        rows.append({**base, "engaged": np.nan, "offer_code": code, "responded": label,
                                     "weight": cfg.choice_weight * share, "source": "manager_choice"})
        if not pd.isna(r.get("responded")) and r.get("decided_offer_code"):
            action = r.get("decision_action")
            rows.append({**base, "engaged": np.nan, "offer_code": r["decided_offer_code"],
                         "responded": int(bool(r["responded"])),
                         "weight": cfg.override_weight if action == Decision.Action.OVERRIDE else cfg.approval_weight,
                         "source": "outcome"})
    frame = pd.DataFrame(rows)
    if not len(frame):
        return LabeledExamples(empty, empty.copy(), {"engagement": 0, "response": 0})
    evaluation_pks = evaluation_member_pks(member_pks=frame["member_pk"].unique().tolist())
    is_eval = frame["member_pk"].isin(evaluation_pks).to_numpy()
    train, evaluation = frame[~is_eval].reset_index(drop=True), frame[is_eval].reset_index(drop=True)
    trainable = train[train["weight"] > 0]
    summary = {
        "engagement": int(trainable["engaged"].notna().sum()),
        "engagement_from_outcomes": int((trainable["engaged"].notna() & (trainable["source"] == "outcome")).sum()),
        "engagement_from_managers": int((trainable["engaged"].notna() & (trainable["source"] == "manager")).sum()),
        "response": int(trainable["responded"].notna().sum()),
        "response_from_overrides": int((trainable["responded"].notna() & (trainable["source"] == "manager_choice")).sum()),
        "evaluation_rows": int(len(evaluation)),
        "weights": {"override": cfg.override_weight, "approval": cfg.approval_weight, "outcome": cfg.outcome_weight,
                    "choice": cfg.choice_weight},
    }
    return LabeledExamples(trainable.reset_index(drop=True), evaluation, summary)


# ------------------------------------------------------------------------------ evaluation


# Groups smaller than this are left out of the fairness differences: on a few dozen rows a
# difference is noise, and a gate on noise rejects good challengers at random.
FAIRNESS_MIN_GROUP = 50


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def fairness_differences(y: np.ndarray, pred: np.ndarray, groups: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Per column of ``groups``: fairlearn's demographic parity and equalized odds differences
    of the 0/1 decisions ``pred`` against labels ``y``, over groups of at least
    FAIRNESS_MIN_GROUP rows. ``dp_excess`` is the parity difference the model adds beyond
    the labels' own (|DP(pred) - DP(y)|): where base rates differ between groups, a more
    accurate model has a LARGER parity difference, so the gate uses the excess."""
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    out: dict[str, dict[str, float | None]] = {}
    for column in groups.columns:
        found = _big_groups(groups, column)
        if found is None:
            continue
        sensitive, big = found
        keep = np.isin(sensitive, big)
        ys, ps, ss = y[keep], pred[keep], sensitive[keep]
        with np.errstate(all="ignore"):
            dp = demographic_parity_difference(ys, ps, sensitive_features=ss)
            dp_labels = demographic_parity_difference(ys, ys, sensitive_features=ss)
            eo = equalized_odds_difference(ys, ps, sensitive_features=ss)
        out[column] = {
            "dp_difference": _finite(dp),
            "dp_excess": _finite(abs(dp - dp_labels)),
            "eo_difference": _finite(eo),
        }
    return out


# Resamples of the paired bootstrap that tells a fairness change from the evaluation set's noise.
FAIRNESS_BOOTSTRAP = 200


def _big_groups(groups: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(each row's group as text, the groups of at least FAIRNESS_MIN_GROUP rows), or None when
    fewer than two such groups exist: the column is then not compared at all."""
    sensitive = groups[column].fillna("").astype(str).to_numpy()
    values, counts = np.unique(sensitive, return_counts=True)
    big = values[counts >= FAIRNESS_MIN_GROUP]
    return (sensitive, big) if len(big) >= 2 else None


def fairness_difference_se(
    y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, groups: pd.DataFrame, *,
    n_boot: int = FAIRNESS_BOOTSTRAP, seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Standard error of (a - b) for ``dp_excess`` and ``eo_difference`` per column, by a paired
    Poisson bootstrap: both models' decisions on the same resampled rows, so what the two share
    (which members happen to be in the set) cancels. Same definitions and groups as
    fairness_differences, in weighted numpy form (fairlearn per resample would take minutes)."""
    y = np.asarray(y, dtype=float)
    weights = np.random.default_rng(seed).poisson(1.0, size=(n_boot, len(y))).astype(float)

    def spread(rates: np.ndarray) -> np.ndarray:  # (groups, n_boot) -> max - min per resample
        return np.nanmax(rates, axis=0) - np.nanmin(rates, axis=0)

    def differences(pred: np.ndarray, sensitive: np.ndarray, big: np.ndarray) -> dict[str, np.ndarray]:
        pred = np.asarray(pred, dtype=float)
        selected, base, tpr, fpr = [], [], [], []
        for value in big:
            w, yg, pg = weights[:, sensitive == value], y[sensitive == value], pred[sensitive == value]
            n, pos, neg = w.sum(1), (w * yg).sum(1), (w * (1 - yg)).sum(1)
            selected.append((w * pg).sum(1) / n)
            base.append(pos / n)
            tpr.append((w * yg * pg).sum(1) / pos)
            fpr.append((w * (1 - yg) * pg).sum(1) / neg)
        return {
            "dp_excess": np.abs(spread(np.array(selected)) - spread(np.array(base))),
            "eo_difference": np.fmax(spread(np.array(tpr)), spread(np.array(fpr))),
        }

    out: dict[str, dict[str, float]] = {}
    with np.errstate(all="ignore"):
        for column in groups.columns:
            found = _big_groups(groups, column)
            if found is None:
                continue
            a, b = differences(pred_a, *found), differences(pred_b, *found)
            out[column] = {metric: float(np.nanstd(a[metric] - b[metric], ddof=1)) for metric in a}
    return out


def bundle_evaluate(bundle: Any, examples: pd.DataFrame, groups: pd.DataFrame, offers: list) -> dict[str, Any]:
    """Metrics of one bundle on labeled examples (their feature snapshots), no Django writes.

    Engagement rows: AUC, Brier, binned interval coverage, fairness differences of the
    decision "engaged" (probability >= 0.5) by each column of ``groups`` (aligned with the
    rows). Rows of a manager's override: agreement of the bundle's best offer with the
    manager's choice.
    """
    from sklearn.metrics import brier_score_loss, roc_auc_score

    from recommendations.scoring import score_features
    from recommendations.training import interval_coverage_binned

    out: dict[str, Any] = {}
    eng = examples["engaged"].notna().to_numpy()
    if eng.any():
        rows = examples[eng]
        scored = score_features(bundle, rows[FEATURE_NAMES].set_axis(np.arange(len(rows))), offers)
        y = rows["engaged"].to_numpy(int)
        p = scored.probability
        out.update({
            "n": int(len(y)),
            "auc": float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None,
            "brier": float(brier_score_loss(y, p)),
            "fairness": fairness_differences(y, (p >= 0.5).astype(int), groups[eng].reset_index(drop=True)),
            "_decisions": (p >= 0.5).astype(int),  # for the paired bootstrap in models_compare
        })
        # The interval is a range for the member's true probability: checkable against
        # realized outcomes (draws of it), not against a manager's yes/no judgement.
        realized = (rows["source"] == "outcome").to_numpy() if "source" in rows else np.ones(len(rows), bool)
        out["coverage_n"] = int(realized.sum())
        out["coverage"] = float(
            interval_coverage_binned(y[realized], p[realized], scored.p_low[realized], scored.p_high[realized])
        ) if realized.sum() >= 100 else None
    # Agreement with the managers only on their OVERRIDES: an override says the recommended
    # offer was clearly wrong and names a better one. An approval only says the shown offer
    # was not clearly worse, so "agreeing" with it measures closeness to the model that made
    # the recommendation (simulate_loop, seed 2: the first model 1.000 on its own approvals),
    # which favours whichever of champion and challenger changed least.
    labeled = (
        (examples["label_offer_code"].notna() & (examples["decision_action"] == Decision.Action.OVERRIDE)).to_numpy()
        if "label_offer_code" in examples and "decision_action" in examples else np.zeros(0, bool)
    )
    if labeled.any():
        rows = examples[labeled].drop_duplicates("recommendation_id")
        scored = score_features(bundle, rows[FEATURE_NAMES].set_axis(np.arange(len(rows))), offers)
        codes = np.array([o.code for o in offers] + [""])
        chosen = codes[scored.offer_index]  # index -1 picks the trailing "" (no action)
        out["policy_n"] = int(len(rows))
        agree = chosen == rows["label_offer_code"].to_numpy(str)
        out["policy_agreement"] = float(np.mean(agree))
        out["_agree_rows"] = agree
    return out


def _groups_for(examples: pd.DataFrame) -> pd.DataFrame:
    """The monitored group of each example's member; the age band at its run's as_of."""
    from loyalty.definitions import age_band

    info = {
        pk: (region, tier, gender, birth_year)
        for pk, region, tier, gender, birth_year in Member.objects.filter(
            pk__in=examples["member_pk"].unique().tolist()
        ).values_list("pk", "region", "tier", "gender", "birth_year")
    }
    years = dict(
        Recommendation.objects.filter(pk__in=examples["recommendation_id"].unique().tolist())
        .values_list("pk", "run__as_of__year")
    ) if "recommendation_id" in examples else {}
    values = []
    for pk, rec in zip(examples["member_pk"], examples.get("recommendation_id", [None] * len(examples)), strict=True):
        region, tier, gender, birth_year = info.get(int(pk), ("", "", "", None))
        year = years.get(rec)
        values.append((region, tier, gender, age_band(birth_year, year) if year else "unknown"))
    return pd.DataFrame(values, columns=list(FAIRNESS_COLUMNS))


def models_compare(
    *, champion: ModelVersion, challenger: ModelVersion, evaluation: pd.DataFrame,
    settings_row: LearningSettings | None = None,
) -> dict[str, Any]:
    """Champion and challenger on the SAME rows: the labeled evaluation examples when there
    are enough (both classes, at least min_evaluation_examples), else their own holdouts."""
    from recommendations.model_store import bundle_load
    from recommendations.selectors import offer_terms_list

    cfg = settings_row or learning_settings_get()
    n_eng = int(evaluation["engaged"].notna().sum()) if len(evaluation) else 0
    classes = evaluation["engaged"].dropna().nunique() if len(evaluation) else 0
    if n_eng >= cfg.min_evaluation_examples and classes == 2:
        offers = offer_terms_list(active_only=True)
        groups = _groups_for(evaluation)
        # Agreement with the managers' overrides only on recommendations neither model made:
        # on its own recommendations the champion picked the rejected offer by construction,
        # which would hand any challenger the comparison.
        neutral = ~evaluation["model_version_id"].isin([champion.pk, challenger.pk])
        evaluation = evaluation.assign(label_offer_code=evaluation["label_offer_code"].where(neutral))
        result = {"basis": "labeled evaluation examples (decision feedback and realized outcomes)"}
        for name, version in (("champion", champion), ("challenger", challenger)):
            bundle = bundle_load(version.pk, version.artifact_path, version.sha256)
            result[name] = {"model_version": version.pk, **bundle_evaluate(bundle, evaluation, groups, offers)}
        # Columns without two groups of FAIRNESS_MIN_GROUP labeled rows were not checked: say so.
        result["fairness_unmeasured"] = [
            c for c in FAIRNESS_COLUMNS if c not in (result["challenger"].get("fairness") or {})
        ]
        # Paired standard error of the agreement difference (same rows for both models): a
        # drop within sampling noise of a small evaluation set is not "worse".
        a = result["challenger"].pop("_agree_rows", None)
        b = result["champion"].pop("_agree_rows", None)
        if a is not None and b is not None and len(a) > 1:
            diff = a.astype(float) - b.astype(float)
            result["policy_agreement_difference_se"] = float(diff.std(ddof=1) / np.sqrt(len(diff)))
        # The same for the fairness differences: a paired bootstrap of challenger - champion.
        eng = evaluation["engaged"].notna().to_numpy()
        result["fairness_difference_se"] = fairness_difference_se(
            evaluation.loc[eng, "engaged"].to_numpy(int), result["challenger"].pop("_decisions"),
            result["champion"].pop("_decisions"), groups[eng].reset_index(drop=True), seed=challenger.pk,
        )
        return result
    result = {"basis": f"the models' own holdouts (only {n_eng} labeled evaluation examples)"}
    for name, version in (("champion", champion), ("challenger", challenger)):
        m = version.metrics or {}
        result[name] = {
            "model_version": version.pk, "auc": m.get("auc"), "brier": m.get("brier"),
            "coverage": m.get("interval_coverage"), "fairness": {},
            "policy_value": (m.get("policy") or {}).get("model_value_per_member"),
        }
    return result


def gate_check(comparison: dict[str, Any], settings_row: LearningSettings) -> tuple[bool, list[str]]:
    """Is the challenger not worse than the champion beyond the tolerances? (passed, reasons)"""
    ch, cp = comparison["challenger"], comparison["champion"]
    reasons: list[str] = []

    def worse(metric: str, tol: float, higher_is_better: bool, transform=lambda v: v) -> None:
        a, b = ch.get(metric), cp.get(metric)
        if a is None or b is None:
            return
        a, b = transform(a), transform(b)
        delta = (b - a) if higher_is_better else (a - b)
        if delta > tol:
            reasons.append(f"{metric}: challenger {a:.4f} vs champion {b:.4f} (tolerance {tol})")

    worse("auc", settings_row.auc_tolerance, True)
    worse("brier", settings_row.brier_tolerance, False)
    worse("coverage", settings_row.coverage_tolerance, False, transform=lambda v: abs(v - 0.9))
    # Agreement with the managers is judged beyond its paired sampling noise (1.96 SE).
    worse("policy_agreement", max(settings_row.policy_tolerance,
                                  1.96 * float(comparison.get("policy_agreement_difference_se") or 0.0)), True)
    if ch.get("policy_value") is not None and cp.get("policy_value") is not None:
        scale = max(abs(cp["policy_value"]), 1e-9)
        if (cp["policy_value"] - ch["policy_value"]) / scale > settings_row.policy_tolerance:
            reasons.append(
                f"policy_value: challenger {ch['policy_value']:.4f} vs champion {cp['policy_value']:.4f}"
            )
    # Fairness too: worse beyond the tolerance AND beyond the paired noise of the evaluation
    # set. A region's equalized odds difference on a few hundred rows moves by several points
    # from the sample alone; a gate on that noise refused most challengers at random.
    noise = comparison.get("fairness_difference_se") or {}
    for column, metrics in (ch.get("fairness") or {}).items():
        base = (cp.get("fairness") or {}).get(column, {})
        for metric in ("dp_excess", "eo_difference"):
            a, b = metrics.get(metric), base.get(metric)
            se = float((noise.get(column) or {}).get(metric) or 0.0)
            if a is not None and b is not None and a - b > max(settings_row.fairness_tolerance, 1.96 * se):
                reasons.append(
                    f"{metric} by {column}: challenger {a:.4f} vs champion {b:.4f} "
                    f"(tolerance {settings_row.fairness_tolerance}, paired noise 1.96 SE {1.96 * se:.4f})"
                )
    return not reasons, reasons


# ------------------------------------------------------------------------------ retraining


@contextlib.contextmanager
def _retrain_lock() -> Iterator[None]:
    """One retrain at a time (Postgres session advisory lock; SQLite runs one writer anyway)."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [RETRAIN_LOCK])
        if not cursor.fetchone()[0]:
            raise LearningError("another retraining is running; try again when it has finished")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [RETRAIN_LOCK])


def history_as_of() -> date | None:
    """The day after the latest recorded purchase: the history is complete before it."""
    latest = Event.objects.filter(kind=ENGAGEMENT_EVENT_KIND).aggregate(m=Max("occurred_at"))["m"]
    return None if latest is None else latest.date() + timedelta(days=1)


def model_version_retrain(
    *,
    actor=None,
    as_of: date | None = None,
    horizon_days: int | None = None,
    algorithm: str | None = None,
    seed: int = 0,
    promote: bool | None = None,
) -> dict[str, Any]:
    """Train a challenger on history plus feedback, gate it against the champion, promote it
    if it passes (and ``promote``/auto_promote allow), else keep it a candidate with reasons.

    Defaults: as_of = the day after the latest recorded purchase, the champion's horizon and
    algorithm. Returns {"model_version", "status", "promoted", "gate": {...}, "feedback"}.
    """
    from recommendations.selectors import model_version_champion
    from recommendations.services import _status_entry, model_version_promote, model_version_train

    cfg = learning_settings_get()
    champion = model_version_champion()
    as_of = as_of or history_as_of()
    if as_of is None:
        raise LearningError("no recorded purchases: nothing to train on")
    horizon_days = horizon_days or (champion.horizon_days if champion else None)
    if not horizon_days:
        raise LearningError("no champion to take the horizon from: pass horizon_days")
    algorithm = algorithm or (champion.algorithm if champion else "hgb")
    with _retrain_lock():
        examples = labeled_examples_load(settings_row=cfg)
        challenger = model_version_train(
            as_of=as_of, horizon_days=horizon_days, algorithm=algorithm, actor=actor, seed=seed,
            labeled_examples=examples.train, feedback_summary=examples.summary,
        )
        if champion is None:
            return {"model_version": challenger.pk, "status": challenger.status, "promoted": True,
                    "gate": {"passed": True, "reasons": ["first model"]}, "feedback": examples.summary}
        comparison = models_compare(
            champion=champion, challenger=challenger, evaluation=examples.evaluation, settings_row=cfg
        )
        passed, reasons = gate_check(comparison, cfg)
        do_promote = cfg.auto_promote if promote is None else promote
        gate = {"passed": passed, "reasons": reasons, "against": champion.pk, **comparison}
        from recommendations.services import _json_safe

        with transaction.atomic():
            version = ModelVersion.objects.select_for_update().get(pk=challenger.pk)
            version.metrics = {**version.metrics, "gate": _json_safe(gate)}
            if not passed:
                note = f"gate failed against v{champion.pk}: " + "; ".join(reasons)
                version.status_history = [*version.status_history, _status_entry(version.status, actor, note)]
                version.notes = (version.notes + "\n" + note).strip()
            elif not do_promote:
                note = f"gate passed against v{champion.pk}; promotion left to an admin"
                version.status_history = [*version.status_history, _status_entry(version.status, actor, note)]
                version.notes = (version.notes + "\n" + note).strip()
            version.save(update_fields=["metrics", "status_history", "notes"])
            audit_log(
                actor=actor, action="model.retrain", object_type="model_version", object_id=version.pk,
                new=_json_safe({"champion": champion.pk, "gate_passed": passed, "reasons": reasons,
                                "basis": comparison["basis"], "feedback": examples.summary}),
            )
        if passed and do_promote:
            model_version_promote(
                model_version=challenger, actor=actor,
                reason=f"retrained with feedback; gate passed against v{champion.pk} ({comparison['basis']})",
            )
        challenger.refresh_from_db()
    return {
        "model_version": challenger.pk, "status": challenger.status,
        "promoted": challenger.status == ModelVersion.Status.CHAMPION,
        "gate": _json_safe(gate), "feedback": examples.summary,
    }


def model_version_promote_manual(*, model_version_id: int, actor, reason: str) -> ModelVersion:
    """An admin promotes a version (candidate or retired) to champion; audited."""
    from recommendations.services import model_version_promote

    version = ModelVersion.objects.filter(pk=model_version_id).first()
    if version is None:
        raise LearningError(f"model version {model_version_id} does not exist")
    if version.status == ModelVersion.Status.CHAMPION:
        raise LearningError(f"model version {model_version_id} is already the champion")
    return model_version_promote(model_version=version, actor=actor, reason=reason.strip() or "promoted by an admin")


def model_version_rollback(*, model_version_id: int, actor, reason: str = "") -> ModelVersion:
    """Make an earlier version (retired or candidate) the champion again, in one step, audited
    as model.rollback besides the promotion's own model.promote row."""
    from recommendations.selectors import model_version_champion
    from recommendations.services import model_version_promote

    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().filter(pk=model_version_id).first()
        if version is None:
            raise LearningError(f"model version {model_version_id} does not exist")
        current = model_version_champion()
        if current is not None and current.pk == version.pk:
            raise LearningError(f"model version {model_version_id} is already the champion")
        if current is not None and version.pk > current.pk:
            raise LearningError(
                f"v{version.pk} is newer than the champion v{current.pk}: promote it instead of rolling back"
            )
        text = f"rollback from v{current.pk if current else '-'}" + (f": {reason.strip()}" if reason.strip() else "")
        promoted = model_version_promote(model_version=version, actor=actor, reason=text)
        audit_log(
            actor=actor, action="model.rollback", object_type="model_version", object_id=version.pk,
            old={"champion": current.pk if current else None}, new={"champion": version.pk, "reason": reason.strip()},
        )
    return promoted


__all__ = [
    "HOLDOUT_REASON",
    "LabeledExamples",
    "LearningError",
    "bundle_evaluate",
    "evaluation_member_pks",
    "fairness_differences",
    "gate_check",
    "hash_fraction",
    "history_as_of",
    "holdout_member_pks",
    "labeled_examples_load",
    "learning_settings_get",
    "learning_settings_update",
    "model_version_promote_manual",
    "model_version_retrain",
    "model_version_rollback",
    "models_compare",
]
