"""Routing: which recommendations are automated, reviewed by a manager, or decided by a senior.

`route_items` is the one routing function. Scoring (chunk write path), re-routing of open
items after a policy change, and the settings page's preview all call it, so what the
preview promises is what saving does. It works on plain values (numpy arrays and Python
scalars): no ORM, no clock, no randomness. The ORM side (loading items, alerts, budget
spend) lives in governance.services.

How an item is routed:

1. Every enabled rule whose condition holds raises the item to the rule's route (manager
   review or senior review) and adds a human-readable reason. A rule behind a feature flag
   (RouteInputs.flagged_rules, from recommendations.rollout) holds only for the flag's members.
2. Items no rule holds back are "auto" candidates, subject to the rollout phase: the pilot
   phase reviews everything, the limited phase automates only cheap offers, the expanded
   phase automates every candidate.
3. A deterministic share of the candidates (hash of the item key < sample rate) is sent to
   review as a "spot check sample".
4. Budgets: an item whose offer cost would take its segment's spend this period over the
   budget goes to a senior manager, never to automation. Auto-approved items consume the
   budget in item order.

Severity only ever goes up, so a stricter threshold can never send more items to auto.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from loyalty.errors import FieldErrors

ROUTE_AUTO = "auto"
ROUTE_REVIEW = "review"
ROUTE_SENIOR = "senior"
ROUTES = (ROUTE_AUTO, ROUTE_REVIEW, ROUTE_SENIOR)
SEVERITY = {ROUTE_AUTO: 0, ROUTE_REVIEW: 1, ROUTE_SENIOR: 2}
ROUTE_LABELS = {ROUTE_AUTO: "auto-approve", ROUTE_REVIEW: "manager review", ROUTE_SENIOR: "senior review"}

PHASE_PILOT = "pilot"
PHASE_LIMITED = "limited"
PHASE_EXPANDED = "expanded"
PHASES = (PHASE_PILOT, PHASE_LIMITED, PHASE_EXPANDED)

TIERS = ("bronze", "silver", "gold", "platinum")
TIER_RANK = {name: rank for rank, name in enumerate(TIERS)}
BUDGET_DIMENSIONS = ("tier", "region")
BUDGET_PERIODS = ("month", "week")
ALERT_COLUMNS = ("tier", "region", "gender")

SPOT_CHECK_REASON = "spot check sample"


class PolicyInvalid(FieldErrors):
    """A policy that cannot be saved."""


@dataclass(frozen=True)
class RuleSpec:
    kind: str
    label: str
    # "number", "tier" or "" (a flag: no threshold; for drift the PSI threshold is optional)
    threshold_type: str
    default_enabled: bool
    default_threshold: float | str | None
    default_route: str
    help: str


RULES: dict[str, RuleSpec] = {
    spec.kind: spec
    for spec in (
        RuleSpec("offer_cost", "Offer cost above", "number", True, 50.0, ROUTE_SENIOR,
                 "Offers costing more than this go to the chosen reviewer."),
        RuleSpec("expected_value", "Expected value above", "number", False, 500.0, ROUTE_SENIOR,
                 "Large expected value means a wrong call is expensive."),
        RuleSpec("probability", "Engagement probability below", "number", True, 0.2, ROUTE_REVIEW,
                 "Members very likely to churn get a person's look."),
        RuleSpec("uncertainty", "90% interval wider than", "number", True, 0.35, ROUTE_REVIEW,
                 "A wide interval means the model is unsure."),
        RuleSpec("vip_tier", "Member tier at or above", "tier", True, "platinum", ROUTE_REVIEW,
                 "VIP members are decided by people."),
        RuleSpec("high_stakes", "Offer marked high-stakes", "", True, None, ROUTE_SENIOR,
                 "Never automated, whatever the phase."),
        RuleSpec("fairness_alert", "Member in a group with an open fairness alert", "", True, None,
                 ROUTE_REVIEW, "Groups under a fairness investigation are reviewed by people."),
        RuleSpec("model_drift", "Model drift: flagged, or PSI above", "number", True, 0.25, ROUTE_REVIEW,
                 "A drifting model's output is checked by people."),
        RuleSpec("rejected_before", "Offer a manager turned down for this member, within days", "number", True,
                 180.0, ROUTE_REVIEW,
                 "The model picks an offer a manager turned down for this member (within the days): the "
                 "desk recommends that manager's choice instead and a person confirms it. Off: the "
                 "model's pick stands."),
    )
}
# Rules whose items may never be automated, even when an admin picks "auto".
NEVER_AUTO = frozenset({"high_stakes"})


@dataclass(frozen=True)
class Rule:
    kind: str
    enabled: bool
    threshold: float | str | None
    route: str

    def to_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "threshold": self.threshold, "route": self.route}


@dataclass(frozen=True)
class Budget:
    dimension: str  # "tier" | "region"
    value: str
    period: str  # "month" | "week"
    amount: float

    @property
    def key(self) -> str:
        return f"{self.dimension}:{self.value}:{self.period}"

    def label(self) -> str:
        return f"{self.dimension} {self.value}, per {self.period}"

    def to_dict(self) -> dict[str, Any]:
        return {"dimension": self.dimension, "value": self.value, "period": self.period, "amount": self.amount}


def default_rules() -> tuple[Rule, ...]:
    return tuple(Rule(s.kind, s.default_enabled, s.default_threshold, s.default_route) for s in RULES.values())


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class PolicyConfig:
    """A complete policy as plain values. Built (and validated) by `from_values`."""

    phase: str = PHASE_PILOT
    sample_rate: float = 0.1
    limited_max_offer_cost: float = 10.0
    sla_review_hours: float = 48.0
    stale_after_hours: float = 14 * 24.0
    rules: tuple[Rule, ...] = field(default_factory=default_rules)
    budgets: tuple[Budget, ...] = ()
    version: int = 0  # 0: the built-in default, before any admin saved a policy

    @classmethod
    def from_values(
        cls,
        *,
        phase: str,
        sample_rate: Any,
        limited_max_offer_cost: Any,
        sla_review_hours: Any,
        stale_after_hours: Any,
        rules: Mapping[str, Mapping[str, Any]] | None = None,
        budgets: Sequence[Mapping[str, Any]] = (),
        version: int = 0,
    ) -> PolicyConfig:
        """Validate raw values (from a form, the API or the database). Raises PolicyInvalid."""
        errors: dict[str, str] = {}
        if phase not in PHASES:
            errors["phase"] = f"use one of {', '.join(PHASES)}"
        rate = _number(sample_rate)
        if rate is None or not 0.0 <= rate <= 1.0:
            errors["sample_rate"] = "a share between 0 and 1"
        limited = _number(limited_max_offer_cost)
        if limited is None or limited < 0:
            errors["limited_max_offer_cost"] = "a cost of 0 or more"
        hours: dict[str, float] = {}
        for name, raw in (("sla_review_hours", sla_review_hours), ("stale_after_hours", stale_after_hours)):
            number = _number(raw)
            if number is None or number <= 0:
                errors[name] = "a number of hours above 0"
            else:
                hours[name] = number
        if not errors.get("sla_review_hours") and not errors.get("stale_after_hours"):
            if hours["stale_after_hours"] <= hours["sla_review_hours"]:
                errors["stale_after_hours"] = "must be longer than the review SLA"
        parsed_rules = []
        raw_rules = dict(rules or {})
        unknown = sorted(set(raw_rules) - set(RULES))
        if unknown:
            errors["rules"] = f"unknown rule(s): {', '.join(unknown)}"
        for kind, spec in RULES.items():
            raw = raw_rules.get(kind) or {}
            enabled = bool(raw.get("enabled", spec.default_enabled))
            route = str(raw.get("route") or spec.default_route)
            threshold: float | str | None = raw.get("threshold", spec.default_threshold)
            if route not in (ROUTE_REVIEW, ROUTE_SENIOR):
                errors[f"rules.{kind}.route"] = "send to manager review or senior review"
            if spec.threshold_type == "number":
                threshold = _number(threshold)
                if enabled and threshold is None and kind != "model_drift":
                    errors[f"rules.{kind}.threshold"] = "a number is needed while the rule is on"
                if threshold is not None and kind in {"probability", "uncertainty"} and not 0 <= threshold <= 1:
                    errors[f"rules.{kind}.threshold"] = "a value between 0 and 1"
                if threshold is not None and kind == "rejected_before" and threshold <= 0:
                    errors[f"rules.{kind}.threshold"] = "a number of days above 0"
            elif spec.threshold_type == "tier":
                threshold = str(threshold or "")
                if enabled and threshold not in TIER_RANK:
                    errors[f"rules.{kind}.threshold"] = f"one of {', '.join(TIERS)}"
            else:
                threshold = None
            parsed_rules.append(Rule(kind, enabled, threshold, route))
        parsed_budgets = []
        seen: set[str] = set()
        for i, raw in enumerate(budgets or ()):
            dimension = str(raw.get("dimension") or "")
            value = str(raw.get("value") or "").strip()
            period = str(raw.get("period") or "")
            amount = _number(raw.get("amount"))
            if dimension not in BUDGET_DIMENSIONS:
                errors[f"budgets.{i}.dimension"] = f"one of {', '.join(BUDGET_DIMENSIONS)}"
            if not value:
                errors[f"budgets.{i}.value"] = "name the segment (e.g. gold, north)"
            if period not in BUDGET_PERIODS:
                errors[f"budgets.{i}.period"] = f"one of {', '.join(BUDGET_PERIODS)}"
            if amount is None or amount < 0:
                errors[f"budgets.{i}.amount"] = "an amount of 0 or more"
            budget = Budget(dimension, value, period, amount or 0.0)
            if budget.key in seen:
                errors[f"budgets.{i}.value"] = f"a second budget for {budget.label()}"
            seen.add(budget.key)
            parsed_budgets.append(budget)
        if errors:
            raise PolicyInvalid(errors)
        return cls(
            phase=phase,
            sample_rate=float(rate),
            limited_max_offer_cost=float(limited),
            sla_review_hours=hours["sla_review_hours"],
            stale_after_hours=hours["stale_after_hours"],
            rules=tuple(parsed_rules),
            budgets=tuple(parsed_budgets),
            version=version,
        )

    def rule(self, kind: str) -> Rule:
        return next(r for r in self.rules if r.kind == kind)

    def with_rule(self, kind: str, **changes: Any) -> PolicyConfig:
        return replace(self, rules=tuple(replace(r, **changes) if r.kind == kind else r for r in self.rules))

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe and complete: what the audit trail records as old and new values."""
        return {
            "phase": self.phase,
            "sample_rate": self.sample_rate,
            "limited_max_offer_cost": self.limited_max_offer_cost,
            "sla_review_hours": self.sla_review_hours,
            "stale_after_hours": self.stale_after_hours,
            "rules": {r.kind: r.to_dict() for r in self.rules},
            "budgets": [b.to_dict() for b in self.budgets],
        }


