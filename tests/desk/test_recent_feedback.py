"""The detail page shows the member's recent comments (shortened, with their sentiment) and
reads text-feature drivers in plain words; comments after the run's as-of date stay out."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse

from loyalty.models import Event, Member
from recommendations.models import ModelVersion, Recommendation
from tests.desk.factories import make_member, make_run

pytestmark = pytest.mark.django_db

NAMES = ["comment_sentiment_90d", "days_since_purchase", "comments_365d", "negative_comment_share_365d"]
LONG = (
    "The points program keeps failing at checkout and every time I try to redeem my points the app "
    "freezes, support never answers and I have wasted hours on it this spring, truly terrible."
)
AFTER = "Written after the as-of date: the app is wonderful now, best program ever."


def _event(member: Member, at: datetime, comment: str, n: int) -> Event:
    return Event.objects.create(
        member=member, occurred_at=at, kind="feedback", comment=comment, fingerprint=f"fp-text-{member.pk}-{n}",
    )


@pytest.fixture
def commented_rec() -> Recommendation:
    model = ModelVersion.objects.create(
        artifact_path="var/artifacts/test.joblib", sha256="0" * 64, as_of=datetime(2026, 10, 1).date(),
        horizon_days=90, metrics={"auc": 0.8}, status="champion",
        feature_schema={"features": [{"name": n, "min": 0, "max": 1} for n in NAMES]},
    )
    run = make_run(model)  # as of 2026-10-01
    member = make_member()
    as_of = datetime(2026, 10, 1, tzinfo=UTC)
    comments = [
        (as_of - timedelta(days=200), "Lately the staff is great."),  # 4th newest: not shown
        (as_of - timedelta(days=40), "The offers are excellent, thanks."),
        (as_of - timedelta(days=20), "Checkout has not changed much."),
        (as_of - timedelta(days=5), LONG),
        (as_of - timedelta(seconds=1), ""),  # a feedback score without a comment: skipped
        (as_of, AFTER),  # at the as-of instant: the model could not see it
        (as_of + timedelta(days=3), AFTER + " Again."),
    ]
    for n, (at, text) in enumerate(comments):
        _event(member, at, text, n)
    feats = np.array([-0.45, 12, 4, 0.5], dtype=np.float32)
    shap = np.array([-0.9, 0.2, 0.05, -0.3], dtype=np.float32)
    return Recommendation.objects.create(
        run=run, member=member, model_version=model, as_of=run.as_of, probability=0.3, p_low=0.2, p_high=0.4,
        offer=None, expected_value=0, ev_low=0, ev_high=0, alternatives=[],
        shap_values=shap.tobytes(), shap_base=-0.2, features=feats.tobytes(),
        priority=10, status="pending", route="review", route_reasons=[],
    )


def _page(role_users, role: str, rec: Recommendation) -> tuple[int, str]:
    client = Client()
    client.force_login(role_users[role])
    response = client.get(reverse("desk-detail", args=[rec.pk]))
    return response.status_code, response.content.decode()


def test_detail_shows_latest_three_comments_before_as_of_shortened_with_sentiment(
    commented_rec, role_users, caplog
):
    with caplog.at_level(logging.DEBUG):
        status, html = _page(role_users, "manager", commented_rec)
    assert status == 200
    panel = html.split('id="recent-feedback"')[1].split("Why it was routed here")[0]
    items = panel.split('<li class="comment">')[1:]
    assert len(items) == 3
    # Newest first, each with its sentiment badge.
    assert "negative" in items[0] and "points program keeps failing" in items[0]
    assert "neutral" in items[1] and "Checkout has not changed much." in items[1]
    assert "positive" in items[2] and "The offers are excellent, thanks." in items[2]
    # The long comment is cut to at most 140 characters, at a word, with an ellipsis.
    shown = items[0].split("<q>")[1].split("</q>")[0]
    assert shown.endswith("…") and len(shown) <= 140 and "truly terrible" not in html
    # Nothing at or after the run's as-of date, nothing older than the three newest.
    assert "after the as-of date" not in html and "staff is great" not in html
    # A text feature is a top driver: in plain words, and the panel says so.
    drivers = html.split('<ul class="drivers">')[1].split("</ul>")[0]
    assert "recent feedback has been negative" in drivers
    assert "50% of the year&#x27;s comments were negative" in drivers
    assert "among the top drivers" in panel
    # Comments are personal data: the page may show them, the logs may not.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "keeps failing" not in logged and "excellent" not in logged


def test_auditor_sees_the_panel_and_anonymous_users_see_nothing(commented_rec, role_users):
    status, html = _page(role_users, "auditor", commented_rec)
    assert status == 200 and "Checkout has not changed much." in html
    response = Client().get(reverse("desk-detail", args=[commented_rec.pk]))
    assert response.status_code == 302 and "Checkout" not in response.content.decode()


def test_member_without_comments_gets_a_plain_note(commented_rec, role_users):
    Event.objects.filter(member=commented_rec.member).delete()
    status, html = _page(role_users, "manager", commented_rec)
    assert status == 200 and "No feedback comments before 2026-10-01." in html


def test_api_detail_lists_the_same_recent_feedback(commented_rec, role_users):
    client = Client()
    client.force_login(role_users["manager"])
    body = client.get(f"/api/recommendations/{commented_rec.pk}/").json()
    feedback = body["recent_feedback"]
    assert [c["sentiment"] for c in feedback] == ["negative", "neutral", "positive"]
    assert feedback[0]["text"].endswith("…") and len(feedback[0]["text"]) <= 140
    assert feedback[1]["text"] == "Checkout has not changed much." and feedback[1]["score"] == 0.0
    assert all(c["at"] < "2026-10-01" for c in feedback)
    assert "recent feedback has been negative" in [d["text"] for d in body["drivers"]]
