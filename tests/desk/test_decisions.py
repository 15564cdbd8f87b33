"""Decision services: persistence with audit in one transaction, role rules, undo, bulk, races."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from django.db import connection

from governance.models import AuditEvent
from recommendations import decisions as decisions_module
from recommendations.decisions import (
    DecisionConflict,
    DecisionForbidden,
    DecisionInvalid,
    UndoExpired,
    decision_bulk_approve,
    decision_record,
    decision_undo,
)
from recommendations.models import Decision, Recommendation
from tests.desk.factories import make_user

pytestmark = pytest.mark.django_db


def status(rec) -> str:
    return Recommendation.objects.values_list("status", flat=True).get(pk=rec.pk)


def test_approve_writes_decision_status_and_audit_together(world, role_users):
    rec = world.recs["top"]
    d = decision_record(recommendation_id=rec.pk, actor=role_users["manager"], action="approve")
    assert status(rec) == "approved"
    assert d.sequence == 1 and d.actor_label == "manager" and d.chosen_offer == world.bonus
    assert d.label_offer_code == "bonus_500" and d.is_feedback
    assert d.model_version_id == world.model.pk
    assert (d.shown_probability, d.shown_p_low, d.shown_p_high) == (rec.probability, rec.p_low, rec.p_high)
    assert d.shown_expected_value == rec.expected_value
    assert np.allclose(np.frombuffer(bytes(d.shown_shap_values), np.float32), [0.4, -0.3, 0.1, 0.05, -0.02])
    audit = AuditEvent.objects.get(action="decision.approve")
    assert audit.member_pseudo_id == rec.member.pseudo_id
    assert audit.old == {"status": "pending"} and audit.new["status"] == "approved"
    assert audit.new["decision_id"] == d.pk
    # no PII in the audit row
    text = str(audit.old) + str(audit.new) + audit.object_id
    assert rec.member.name not in text and rec.member.email not in text and rec.member.member_id not in text


def test_override_to_another_offer_and_to_no_action(world, role_users):
    mgr = role_users["manager"]
    d = decision_record(
        recommendation_id=world.recs["top"].pk, actor=mgr, action="override",
        chosen_offer_code="discount_10", reason_code="too_costly", reason_text="cheaper works for her",
    )
    assert d.chosen_offer == world.discount and d.label_offer_code == "discount_10" and d.is_feedback
    assert d.reason_code == "too_costly" and status(world.recs["top"]) == "overridden"
    d2 = decision_record(
        recommendation_id=world.recs["mid"].pk, actor=mgr, action="override",
        chosen_offer_code="", reason_code="offer_fatigue", reason_text="three offers this month",
    )
    assert d2.chosen_offer is None and d2.label_offer_code == ""


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"chosen_offer_code": "discount_10", "reason_code": "", "reason_text": "x"}, "reason"),
        ({"chosen_offer_code": "discount_10", "reason_code": "bogus", "reason_text": "x"}, "reason"),
        ({"chosen_offer_code": "discount_10", "reason_code": "policy", "reason_text": "  "}, "Explain"),
        ({"chosen_offer_code": "bonus_500", "reason_code": "policy", "reason_text": "x"}, "approve it"),
        ({"chosen_offer_code": "nope", "reason_code": "policy", "reason_text": "x"}, "Unknown"),
    ],
)
def test_override_needs_reason_code_text_and_a_different_offer(world, role_users, kwargs, message):
    with pytest.raises(DecisionInvalid, match=message):
        decision_record(recommendation_id=world.recs["top"].pk, actor=role_users["manager"], action="override", **kwargs)
    assert status(world.recs["top"]) == "pending"
    assert not Decision.objects.exists() and not AuditEvent.objects.exists()


def test_escalate_needs_a_note_and_goes_to_senior_queue(world, role_users):
    mgr = role_users["manager"]
    with pytest.raises(DecisionInvalid, match="note"):
        decision_record(recommendation_id=world.recs["top"].pk, actor=mgr, action="escalate", note=" ")
    d = decision_record(recommendation_id=world.recs["top"].pk, actor=mgr, action="escalate", note="VIP, check")
    assert status(world.recs["top"]) == "escalated" and d.reason_text == "VIP, check" and not d.is_feedback
    # now only a senior manager may decide it
    with pytest.raises(DecisionForbidden, match="senior"):
        decision_record(recommendation_id=world.recs["top"].pk, actor=mgr, action="approve")
    d2 = decision_record(recommendation_id=world.recs["top"].pk, actor=role_users["senior_manager"], action="approve")
    assert d2.sequence == 2 and status(world.recs["top"]) == "approved"


@pytest.mark.parametrize("role", ["auditor", "admin"])
def test_auditors_and_admins_cannot_decide(world, role_users, role):
    with pytest.raises(DecisionForbidden):
        decision_record(recommendation_id=world.recs["top"].pk, actor=role_users[role], action="approve")
    assert status(world.recs["top"]) == "pending"


def test_deciding_a_decided_item_names_who_and_when(world, role_users):
    decision_record(recommendation_id=world.recs["top"].pk, actor=role_users["manager"], action="approve")
    with pytest.raises(DecisionConflict, match=r"already decided by manager at \d{4}-\d\d-\d\d"):
        decision_record(recommendation_id=world.recs["top"].pk, actor=role_users["senior_manager"], action="approve")
    assert Decision.objects.count() == 1


def test_audit_failure_rolls_back_the_decision(world, role_users, monkeypatch):
    def broken_audit(**kwargs):
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr(decisions_module, "audit_log", broken_audit)
    with pytest.raises(RuntimeError):
        decision_record(recommendation_id=world.recs["top"].pk, actor=role_users["manager"], action="approve")
    assert status(world.recs["top"]) == "pending"
    assert not Decision.objects.exists()


def test_undo_within_window_compensates_and_restores(world, role_users):
    senior = role_users["senior_manager"]
    original = decision_record(recommendation_id=world.recs["esc"].pk, actor=senior, action="approve")
    undo = decision_undo(decision_id=original.pk, actor=senior)
    assert undo.action == "undo" and undo.compensates_id == original.pk and undo.sequence == 2
    assert status(world.recs["esc"]) == "escalated"  # back where it was, not just "pending"
    assert Decision.objects.filter(pk=original.pk).exists()  # never deleted
    assert AuditEvent.objects.filter(action="decision.undo", old={"status": "approved"}).exists()
    # undoing twice is refused
    with pytest.raises(DecisionConflict):
        decision_undo(decision_id=original.pk, actor=senior)


def test_undo_after_window_is_refused(world, role_users, settings):
    settings.DECISION_UNDO_SECONDS = 0
    d = decision_record(recommendation_id=world.recs["top"].pk, actor=role_users["manager"], action="approve")
    with pytest.raises(UndoExpired, match="undo window"):
        decision_undo(decision_id=d.pk, actor=role_users["manager"])
    assert status(world.recs["top"]) == "approved"


def test_only_the_actor_may_undo(world, role_users):
    d = decision_record(recommendation_id=world.recs["top"].pk, actor=role_users["manager"], action="approve")
    with pytest.raises(DecisionForbidden):
        decision_undo(decision_id=d.pk, actor=role_users["senior_manager"])


def test_undo_refused_when_the_item_moved_on(world, role_users):
    mgr, senior = role_users["manager"], role_users["senior_manager"]
    esc = decision_record(recommendation_id=world.recs["top"].pk, actor=mgr, action="escalate", note="check")
    decision_record(recommendation_id=world.recs["top"].pk, actor=senior, action="approve")
    with pytest.raises(DecisionConflict, match="senior_manager"):
        decision_undo(decision_id=esc.pk, actor=mgr)
    assert status(world.recs["top"]) == "approved"


def test_bulk_approve_refuses_escalated_and_high_stakes(world, role_users):
    r = world.recs
    ids = [r["top"].pk, r["mid"].pk, r["stakes"].pk, r["esc"].pk, r["done"].pk, 999999]
    result = decision_bulk_approve(recommendation_ids=ids, actor=role_users["senior_manager"])
    assert result.approved == [r["top"].pk, r["mid"].pk]
    refused = {x["id"]: x["reason"] for x in result.refused}
    assert "high-stakes" in refused[r["stakes"].pk]
    assert "escalated" in refused[r["esc"].pk]
    assert "not open" in refused[r["done"].pk]
    assert "does not exist" in refused[999999]
    assert status(r["stakes"]) == "pending" and status(r["esc"]) == "escalated"
    assert AuditEvent.objects.filter(action="decision.approve").count() == 2


def test_bulk_approve_forbidden_for_auditor(world, role_users):
    with pytest.raises(DecisionForbidden):
        decision_bulk_approve(recommendation_ids=[world.recs["top"].pk], actor=role_users["auditor"])


@pytest.mark.django_db(transaction=True)
def test_parallel_decisions_produce_exactly_one(world, role_users):
    """Real threads, separate Postgres connections, released together by a barrier."""
    assert connection.vendor == "postgresql"
    actors = [role_users["manager"], make_user("manager2", "manager"), role_users["senior_manager"],
              make_user("manager3", "manager")]
    rec_id = world.recs["top"].pk
    barrier = threading.Barrier(len(actors))
    outcomes: list = [None] * len(actors)

    def attempt(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            outcomes[i] = decision_record(recommendation_id=rec_id, actor=actors[i], action="approve")
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(actors))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    wins = [o for o in outcomes if isinstance(o, Decision)]
    losses = [o for o in outcomes if isinstance(o, DecisionConflict)]
    assert len(wins) == 1 and len(losses) == len(actors) - 1, outcomes
    assert all(f"already decided by {wins[0].actor_label}" in str(e) for e in losses)
    assert Decision.objects.filter(recommendation_id=rec_id).count() == 1
    assert AuditEvent.objects.filter(action="decision.approve").count() == 1
