"""Queue selectors: visibility by role, filters, sorts, keyset pagination, query counts."""

from __future__ import annotations

import pytest

from recommendations.queue import (
    InvalidCursor,
    QueueFilters,
    age_label,
    queue_counts_shift,
    queue_page,
    queue_status_counts,
)
from tests.desk.factories import ago, make_member, make_model, make_rec, make_run

pytestmark = pytest.mark.django_db


def ids(page) -> list[int]:
    return [row.rec.pk for row in page.rows]


def test_manager_sees_pending_by_priority(world, role_users):
    page = queue_page(user=role_users["manager"], filters=None, cursor=None, limit=50)
    r = world.recs
    assert ids(page) == [r["top"].pk, r["stakes"].pk, r["mid"].pk, r["low"].pk]
    assert all(row.can_decide for row in page.rows)


def test_senior_sees_pending_and_escalated(world, role_users):
    page = queue_page(user=role_users["senior_manager"], filters={}, cursor=None, limit=50)
    r = world.recs
    assert ids(page) == [r["top"].pk, r["esc"].pk, r["stakes"].pk, r["mid"].pk, r["low"].pk]
    esc_row = page.rows[1]
    assert esc_row.can_decide and not esc_row.bulk_eligible
    assert esc_row.reasons == ["interval wider than 0.35", "EV above 50"]


@pytest.mark.parametrize("role", ["auditor", "admin"])
def test_read_only_roles_see_open_items_without_actions(world, role_users, role):
    page = queue_page(user=role_users[role], filters={}, cursor=None, limit=50)
    assert len(page.rows) == 5
    assert not any(row.can_decide or row.bulk_eligible for row in page.rows)


def test_bulk_eligibility_excludes_high_stakes(world, role_users):
    page = queue_page(user=role_users["manager"], filters={}, cursor=None, limit=50)
    eligible = {row.rec.pk: row.bulk_eligible for row in page.rows}
    assert eligible[world.recs["stakes"].pk] is False
    assert eligible[world.recs["top"].pk] is True


def test_rows_carry_three_plain_word_drivers(world, role_users):
    row = queue_page(user=role_users["manager"], filters={}, cursor=None, limit=1).rows[0]
    assert [d["feature"] for d in row.drivers] == ["purchases_30d", "days_since_purchase", "points_balance"]
    assert row.drivers[0]["effect"] == "raises engagement" and row.drivers[1]["effect"] == "lowers engagement"
    # the engine's plain-language templates (recommendations.features.FEATURE_SPEC)
    assert row.drivers[0]["text"] == "made 3 purchases in 30 days"
    assert row.drivers[1]["text"] == "last purchase 12 days ago"


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"offer": "bonus_500"}, ["top"]),
        ({"offer": "none"}, ["low"]),
        ({"offer": "no_such_offer"}, []),  # an unknown code matches nothing (not "no offer")
        ({"risk": "high"}, ["top", "stakes"]),  # churn >= 60%: probability <= 0.4
        ({"risk": "medium"}, ["mid"]),
        ({"risk": "low"}, ["low"]),
        ({"confidence": "narrow"}, ["low"]),
        ({"confidence": "medium"}, ["mid"]),
        ({"confidence": "wide"}, ["top"]),
        ({"escalated": "yes"}, ["esc"]),
        ({"status": "approved"}, ["done"]),
    ],
)
def test_filters(world, role_users, params, expected):
    page = queue_page(user=role_users["manager"], filters=params, cursor=None, limit=50)
    got = set(ids(page))
    if params.get("confidence") == "medium":
        # stakes (width 0.2) is also a medium interval
        expected = [*expected, "stakes"]
    assert got == {world.recs[k].pk for k in expected}


def test_filter_by_tier_region_member_and_model(world, role_users):
    gold = make_member(tier="gold", region="south", member_id="GOLD-1")
    rec = make_rec(run=world.run, member=gold, offer=world.bonus, priority=5)
    other_model = make_model()
    other = make_rec(run=make_run(other_model), offer=world.bonus, priority=1)
    user = role_users["manager"]
    assert ids(queue_page(user=user, filters={"tier": "gold"}, cursor=None, limit=50)) == [rec.pk]
    assert ids(queue_page(user=user, filters={"region": "south"}, cursor=None, limit=50)) == [rec.pk]
    assert ids(queue_page(user=user, filters={"member": "GOLD-1"}, cursor=None, limit=50)) == [rec.pk]
    # exact match only
    assert ids(queue_page(user=user, filters={"member": "GOLD"}, cursor=None, limit=50)) == []
    assert ids(queue_page(user=user, filters={"model": str(other_model.pk)}, cursor=None, limit=50)) == [other.pk]


