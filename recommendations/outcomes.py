"""Realized outcomes joined to past recommendations and the decisions that stood on them.

Storage: an ``Outcome`` row per recommendation of a run whose as_of lies before the end of
the imported data (a table, not a view: retraining, accuracy reports and lift read it many
times, and it is recomputed idempotently by ``outcomes_refresh`` after every events import:
the import sends loyalty.signals.events_imported on commit, and this app's receiver
enqueues the ``recommendations.refresh_outcomes`` task).

Definitions (loyalty.definitions):

* ``engaged``: at least one purchase in [as_of, as_of + horizon) of the run's model; known
  once the imported events reach the end of that window (``data_until``), else None.
* the decision that stood: the latest approve / override / auto-approve not compensated by
  an undo; its offer is ``decided_offer_code`` ("" = no action). Holdout members have none.
* ``sent_at``: the first ``offer_sent`` event of that offer to the member inside the window;
  ``responded``: an ``offer_redeemed`` of the same offer within RESPONSE_WINDOW_DAYS after
  it, known once that window is covered by the data, else None.

``data_until`` is the day after the latest imported event: the data are taken as complete
before it (imports arrive in time order).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd
from django.db import transaction
from django.db.models import Max

from loyalty.definitions import ENGAGEMENT_EVENT_KIND, RESPONSE_WINDOW_DAYS
from loyalty.models import Event, Offer
from recommendations.models import (
    Decision,
    Outcome,
    Recommendation,
    RecommendationStatus,
    ScoringRun,
)
from recommendations.selectors import standing_decisions_frame

logger = logging.getLogger(__name__)

MEMBER_BATCH = 20_000


def _instant(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def data_until() -> date | None:
    """The day after the latest imported event (None without events)."""
    latest = Event.objects.aggregate(m=Max("occurred_at"))["m"]
    return None if latest is None else latest.date() + timedelta(days=1)


def outcomes_refresh(*, run_id: int | None = None, until: date | None = None) -> dict[str, Any]:
    """(Re)compute the outcomes of one run, or of every succeeded run, from the imported
    events. Idempotent: an upsert per recommendation. Returns counts."""
    until = until or data_until()
    totals = {"runs": 0, "outcomes": 0, "engaged_known": 0, "responses_known": 0,
              "until": until.isoformat() if until else None}
    if until is None:
        return totals
    runs = ScoringRun.objects.filter(status=ScoringRun.Status.SUCCEEDED, as_of__lt=until)
    if run_id is not None:
        runs = runs.filter(pk=run_id)
    for run in runs.select_related("model_version").order_by("pk"):
        counts = _run_outcomes(run, until)
        totals["runs"] += 1
        for key in ("outcomes", "engaged_known", "responses_known"):
            totals[key] += counts[key]
    logger.info("outcomes refreshed: %s", totals)
    return totals


def _run_outcomes(run: ScoringRun, until: date) -> dict[str, int]:
    horizon = int(run.model_version.horizon_days)
    start = _instant(run.as_of)
    window_end = run.as_of + timedelta(days=horizon)
    engaged_known = window_end <= until
    response_ns = pd.Timedelta(days=RESPONSE_WINDOW_DAYS)
    until_ts = pd.Timestamp(_instant(until))
    decisions = standing_decisions_frame(
        Decision.objects.filter(recommendation__run_id=run.pk),
        {"pk": "pk", "action": "action", "actor_label": "actor_label", "offer_code": "chosen_offer__code"},
    )
    decisions["offer_code"] = decisions["offer_code"].fillna("")
    counts = {"outcomes": 0, "engaged_known": 0, "responses_known": 0}
    recs_qs = Recommendation.objects.filter(run_id=run.pk).order_by("member_id")
    member_pks = list(recs_qs.values_list("member_id", flat=True))
    for lo in range(0, len(member_pks), MEMBER_BATCH):
        batch = member_pks[lo : lo + MEMBER_BATCH]
        recs = pd.DataFrame.from_records(
            recs_qs.filter(member_id__gte=batch[0], member_id__lte=batch[-1]).values_list(
                "pk", "member_id", "model_version_id", "offer__code", "holdout"
            ),
            columns=["pk", "member_id", "model_version_id", "offer_code", "holdout"],
        )
        events = pd.DataFrame.from_records(
            Event.objects.filter(
                member_id__gte=batch[0], member_id__lte=batch[-1], occurred_at__gte=start,
                occurred_at__lt=_instant(window_end) + timedelta(days=RESPONSE_WINDOW_DAYS),
                kind__in=[ENGAGEMENT_EVENT_KIND, "offer_sent", "offer_redeemed"],
            ).values_list("member_id", "occurred_at", "kind", "offer_code"),
            columns=["member_id", "occurred_at", "kind", "offer_code"],
        )
        events["occurred_at"] = pd.to_datetime(events["occurred_at"], utc=True)
        in_window = events["occurred_at"] < pd.Timestamp(_instant(window_end))
        purchases = events[(events["kind"] == ENGAGEMENT_EVENT_KIND) & in_window].groupby("member_id").size()
        sends = events[(events["kind"] == "offer_sent") & in_window]
        first_send = sends.groupby(["member_id", "offer_code"])["occurred_at"].min()
        redeemed = events[events["kind"] == "offer_redeemed"]
        redeemed_by = {
            key: grp["occurred_at"].dt.tz_localize(None).to_numpy("datetime64[ns]")
            for key, grp in redeemed.groupby(["member_id", "offer_code"])
        }

        rows = []
        for rec in recs.itertuples(index=False):
            decision = decisions.loc[rec.pk] if rec.pk in decisions.index else None
            decided = "" if decision is None else str(decision["offer_code"])
            n_purchases = int(purchases.get(rec.member_id, 0)) if engaged_known else None
            sent_at = first_send.get((rec.member_id, decided)) if decided else None
            responded = None
            if sent_at is not None and sent_at + response_ns <= until_ts:
                times = redeemed_by.get((rec.member_id, decided))
                sent_naive = sent_at.tz_localize(None)
                responded = bool(
                    times is not None
                    and ((times >= sent_naive.to_datetime64())
                         & (times <= (sent_naive + response_ns).to_datetime64())).any()
                )
            rows.append(Outcome(
                recommendation_id=int(rec.pk), run_id=run.pk, member_id=int(rec.member_id),
                model_version_id=int(rec.model_version_id), as_of=run.as_of, window_end=window_end,
                engaged=None if n_purchases is None else n_purchases > 0, purchases=n_purchases,
                holdout=bool(rec.holdout),
                decision_id=None if decision is None else int(decision["pk"]),
                decision_action="" if decision is None else str(decision["action"]),
                decided_by="" if decision is None else str(decision["actor_label"]),
                decided_offer_code=decided, recommended_offer_code=rec.offer_code or "",
                sent_at=None if sent_at is None else sent_at.to_pydatetime(), responded=responded,
            ))
        with transaction.atomic():
            Outcome.objects.bulk_create(
                rows, batch_size=2000, update_conflicts=True, unique_fields=["recommendation"],
                update_fields=["engaged", "purchases", "holdout", "decision", "decision_action", "decided_by",
                               "decided_offer_code", "recommended_offer_code", "sent_at", "responded",
                               "computed_at", "window_end", "model_version"],
            )
        counts["outcomes"] += len(rows)
        counts["engaged_known"] += sum(r.engaged is not None for r in rows)
        counts["responses_known"] += sum(r.responded is not None for r in rows)
    return counts


# ------------------------------------------------------------------------------ accuracy


def _offer_terms() -> dict[str, tuple[float, float]]:
    return {code: (float(cost), float(value)) for code, cost, value in Offer.objects.values_list("code", "cost", "value")}


def _outcome_frame(run_id: int | None) -> pd.DataFrame:
    qs = Outcome.objects.all()
    if run_id is not None:
        qs = qs.filter(run_id=run_id)
    # In a fixed order: float means over an upserted table's scan order differ in the last digits.
    frame = pd.DataFrame.from_records(
        qs.order_by("recommendation_id").values_list(
            "recommendation_id", "run_id", "model_version_id", "engaged", "holdout", "decision_action",
            "decided_by", "decided_offer_code", "recommended_offer_code", "responded",
            "recommendation__probability", "decision__label_engaged",
        ).iterator(chunk_size=20_000),
        columns=["recommendation_id", "run_id", "model_version_id", "engaged", "holdout", "decision_action",
                 "decided_by", "decided_offer_code", "recommended_offer_code", "responded", "probability",
                 "label_engaged"],
    )
    return frame


def _value(frame: pd.DataFrame, terms: dict[str, tuple[float, float]]) -> np.ndarray:
    cost = frame["decided_offer_code"].map(lambda c: terms.get(c, (0.0, 0.0))[0]).to_numpy(float)
    value = frame["decided_offer_code"].map(lambda c: terms.get(c, (0.0, 0.0))[1]).to_numpy(float)
    return frame["responded"].astype(float).to_numpy() * value - cost


def _offer_stats(frame: pd.DataFrame, terms) -> dict[str, Any]:
    known = frame[frame["responded"].notna()]
    return {
        "offers_with_response": int(len(known)),
        "response_rate": float(known["responded"].astype(float).mean()) if len(known) else None,
        "value_per_offer": float(_value(known, terms).mean()) if len(known) else None,
    }


def decision_accuracy(*, run_id: int | None = None) -> dict[str, Any]:
    """Model and managers scored against realized outcomes (computed on demand).

    per_model: engagement AUC and Brier of the recommendations' probabilities against
    ``engaged``; realized response rate and value of offers sent as the model recommended
    (approved or auto-approved). per_manager: decisions, override rate, realized response
    rate and value of the offers they stood behind, and how often their engagement label
    matched the outcome. ``approved_vs_overridden``: the model's choice against the managers'.
    """
    from sklearn.metrics import brier_score_loss, roc_auc_score

    frame = _outcome_frame(run_id)
    terms = _offer_terms()
    result: dict[str, Any] = {"run": run_id, "n": int(len(frame)), "per_model": {}, "per_manager": {}}
    if not len(frame):
        return result
    for version, grp in frame.groupby("model_version_id"):
        known = grp[grp["engaged"].notna()]
        y = known["engaged"].astype(int).to_numpy()
        p = known["probability"].to_numpy(float)
        as_recommended = grp[grp["decision_action"].isin([Decision.Action.APPROVE, Decision.Action.AUTO_APPROVE])]
        result["per_model"][str(version)] = {
            "n_engaged_known": int(len(known)),
            "auc": float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None,
            "brier": float(brier_score_loss(y, p)) if len(y) else None,
            "engaged_rate": float(y.mean()) if len(y) else None,
            "mean_probability": float(p.mean()) if len(p) else None,
            **_offer_stats(as_recommended, terms),
        }
    decided = frame[frame["decision_action"] != ""]
    for manager, grp in decided.groupby("decided_by"):
        labeled = grp[grp["label_engaged"].notna() & grp["engaged"].notna()]
        overrides = int((grp["decision_action"] == Decision.Action.OVERRIDE).sum())
        result["per_manager"][str(manager)] = {
            "decisions": int(len(grp)),
            "overrides": overrides,
            "override_rate": overrides / len(grp),
            "engagement_labels_checked": int(len(labeled)),
            "engagement_label_accuracy": float(
                (labeled["label_engaged"].astype(bool) == labeled["engaged"].astype(bool)).mean()
            ) if len(labeled) else None,
            **_offer_stats(grp, terms),
        }
    result["approved_vs_overridden"] = {
        "approved": _offer_stats(decided[decided["decision_action"] == Decision.Action.APPROVE], terms),
        "overridden": _offer_stats(decided[decided["decision_action"] == Decision.Action.OVERRIDE], terms),
    }
    return result


# ---------------------------------------------------------------------------- override payoff

# How an item was decided, for override_payoff: the model's pick was sent, or a manager's.
PAYOFF_GROUPS = {
    "as_recommended": (Decision.Action.APPROVE, Decision.Action.AUTO_APPROVE),
    "overridden": (Decision.Action.OVERRIDE,),
}


def _mean_interval(values: np.ndarray, level: float) -> dict[str, float | None]:
    """Mean with a normal-approximation interval (the items are independent members)."""
    from scipy.stats import norm

    n = len(values)
    if not n:
        return {"mean": None, "low": None, "high": None}
    mean = float(values.mean())
    if n < 2:
        return {"mean": mean, "low": None, "high": None}
    half = float(norm.ppf(0.5 + level / 2) * values.std(ddof=1) / np.sqrt(n))
    return {"mean": mean, "low": mean - half, "high": mean + half}


def override_payoff(*, run_id: int | None = None, level: float = 0.9) -> dict[str, Any]:
    """What the items a person decided realized, against what the model expected.

    For every decided item (not in the holdout) whose result is known: realized value = the
    offer sent's value if it was redeemed, minus its cost (0 when nothing was sent; an offer's
    result is known once its response window closed). ``model_expected`` is the expected value
    the model showed for its own pick. Per group (as_recommended: approved or auto-approved;
    overridden) and, for overrides, per manager: items, mean realized value, mean model
    expectation and their difference per item, each with a ``level`` interval.

    When the as_recommended difference is near 0 the model's expected values are honest on the
    offers it picks, and the overridden difference estimates what overriding gained (> 0) or
    lost per item against letting the model's pick go out.
    """
    qs = Outcome.objects.filter(holdout=False, decision_action__in=[a for g in PAYOFF_GROUPS.values() for a in g])
    if run_id is not None:
        qs = qs.filter(run_id=run_id)
    frame = pd.DataFrame.from_records(
        qs.order_by("recommendation_id").values_list(
            "decision_action", "decided_by", "decided_offer_code", "recommended_offer_code", "responded",
            "recommendation__expected_value",
        ).iterator(chunk_size=20_000),
        columns=["decision_action", "decided_by", "decided_offer_code", "recommended_offer_code", "responded",
                 "model_expected"],
    )
    result: dict[str, Any] = {"run": run_id, "level": level, "groups": {}, "per_manager": {}}
    if not len(frame):
        return result
    sent = frame["decided_offer_code"] != ""
    # Known: nothing sent (0 now), or the response window of the offer sent has closed.
    frame = frame[~sent | frame["responded"].notna()].copy()
    frame["responded"] = frame["responded"].fillna(False).astype(bool)
    # Approving "no action" when the model proposed none teaches nothing about value.
    frame = frame[(frame["decided_offer_code"] != "") | (frame["recommended_offer_code"] != "")]
    frame["realized"] = _value(frame, _offer_terms())

    def summary(part: pd.DataFrame) -> dict[str, Any]:
        realized = part["realized"].to_numpy(float)
        expected = part["model_expected"].to_numpy(float)
        return {
            "items": int(len(part)),
            "realized": _mean_interval(realized, level),
            "model_expected": float(expected.mean()) if len(part) else None,
            "difference": _mean_interval(realized - expected, level),
        }

    for name, actions in PAYOFF_GROUPS.items():
        result["groups"][name] = summary(frame[frame["decision_action"].isin(actions)])
    overrides = frame[frame["decision_action"] == Decision.Action.OVERRIDE]
    for manager, part in overrides.groupby("decided_by"):
        result["per_manager"][str(manager)] = summary(part)
    return result


# ------------------------------------------------------------------------------ holdout lift


def holdout_lift(
    *, run_id: int, n_boot: int = 2000, level: float = 0.95, seed: int = 0, model_version_id: int | None = None
) -> dict[str, Any]:
    """Incremental engagement of members whose approved offer was sent, against the holdout.

    treated: non-holdout recommendations of the run whose standing decision sent an offer
    (approved, auto-approved, or overridden to another offer); holdout: holdout members for
    whom the model recommended an offer (they would have been offered something). lift =
    engaged rate treated - engaged rate holdout, with a percentile bootstrap interval
    (resampling both groups). Only outcomes whose horizon closed count. The treated group is
    selected by the decisions, the holdout only by the model's recommendation: a lift is an
    upper bound on the offers' effect when managers approve members more likely to engage.
    ``model_version_id``: only the members that model served (a canary against its champion).
    """
    outcomes = Outcome.objects.filter(run_id=run_id, engaged__isnull=False)
    if model_version_id is not None:
        outcomes = outcomes.filter(model_version_id=model_version_id)
    frame = pd.DataFrame.from_records(
        outcomes.values_list(
            "holdout", "decided_offer_code", "recommended_offer_code", "engaged", "recommendation__status"
        ),
        columns=["holdout", "decided", "recommended", "engaged", "status"],
    )
    result: dict[str, Any] = {"run": run_id, "lift": None, "low": None, "high": None,
                              "n_treated": 0, "n_holdout": 0, "level": level}
    if not len(frame):
        return result
    sent = frame["status"].isin([RecommendationStatus.APPROVED, RecommendationStatus.AUTO_APPROVED,
                                 RecommendationStatus.OVERRIDDEN]) & (frame["decided"] != "")
    treated = frame.loc[~frame["holdout"] & sent, "engaged"].astype(float).to_numpy()
    holdout = frame.loc[frame["holdout"] & (frame["recommended"] != ""), "engaged"].astype(float).to_numpy()
    result.update(n_treated=int(len(treated)), n_holdout=int(len(holdout)))
    if not len(treated) or not len(holdout):
        return result
    # For 0/1 outcomes, resampling n members with replacement gives Binomial(n, rate) / n
    # engaged: the same bootstrap distribution at O(n_boot) cost, whatever the group sizes.
    rng = np.random.default_rng(seed)
    boots = (
        rng.binomial(len(treated), treated.mean(), n_boot) / len(treated)
        - rng.binomial(len(holdout), holdout.mean(), n_boot) / len(holdout)
    )
    tail = (1.0 - level) / 2
    result.update(
        lift=float(treated.mean() - holdout.mean()),
        low=float(np.quantile(boots, tail)),
        high=float(np.quantile(boots, 1 - tail)),
        treated_rate=float(treated.mean()),
        holdout_rate=float(holdout.mean()),
    )
    return result


def on_events_imported(sender: Any = None, **kwargs: Any) -> None:
    """Receiver of loyalty.signals.events_imported (sent on commit): refresh outcomes in a task."""
    from recommendations.tasks import refresh_outcomes

    refresh_outcomes.delay()


__all__ = [
    "data_until", "decision_accuracy", "holdout_lift", "on_events_imported", "outcomes_refresh", "override_payoff",
]
