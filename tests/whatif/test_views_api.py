"""The what-if pages and API: roles, recompute, 400s naming the field, saving and sharing."""

from __future__ import annotations

import json
import time

import numpy as np
import plotly.graph_objects as go
import pytest
from django.test import Client
from django.urls import reverse

from governance.models import AuditEvent
from recommendations.models import Scenario
from tests.desk.factories import build_world


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def evaluate_url(world) -> str:
    return reverse("whatif-evaluate", args=[world.member.member_id])


def test_roles_on_the_pages(world, role_users):
    page = reverse("whatif-member", args=[world.member.member_id])
    for role in ("manager", "senior_manager", "admin"):
        assert client_for(role_users[role]).get(page).status_code == 200, role
    assert client_for(role_users["auditor"]).get(page).status_code == 403
    assert client_for(role_users["auditor"]).post(evaluate_url(world), "{}", content_type="application/json").status_code == 403
    anonymous = Client().get(page)
    assert anonymous.status_code == 302 and reverse("login") in anonymous["Location"]
    assert Client().post(evaluate_url(world), "{}", content_type="application/json").status_code == 302


def test_member_page_renders_controls_locks_help_and_no_inline_script(world, role_users):
    response = client_for(role_users["manager"]).get(reverse("whatif-member", args=[world.member.member_id]))
    html = response.content.decode()
    assert 'id="range-purchases_30d"' in html and 'id="num-tier_rank"' in html
    assert 'id="range-age"' in html and "protected attribute" in html
    assert "Linked features move together" in html
    # Only JSON data blocks and files: the CSP forbids inline scripts.
    assert html.count("<script") == html.count('type="application/json"') + html.count("<script src=")
    assert "js/whatif.js" in html and "vendor/plotly.min.js" in html
    assert AuditEvent.objects.filter(action="member.view", object_type="whatif",
                                     member_pseudo_id=world.member.pseudo_id).exists()


