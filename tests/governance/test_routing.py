"""The routing function on plain values: each rule, the phases, sampling, budgets, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.routing import (
    SPOT_CHECK_REASON,
    Budget,
    PolicyConfig,
    PolicyInvalid,
    RouteInputs,
    RoutingContext,
    route_items,
    sample_fraction,
)


def item(**overrides) -> dict:
    base = {
        "key": "1:1", "offer_code": "B5", "offer_cost": 5.0, "high_stakes": False, "expected_value": 20.0,
        "probability": 0.6, "p_low": 0.5, "p_high": 0.7, "tier": "silver", "region": "north",
        "gender": "f", "model_psi": None, "model_drift": False,
    }
    return {**base, **overrides}


def expanded(**changes) -> PolicyConfig:
    """Everything automatable automated: no sampling, no phase limit; default rules on."""
    return PolicyConfig(**{"phase": "expanded", "sample_rate": 0.0, **changes})


def route(policy: PolicyConfig, context: RoutingContext | None = None, **overrides) -> tuple[str, list[dict]]:
    result = route_items(RouteInputs.from_records([item(**overrides)]), policy=policy, context=context)
    return result.route_of(0)


def codes(reasons: list[dict]) -> set[str]:
    return {r["code"] for r in reasons}


def test_a_plain_item_is_auto_approved_in_the_expanded_phase():
    r, reasons = route(expanded())
    assert r == "auto" and codes(reasons) == {"auto"}
    assert "auto-approved" in reasons[0]["text"]


@pytest.mark.parametrize(
    ("rule", "threshold", "trigger", "calm"),
    [
        ("offer_cost", 50.0, {"offer_cost": 80.0}, {"offer_cost": 50.0}),
        ("expected_value", 100.0, {"expected_value": 150.0}, {"expected_value": 99.0}),
        ("probability", 0.2, {"probability": 0.1, "p_low": 0.05, "p_high": 0.15}, {"probability": 0.2}),
        ("uncertainty", 0.35, {"p_low": 0.2, "p_high": 0.8}, {"p_low": 0.4, "p_high": 0.7}),
        ("vip_tier", "gold", {"tier": "platinum"}, {"tier": "silver"}),
        ("model_drift", 0.25, {"model_psi": 0.4}, {"model_psi": 0.1}),
        ("rejected_before", 90.0, {"days_since_rejected": 90.0}, {"days_since_rejected": 91.0}),
    ],
)
@pytest.mark.parametrize("target", ["review", "senior"])
def test_each_threshold_rule_routes_as_configured(rule, threshold, trigger, calm, target):
    policy = expanded().with_rule(rule, enabled=True, threshold=threshold, route=target)
    r, reasons = route(policy, **trigger)
    assert r == target
    assert rule in codes(reasons)
    assert all(x["text"] for x in reasons)
    assert route(policy, **calm)[0] == "auto"
    # Switched off, the rule routes nothing.
    assert route(policy.with_rule(rule, enabled=False), **trigger)[0] == "auto"


def test_reasons_are_readable_sentences():
    policy = expanded().with_rule("offer_cost", threshold=50.0, route="senior")
    _, reasons = route(policy, offer_cost=80.0)
    assert reasons[0]["text"] == "Offer cost 80.00 EUR is above 50.00 EUR: senior review."
    _, reasons = route(expanded(), days_since_rejected=30.0, offer_code="")
    assert reasons[0]["text"] == (
        "A manager turned down no action for this member on a run 30 days earlier: manager review."
    )
    assert route(expanded(), days_since_rejected=None)[0] == "auto"  # never turned down


def test_high_stakes_and_drift_flag_and_fairness_alert():
    policy = expanded()
    assert route(policy, high_stakes=True, offer_code="UPG")[0] == "senior"
    assert "UPG" in route(policy, high_stakes=True, offer_code="UPG")[1][0]["text"]
    assert route(policy, model_drift=True)[0] == "review"
    alert = RoutingContext(open_alerts=frozenset({("region", "south")}))
    r, reasons = route(policy, alert, region="south")
    assert r == "review" and "region = south" in reasons[0]["text"]
    assert route(policy, alert, region="north")[0] == "auto"
    # Off, and even set to review only, high-stakes is never automated.
    assert route(policy.with_rule("high_stakes", enabled=False), high_stakes=True)[0] == "review"


def test_the_strictest_rule_wins_and_every_reason_is_kept():
    policy = expanded().with_rule("offer_cost", threshold=50.0, route="senior")
    r, reasons = route(policy, offer_cost=80.0, probability=0.1, p_low=0.05, p_high=0.15)
    assert r == "senior" and codes(reasons) == {"offer_cost", "probability"}


def test_phases():
    pilot = PolicyConfig(phase="pilot", sample_rate=0.0)
    r, reasons = route(pilot)
    assert r == "review" and "Pilot phase" in reasons[0]["text"]
    limited = PolicyConfig(phase="limited", sample_rate=0.0, limited_max_offer_cost=10.0)
    assert route(limited, offer_cost=8.0)[0] == "auto"
    assert route(limited, offer_cost=0.0, offer_code="")[0] == "auto"
    r, reasons = route(limited, offer_cost=12.0)
    assert r == "review" and "Limited automation" in reasons[0]["text"]
    assert route(expanded(), offer_cost=12.0)[0] == "auto"


def test_sampling_is_deterministic_per_item_and_honours_the_rate():
    keys = [f"7:{m}" for m in range(4000)]
    records = [item(key=k) for k in keys]
    inputs = RouteInputs.from_records(records)
    policy = expanded(sample_rate=0.25)
    first = route_items(inputs, policy=policy)
    again = route_items(RouteInputs.from_records(records), policy=policy)
    assert (first.routes == again.routes).all() and (first.sampled == again.sampled).all()
    share = first.sampled.mean()
    assert 0.22 < share < 0.28
    sampled = np.flatnonzero(first.sampled)
    assert all(first.routes[i] == "review" for i in sampled)
    assert all(first.reasons[i][-1]["text"].startswith(SPOT_CHECK_REASON) for i in sampled)
    assert all(sample_fraction(keys[i]) < 0.25 for i in sampled)
    assert route_items(inputs, policy=expanded(sample_rate=1.0)).counts()["auto"] == 0
    assert route_items(inputs, policy=expanded(sample_rate=0.0)).counts()["auto"] == len(keys)


def test_budget_escalates_the_item_that_would_exceed_it_and_auto_items_consume_it():
    budget = Budget("tier", "gold", "month", 100.0)
    policy = expanded(budgets=(budget,))
    context = RoutingContext(budget_spent={budget.key: 70.0})
    records = [item(key=f"1:{i}", tier="gold", offer_cost=20.0) for i in range(3)] + [
        item(key="1:9", tier="silver", offer_cost=20.0)
    ]
    result = route_items(RouteInputs.from_records(records), policy=policy, context=context)
    assert list(result.routes) == ["auto", "senior", "senior", "auto"]
    assert result.over_budget.tolist() == [False, True, True, False]
    assert "would exceed" in result.reasons[1][-1]["text"]
    assert result.budget_spent[budget.key] == 90.0
    # A reviewed item does not consume the budget, but one that alone exceeds it is escalated.
    review = policy.with_rule("offer_cost", threshold=10.0, route="review")
    result = route_items(RouteInputs.from_records(records[:1]), policy=review, context=context)
    assert result.routes[0] == "review" and result.budget_spent[budget.key] == 70.0
    result = route_items(
        RouteInputs.from_records([item(tier="gold", offer_cost=40.0)]), policy=review, context=context
    )
    assert result.routes[0] == "senior"


def test_validation_names_each_bad_field():
    with pytest.raises(PolicyInvalid) as exc:
        PolicyConfig.from_values(
            phase="wild", sample_rate=2, limited_max_offer_cost=-1, sla_review_hours=0, stale_after_hours="x",
            rules={"offer_cost": {"enabled": True, "threshold": None, "route": "auto"}, "nope": {},
                   "rejected_before": {"enabled": True, "threshold": 0, "route": "review"}},
            budgets=[{"dimension": "planet", "value": "", "period": "year", "amount": -5}],
        )
    errors = exc.value.errors
    for name in (
        "phase", "sample_rate", "limited_max_offer_cost", "sla_review_hours", "stale_after_hours", "rules",
        "rules.offer_cost.route", "rules.offer_cost.threshold", "budgets.0.dimension", "budgets.0.value",
        "budgets.0.period", "budgets.0.amount", "rules.rejected_before.threshold",
    ):
        assert name in errors, name
    ok = PolicyConfig.from_values(
        phase="limited", sample_rate="0.2", limited_max_offer_cost="15", sla_review_hours=24, stale_after_hours=96,
        rules={"vip_tier": {"enabled": True, "threshold": "gold", "route": "senior"}},
        budgets=[{"dimension": "region", "value": "north", "period": "week", "amount": "500"}],
    )
    assert ok.rule("vip_tier").threshold == "gold" and ok.budgets[0].amount == 500.0
    assert PolicyConfig.from_values(**{k: v for k, v in ok.snapshot().items()}) == ok


# ------------------------------------------------------------------ properties

items_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "offer_cost": st.sampled_from([0.0, 5.0, 12.0, 40.0, 80.0, 200.0]),
            "high_stakes": st.booleans(),
            "expected_value": st.floats(-50, 800, allow_nan=False),
            "probability": st.floats(0, 1, allow_nan=False),
            "width": st.floats(0, 0.8, allow_nan=False),
            "tier": st.sampled_from(["bronze", "silver", "gold", "platinum"]),
            "region": st.sampled_from(["north", "south"]),
            "psi": st.one_of(st.none(), st.floats(0, 1, allow_nan=False)),
            "drift": st.booleans(),
        }
    ),
    min_size=1,
    max_size=25,
)


def to_inputs(raw: list[dict]) -> RouteInputs:
    return RouteInputs.from_records(
        [
            item(
                key=f"3:{i}", offer_cost=r["offer_cost"], high_stakes=r["high_stakes"],
                expected_value=r["expected_value"], probability=r["probability"],
                p_low=max(0.0, r["probability"] - r["width"] / 2), p_high=min(1.0, r["probability"] + r["width"] / 2),
                tier=r["tier"], region=r["region"], model_psi=r["psi"], model_drift=r["drift"],
            )
            for i, r in enumerate(raw)
        ]
    )


policy_strategy = st.builds(
    lambda phase, rate, limited, cost, ev, prob, width, vip, psi: PolicyConfig(
        phase=phase, sample_rate=rate, limited_max_offer_cost=limited,
    )
    .with_rule("offer_cost", threshold=cost)
    .with_rule("expected_value", enabled=True, threshold=ev)
    .with_rule("probability", threshold=prob)
    .with_rule("uncertainty", threshold=width)
    .with_rule("vip_tier", threshold=vip)
    .with_rule("model_drift", threshold=psi),
    st.sampled_from(["pilot", "limited", "expanded"]),
    st.sampled_from([0.0, 0.1, 0.5]),
    st.sampled_from([0.0, 10.0, 50.0]),
    st.floats(0, 300, allow_nan=False),
    st.floats(0, 900, allow_nan=False),
    st.floats(0, 1, allow_nan=False),
    st.floats(0, 1, allow_nan=False),
    st.sampled_from(["silver", "gold", "platinum"]),
    st.floats(0, 1, allow_nan=False),
)

# (rule, direction in which the threshold gets stricter)
STRICTER = [("offer_cost", -1), ("expected_value", -1), ("probability", +1), ("uncertainty", -1), ("model_drift", -1)]


@settings(max_examples=60, deadline=None)
@given(raw=items_strategy, policy=policy_strategy, which=st.sampled_from(STRICTER), step=st.floats(0.01, 300))
def test_a_stricter_threshold_never_sends_more_items_to_auto(raw, policy, which, step):
    rule, direction = which
    inputs = to_inputs(raw)
    before = route_items(inputs, policy=policy)
    threshold = float(policy.rule(rule).threshold)
    stricter = threshold + direction * step
    if rule in {"probability", "uncertainty"}:
        stricter = min(1.0, max(0.0, stricter))
    after = route_items(inputs, policy=policy.with_rule(rule, threshold=stricter))
    auto_before = before.routes == "auto"
    auto_after = after.routes == "auto"
    assert not (auto_after & ~auto_before).any()  # no item becomes auto
    assert auto_after.sum() <= auto_before.sum()


@settings(max_examples=60, deadline=None)
@given(raw=items_strategy, policy=policy_strategy, amount=st.floats(0, 300), spent=st.floats(0, 300))
def test_over_budget_and_high_stakes_items_are_never_auto_approved(raw, policy, amount, spent):
    budget = Budget("region", "north", "month", amount)
    policy = PolicyConfig(**{**policy.__dict__, "budgets": (budget,)})
    inputs = to_inputs(raw)
    result = route_items(inputs, policy=policy, context=RoutingContext(budget_spent={budget.key: spent}))
    auto = result.routes == "auto"
    assert not (auto & inputs.high_stakes).any()
    # Replaying the auto-approvals in order, no item that costs something takes the budget
    # over. A free item (no action) spends nothing, so it passes even an exhausted budget.
    total = spent
    for i in np.flatnonzero(auto & (inputs.region == "north")):
        total += inputs.offer_cost[i]
        assert inputs.offer_cost[i] == 0 or total <= amount + 1e-9
    assert math.isclose(result.budget_spent[budget.key], total)
    assert all(result.routes[i] == "senior" for i in np.flatnonzero(result.over_budget))
    if policy.phase == "pilot":
        assert not auto.any()
