"""Deadlines: the beat task escalates items pending past their SLA and expires stale offers."""

from __future__ import annotations

import pytest
from django.conf import settings

from governance.models import AuditEvent
from governance.tasks import enforce_deadlines
from loyalty.models import Offer
from recommendations.decisions import decision_record, decision_undo
from recommendations.models import Decision, Recommendation
from tests.desk.factories import ago, make_rec
from tests.governance.conftest import policy_values

pytestmark = pytest.mark.django_db


def status(rec) -> str:
    return Recommendation.objects.values_list("status", flat=True).get(pk=rec.pk)


@pytest.fixture
def policy(role_users, django_capture_on_commit_callbacks, eager_celery):
    from governance.services import policy_save

    with django_capture_on_commit_callbacks(execute=True):
        return policy_save(
            actor=role_users["admin"], **policy_values(phase="pilot", sla_review_hours=24, stale_after_hours=72)
        )


def test_the_task_is_scheduled_by_celery_beat():
    entry = settings.CELERY_BEAT_SCHEDULE["governance-enforce-deadlines"]
    assert entry["task"] == enforce_deadlines.name == "governance.enforce_deadlines"
    assert entry["schedule"] > 0


def test_pending_past_the_sla_is_escalated_by_the_system(world, policy, role_users):
    overdue = ago(make_rec(run=world.run, offer=world.bonus), hours=30)
    fresh = ago(make_rec(run=world.run, offer=world.bonus), hours=2)
    undone = ago(make_rec(run=world.run, offer=world.bonus), hours=30)
    d = decision_record(recommendation_id=undone.pk, actor=role_users["manager"], action="approve")
    decision_undo(decision_id=d.pk, actor=role_users["manager"])  # pending again since just now

    outcome = enforce_deadlines()

    assert outcome["escalated_sla"] == 1
    assert status(overdue) == "escalated"
    assert status(fresh) == status(undone) == "pending"
    decision = overdue.decisions.get()
    assert decision.action == Decision.Action.ESCALATE and decision.actor is None
    assert decision.actor_label == "system" and decision.reason_code == "sla"
    assert "24 h review SLA" in decision.reason_text
    overdue.refresh_from_db()
    assert overdue.route == "senior" and overdue.route_reasons[-1]["code"] == "sla"
    audit = AuditEvent.objects.get(action="decision.escalate", object_id=str(overdue.pk))
    assert audit.actor_label == "system" and audit.old == {"status": "pending"}
    # A manager may no longer decide it; a senior manager can.
    assert enforce_deadlines()["escalated_sla"] == 0
    decision_record(recommendation_id=overdue.pk, actor=role_users["senior_manager"], action="approve")
    assert status(overdue) == "approved"


def test_stale_and_withdrawn_offers_expire_with_a_reason(world, policy, role_users):
    stale = ago(make_rec(run=world.run, offer=world.bonus), hours=80)
    stale_escalated = ago(make_rec(run=world.run, offer=world.bonus, status="escalated", route="senior"), hours=80)
    decided = ago(make_rec(run=world.run, offer=world.bonus, status="approved"), hours=200)
    withdrawn_offer = Offer.objects.create(code="old_promo", name="Old", kind="discount", cost=3, value=9)
    withdrawn = make_rec(run=world.run, offer=withdrawn_offer)
    Offer.objects.filter(pk=withdrawn_offer.pk).update(active=False)

    outcome = enforce_deadlines()

    assert outcome["expired_stale"] >= 2 and outcome["expired_withdrawn"] == 1
    assert status(stale) == status(stale_escalated) == status(withdrawn) == "expired"
    assert status(decided) == "approved"
    for rec, code in ((stale, "stale"), (stale_escalated, "stale"), (withdrawn, "offer_withdrawn")):
        d = rec.decisions.get()
        assert d.action == Decision.Action.EXPIRE and d.actor_label == "system" and d.reason_code == code
    assert "72 h" in stale.decisions.get().reason_text
    assert "old_promo" in withdrawn.decisions.get().reason_text
    assert AuditEvent.objects.filter(action="decision.expire").count() == outcome["expired_stale"] + 1
    # Idempotent: nothing left to do.
    assert enforce_deadlines() == {"expired_stale": 0, "expired_withdrawn": 0, "escalated_sla": 0}


def test_defaults_apply_without_a_saved_policy(world):
    overdue = ago(make_rec(run=world.run, offer=world.bonus), hours=49)
    assert enforce_deadlines()["escalated_sla"] == 1  # built-in SLA: 48 h
    assert status(overdue) == "escalated"
