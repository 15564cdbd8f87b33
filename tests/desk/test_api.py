"""API: every endpoint for every role, JSON errors, conflicts as 409, parallel HTTP deciders."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from governance.models import AuditEvent
from recommendations.models import Decision
from tests.desk.factories import make_user

pytestmark = pytest.mark.django_db

ROLES = ["manager", "senior_manager", "admin", "auditor"]
# Session authentication comes first in settings, so DRF answers anonymous callers 403 with
# code "not_authenticated" (no WWW-Authenticate challenge); ANON marks that expectation.
ANON = 403


def client_for(role_users, role: str | None) -> APIClient:
    client = APIClient()
    if role:
        # A real session (axes guards the password form; the browser tests log in through it).
        client.force_login(role_users[role])
    return client


@pytest.mark.parametrize("role, expected", [(r, 200) for r in ROLES] + [(None, ANON)])
@pytest.mark.parametrize(
    "url",
    ["/api/recommendations/", "/api/runs/", "/api/models/", "run-detail", "model-detail", "rec-detail"],
)
def test_read_endpoints_by_role(world, role_users, role, expected, url):
    url = {
        "run-detail": f"/api/runs/{world.run.pk}/",
        "model-detail": f"/api/models/{world.model.pk}/",
        "rec-detail": f"/api/recommendations/{world.recs['top'].pk}/",
    }.get(url, url)
    response = client_for(role_users, role).get(url)
    assert response.status_code == expected, response.content
    if role is None:
        assert response.json()["code"] == "not_authenticated"


def test_list_filters_sort_and_cursor(world, role_users):
    client = client_for(role_users, "manager")
    body = client.get("/api/recommendations/", {"limit": 2}).json()
    r = world.recs
    assert [x["id"] for x in body["results"]] == [r["top"].pk, r["stakes"].pk]
    assert body["next_cursor"]
    page2 = client.get("/api/recommendations/", {"limit": 2, "cursor": body["next_cursor"]}).json()
    assert [x["id"] for x in page2["results"]] == [r["mid"].pk, r["low"].pk]
    assert page2["next_cursor"] is None
    first = body["results"][0]
    assert first["offer_code"] == "bonus_500" and first["member_id"] == r["top"].member.member_id
    assert len(first["drivers"]) == 3 and first["churn_risk"] == pytest.approx(0.8)
    assert "name" not in first and "email" not in first
    risky = client.get("/api/recommendations/", {"risk": "high", "sort": "expected_value"}).json()
    assert [x["id"] for x in risky["results"]] == [r["stakes"].pk, r["top"].pk]
    bad = client.get("/api/recommendations/", {"cursor": "garbage"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"
    assert client.get("/api/recommendations/", {"risk": "extreme"}).status_code == 400


def test_token_auth_works(world, role_users):
    token = Token.objects.create(user=role_users["senior_manager"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    body = client.get("/api/recommendations/").json()
    assert world.recs["esc"].pk in [x["id"] for x in body["results"]]


def test_detail_writes_member_view_audit_and_hides_pii(world, role_users):
    rec = world.recs["top"]
    body = client_for(role_users, "auditor").get(f"/api/recommendations/{rec.pk}/").json()
    assert [f["name"] for f in body["features"]][:2] == ["purchases_30d", "days_since_purchase"]
    assert body["alternatives"][0]["code"] == "bonus_500" and body["model_metrics"]["auc"] == 0.81
    assert rec.member.email not in str(body) and rec.member.name not in str(body)
    audit = AuditEvent.objects.get(action="member.view")
    assert audit.member_pseudo_id == rec.member.pseudo_id and audit.actor_label == "auditor"
    assert client_for(role_users, "auditor").get("/api/recommendations/999999/").status_code == 404


@pytest.mark.parametrize(
    "role, rec_key, expected",
    [
        ("manager", "top", 201),
        ("senior_manager", "top", 201),
        ("senior_manager", "esc", 201),
        ("manager", "esc", 403),
        ("admin", "top", 403),
        ("auditor", "top", 403),
        (None, "top", ANON),
    ],
)
def test_decide_by_role(world, role_users, role, rec_key, expected):
    rec = world.recs[rec_key]
    response = client_for(role_users, role).post(
        f"/api/recommendations/{rec.pk}/decide/", {"action": "approve"}, format="json"
    )
    assert response.status_code == expected, response.content
    assert Decision.objects.filter(recommendation=rec).exists() == (expected == 201)
    if expected == 201:
        assert response.json()["action"] == "approve" and response.json()["is_feedback"] is True


def test_decide_validation_and_conflict(world, role_users):
    client = client_for(role_users, "manager")
    url = f"/api/recommendations/{world.recs['top'].pk}/decide/"
    missing = client.post(url, {"action": "override", "chosen_offer_code": "discount_10"}, format="json")
    assert missing.status_code == 400 and "reason" in missing.json()["error"]
    assert client.post(url, {"action": "delete"}, format="json").status_code == 400
    ok = client.post(
        url,
        {"action": "override", "chosen_offer_code": "discount_10", "reason_code": "member_context",
         "reason_text": "moved abroad"},
        format="json",
    )
    assert ok.status_code == 201 and ok.json()["chosen_offer_code"] == "discount_10"
    again = client_for(role_users, "senior_manager").post(url, {"action": "approve"}, format="json")
    assert again.status_code == 409
    assert again.json()["code"] == "conflict" and "already decided by manager" in again.json()["error"]
    assert client.post("/api/recommendations/999999/decide/", {"action": "approve"}, format="json").status_code == 404


def test_undo_endpoint(world, role_users, settings):
    client = client_for(role_users, "manager")
    d = client.post(f"/api/recommendations/{world.recs['top'].pk}/decide/", {"action": "approve"}, format="json")
    decision_id = d.json()["id"]
    assert client_for(role_users, "senior_manager").post(f"/api/decisions/{decision_id}/undo/").status_code == 403
    assert client_for(role_users, "auditor").post(f"/api/decisions/{decision_id}/undo/").status_code == 403
    anonymous = APIClient().post(f"/api/decisions/{decision_id}/undo/")
    assert anonymous.status_code == ANON and anonymous.json()["code"] == "not_authenticated"
    undone = client.post(f"/api/decisions/{decision_id}/undo/")
    assert undone.status_code == 201 and undone.json()["action"] == "undo"
    assert undone.json()["compensates"] == decision_id
    settings.DECISION_UNDO_SECONDS = 0
    d2 = client.post(f"/api/recommendations/{world.recs['top'].pk}/decide/", {"action": "approve"}, format="json")
    late = client.post(f"/api/decisions/{d2.json()['id']}/undo/")
    assert late.status_code == 409 and late.json()["code"] == "undo_window_closed"


@pytest.mark.parametrize("role, expected", [("manager", 200), ("senior_manager", 200), ("admin", 403),
                                            ("auditor", 403), (None, ANON)])
def test_bulk_decide_by_role(world, role_users, role, expected):
    r = world.recs
    response = client_for(role_users, role).post(
        "/api/recommendations/bulk-decide/",
        {"action": "approve", "ids": [r["top"].pk, r["stakes"].pk, r["esc"].pk]},
        format="json",
    )
    assert response.status_code == expected, response.content
    if expected == 200:
        body = response.json()
        assert body["approved"] == [r["top"].pk]
        assert {x["id"] for x in body["refused"]} == {r["stakes"].pk, r["esc"].pk}


def test_bulk_decide_validates_body(world, role_users):
    client = client_for(role_users, "manager")
    assert client.post("/api/recommendations/bulk-decide/", {"ids": []}, format="json").status_code == 400
    assert client.post("/api/recommendations/bulk-decide/", {"ids": [1], "action": "override"},
                       format="json").status_code == 400


def test_schema_documents_the_desk_endpoints(role_users):
    response = client_for(role_users, "admin").get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    paths = response.json()["paths"]
    decide = paths["/api/recommendations/{id}/decide/"]["post"]
    assert "409" in decide["responses"] and "requestBody" in decide
    for path in ["/api/recommendations/", "/api/recommendations/bulk-decide/", "/api/decisions/{id}/undo/",
                 "/api/runs/{id}/", "/api/models/{id}/"]:
        assert path in paths


@pytest.mark.django_db(transaction=True)
def test_parallel_http_decisions_one_wins_other_gets_409(world, role_users):
    assert connection.vendor == "postgresql"
    people = {"manager": role_users["manager"], "manager2": make_user("manager2", "manager")}
    users = list(people)
    rec_id = world.recs["mid"].pk
    barrier = threading.Barrier(2)
    codes: dict[str, tuple[int, dict]] = {}

    def attempt(name: str) -> None:
        try:
            client = APIClient()
            client.force_login(people[name])
            barrier.wait(timeout=10)
            r = client.post(f"/api/recommendations/{rec_id}/decide/", {"action": "approve"}, format="json")
            codes[name] = (r.status_code, r.json())
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(c for c, _ in codes.values()) == [201, 409], codes
    winner = next(u for u, (c, _) in codes.items() if c == 201)
    loser_body = next(b for c, b in codes.values() if c == 409)
    assert f"already decided by {winner}" in loser_body["error"]
    assert Decision.objects.filter(recommendation_id=rec_id).count() == 1
