"""Policy versions, audit, preview against what saving does, re-routing, automation, page and API."""

from __future__ import annotations

import pytest
from django.urls import reverse

from governance.models import AuditEvent, EscalationPolicy
from governance.routing import PolicyConfig, PolicyInvalid
from governance.selectors import policy_active, policy_config
from governance.services import (
    fairness_alert_open,
    model_drift_record,
    open_items_reroute,
    policy_preview,
    policy_save,
)
from recommendations.decisions import DecisionConflict, DecisionForbidden, decision_record
from recommendations.models import Decision, Recommendation
from recommendations.queue import queue_page
from tests.desk.factories import make_member, make_rec
from tests.governance.conftest import policy_values

pytestmark = pytest.mark.django_db


def status(rec) -> str:
    return Recommendation.objects.values_list("status", flat=True).get(pk=rec.pk)


def save(actor, run_callbacks, **changes) -> EscalationPolicy:
    with run_callbacks(execute=True):
        return policy_save(actor=actor, **policy_values(**changes))


@pytest.fixture
def run_callbacks(django_capture_on_commit_callbacks, eager_celery):
    return django_capture_on_commit_callbacks


def test_saving_creates_versions_and_audits_old_and_new_values(world, role_users, run_callbacks):
    admin = role_users["admin"]
    first = save(admin, run_callbacks, note="go expanded")
    assert first.version == 1 and first.active
    second = save(
        admin, run_callbacks, sample_rate=0.2,
        rules={"offer_cost": {"enabled": True, "threshold": 30, "route": "senior"}},
    )
    first.refresh_from_db()
    assert second.version == 2 and second.active and not first.active
    assert EscalationPolicy.objects.filter(active=True).count() == 1
    created, updated = AuditEvent.objects.filter(object_type="escalation_policy", action__startswith="policy.")\
        .exclude(action="policy.reroute").order_by("id")
    assert created.action == "policy.create" and created.actor == admin
    assert created.old["version"] is None and created.new["phase"] == "expanded"
    assert created.new["note"] == "go expanded"
    assert updated.action == "policy.update" and updated.object_id == "2"
    assert updated.old == {"version": 1, "sample_rate": 0.0,
                           "rules": {"offer_cost": {"enabled": True, "threshold": 50.0, "route": "senior"}}}
    assert updated.new["sample_rate"] == 0.2
    assert updated.new["rules"] == {"offer_cost": {"enabled": True, "threshold": 30.0, "route": "senior"}}
    assert policy_config(policy_active()).rule("offer_cost").threshold == 30.0
    # Each save re-routed the open items and said so in the audit trail.
    assert AuditEvent.objects.filter(action="policy.reroute").count() == 2


def test_invalid_policy_is_refused_and_nothing_changes(world, role_users):
    with pytest.raises(PolicyInvalid) as exc:
        policy_save(actor=role_users["admin"], **policy_values(sample_rate=3, phase="nope"))
    assert set(exc.value.errors) == {"sample_rate", "phase"}
    assert not EscalationPolicy.objects.exists()
    assert not AuditEvent.objects.filter(object_type="escalation_policy").exists()