def test_recompute_answers_numbers_and_valid_plotly_figures(world, role_users):
    response = client_for(role_users["manager"]).post(
        evaluate_url(world), json.dumps({"changes": {"sessions_30d": 10}}), content_type="application/json"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["changes"] == {"sessions_30d": 10.0}
    assert 0 <= body["scenario"]["p_low"] <= body["scenario"]["probability"] <= body["scenario"]["p_high"] <= 1
    for fig in body["figures"].values():
        go.Figure(fig)  # raises on anything plotly would not draw
    assert body["server_ms"] < 1000


def test_recompute_through_the_full_request_stack_is_fast(world, role_users):
    client = client_for(role_users["manager"])
    timings = []
    for i in range(31):
        start = time.perf_counter()
        response = client.post(evaluate_url(world), json.dumps({"changes": {"sessions_30d": i % 15}}),
                               content_type="application/json")
        timings.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200
    p50, p95 = np.percentile(timings[1:], 50), np.percentile(timings[1:], 95)
    print(f"\nrecompute request (score + SHAP + recourse + figures + JSON): p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    # The 50 ms budget is the scoring service's (test_service); a request adds the session,
    # role and member queries, and this box's two cores are shared with other suites.
    assert p50 < 100


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"nope": 1}, "nope"), ({"points_balance": 10**9}, "points_balance"), ({"sessions_30d": "x"}, "sessions_30d"),
     ({"age": 20}, "age")],
)
def test_recompute_400_names_the_field(world, role_users, changes, field):
    response = client_for(role_users["manager"]).post(
        evaluate_url(world), json.dumps({"changes": changes}), content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["field"] == field


def test_api_whatif(world, role_users):
    url = reverse("api-whatif")
    manager = client_for(role_users["manager"])
    ok = manager.post(url, {"member_id": world.member.member_id, "changes": {"sessions_30d": 4}},
                      content_type="application/json")
    assert ok.status_code == 200, ok.content
    body = ok.json()
    assert body["member_id"] == world.member.member_id and body["changes"] == {"sessions_30d": 4.0}
    assert {"base", "scenario", "delta", "recourse", "warnings", "features"} <= set(body)
    # A hypothetical member: the full vector of the member above, edited.
    features = {f["name"]: f["base"] for f in body["features"]}
    hypo = manager.post(url, {"features": features, "changes": {"tier_rank": 3}}, content_type="application/json")
    assert hypo.status_code == 200 and hypo.json()["changes"] == {"tier_rank": 3.0}

    for payload, field in [
        ({"member_id": world.member.member_id, "changes": {"unknown_thing": 1}}, "unknown_thing"),
        ({"member_id": world.member.member_id, "changes": {"purchases_30d": 1000}}, "purchases_30d"),
        ({"member_id": world.member.member_id, "changes": {"purchases_30d": [1]}}, "purchases_30d"),
        ({"member_id": world.member.member_id, "changes": "more"}, "changes"),
        ({"member_id": "NOBODY"}, "member_id"),
        ({}, "member_id"),
        ({"features": {**features, "age": "old"}}, "age"),
        ({"member_id": world.member.member_id, "model_version": 999999}, "model_version"),
    ]:
        bad = manager.post(url, payload, content_type="application/json")
        assert bad.status_code == 400, payload
        assert field in bad.json()["fields"], (payload, bad.json())

    auditor = client_for(role_users["auditor"]).post(url, {"member_id": world.member.member_id},
                                                      content_type="application/json")
    assert auditor.status_code == 403
    assert Client().post(url, {"member_id": world.member.member_id}, content_type="application/json").status_code == 403


def test_openapi_documents_whatif(world, role_users):
    schema = client_for(role_users["manager"]).get(reverse("api-schema") + "?format=json").json()
    post = schema["paths"]["/api/whatif/"]["post"]
    assert post["operationId"] == "whatif_evaluate"
    assert {"200", "400", "403"} <= set(post["responses"])
    assert "/api/whatif/segments/" in schema["paths"] and "/api/whatif/scenarios/{id}/" in schema["paths"]


def test_save_share_and_compare(world, role_users, eager_celery, django_capture_on_commit_callbacks):
    manager = client_for(role_users["manager"])
    save = manager.post(reverse("whatif-save", args=[world.member.member_id]), {
        "name": "two more visits", "changes": json.dumps({"sessions_30d": 2}),
        "model_version": world.model.pk,
    })
    scenario = Scenario.objects.get(name="two more visits")
    assert save.status_code == 302 and save["Location"] == reverse("whatif-scenario", args=[scenario.pk])
    # The shared URL opens the member page with the saved changes, for another manager too.
    senior = client_for(role_users["senior_manager"])
    shared = senior.get(reverse("whatif-scenario", args=[scenario.pk]), follow=True)
    assert shared.status_code == 200
    assert shared.context["init"]["changes"] == {"sessions_30d": 2.0}
    assert "two more visits" in shared.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        start = manager.post(reverse("whatif-segment-start"), {
            "tier": "gold", "feature": "points_balance", "op": "scale", "amount": "1.2", "name": "gold +20% points",
        })
    segment = Scenario.objects.get(name="gold +20% points")
    assert start["Location"] == reverse("whatif-scenario", args=[segment.pk])
    page = manager.get(start["Location"]).content.decode()
    assert "Expected engaged members" in page and 'data-chart="seg-engaged"' in page
    status = manager.get(reverse("whatif-scenario-status", args=[segment.pk])).content.decode()
    assert "hx-trigger" not in status  # finished: polling stops

    compare = manager.get(reverse("whatif-compare") + f"?ids={scenario.pk}&ids={segment.pk}")
    html = compare.content.decode()
    assert "two more visits" in html and "gold +20% points" in html and f"v{world.model.pk}" in html

    api = manager.get(reverse("api-whatif-scenario", args=[segment.pk])).json()
    assert api["status"] == "succeeded" and api["inputs"]["change"]["feature"] == "points_balance"
    assert client_for(role_users["auditor"]).get(reverse("api-whatif-scenario", args=[segment.pk])).status_code == 403


def test_segment_api_400_and_202(world, role_users, eager_celery, django_capture_on_commit_callbacks):
    manager = client_for(role_users["manager"])
    bad = manager.post(reverse("api-whatif-segments"), {"feature": "age"}, content_type="application/json")
    assert bad.status_code == 400 and "feature" in bad.json()["fields"]
    with django_capture_on_commit_callbacks(execute=True):
        ok = manager.post(reverse("api-whatif-segments"), {"risk": "high", "feature": "sessions_30d", "op": "add",
                                                           "amount": 3}, content_type="application/json")
    assert ok.status_code == 202
    assert Scenario.objects.get(pk=ok.json()["id"]).status == "succeeded"


def test_member_search_redirects_and_home_lists_scenarios(world, role_users):
    manager = client_for(role_users["manager"])
    found = manager.get(reverse("whatif-home") + f"?member={world.member.member_id}")
    assert found["Location"] == reverse("whatif-member", args=[world.member.member_id])
    missing = manager.get(reverse("whatif-home") + "?member=NOBODY")
    assert missing.status_code == 200 and "No member" in missing.content.decode()


@pytest.mark.django_db
def test_queue_rows_and_detail_link_to_whatif_for_whatif_roles(role_users):
    world = build_world()
    rec = world.recs["top"]
    link = reverse("whatif-member", args=[rec.member.member_id])
    assert link in client_for(role_users["manager"]).get(reverse("home")).content.decode()
    assert link in client_for(role_users["manager"]).get(reverse("desk-detail", args=[rec.pk])).content.decode()
    assert link not in client_for(role_users["auditor"]).get(reverse("home")).content.decode()