@pytest.mark.parametrize("sort", ["priority", "expected_value", "churn_risk", "uncertainty", "age"])
def test_keyset_pages_walk_the_whole_ordering_without_gaps(world, role_users, sort):
    # ties on the sort key force the id tie-break to matter
    extra = [make_rec(run=world.run, offer=world.bonus, priority=50, expected_value=20, probability=0.5, width=0.15)
             for _ in range(5)]
    for i, rec in enumerate(extra):
        ago(rec, minutes=i)
    user = role_users["manager"]
    full = ids(queue_page(user=user, filters={"sort": sort}, cursor=None, limit=200))
    assert len(full) == 9
    walked, cursor = [], None
    while True:
        page = queue_page(user=user, filters={"sort": sort}, cursor=cursor, limit=2)
        walked += ids(page)
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert walked == full
    recs = {r.pk: r for r in world.run.recommendations.all()}
    keys = {
        "priority": lambda r: (-r.priority, r.pk),
        "expected_value": lambda r: (-r.expected_value, r.pk),
        "churn_risk": lambda r: (r.probability, r.pk),
        "uncertainty": lambda r: (-(r.p_high - r.p_low), r.pk),
        "age": lambda r: (r.created_at, r.pk),
    }
    assert full == sorted(full, key=lambda pk: keys[sort](recs[pk]))


def test_invalid_cursor_is_refused(world, role_users):
    with pytest.raises(InvalidCursor):
        queue_page(user=role_users["manager"], filters={}, cursor="not-a-cursor", limit=10)


def test_filters_round_trip_through_url_params():
    f = QueueFilters.from_params({"offer": "x", "risk": "high", "sort": "age", "model": "3", "tier": "nonsense"})
    assert f.to_params() == {"offer": "x", "risk": "high", "model": "3", "sort": "age"}
    assert QueueFilters.from_params(f.to_params()) == f


def test_page_query_count_is_bounded(world, role_users, django_assert_max_num_queries):
    from recommendations.decisions import decision_record
    from recommendations.models import Recommendation

    recs = [make_rec(run=world.run, offer=world.bonus, priority=3) for _ in range(30)]
    earlier = make_rec(run=make_run(world.model), offer=world.bonus, priority=1)
    override = decision_record(recommendation_id=earlier.pk, actor=role_users["senior_manager"], action="override",
                               chosen_offer_code=world.discount.code, reason_code="model_wrong", reason_text="x")
    Recommendation.objects.filter(pk__in=[r.pk for r in recs[::3]]).update(recalled_decision=override)
    user = role_users["manager"]
    user.groups.all()  # roles are cached on the user after the first check
    queue_page(user=user, filters={}, cursor=None, limit=5)
    # one page query, one for the model versions' feature names and one for the managers'
    # earlier choices the page's items recall (queue.recalled_choices), whatever the page size
    with django_assert_max_num_queries(3):
        page = queue_page(user=user, filters={}, cursor=None, limit=30)
        [row.rec.member.member_id for row in page.rows]
        [row.rec.offer.code for row in page.rows if row.rec.offer]
        recalled = [(row.recalled.actor_label, row.recalled.recommendation.offer.code, row.recalled.recommendation.as_of)
                    for row in page.rows if row.recalled]
    marked = {r.pk for r in recs[::3]}
    assert len(page.rows) == 30 and len(recalled) == sum(row.rec.pk in marked for row in page.rows) >= 9


def test_status_counts_one_group_by_then_cached_and_shifted(world, django_assert_num_queries):
    with django_assert_num_queries(1):
        counts = queue_status_counts()
    assert counts["pending"] == 4 and counts["escalated"] == 1 and counts["approved"] == 1
    with django_assert_num_queries(0):
        assert queue_status_counts() == counts
    queue_counts_shift("pending", "approved")
    again = queue_status_counts()
    assert again["pending"] == 3 and again["approved"] == 2


def test_age_label(world):
    rec = ago(world.recs["top"], hours=3, minutes=5)
    assert age_label(rec.created_at) == "3 h"
    assert age_label(ago(world.recs["mid"], days=3).created_at) == "3 d"
    assert age_label(world.recs["low"].created_at) == "1 min"