def test_preview_counts_match_what_saving_then_does(world, role_users, run_callbacks):
    run = world.run
    # A few more items so every route is represented: cheap, pricey, VIP, unsure.
    extra = [
        make_rec(run=run, offer=world.discount, probability=0.7, width=0.1, expected_value=15),
        make_rec(run=run, offer=world.bonus, probability=0.8, width=0.1, expected_value=10,
                 member=make_member(tier="platinum")),
        make_rec(run=run, offer=world.bonus, probability=0.6, width=0.5, expected_value=10),
    ]
    human = world.recs["top"]
    decision_record(recommendation_id=human.pk, actor=role_users["manager"], action="escalate", note="look")
    values = policy_values(
        budgets=[{"dimension": "tier", "value": "silver", "period": "month", "amount": 7.0}],
    )
    preview = policy_preview(PolicyConfig.from_values(**values))
    assert preview.items == 7  # open, undecided: 4 world items (esc is routing-escalated) + 3 extra
    assert preview.kept == 1  # the item the manager escalated stays as it is
    assert preview.auto + preview.review + preview.senior == preview.items
    assert preview.auto >= 1 and preview.review >= 1 and preview.senior >= 1

    with run_callbacks(execute=True):
        policy = policy_save(actor=role_users["admin"], **values)

    routed = Recommendation.objects.exclude(pk__in=[human.pk, world.recs["done"].pk])
    assert routed.count() == preview.items
    assert routed.filter(status="auto_approved").count() == preview.auto
    assert routed.filter(status="pending").count() == preview.review
    assert routed.filter(status="escalated").count() == preview.senior
    auto_cost = sum(float(r.offer.cost) for r in routed.filter(status="auto_approved") if r.offer)
    assert auto_cost == pytest.approx(preview.auto_offer_cost)
    assert status(human) == "escalated"
    # Routing a second time changes nothing.
    again = open_items_reroute(policy_version=policy.version)
    assert again["items"] == preview.review + preview.senior and again["auto_approved"] == 0
    for rec in routed:
        assert rec.route_reasons and all(r["text"] for r in rec.route_reasons)
        assert rec.route == {"auto_approved": "auto", "pending": "review", "escalated": "senior"}[rec.status]
    extra[2].refresh_from_db()
    assert any(r["code"] == "uncertainty" for r in extra[2].route_reasons)


def test_auto_approvals_are_system_decisions_visible_and_reversible(world, role_users, run_callbacks):
    save(role_users["admin"], run_callbacks)
    auto = Recommendation.objects.filter(status="auto_approved").order_by("id")
    assert auto.exists()
    rec = auto.first()
    d = rec.decisions.get()
    assert d.action == Decision.Action.AUTO_APPROVE and d.actor is None and d.actor_label == "system"
    assert d.chosen_offer_id == rec.offer_id and not d.is_feedback and d.reason_code == "policy"
    audit = AuditEvent.objects.get(action="decision.auto_approve", object_id=str(rec.pk))
    assert audit.actor is None and audit.actor_label == "system"
    assert audit.old == {"status": "pending"} and audit.new["decision_id"] == d.pk
    # Visible: the queue filters by status auto_approved, with the reasons.
    page = queue_page(user=role_users["manager"], filters={"status": "auto_approved"})
    assert {row.rec.pk for row in page.rows} == set(auto.values_list("pk", flat=True))
    row = next(r for r in page.rows if r.rec.pk == rec.pk)
    assert row.can_decide and not row.bulk_eligible and any("auto-approved" in t for t in row.reasons)
    # Reversible: a manager overrides it, audited; approving or escalating it is not offered.
    with pytest.raises(DecisionConflict, match="already decided by system"):
        decision_record(recommendation_id=rec.pk, actor=role_users["manager"], action="approve")
    with pytest.raises(DecisionForbidden):
        decision_record(recommendation_id=rec.pk, actor=role_users["auditor"], action="override",
                        chosen_offer_code="", reason_code="too_costly", reason_text="not needed")
    override = decision_record(recommendation_id=rec.pk, actor=role_users["manager"], action="override",
                               chosen_offer_code="", reason_code="too_costly", reason_text="not for this member")
    assert status(rec) == "overridden" and override.sequence == 2 and override.is_feedback
    audit = AuditEvent.objects.get(action="decision.override", object_id=str(rec.pk))
    assert audit.old == {"status": "auto_approved"} and audit.actor == role_users["manager"]
    # The queue's page renders the auto-approved row with the override form only.
    client = _login(role_users["manager"])
    html = client.get(reverse("home"), {"status": "auto_approved"}).content.decode()
    assert "Auto-approved" in html and "act-override" in html


def test_fairness_alert_and_drift_send_items_to_people(world, role_users, run_callbacks):
    save(role_users["admin"], run_callbacks,
         rules={"fairness_alert": {"enabled": True, "threshold": None, "route": "senior"}})
    south = make_rec(run=world.run, offer=world.bonus, probability=0.7, width=0.1, expected_value=10,
                     member=make_member(region="south"))
    with run_callbacks(execute=True):
        fairness_alert_open(column="region", value="south", metric="approval_rate_gap", actor=role_users["admin"])
    south.refresh_from_db()
    assert south.status == "escalated" and south.route == "senior"
    assert "region = south" in south.route_reasons[0]["text"]
    assert AuditEvent.objects.filter(action="fairness_alert.open").exists()
    other = make_rec(run=world.run, offer=world.bonus, probability=0.7, width=0.1, expected_value=10)
    with run_callbacks(execute=True):
        model_drift_record(model_version_id=world.model.pk, psi=0.4, flagged=False, actor=role_users["admin"])
    other.refresh_from_db()
    assert other.status == "pending" and any(r["code"] == "model_drift" for r in other.route_reasons)
    assert AuditEvent.objects.get(action="model.drift").new == {"drift_psi": 0.4, "drift_flagged": False}


