"""Desk pages: the queue as home page, htmx row swaps, detail audit, bulk confirmation, CSP."""

from __future__ import annotations

import re

import plotly.graph_objects as go
import pytest
from django.test import Client
from django.urls import reverse

from governance.models import AuditEvent
from recommendations.models import Decision, Recommendation

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}


def logged_in(role_users, role: str) -> Client:
    client = Client()
    client.force_login(role_users[role])
    return client


def assert_no_inline_script(html: str) -> None:
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert 'src="' in tag or 'type="application/json"' in tag, tag
    assert not re.search(r"\son[a-z]+=\"", html), "inline event handler"


def test_home_is_the_queue(world, role_users):
    assert reverse("home") == "/"
    assert Client().get("/").status_code == 302  # login required
    response = logged_in(role_users, "manager").get("/")
    html = response.content.decode()
    assert response.status_code == 200 and "Review queue" in html
    assert world.recs["top"].member.member_id in html
    assert world.recs["esc"].member.member_id not in html  # not the manager's to decide
    assert 'class="pbar"' in html and "Approve" in html and 'id="help"' in html
    assert "js/desk.js" in html
    assert_no_inline_script(html)
    assert "Secret Name" not in html and "@example.com" not in html


def test_filters_live_in_the_url(world, role_users):
    html = logged_in(role_users, "manager").get("/", {"offer": "none"}).content.decode()
    assert world.recs["low"].member.member_id in html
    assert world.recs["top"].member.member_id not in html
    assert '<option value="none" selected>' in html


def test_next_page_link_keeps_filters(world, role_users, monkeypatch):
    monkeypatch.setattr("recommendations.views.PAGE_SIZE", 2)
    client = logged_in(role_users, "manager")
    html = client.get("/", {"sort": "expected_value"}).content.decode()
    link = re.search(r'href="\?([^"]*cursor=[^"]+)"', html).group(1).replace("&amp;", "&")
    assert "sort=expected_value" in link
    page2 = client.get(f"/?{link}").content.decode()
    assert world.recs["mid"].member.member_id in page2 and "First page" in page2


def test_read_only_roles_get_no_decision_controls(world, role_users):
    html = logged_in(role_users, "auditor").get("/").content.decode()
    assert "Read-only view" in html and 'class="inline act-approve"' not in html
    assert world.recs["esc"].member.member_id in html


def test_htmx_approve_replaces_the_row(world, role_users):
    rec = world.recs["top"]
    response = logged_in(role_users, "manager").post(
        reverse("desk-decide", args=[rec.pk]), {"action": "approve"}, **HX
    )
    html = response.content.decode()
    assert response.status_code == 200 and html.lstrip().startswith(f'<tr id="rec-{rec.pk}"')
    assert "Approved #" in html and "act-undo" in html and "act-approve" not in html
    assert Recommendation.objects.get(pk=rec.pk).status == "approved"


def test_htmx_conflict_shows_who_decided(world, role_users):
    rec = world.recs["top"]
    logged_in(role_users, "senior_manager").post(reverse("desk-decide", args=[rec.pk]), {"action": "approve"}, **HX)
    html = logged_in(role_users, "manager").post(
        reverse("desk-decide", args=[rec.pk]), {"action": "approve"}, **HX
    ).content.decode()
    assert "already decided by senior_manager" in html and "rowmsg error" in html
    assert Decision.objects.filter(recommendation=rec).count() == 1


def test_plain_post_redirects_with_message(world, role_users):
    client = logged_in(role_users, "manager")
    response = client.post(
        reverse("desk-decide", args=[world.recs["mid"].pk]),
        {"action": "override", "chosen_offer_code": "bonus_500", "reason_code": "policy", "reason_text": "rule"},
        follow=True,
    )
    assert "Overridden #" in response.content.decode()
    bad = client.post(reverse("desk-decide", args=[world.recs["low"].pk]), {"action": "escalate"}, follow=True)
    assert "needs a note" in bad.content.decode()


def test_auditor_cannot_post_decisions(world, role_users):
    response = logged_in(role_users, "auditor").post(
        reverse("desk-decide", args=[world.recs["top"].pk]), {"action": "approve"}
    )
    assert response.status_code == 403
    assert not Decision.objects.exists()


def test_undo_view_restores_row(world, role_users):
    client = logged_in(role_users, "manager")
    client.post(reverse("desk-decide", args=[world.recs["top"].pk]), {"action": "approve"}, **HX)
    decision = Decision.objects.get()
    html = client.post(reverse("desk-undo", args=[decision.pk]), **HX).content.decode()
    assert "is open again" in html and "act-approve" in html
    assert Recommendation.objects.get(pk=world.recs["top"].pk).status == "pending"


