"""Governance writes: policy versions, routing of scored and open items, automation, deadlines.

Every change writes its audit row in the same transaction. Automated decisions go through
recommendations.decisions.decisions_record_system, the decision service's system path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

import numpy as np
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection, transaction
from django.db.models import Max
from django.db.models.functions import Coalesce
from django.utils import timezone

from governance.audit import audit_log
from governance.models import EscalationPolicy, FairnessAlert
from governance.routing import (
    ROUTE_AUTO,
    ROUTE_SENIOR,
    PolicyConfig,
    RouteInputs,
    RoutingResult,
    route_items,
)
from governance.selectors import (
    days_since_rejected,
    item_key,
    open_items_kept_count,
    overdue_filters,
    policy_active,
    policy_config,
    policy_config_active,
    routable_items_load,
    routable_open_items,
    routing_context,
)
from loyalty.definitions import age_band
from loyalty.models import Member, Offer
from recommendations.models import (
    Decision,
    ModelVersion,
    Recommendation,
    RecommendationStatus,
)

User = AbstractBaseUser | AnonymousUser | None

# Advisory lock ids: policy saves serialize; anything that auto-approves against a budget too.
POLICY_LOCK = 7_301_001
BUDGET_LOCK = 7_301_002


def _advisory_lock(key: int) -> None:
    """Transaction-scoped lock on Postgres. SQLite runs one writing transaction at a time anyway."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def _status_for(route: str) -> str:
    """Where a routed item waits. Auto items wait as pending for the instant before the system
    records their auto-approval in the same transaction."""
    return RecommendationStatus.ESCALATED if route == ROUTE_SENIOR else RecommendationStatus.PENDING


def _actor(actor: User) -> AbstractBaseUser | None:
    return actor if actor is not None and getattr(actor, "is_authenticated", False) else None


# -------------------------------------------------------------------------------- policy