@dataclass
class RouteInputs:
    """One entry per item, all the same length. Strings may be "" (no offer, no region)."""

    key: Sequence[str]  # stable identity of the item ("run:member"), for spot-check sampling
    offer_code: Sequence[str]
    offer_cost: np.ndarray
    high_stakes: np.ndarray
    expected_value: np.ndarray
    probability: np.ndarray
    p_low: np.ndarray
    p_high: np.ndarray
    tier: Sequence[str]
    region: Sequence[str]
    gender: Sequence[str]
    age_band: Sequence[str]  # governance.fairness.age_band of the member at the run's as_of
    model_psi: np.ndarray  # NaN when unknown
    model_drift: np.ndarray
    # Days from the as-of date of the member's earlier run where a manager's standing override
    # turned down this item's offer to this item's as-of date (the latest such run); NaN: never.
    days_since_rejected: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # The offer that manager turned down ("" = no action): the model's pick, which is not
    # offer_code when the desk recommends the manager's earlier choice instead
    # (Recommendation.recalled_decision). Default: offer_code.
    rejected_offer_code: Sequence[str] = ()
    # Rules behind a feature flag (recommendations.rollout): rule kind -> bool per item, the
    # rule holds only for flagged members. Rules not listed hold for everyone.
    flagged_rules: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.key)
        if not len(self.days_since_rejected):
            self.days_since_rejected = np.full(n, np.nan)
        if not len(self.rejected_offer_code):
            self.rejected_offer_code = list(self.offer_code)
        self.flagged_rules = {k: np.asarray(v, dtype=bool).reshape(-1) for k, v in self.flagged_rules.items()}
        for name in ("offer_cost", "expected_value", "probability", "p_low", "p_high", "model_psi",
                     "days_since_rejected"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64).reshape(-1))
        for name in ("high_stakes", "model_drift"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=bool).reshape(-1))
        for name in ("offer_code", "rejected_offer_code", "tier", "region", "gender", "age_band"):
            setattr(self, name, np.asarray([str(v or "") for v in getattr(self, name)], dtype=object).reshape(-1))
        lengths = {name: len(getattr(self, name)) for name in self.__dataclass_fields__ if name != "flagged_rules"}
        lengths.update({f"flagged_rules.{k}": len(v) for k, v in self.flagged_rules.items()})
        if set(lengths.values()) != {n} and n:
            raise ValueError(f"route inputs of different lengths: {lengths}")

    def __len__(self) -> int:
        return len(self.key)

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> RouteInputs:
        """Per-item dicts to columns; missing drift values mean "no drift known"."""
        def column(name: str, default: Any) -> list:
            return [r.get(name, default) for r in records]

        return cls(
            key=[str(k) for k in column("key", "")],
            offer_code=column("offer_code", ""),
            offer_cost=column("offer_cost", 0.0),
            high_stakes=column("high_stakes", False),
            expected_value=column("expected_value", 0.0),
            probability=column("probability", 0.5),
            p_low=column("p_low", 0.5),
            p_high=column("p_high", 0.5),
            tier=column("tier", ""),
            region=column("region", ""),
            gender=column("gender", ""),
            age_band=column("age_band", ""),
            model_psi=[math.nan if v is None else v for v in column("model_psi", None)],
            model_drift=column("model_drift", False),
            days_since_rejected=[math.nan if v is None else v for v in column("days_since_rejected", None)],
        )


