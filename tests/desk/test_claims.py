"""Review claims: managers see who has an item open, and a claim never blocks a decision."""

from __future__ import annotations

import time

import pytest
from django.test import Client
from django.urls import reverse

from recommendations.claims import claims_by_others
from recommendations.models import Recommendation
from tests.desk.factories import make_user

pytestmark = pytest.mark.django_db


def client_for(user, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def claim_url(rec) -> str:
    return reverse("api-recommendation-claim", args=[rec.pk])


def row_html(html: str, rec) -> str:
    return html.split(f'id="rec-{rec.pk}"', 1)[1].split("</tr>", 1)[0]


@pytest.fixture
def dana(db, role_users):
    user = make_user("dana", "manager")
    user.first_name = "Dana"
    user.save()
    return user


def test_opening_an_item_shows_it_on_the_other_managers_queue(world, role_users, dana):
    top, mid = world.recs["top"], world.recs["mid"]
    assert client_for(dana).get(reverse("desk-detail", args=[top.pk])).status_code == 200

    other = client_for(role_users["manager"]).get("/").content.decode()
    assert "Dana is reviewing" in row_html(other, top)
    assert 'class="qrow st-pending claimed"' in other
    assert "is reviewing" not in row_html(other, mid)
    # Dana's own queue does not warn her about herself.
    assert "badge claim" not in client_for(dana).get("/").content.decode()
    # The API lists it too.
    results = client_for(role_users["manager"]).get("/api/recommendations/").json()["results"]
    assert {r["id"]: r["claimed_by"] for r in results}[top.pk] == "Dana"
    assert {r["id"]: r["claimed_by"] for r in results}[mid.pk] is None


def test_a_claim_is_advice_and_the_decision_releases_it(world, role_users, dana, django_capture_on_commit_callbacks):
    top = world.recs["top"]
    client_for(dana).get(reverse("desk-detail", args=[top.pk]))
    manager = role_users["manager"]
    # The detail page tells the second manager, and still lets them decide.
    html = client_for(manager).get(reverse("desk-detail", args=[top.pk])).content.decode()
    assert "Dana opened this item first" in html and 'value="approve"' in html
    with django_capture_on_commit_callbacks(execute=True):  # claims go once the decision commits
        response = client_for(manager).post(f"/api/recommendations/{top.pk}/decide/", {"action": "approve"},
                                            content_type="application/json")
    assert response.status_code == 201
    assert Recommendation.objects.get(pk=top.pk).status == "approved"
    # Decided: Dana's claim went with it (she was looking at an item that is now closed).
    assert claims_by_others(recommendation_ids=[top.pk], user=manager) == {}


def test_the_first_claim_stands_until_its_holder_lets_go(world, role_users, dana):
    top = world.recs["top"]
    manager = client_for(role_users["manager"])
    first = client_for(dana).post(claim_url(top)).json()
    assert first == {"claimed": True, "claimed_by": None, "seconds": 120}
    assert manager.post(claim_url(top)).json()["claimed_by"] == "Dana"
    assert client_for(dana).post(claim_url(top)).json()["claimed"] is True  # a refresh
    # Someone else's release leaves it; the holder's own frees it for the next manager.
    assert manager.delete(claim_url(top)).status_code == 204
    assert manager.post(claim_url(top)).json()["claimed_by"] == "Dana"
    assert client_for(dana).delete(claim_url(top)).status_code == 204
    assert manager.post(claim_url(top)).json() == {"claimed": True, "claimed_by": None, "seconds": 120}


def test_claims_expire_by_themselves(world, role_users, dana, settings):
    settings.REVIEW_CLAIM_SECONDS = 1
    top = world.recs["top"]
    client_for(dana).post(claim_url(top))
    manager = client_for(role_users["manager"])
    assert manager.post(claim_url(top)).json()["claimed_by"] == "Dana"
    time.sleep(1.3)
    assert manager.post(claim_url(top)).json()["claimed"] is True


def test_claims_are_refused_like_decisions(world, role_users):
    manager = client_for(role_users["manager"])
    assert Client().post(claim_url(world.recs["top"])).status_code == 403  # not logged in
    assert client_for(role_users["auditor"]).post(claim_url(world.recs["top"])).status_code == 403
    response = manager.post(claim_url(world.recs["esc"]))  # escalated: a senior's to decide
    assert response.status_code == 403 and "may not decide" in response.json()["error"]
    assert client_for(role_users["senior_manager"]).post(claim_url(world.recs["esc"])).json()["claimed"] is True
    response = manager.post(claim_url(world.recs["done"]))
    assert response.status_code == 409 and "no longer open" in response.json()["error"]
    assert manager.post("/api/recommendations/999999/claim/").status_code == 404
    # Session clients need the CSRF token, as for every other write.
    assert client_for(role_users["manager"], csrf=True).post(claim_url(world.recs["top"])).status_code == 403


def test_rows_offer_a_claim_url_only_where_the_user_may_decide(world, role_users):
    html = client_for(role_users["manager"]).get("/", {"status": "all"}).content.decode()
    assert f'data-claim-url="{claim_url(world.recs["top"])}"' in html
    assert claim_url(world.recs["done"]) not in html
    auditor = client_for(role_users["auditor"]).get("/").content.decode()
    assert "data-claim-url" not in auditor


def test_two_managers_racing_for_one_item_on_redis_get_one_claim(world, role_users, dana, settings):
    """The production cache: of managers opening the same item at once, exactly one holds it."""
    from concurrent.futures import ThreadPoolExecutor

    from django.core.cache import cache

    from recommendations.claims import claim_take

    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:6379/13", "KEY_PREFIX": "test-claims"}}
    cache.clear()
    users = [dana, role_users["manager"], *(make_user(f"m{i}", "manager") for i in range(6))]
    top = world.recs["top"]
    try:
        with ThreadPoolExecutor(len(users)) as pool:
            others = list(pool.map(lambda u: claim_take(recommendation_id=top.pk, user=u), users))
        winners = [u for u, other in zip(users, others, strict=True) if other is None]
        assert len(winners) == 1
        assert {other.user_id for other in others if other is not None} == {winners[0].pk}
    finally:
        cache.clear()


def presence(client, *recs, raw: str | None = None):
    return client.get(reverse("api-recommendations-presence"), {"ids": raw or ",".join(str(r.pk) for r in recs)})


def test_presence_tells_an_open_page_what_others_did_to_its_rows(world, role_users, dana,
                                                                   django_capture_on_commit_callbacks):
    """The queue page polls this: Dana opened one item and approved another since it was served."""
    from recommendations.decisions import decision_record

    top, mid, low = world.recs["top"], world.recs["mid"], world.recs["low"]
    manager = client_for(role_users["manager"])
    client_for(dana).get(reverse("desk-detail", args=[mid.pk]))
    with django_capture_on_commit_callbacks(execute=True):
        decision_record(recommendation_id=top.pk, actor=dana, action="approve")

    items = presence(manager, top, mid, low).json()["items"]
    assert items == [
        {"id": top.pk, "status": "approved", "can_decide": False, "claimed_by": None},
        {"id": mid.pk, "status": "pending", "can_decide": True, "claimed_by": "Dana"},
        {"id": low.pk, "status": "pending", "can_decide": True, "claimed_by": None},
    ]
    # Dana does not see herself; an auditor may look but decides nothing; unknown ids drop out.
    assert presence(client_for(dana), mid).json()["items"][0]["claimed_by"] is None
    assert presence(client_for(role_users["auditor"]), mid).json()["items"][0]["can_decide"] is False
    assert presence(manager, raw=f"{mid.pk},999999999").json()["items"][0]["id"] == mid.pk
    assert len(presence(manager, raw=f"{mid.pk},999999999").json()["items"]) == 1


@pytest.mark.parametrize("raw", ["", "abc", "1,,x", ",".join(["1"] * 201), "99999999999999999999"])
def test_presence_names_the_bad_parameter(world, role_users, raw):
    response = presence(client_for(role_users["manager"]), raw=raw or " ")
    assert response.status_code == 400
    assert response.json()["error"].startswith("ids:") and response.json()["code"] == "invalid_ids"