def _login(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def _form_data(**changes) -> dict:
    data = {
        "phase": "limited", "sample_rate": "0.1", "limited_max_offer_cost": "10",
        "sla_review_hours": "24", "stale_after_hours": "120", "note": "from the page",
        "rule_offer_cost_enabled": "on", "rule_offer_cost_threshold": "50", "rule_offer_cost_route": "senior",
        "rule_expected_value_threshold": "500", "rule_expected_value_route": "senior",
        "rule_probability_enabled": "on", "rule_probability_threshold": "0.2", "rule_probability_route": "review",
        "rule_uncertainty_enabled": "on", "rule_uncertainty_threshold": "0.35", "rule_uncertainty_route": "review",
        "rule_vip_tier_enabled": "on", "rule_vip_tier_threshold": "platinum", "rule_vip_tier_route": "review",
        "rule_high_stakes_enabled": "on", "rule_high_stakes_route": "senior",
        "rule_fairness_alert_enabled": "on", "rule_fairness_alert_route": "review",
        "rule_model_drift_enabled": "on", "rule_model_drift_threshold": "0.25", "rule_model_drift_route": "review",
        "rule_rejected_before_enabled": "on", "rule_rejected_before_threshold": "180",
        "rule_rejected_before_route": "review",
        "budget-TOTAL_FORMS": "2", "budget-INITIAL_FORMS": "0", "budget-MIN_NUM_FORMS": "0",
        "budget-MAX_NUM_FORMS": "1000",
        "budget-0-dimension": "tier", "budget-0-value": "gold", "budget-0-period": "month", "budget-0-amount": "900",
    }
    return {**data, **changes}


def test_policy_page_is_admin_only_and_linked_in_the_nav(world, role_users):
    url = reverse("governance-policy")
    for role in ("manager", "senior_manager", "auditor"):
        assert _login(role_users[role]).get(url).status_code == 403
        assert _login(role_users[role]).post(reverse("governance-policy-preview"), _form_data()).status_code == 403
    admin = _login(role_users["admin"])
    page = admin.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/governance/policy/"' in html and "Version history" in html
    assert 'id="pv-items"' in html and "<script>" not in html
    assert 'href="/governance/policy/"' not in _login(role_users["manager"]).get(reverse("home")).content.decode()


def test_policy_page_previews_with_htmx_and_saves_a_version(world, role_users, run_callbacks):
    admin = _login(role_users["admin"])
    preview = admin.post(reverse("governance-policy-preview"), _form_data(), HTTP_HX_REQUEST="true")
    assert preview.status_code == 200
    html = preview.content.decode()
    expected = policy_preview(PolicyConfig.from_values(
        phase="limited", sample_rate=0.1, limited_max_offer_cost=10, sla_review_hours=24, stale_after_hours=120,
        budgets=[{"dimension": "tier", "value": "gold", "period": "month", "amount": 900}],
    ))
    assert f'<dd id="pv-auto">{expected.auto}</dd>' in html
    assert f'<dd id="pv-items">{expected.items}</dd>' in html
    bad = admin.post(reverse("governance-policy-preview"), _form_data(sample_rate="7"))
    assert "sample_rate" in bad.content.decode()

    with run_callbacks(execute=True):
        saved = admin.post(reverse("governance-policy"), _form_data())
    assert saved.status_code == 302
    policy = policy_active()
    assert policy.version == 1 and policy.phase == "limited" and policy.created_by == role_users["admin"]
    assert policy.budgets == [{"dimension": "tier", "value": "gold", "period": "month", "amount": 900.0}]
    assert policy.note == "from the page" and policy.sla_review_hours == 24
    assert Recommendation.objects.filter(status="auto_approved").count() == expected.auto
    invalid = admin.post(reverse("governance-policy"), _form_data(stale_after_hours="12"))
    assert invalid.status_code == 400 and "stale_after_hours" in invalid.content.decode()
    assert EscalationPolicy.objects.count() == 1
    history = admin.get(reverse("governance-policy")).content.decode()
    assert "v1" in history and "from the page" in history


def test_policy_api_is_admin_only_with_versions_and_preview(world, role_users, run_callbacks):
    manager = _login(role_users["manager"])
    for method, name in (("get", "api-policy"), ("post", "api-policy"), ("get", "api-policy-versions"),
                         ("post", "api-policy-preview")):
        response = getattr(manager, method)(reverse(name), {}, content_type="application/json")
        assert response.status_code == 403, name
    admin = _login(role_users["admin"])
    current = admin.get(reverse("api-policy")).json()
    assert current["version"] == 0 and current["phase"] == "pilot"
    body = {**policy_values(), "budgets": [{"dimension": "region", "value": "north", "period": "week", "amount": 5}]}
    preview = admin.post(reverse("api-policy-preview"), body, content_type="application/json")
    assert preview.status_code == 200
    counts = preview.json()
    assert counts["items"] == counts["auto"] + counts["review"] + counts["senior"]
    bad = admin.post(reverse("api-policy"), {**body, "stale_after_hours": 1}, content_type="application/json")
    assert bad.status_code == 400 and "stale_after_hours" in bad.json()["fields"]
    with run_callbacks(execute=True):
        created = admin.post(reverse("api-policy"), {**body, "note": "api"}, content_type="application/json")
    assert created.status_code == 201 and created.json()["version"] == 1
    assert Recommendation.objects.filter(status="auto_approved").count() == counts["auto"]
    versions = admin.get(reverse("api-policy-versions")).json()
    assert [v["version"] for v in versions] == [1] and versions[0]["note"] == "api"
    schema = admin.get(reverse("api-schema")).content.decode()
    assert "/api/governance/policy/preview/" in schema and "policy_save" in schema


def test_an_offer_a_manager_turned_down_for_the_member_is_not_automated_again(world, role_users, run_callbacks):
    """Next run, the same offer for the same member goes to a person when a manager turned it
    down the last time it was recommended to them (within `threshold` days of as-of time); an
    undone override, an approval, or an approval of the same offer after the override does not."""
    from datetime import timedelta

    from recommendations.decisions import decision_undo
    from tests.desk.factories import make_run

    manager = role_users["manager"]
    turned_down, undone, approved, changed_mind = (make_member() for _ in range(4))
    first = {m: make_rec(run=world.run, member=m, offer=world.bonus)
             for m in (turned_down, undone, approved, changed_mind)}
    for member in (changed_mind, turned_down, undone):
        decision = decision_record(recommendation_id=first[member].pk, actor=manager, action="override",
                                   chosen_offer_code=world.discount.code, reason_code="model_wrong",
                                   reason_text="buys with discounts only")
    decision_undo(decision_id=decision.pk, actor=manager)
    decision_record(recommendation_id=first[approved].pk, actor=manager, action="approve")
    # A run between: the same offer again for one member, approved this time.
    between = make_run(world.model)
    between.as_of = world.run.as_of + timedelta(days=10)
    between.save()
    middle = make_rec(run=between, member=changed_mind, offer=world.bonus)
    decision_record(recommendation_id=middle.pk, actor=manager, action="approve")
    later_run = make_run(world.model)
    later_run.as_of = world.run.as_of + timedelta(days=30)
    later_run.save()
    again = {m: make_rec(run=later_run, member=m, offer=world.bonus)
             for m in (turned_down, undone, approved, changed_mind)}

    save(role_users["admin"], run_callbacks)
    assert status(again[turned_down]) == "pending"
    again[turned_down].refresh_from_db()
    assert [r["text"] for r in again[turned_down].route_reasons] == [
        f"A manager turned down {world.bonus.code} for this member on a run 30 days earlier: manager review."]
    assert status(again[undone]) == "auto_approved" and status(again[approved]) == "auto_approved"
    assert status(again[changed_mind]) == "auto_approved"
    # Older than the admin's window, the rejection no longer holds the item back.
    save(role_users["admin"], run_callbacks, rules={"rejected_before": {"enabled": True, "threshold": 29}})
    assert status(again[turned_down]) == "auto_approved"
