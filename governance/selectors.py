"""Governance reads: the policy in force, open fairness alerts, budget spend, routable items.

Everything routing needs from the database is loaded here as plain values, so that
governance.routing stays a pure function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
from django.conf import settings
from django.db.models import Exists, OuterRef, Q, Sum
from django.utils import timezone

from governance.models import EscalationPolicy, FairnessAlert
from governance.routing import Budget, PolicyConfig, RouteInputs, RoutingContext
from loyalty.definitions import age_band
from recommendations.models import OPEN_STATUSES, Decision, Recommendation, RecommendationStatus
from recommendations.selectors import turned_down_before


def policy_active() -> EscalationPolicy | None:
    return EscalationPolicy.objects.filter(active=True).first()


def policy_config(policy: EscalationPolicy | None) -> PolicyConfig:
    """The stored version as a PolicyConfig; the built-in default (pilot) when there is none."""
    if policy is None:
        return PolicyConfig()
    return PolicyConfig.from_values(
        phase=policy.phase,
        sample_rate=policy.sample_rate,
        limited_max_offer_cost=policy.limited_max_offer_cost,
        sla_review_hours=policy.sla_review_hours,
        stale_after_hours=policy.stale_after_hours,
        rules=policy.rules,
        budgets=policy.budgets,
        version=policy.version,
    )


def policy_config_active() -> PolicyConfig:
    return policy_config(policy_active())


def policy_versions(*, limit: int = 50) -> list[EscalationPolicy]:
    return list(EscalationPolicy.objects.select_related("created_by").order_by("-version")[:limit])


def fairness_alerts_open() -> frozenset[tuple[str, str]]:
    return frozenset(
        FairnessAlert.objects.filter(status=FairnessAlert.Status.OPEN).values_list("column", "value")
    )


def period_start(period: str, now: datetime) -> datetime:
    """Start of the budget period containing `now`, in the project's time zone."""
    local = timezone.localtime(now)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        return day - timedelta(days=day.weekday())  # Monday
    return day.replace(day=1)


SPENDING_STATUSES = (
    RecommendationStatus.APPROVED,
    RecommendationStatus.AUTO_APPROVED,
    RecommendationStatus.OVERRIDDEN,
)


def budget_spent(budgets: Sequence[Budget], *, now: datetime | None = None) -> dict[str, float]:
    """Offer cost committed this period per budget: approved and auto-approved items at their
    recommended offer's cost, overridden items at the cost of the offer the manager chose.
    Two GROUP BY queries per (dimension, period), whatever the number of items."""
    now = now or timezone.now()
    spent = {b.key: 0.0 for b in budgets}
    pairs = {(b.dimension, b.period) for b in budgets}
    for dimension, period in pairs:
        values = sorted({b.value for b in budgets if (b.dimension, b.period) == (dimension, period)})
        start = period_start(period, now)
        column = f"member__{dimension}"
        decided = Recommendation.objects.filter(
            decided_at__gte=start, **{f"{column}__in": values}
        )
        by_value: dict[str, float] = dict.fromkeys(values, 0.0)
        rows = (
            decided.filter(
                status__in=[RecommendationStatus.APPROVED, RecommendationStatus.AUTO_APPROVED], offer__isnull=False
            )
            .order_by()
            .values(column)
            .annotate(total=Sum("offer__cost"))
        )
        for row in rows:
            by_value[row[column]] += float(row["total"] or 0)
        # An overridden item costs what its latest decision chose (the override that stands).
        later = Decision.objects.filter(recommendation=OuterRef("recommendation"), sequence__gt=OuterRef("sequence"))
        overrides = (
            Decision.objects.filter(
                action=Decision.Action.OVERRIDE,
                chosen_offer__isnull=False,
                recommendation__status=RecommendationStatus.OVERRIDDEN,
                recommendation__decided_at__gte=start,
                **{f"recommendation__{column}__in": values},
            )
            .filter(~Exists(later))
            .order_by()
            .values(f"recommendation__{column}")
            .annotate(total=Sum("chosen_offer__cost"))
        )
        for row in overrides:
            by_value[row[f"recommendation__{column}"]] += float(row["total"] or 0)
        for b in budgets:
            if (b.dimension, b.period) == (dimension, period):
                spent[b.key] = by_value.get(b.value, 0.0)
    return spent


def routing_context(config: PolicyConfig, *, now: datetime | None = None) -> RoutingContext:
    return RoutingContext(
        open_alerts=fairness_alerts_open(),
        budget_spent=budget_spent(config.budgets, now=now),
        currency=settings.LOYALTY_CURRENCY,
    )


def item_key(run_id: int, member_id: int) -> str:
    """The identity spot-check sampling hashes: the same item is always (not) sampled."""
    return f"{run_id}:{member_id}"


ROUTABLE_FIELDS = (
    "id", "run_id", "member_id", "offer_id", "offer__code", "offer__cost", "offer__high_stakes", "expected_value",
    "probability", "p_low", "p_high", "member__tier", "member__region", "member__gender",
    "member__birth_year", "run__as_of", "model_version__drift_psi", "model_version__drift_flagged", "status", "route",
    "recalled_decision_id", "model_offer_id", "model_offer__code",
)