def _diff(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Changed keys only (rules compared one by one), as (old values, new values)."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for key in new:
        if key == "rules":
            changed = [k for k in new["rules"] if old.get("rules", {}).get(k) != new["rules"][k]]
            if changed:
                before["rules"] = {k: old.get("rules", {}).get(k) for k in changed}
                after["rules"] = {k: new["rules"][k] for k in changed}
        elif old.get(key) != new[key]:
            before[key] = old.get(key)
            after[key] = new[key]
    return before, after


def policy_save(
    *,
    actor: User,
    phase: str,
    sample_rate: Any,
    limited_max_offer_cost: Any,
    sla_review_hours: Any,
    stale_after_hours: Any,
    rules: dict[str, dict[str, Any]] | None = None,
    budgets: Sequence[dict[str, Any]] = (),
    note: str = "",
) -> EscalationPolicy:
    """Validate and store the next policy version, make it the one in force, audit the old
    and new values in the same transaction, and re-route the open items after commit.

    Raises governance.routing.PolicyInvalid (with per-field errors) for invalid values.
    """
    config = PolicyConfig.from_values(
        phase=phase,
        sample_rate=sample_rate,
        limited_max_offer_cost=limited_max_offer_cost,
        sla_review_hours=sla_review_hours,
        stale_after_hours=stale_after_hours,
        rules=rules,
        budgets=budgets,
    )
    with transaction.atomic():
        _advisory_lock(POLICY_LOCK)
        current = EscalationPolicy.objects.select_for_update().filter(active=True).first()
        old_config = policy_config(current)
        last = EscalationPolicy.objects.aggregate(m=Max("version"))["m"] or 0
        if current is not None:
            EscalationPolicy.objects.filter(pk=current.pk).update(active=False)
        snapshot = config.snapshot()
        policy = EscalationPolicy.objects.create(
            version=last + 1,
            active=True,
            created_by=_actor(actor),
            note=note.strip()[:300],
            phase=snapshot["phase"],
            sample_rate=snapshot["sample_rate"],
            limited_max_offer_cost=snapshot["limited_max_offer_cost"],
            sla_review_hours=snapshot["sla_review_hours"],
            stale_after_hours=snapshot["stale_after_hours"],
            rules=snapshot["rules"],
            budgets=snapshot["budgets"],
        )
        old, new = _diff(old_config.snapshot(), snapshot)
        audit_log(
            actor=actor,
            action="policy.update" if current is not None else "policy.create",
            object_type="escalation_policy",
            object_id=policy.version,
            old={"version": current.version if current is not None else None, **old},
            new={"version": policy.version, "note": policy.note, **new},
        )
        version = policy.version
        transaction.on_commit(lambda: _enqueue_reroute(version))
    return policy


def _enqueue_reroute(policy_version: int) -> None:
    from governance.tasks import reroute_open_items

    reroute_open_items.delay(policy_version)


# -------------------------------------------------------------------------------- routing


def routes_for_scoring(
    *,
    run_id: int,
    model_version: ModelVersion,
    member_ids: Sequence[int],
    offers: Sequence[Offer | None],
    probability: np.ndarray,
    p_low: np.ndarray,
    p_high: np.ndarray,
    expected_value: np.ndarray,
    model_offers: Sequence[Offer | None],
    turned_down: Sequence[Decision | None],
    config: PolicyConfig,
    as_of: date,
) -> RoutingResult:
    """Route a scoring chunk's new recommendations with the policy in force (one query for the
    members' segments, one for alerts, a few for budget spend). ``member_ids`` are the chunk's
    members: their segments are read by the pk range they span. ``model_offers``: the model's
    own picks (``offers`` differ where the desk recalled a manager's earlier choice);
    ``turned_down``: per item, the standing override that turned the model's pick down before
    (recommendations.selectors.turned_down_before), which the scoring has already looked up;
    ``config``: the policy in force, as the scoring read it for the recall; ``as_of``: the run's."""
    from recommendations.rollout import rule_flag_masks

    year = as_of.year
    # A chunk's members are one pk range: a range scan, not an IN list of thousands of ids
    # (compiling and parsing that list cost more than the routing itself).
    segments = {
        pk: (tier, region, gender, age_band(birth_year, year))
        for pk, tier, region, gender, birth_year in Member.objects.filter(
            pk__gte=min(member_ids, default=0), pk__lte=max(member_ids, default=-1)
        ).values_list("pk", "tier", "region", "gender", "birth_year")
    }
    n = len(member_ids)
    psi = np.nan if model_version.drift_psi is None else float(model_version.drift_psi)
    inputs = RouteInputs(
        key=[item_key(run_id, int(m)) for m in member_ids],
        offer_code=[o.code if o else "" for o in offers],
        offer_cost=[float(o.cost) if o else 0.0 for o in offers],
        high_stakes=[bool(o and o.high_stakes) for o in offers],
        expected_value=expected_value,
        probability=probability,
        p_low=p_low,
        p_high=p_high,
        tier=[segments.get(int(m), ("", "", "", ""))[0] for m in member_ids],
        region=[segments.get(int(m), ("", "", "", ""))[1] for m in member_ids],
        gender=[segments.get(int(m), ("", "", "", ""))[2] for m in member_ids],
        age_band=[segments.get(int(m), ("", "", "", ""))[3] for m in member_ids],
        model_psi=np.full(n, psi),
        model_drift=np.full(n, bool(model_version.drift_flagged)),
        days_since_rejected=days_since_rejected(turned_down, [as_of] * n),
        rejected_offer_code=[o.code if o else "" for o in model_offers],
        flagged_rules=rule_flag_masks(member_ids),
    )
    return route_items(inputs, policy=config, context=routing_context(config))


@dataclass
class RoutingPreview:
    """What a policy would do to the open, routable items right now."""

    policy_version: int
    items: int = 0
    auto: int = 0
    review: int = 0
    senior: int = 0
    auto_offer_cost: float = 0.0  # offer cost that would flow without a person's look
    spot_checks: int = 0
    over_budget: int = 0
    kept: int = 0  # open items a person or deadline already acted on: left as they are
    changed: int = 0  # items whose route would change
    by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Plan:
    ids: np.ndarray
    result: RoutingResult
    inputs: RouteInputs
    status: list[str]
    route: list[str]


def _plan(
    config: PolicyConfig, *, now: datetime | None = None, ids: Sequence[int] | None = None, explain: bool = True
) -> _Plan:
    items = routable_items_load(ids=ids)
    result = route_items(items.inputs, policy=config, context=routing_context(config, now=now), explain=explain)
    return _Plan(items.ids, result, items.inputs, items.status, items.route)


def policy_preview(config: PolicyConfig) -> RoutingPreview:
    """Counts for `config` over the current queue: the same loader and routing function that
    saving (open_items_reroute) runs, so the preview is what saving then does."""
    plan = _plan(config, explain=False)
    counts = plan.result.counts()
    auto = plan.result.routes == ROUTE_AUTO
    return RoutingPreview(
        policy_version=config.version,
        items=len(plan.ids),
        auto=counts["auto"],
        review=counts["review"],
        senior=counts["senior"],
        auto_offer_cost=round(float(plan.inputs.offer_cost[auto].sum()), 2),
        spot_checks=int(plan.result.sampled.sum()),
        over_budget=int(plan.result.over_budget.sum()),
        kept=open_items_kept_count(),
        changed=int(sum(1 for i, r in enumerate(plan.route) if r != plan.result.routes[i])),
        by_reason=dict(sorted(plan.result.reason_counts.items())),
    )


def _apply(plan: _Plan, *, policy_version: int) -> dict[str, int]:
    """Write a plan: route, reasons and status of each item still routable (locked first, so an
    item a person decides meanwhile is left alone), then the system's auto-approvals."""
    ids = [int(i) for i in plan.ids]
    position = {pk: i for i, pk in enumerate(ids)}
    locked: list[int] = []
    for start in range(0, len(ids), 2000):
        locked += list(
            Recommendation.objects.select_for_update(of=("self",))
            .filter(routable_open_items(), pk__in=ids[start : start + 2000])
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    updates = []
    auto_ids = []
    for pk in locked:
        i = position[pk]
        route, reasons = plan.result.route_of(i)
        status = _status_for(route)
        if route == ROUTE_AUTO:
            auto_ids.append(pk)
        # Reasons carry the item's numbers and the policy version: rewrite them every time.
        updates.append(Recommendation(pk=pk, route=route, route_reasons=reasons, status=status))
    Recommendation.objects.bulk_update(updates, ["route", "route_reasons", "status"], batch_size=1000)
    texts = {pk: plan.result.reasons[position[pk]][-1]["text"] for pk in auto_ids}
    approved = decisions_auto_approve(recommendation_ids=auto_ids, texts=texts, policy_version=policy_version)
    routes = Counter(str(plan.result.routes[position[pk]]) for pk in locked)
    return {
        "items": len(locked),
        "auto_approved": len(approved),
        "review": routes.get("review", 0),
        "senior": routes.get("senior", 0),
        "skipped": len(ids) - len(locked),
    }


def decisions_auto_approve(
    *, recommendation_ids: Sequence[int], texts: dict[int, str], policy_version: int
) -> list[int]:
    from recommendations.decisions import decisions_record_system

    if not recommendation_ids:
        return []
    return decisions_record_system(
        recommendation_ids=recommendation_ids,
        action=Decision.Action.AUTO_APPROVE,
        reason_code="policy",
        reason_text=lambda pk: texts.get(pk) or f"Auto-approved under policy v{policy_version}.",
        from_statuses=(RecommendationStatus.PENDING,),
    )


def open_items_reroute(*, policy_version: int | None = None, actor: User = None) -> dict[str, Any]:
    """Route every open, routable item again with the policy in force, and auto-approve what it
    automates. `policy_version`: do nothing unless that version is still in force (a newer
    save re-routes by itself). Idempotent: a second call changes nothing."""
    with transaction.atomic():
        _advisory_lock(BUDGET_LOCK)
        policy = policy_active()
        version = policy.version if policy is not None else 0
        if policy_version is not None and policy_version != version:
            return {"skipped": f"policy v{policy_version} is no longer in force (v{version} is)"}
        plan = _plan(policy_config(policy))
        outcome = _apply(plan, policy_version=version)
        audit_log(
            actor=actor,
            action="policy.reroute",
            object_type="escalation_policy",
            object_id=version,
            new=outcome,
        )
        from recommendations.queue import queue_counts_forget

        transaction.on_commit(queue_counts_forget)
    return {"policy_version": version, **outcome}


def auto_approvals_record(*, run_id: int, member_pk_from: int, member_pk_to: int) -> int:
    """Auto-approve a scoring chunk's items routed "auto". Call inside the chunk's write
    transaction. Routing is checked once more under the budget lock with fresh spend, so
    parallel chunks cannot together overspend a budget: an item that would now exceed one
    goes to a senior manager instead. Returns how many items were auto-approved."""
    ids = list(
        Recommendation.objects.filter(
            run_id=run_id,
            member_id__gte=member_pk_from,
            member_id__lte=member_pk_to,
            route=ROUTE_AUTO,
            status=RecommendationStatus.PENDING,
        ).values_list("pk", flat=True)
    )
    if not ids:
        return 0
    policy = policy_active()
    config = policy_config(policy)
    if config.budgets:
        _advisory_lock(BUDGET_LOCK)
    plan = _plan(config, ids=ids)
    return _apply(plan, policy_version=config.version)["auto_approved"]


# -------------------------------------------------------------------------------- deadlines


def deadlines_enforce(*, now: datetime | None = None) -> dict[str, int]:
    """Expire stale offers and escalate items pending past their SLA, as system decisions.

    * open items older than the policy's stale_after_hours expire (reason "stale");
    * open items whose offer was withdrawn (inactive) expire (reason "offer_withdrawn");
    * pending items waiting longer than sla_review_hours (since they last became pending) are
      escalated to a senior manager (reason "sla").
    Escalated items have no level above them: staleness is their deadline.
    Idempotent: an item is only acted on while it is still in the state the rule looks at.
    """
    from recommendations.decisions import decisions_record_system

    config = policy_config_active()
    now = now or timezone.now()
    filters = overdue_filters(config, now=now)
    stale_ids = list(Recommendation.objects.filter(filters["stale"]).values_list("pk", flat=True))
    expired_stale = decisions_record_system(
        recommendation_ids=stale_ids,
        action=Decision.Action.EXPIRE,
        reason_code="stale",
        reason_text=f"Offer went stale: open for more than {config.stale_after_hours:g} h without a decision.",
    )
    withdrawn = dict(
        Recommendation.objects.filter(filters["withdrawn"]).values_list("pk", "offer__code")
    )
    expired_withdrawn = decisions_record_system(
        recommendation_ids=list(withdrawn),
        action=Decision.Action.EXPIRE,
        reason_code="offer_withdrawn",
        reason_text=lambda pk: f"Offer {withdrawn.get(pk)} was withdrawn (no longer active).",
    )
    overdue = list(
        Recommendation.objects.filter(status=RecommendationStatus.PENDING)
        .annotate(entered_at=Coalesce(Max("decisions__at"), "created_at"))
        .filter(filters["sla"])
        .values_list("pk", flat=True)
    )
    text = (
        f"Pending longer than the {config.sla_review_hours:g} h review SLA: escalated to a senior manager."
    )
    with transaction.atomic():
        escalated = decisions_record_system(
            recommendation_ids=overdue,
            action=Decision.Action.ESCALATE,
            reason_code="sla",
            reason_text=text,
            from_statuses=(RecommendationStatus.PENDING,),
        )
        reason = {"code": "sla", "route": ROUTE_SENIOR, "text": text}
        rows = Recommendation.objects.filter(pk__in=escalated).only("pk", "route_reasons")
        Recommendation.objects.bulk_update(
            [Recommendation(pk=r.pk, route=ROUTE_SENIOR, route_reasons=[*r.route_reasons, reason]) for r in rows],
            ["route", "route_reasons"],
            batch_size=1000,
        )
    return {
        "expired_stale": len(expired_stale),
        "expired_withdrawn": len(expired_withdrawn),
        "escalated_sla": len(escalated),
    }


# -------------------------------------------------------------------------------- signals


def fairness_alert_open(
    *, column: str, value: str, metric: str = "", detail: str = "", actor: User = None
) -> FairnessAlert:
    """Open an alert on a member group; open items are re-routed after commit."""
    if column not in FairnessAlert.Column.values:
        raise ValueError(f"column must be one of {', '.join(FairnessAlert.Column.values)}")
    with transaction.atomic():
        alert = FairnessAlert.objects.create(column=column, value=value, metric=metric, detail=detail)
        audit_log(
            actor=actor, action="fairness_alert.open", object_type="fairness_alert", object_id=alert.pk,
            new={"column": column, "value": value, "metric": metric},
        )
        transaction.on_commit(_reroute_current)
    return alert


def fairness_alert_close(*, alert_id: int, actor: User = None) -> bool:
    with transaction.atomic():
        closed = FairnessAlert.objects.filter(pk=alert_id, status=FairnessAlert.Status.OPEN).update(
            status=FairnessAlert.Status.CLOSED, closed_at=timezone.now()
        )
        if closed:
            audit_log(
                actor=actor, action="fairness_alert.close", object_type="fairness_alert", object_id=alert_id,
                old={"status": "open"}, new={"status": "closed"},
            )
            transaction.on_commit(_reroute_current)
    return bool(closed)


def model_drift_record(*, model_version_id: int, psi: float | None, flagged: bool, actor: User = None) -> None:
    """Store a model's drift measurement (the drift monitor's write); open items re-routed."""
    with transaction.atomic():
        model = ModelVersion.objects.select_for_update().get(pk=model_version_id)
        old = {"drift_psi": model.drift_psi, "drift_flagged": model.drift_flagged}
        ModelVersion.objects.filter(pk=model.pk).update(drift_psi=psi, drift_flagged=flagged)
        audit_log(
            actor=actor, action="model.drift", object_type="model_version", object_id=model.pk,
            old=old, new={"drift_psi": psi, "drift_flagged": flagged},
        )
        transaction.on_commit(_reroute_current)


def _reroute_current() -> None:
    policy = policy_active()
    _enqueue_reroute(policy.version if policy is not None else 0)
