"""Budgets: spend per segment and period, and items that would exceed a budget are escalated."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from governance.routing import Budget
from governance.selectors import budget_spent, period_start
from governance.services import auto_approvals_record, policy_save
from loyalty.models import Offer
from recommendations.decisions import decision_record
from recommendations.models import Recommendation
from tests.desk.factories import make_member, make_rec
from tests.governance.conftest import policy_values

pytestmark = pytest.mark.django_db

GOLD = {"dimension": "tier", "value": "gold", "period": "month", "amount": 100.0}


def offer(code: str, cost: float) -> Offer:
    return Offer.objects.create(code=code, name=code, kind="bonus_points", cost=cost, value=cost * 4)


def gold_rec(world, o: Offer, **kw) -> Recommendation:
    return make_rec(run=world.run, offer=o, probability=0.7, width=0.1, expected_value=10,
                    member=make_member(tier="gold"), **kw)


def test_spend_counts_approved_auto_approved_and_overridden_items_of_the_period(world, role_users):
    cheap, pricey = offer("c10", 10), offer("c30", 30)
    approved = gold_rec(world, cheap)
    decision_record(recommendation_id=approved.pk, actor=role_users["manager"], action="approve")
    overridden = gold_rec(world, cheap)
    decision_record(recommendation_id=overridden.pk, actor=role_users["manager"], action="override",
                    chosen_offer_code="c30", reason_code="policy", reason_text="bigger")
    to_nothing = gold_rec(world, pricey)
    decision_record(recommendation_id=to_nothing.pk, actor=role_users["manager"], action="override",
                    chosen_offer_code="", reason_code="too_costly", reason_text="none")
    last_month = gold_rec(world, pricey, status="approved")
    Recommendation.objects.filter(pk=last_month.pk).update(decided_at=period_start("month", timezone.now()) - timedelta(hours=1))
    gold_rec(world, pricey)  # pending: not spent
    make_rec(run=world.run, offer=pricey, status="approved", member=make_member(tier="silver"))

    budgets = [Budget(**GOLD), Budget("tier", "silver", "week", 50.0), Budget("region", "north", "month", 1.0)]
    spent = budget_spent(budgets)
    assert spent[budgets[0].key] == pytest.approx(10 + 30)
    assert spent[budgets[1].key] == 0.0  # the silver item has no decided_at in this week
    assert spent[budgets[2].key] == pytest.approx(40.0)  # every member above is in region north


def test_items_that_would_exceed_a_budget_are_escalated_never_auto_approved(
    world, role_users, django_capture_on_commit_callbacks, eager_celery
):
    Recommendation.objects.filter(status__in=["pending", "escalated"]).update(status="superseded")
    c40 = offer("c40", 40)
    first, second, third = (gold_rec(world, c40) for _ in range(3))
    silver = make_rec(run=world.run, offer=c40, probability=0.7, width=0.1, expected_value=10)
    with django_capture_on_commit_callbacks(execute=True):
        policy_save(actor=role_users["admin"], **policy_values(budgets=[GOLD]))
    statuses = dict(Recommendation.objects.filter(pk__in=[first.pk, second.pk, third.pk, silver.pk])
                    .values_list("pk", "status"))
    assert statuses == {first.pk: "auto_approved", second.pk: "auto_approved", third.pk: "escalated",
                        silver.pk: "auto_approved"}
    third.refresh_from_db()
    assert third.route == "senior"
    reason = third.route_reasons[-1]
    assert reason["code"] == "budget" and "80.00 EUR of 100.00 EUR committed" in reason["text"]
    assert budget_spent([Budget(**GOLD)])[Budget(**GOLD).key] == pytest.approx(80.0)


def test_scoring_auto_approvals_recheck_the_budget_under_the_lock(
    world, role_users, django_capture_on_commit_callbacks, eager_celery
):
    """A chunk's items were routed "auto" against the spend seen at build time; meanwhile other
    approvals used the budget up. Writing the chunk escalates what would now exceed it."""
    with django_capture_on_commit_callbacks(execute=True):
        policy_save(actor=role_users["admin"], **policy_values(budgets=[GOLD]))
    c40 = offer("c40", 40)
    spent_elsewhere = gold_rec(world, offer("c70", 70))
    decision_record(recommendation_id=spent_elsewhere.pk, actor=role_users["manager"], action="approve")
    run = world.run
    routed_auto = [gold_rec(world, c40, route="auto", route_reasons=[{"code": "auto", "text": "x"}]) for _ in range(2)]
    cheap = gold_rec(world, offer("c20", 20), route="auto")
    with transaction.atomic():
        approved = auto_approvals_record(run_id=run.pk, member_pk_from=0, member_pk_to=10**9)
    assert approved == 1
    assert [Recommendation.objects.get(pk=r.pk).status for r in routed_auto] == ["escalated", "escalated"]
    assert Recommendation.objects.get(pk=cheap.pk).status == "auto_approved"
    assert Recommendation.objects.get(pk=routed_auto[0].pk).route_reasons[-1]["code"] == "budget"
    assert budget_spent([Budget(**GOLD)])[Budget(**GOLD).key] == pytest.approx(90.0)