def days_since_rejected(turned: Sequence[Decision | None], as_ofs: Sequence[date]) -> np.ndarray:
    """Per item: days from the earlier run where a manager's standing override turned down the
    model's pick for the member (recommendations.selectors.turned_down_before) to the item's
    as-of date. NaN when it was not turned down."""
    return np.array(
        [np.nan if d is None else float((as_of - d.recommendation.as_of).days) for d, as_of in zip(turned, as_ofs, strict=True)],
        dtype=np.float64,
    )


def rejections_held(config: PolicyConfig, turned: Sequence[Decision | None], as_of: date) -> np.ndarray:
    """Per item: whether the rule ``rejected_before`` still holds the manager's turn-down (the
    rule is on and the override is at most its threshold of days old). The recall of earlier
    choices (recommendations.runs.earlier_choices_recall) honours exactly these."""
    rule = next((r for r in config.rules if r.kind == "rejected_before"), None)
    if rule is None or not rule.enabled or rule.threshold is None:
        return np.zeros(len(turned), dtype=bool)
    days = days_since_rejected(turned, [as_of] * len(turned))
    return np.nan_to_num(days, nan=np.inf) <= float(rule.threshold)


@dataclass
class RoutableItems:
    ids: np.ndarray
    inputs: RouteInputs
    status: list[str]
    route: list[str]


def routable_open_items() -> Q:
    """Open items whose status routing set: no person (or deadline) has acted on them yet.
    Items with a decision keep their status; a policy change does not undo a person's call."""
    return Q(status__in=OPEN_STATUSES) & ~Q(Exists(Decision.objects.filter(recommendation=OuterRef("pk"))))


def routable_items_load(*, ids: Sequence[int] | None = None) -> RoutableItems:
    """Open, routable items (or just `ids` among them) as routing inputs, in id order."""
    from recommendations.rollout import rule_flag_masks

    qs = Recommendation.objects.filter(routable_open_items())
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    rows = list(qs.order_by("id").values_list(*ROUTABLE_FIELDS).iterator(chunk_size=20_000))
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(ROUTABLE_FIELDS)
    col = dict(zip(ROUTABLE_FIELDS, columns, strict=True))
    # The model's own pick (Recommendation.model_offer_id_picked): model_offer where a choice
    # was recalled, else the item's offer.
    recalled = [d is not None for d in col["recalled_decision_id"]]
    model_offer_ids = [m if was else o for was, m, o in zip(
        recalled, col["model_offer_id"], col["offer_id"], strict=True)]
    model_offer_codes = [m if was else o for was, m, o in zip(
        recalled, col["model_offer__code"], col["offer__code"], strict=True)]
    inputs = RouteInputs(
        key=[item_key(r, m) for r, m in zip(col["run_id"], col["member_id"], strict=True)],
        offer_code=list(col["offer__code"]),
        offer_cost=[float(c or 0) for c in col["offer__cost"]],
        high_stakes=[bool(h) for h in col["offer__high_stakes"]],
        expected_value=list(col["expected_value"]),
        probability=list(col["probability"]),
        p_low=list(col["p_low"]),
        p_high=list(col["p_high"]),
        tier=list(col["member__tier"]),
        region=list(col["member__region"]),
        gender=list(col["member__gender"]),
        age_band=[age_band(b, d.year) for b, d in zip(col["member__birth_year"], col["run__as_of"], strict=True)],
        model_psi=[math.nan if v is None else v for v in col["model_version__drift_psi"]],
        model_drift=list(col["model_version__drift_flagged"]),
        days_since_rejected=days_since_rejected(
            turned_down_before(run_ids=col["run_id"], member_ids=col["member_id"], offer_ids=model_offer_ids),
            col["run__as_of"],
        ),
        rejected_offer_code=model_offer_codes,
        flagged_rules=rule_flag_masks(col["member_id"]),
    )
    return RoutableItems(
        ids=np.asarray(col["id"], dtype=np.int64),
        inputs=inputs,
        status=list(col["status"]),
        route=list(col["route"]),
    )


def open_items_kept_count() -> int:
    """Open items a person or a deadline already acted on: re-routing leaves them as they are."""
    return Recommendation.objects.filter(status__in=OPEN_STATUSES).exclude(routable_open_items()).count()


def overdue_filters(config: PolicyConfig, *, now: datetime) -> dict[str, Q]:
    """Which open items a deadline applies to, as filters (used by deadlines_enforce)."""
    stale_before = now - timedelta(hours=config.stale_after_hours)
    sla_before = now - timedelta(hours=config.sla_review_hours)
    return {
        "stale": Q(status__in=OPEN_STATUSES, created_at__lt=stale_before),
        "withdrawn": Q(status__in=OPEN_STATUSES, offer__isnull=False, offer__active=False),
        # `entered_at`: when the item last entered the pending state (annotated by the caller).
        "sla": Q(status=RecommendationStatus.PENDING, entered_at__lt=sla_before),
    }