def test_detail_page_charts_audit_and_no_pii(world, role_users):
    rec = world.recs["esc"]
    response = logged_in(role_users, "senior_manager").get(reverse("desk-detail", args=[rec.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    for chart in ("chart-shap", "chart-alternatives", "chart-history"):
        assert f'<script id="{chart}" type="application/json">' in html
        # Plain dicts, not go.Figure: plotly itself must accept each one.
        go.Figure(response.context[chart.replace("chart-", "").replace("alternatives", "alt") + "_chart"])
    assert len(response.context["shap_chart"]["data"][0]["x"]) == len(response.context["shap_chart"]["data"][0]["y"])
    assert "vendor/plotly.min.js" in html and "EV above 50" in html
    # The expected value's range is the calibration range of members like this one, and says so:
    # it is not a 90% interval for this member (README, "Response and EV intervals").
    assert f"for members like this: {rec.ev_low:,.2f} to {rec.ev_high:,.2f}" in html
    assert "average of members it scores like this one" in html and "90% interval " + f"{rec.ev_low:,.2f}" not in html
    assert rec.member.name not in html and rec.member.email not in html and "1980" not in html
    assert_no_inline_script(html)
    audit = AuditEvent.objects.get(action="member.view")
    assert audit.member_pseudo_id == rec.member.pseudo_id and audit.actor_label == "senior_manager"


def test_bulk_approve_confirms_count_then_reports_refusals(world, role_users):
    client = logged_in(role_users, "manager")
    ids = [world.recs["top"].pk, world.recs["mid"].pk, world.recs["stakes"].pk]
    confirm = client.post(reverse("desk-bulk-approve"), {"ids": ids}).content.decode()
    assert "Approve 3 selected items?" in confirm
    assert not Decision.objects.exists()  # nothing happens before the confirmation
    done = client.post(reverse("desk-bulk-approve"), {"ids": ids, "confirm": "yes"}, follow=True).content.decode()
    assert "Approved 2 of 3 selected." in done
    assert f"#{world.recs['stakes'].pk}: high-stakes offer" in done
    assert Recommendation.objects.get(pk=world.recs["stakes"].pk).status == "pending"


def test_detail_page_explains_the_cost_of_a_wrong_decision(world, role_users):
    from recommendations.runs import recommendation_priority
    from tests.desk.factories import FEATURES, make_rec

    # The snapshot's third feature becomes the member's yearly spend: 1200.
    world.model.feature_schema = {"features": [
        {"name": "spend_365d" if n == "points_balance" else n, "min": 0, "max": 100} for n in FEATURES]}
    world.model.save(update_fields=["feature_schema"])
    priority = float(recommendation_priority(probability=0.3, p_low=0.1, p_high=0.5, offer_cost=5.0, member_value=1200.0))
    rec = make_rec(run=world.run, offer=world.bonus, probability=0.3, width=0.4, priority=priority)
    html = logged_in(role_users, "manager").get(reverse("desk-detail", args=[rec.pk])).content.decode()
    text = " ".join(html.split())
    assert ("1,325.00 EUR <span class=\"muted\" id=\"priority-parts\">= offer cost 5.00 + 840.00 at risk (churn "
            "risk 70% of a member who spent 1,200.00 in a year) + 480.00 for the model's doubt (its 90% interval "
            "is 40% wide)") in text

    # A priority its parts do not add up to (another formula) is shown without a breakdown.
    odd = make_rec(run=world.run, offer=world.bonus, probability=0.3, width=0.4, priority=10.0)
    html = logged_in(role_users, "manager").get(reverse("desk-detail", args=[odd.pk])).content.decode()
    assert "10.00 EUR" in html and 'id="priority-parts"' not in html


def test_detail_page_states_model_metrics_in_plain_words(world, role_users):
    world.model.metrics = {"auc": 0.8123, "interval_coverage": 0.887, "n_train": 1065.0, "n_iter": 27.0,
                           "shap_rows_per_s": 23838.4, "offer_policy": "learned", "response": {"auc": 0.7}}
    world.model.save(update_fields=["metrics"])
    rec = world.recs["top"]
    html = logged_in(role_users, "manager").get(reverse("desk-detail", args=[rec.pk])).content.decode()
    text = " ".join(html.split())
    assert "<dt>How well it ranks members who engage above those who do not (AUC: 0.5 is chance, 1 is perfect)</dt><dd>0.812</dd>" in text
    assert "<dt>Held-out members whose 90% interval held their probability judged in hindsight</dt><dd>88.7%</dd>" in text
    assert "<dt>Members trained on</dt><dd>1,065</dd>" in text
    # Everything else under its stored key, counts without decimals; nested metrics stay out.
    assert "<summary>All recorded metrics</summary>" in text
    assert "<dt>n_iter</dt><dd>27</dd>" in text and "<dt>shap_rows_per_s</dt><dd>23838.400</dd>" in text
    assert "<dt>offer_policy</dt><dd>learned</dd>" in text and "response" not in text.split("All recorded metrics")[1]