@dataclass(frozen=True)
class RoutingContext:
    """What routing needs to know about the world, as plain values."""

    open_alerts: frozenset[tuple[str, str]] = frozenset()  # (column, value) of open fairness alerts
    budget_spent: Mapping[str, float] = field(default_factory=dict)  # Budget.key -> spend this period
    currency: str = "EUR"


@dataclass
class RoutingResult:
    routes: np.ndarray  # "auto" | "review" | "senior" per item
    reasons: list[list[dict[str, str]]]  # [{"code", "route", "text"}] per item
    sampled: np.ndarray  # sent to review as a spot check
    over_budget: np.ndarray
    budget_spent: dict[str, float]  # per budget, after this batch's auto-approvals
    reason_counts: dict[str, int] = field(default_factory=dict)  # items per reason code

    def counts(self) -> dict[str, int]:
        return {route: int(np.sum(self.routes == route)) for route in ROUTES}

    def route_of(self, i: int) -> tuple[str, list[dict[str, str]]]:
        return str(self.routes[i]), self.reasons[i]


def sample_fraction(key: str) -> float:
    """A uniform number in [0, 1) fixed by the item's key: the same item is always (not) sampled."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:13], 16) / float(16**13)


def _money(value: float, currency: str) -> str:
    return f"{value:,.2f} {currency}"


def _reason(code: str, route: str, text: str) -> dict[str, str]:
    return {"code": code, "route": route, "text": text}


def _rule_hits(rule: Rule, items: RouteInputs, context: RoutingContext) -> tuple[np.ndarray, Any]:
    """(mask of items the rule holds, function i -> reason text)."""
    cur = context.currency
    t = rule.threshold
    if rule.kind == "offer_cost":
        mask = items.offer_cost > float(t)
        return mask, lambda i: f"Offer cost {_money(items.offer_cost[i], cur)} is above {_money(float(t), cur)}"
    if rule.kind == "expected_value":
        mask = items.expected_value > float(t)
        return mask, lambda i: f"Expected value {_money(items.expected_value[i], cur)} is above {_money(float(t), cur)}"
    if rule.kind == "probability":
        mask = items.probability < float(t)
        return mask, lambda i: f"Engagement probability {items.probability[i]:.0%} is below {float(t):.0%}"
    if rule.kind == "uncertainty":
        width = items.p_high - items.p_low
        mask = width > float(t)
        return mask, lambda i: f"The 90% interval is {width[i]:.2f} wide (more than {float(t):.2f}): the model is unsure"
    if rule.kind == "vip_tier":
        vip = [name for name in TIERS if TIER_RANK[name] >= TIER_RANK[str(t)]]
        mask = np.isin(items.tier, vip)
        return mask, lambda i: f"VIP member: {items.tier[i]} tier (VIP from {t})"
    if rule.kind == "high_stakes":
        mask = items.high_stakes.copy()
        return mask, lambda i: f"Offer {items.offer_code[i]} is marked high-stakes"
    if rule.kind == "fairness_alert":
        columns = {"tier": items.tier, "region": items.region, "gender": items.gender, "age_band": items.age_band}
        alerts = sorted(a for a in context.open_alerts if a[0] in columns and a[1])
        mask = np.zeros(len(items), dtype=bool)
        for column, value in alerts:
            mask |= columns[column] == value

        def alert_text(i: int) -> str:
            column, value = next((c, v) for c, v in alerts if columns[c][i] == v)
            return f"Member is in a group with an open fairness alert ({column} = {value})"

        return mask, alert_text
    if rule.kind == "model_drift":
        psi = items.model_psi
        over = np.zeros(len(items), dtype=bool) if t is None else np.nan_to_num(psi, nan=-np.inf) > float(t)
        mask = items.model_drift | over

        def text(i: int) -> str:
            if over[i]:
                return f"The model's input drift is high (PSI {psi[i]:.2f} above {float(t):.2f})"
            return "The model is flagged for drift"

        return mask, text
    if rule.kind == "rejected_before":
        days = items.days_since_rejected
        mask = np.nan_to_num(days, nan=np.inf) <= float(t)
        def text(i: int) -> str:
            when = "an earlier run of the same as-of date" if days[i] < 1 else f"a run {days[i]:.0f} days earlier"
            rejected = items.rejected_offer_code[i] or "no action"
            if items.rejected_offer_code[i] != items.offer_code[i]:
                return f"The model picked {rejected} again, which a manager turned down for this member on {when}; this is their choice instead"
            return f"A manager turned down {rejected} for this member on {when}"

        return mask, text
    raise ValueError(f"unknown rule {rule.kind!r}")


def route_items(
    items: RouteInputs,
    *,
    policy: PolicyConfig,
    context: RoutingContext | None = None,
    explain: bool = True,
) -> RoutingResult:
    """Route every item. Pure: the same inputs always give the same routes and reasons.

    Conditions are evaluated on whole arrays; only sampling (a hash per candidate) and the
    budget pass look at items one by one. `explain=False` skips writing the per-item reason
    sentences (the preview only needs counts); routes and reason counts are the same.
    """
    context = context or RoutingContext()
    cur = context.currency
    n = len(items)
    severity = np.zeros(n, dtype=np.int64)
    # (code, route, mask, text of item i), in the order reasons are listed on an item.
    hits: list[tuple[str, str, np.ndarray, Any]] = []

    def hit(code: str, route: str, mask: np.ndarray, text: Any) -> None:
        np.maximum(severity, np.where(mask, SEVERITY[route], 0), out=severity)
        hits.append((code, route, mask, text))

    for rule in policy.rules:
        if not rule.enabled:
            continue
        route = rule.route
        if rule.kind in NEVER_AUTO and SEVERITY[route] < SEVERITY[ROUTE_REVIEW]:
            route = ROUTE_REVIEW
        mask, text = _rule_hits(rule, items, context)
        if rule.kind in items.flagged_rules:
            mask = mask & items.flagged_rules[rule.kind]
        hit(rule.kind, route, mask, lambda i, _t=text, _r=route: f"{_t(i)}: {ROUTE_LABELS[_r]}.")
    # High-stakes offers are never automated, even with their rule switched off.
    if not policy.rule("high_stakes").enabled:
        hit("high_stakes", ROUTE_REVIEW, items.high_stakes & (severity == 0),
            lambda i: f"Offer {items.offer_code[i]} is high-stakes: never automated.")

    candidates = severity == 0
    if policy.phase == PHASE_PILOT:
        hit("phase", ROUTE_REVIEW, candidates, lambda i: "Pilot phase: a person reviews every recommendation.")
    elif policy.phase == PHASE_LIMITED:
        limit = policy.limited_max_offer_cost
        hit("phase", ROUTE_REVIEW, candidates & (items.offer_cost > limit), lambda i: (
            f"Limited automation: offer cost {_money(items.offer_cost[i], cur)} is above "
            f"the {_money(limit, cur)} auto-approval limit."
        ))

    sampled = np.zeros(n, dtype=bool)
    if policy.sample_rate > 0:
        for i in np.flatnonzero(severity == 0):
            sampled[i] = sample_fraction(str(items.key[i])) < policy.sample_rate
        hit("spot_check", ROUTE_REVIEW, sampled, lambda i: (
            f"{SPOT_CHECK_REASON} ({policy.sample_rate:.0%} of automatable items get a person's look)."
        ))

    over_budget, spent = budget_pass(items, severity=severity, budgets=policy.budgets, context=context)
    over_mask = np.zeros(n, dtype=bool)
    over_mask[np.array([i for i, _, _ in over_budget], dtype=np.int64)] = True
    exceeded = {i: (budget, before) for i, budget, before in over_budget}

    def budget_text(i: int) -> str:
        budget, before = exceeded[i]
        return (
            f"Budget for {budget.label()}: {_money(before, cur)} of {_money(budget.amount, cur)} committed; "
            f"this offer ({_money(items.offer_cost[i], cur)}) would exceed it: senior review."
        )

    hit("budget", ROUTE_SENIOR, over_mask, budget_text)
    hit("auto", ROUTE_AUTO, severity == 0,
        lambda i: f"Low risk under policy v{policy.version} ({policy.phase} phase): auto-approved.")

    reasons: list[list[dict[str, str]]] = [[] for _ in range(n)]
    if explain:
        for code, route, mask, text in hits:
            for i in np.flatnonzero(mask):
                reasons[i].append(_reason(code, route, text(i)))
    counts: dict[str, int] = {}
    for code, _, mask, _ in hits:
        counts[code] = counts.get(code, 0) + int(mask.sum())
    names = np.array(ROUTES, dtype=object)
    return RoutingResult(
        routes=names[severity], reasons=reasons, sampled=sampled, over_budget=over_mask, budget_spent=spent,
        reason_counts={code: c for code, c in counts.items() if c},
    )


def budget_pass(
    items: RouteInputs,
    *,
    severity: np.ndarray,
    budgets: Sequence[Budget],
    context: RoutingContext,
) -> tuple[list[tuple[int, Budget, float]], dict[str, float]]:
    """Which items would take a budget over: [(item, budget, spend before it)], and the spend
    after this batch's automated items. Items are taken in order; an item still headed for
    auto-approval (severity 0) consumes its budgets, an item a person reviews does not (yet).
    Does not change `severity`."""
    spent = {b.key: float(context.budget_spent.get(b.key, 0.0)) for b in budgets}
    if not budgets:
        return [], spent
    by_segment: dict[tuple[str, str], list[Budget]] = {}
    for b in budgets:
        by_segment.setdefault((b.dimension, b.value), []).append(b)
    columns = {"tier": items.tier, "region": items.region}
    over: list[tuple[int, Budget, float]] = []
    for i in np.flatnonzero(items.offer_cost > 0):
        cost = float(items.offer_cost[i])
        mine = [b for dim, col in columns.items() for b in by_segment.get((dim, col[i]), ())]
        if not mine:
            continue
        exceeded = next((b for b in mine if spent[b.key] + cost > b.amount + 1e-9), None)
        if exceeded is not None:
            over.append((int(i), exceeded, spent[exceeded.key]))
        elif severity[i] == 0:
            for b in mine:
                spent[b.key] += cost
    return over, spent
