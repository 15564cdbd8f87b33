"""Text signals: VADER sentiment per comment, point-in-time comment features, their drivers in
words, the loaders (feedback comments only, decrypted and dropped), and the signal they add."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommendations.explain import describe_drivers
from recommendations.features import FEATURE_NAMES, NO_HISTORY_DAYS, TEXT_FEATURES, build_features
from recommendations.text import comment_sentiments, sentiment_label, shorten

AS_OF = pd.Timestamp("2024-07-01", tz="UTC")
ROOT = Path(__file__).resolve().parents[2]


def test_vader_scores_known_texts() -> None:
    scores = comment_sentiments([
        "The staff is great, I love this program!",
        "Checkout keeps failing, terrible and annoying.",
        "The app has not changed much.",
        "", None, np.nan, "   ",
    ])
    assert scores[0] > 0.5 and sentiment_label(scores[0]) == "positive"
    assert scores[1] < -0.5 and sentiment_label(scores[1]) == "negative"
    assert scores[2] == 0.0 and sentiment_label(scores[2]) == "neutral"
    assert np.isnan(scores[3:]).all()  # no comment is no sentiment, not a neutral one


def test_shorten_cuts_at_a_word_with_an_ellipsis() -> None:
    assert shorten("Short and sweet.") == "Short and sweet."
    text = "word " * 50
    short = shorten(text, 140)
    assert len(short) <= 140 and short.endswith("…") and short[:-1].split() == ["word"] * len(short[:-1].split())


def _frames(comments: list[tuple[str, str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    members = pd.DataFrame([{"pk": 1, "birth_year": 1980, "tier": "silver", "points_balance": 0,
                             "joined_at": pd.Timestamp("2020-01-01")}])
    events = pd.DataFrame([{
        "member_pk": 1, "occurred_at": pd.Timestamp(when, tz="UTC"), "kind": "feedback", "amount": 0.0,
        "points": 0, "duration_seconds": 0, "score": np.nan, "offer_code": "",
    } for when, _ in comments])
    events["sentiment"] = comment_sentiments([text for _, text in comments])
    return members, events


COMMENTS = [
    ("2023-09-01 10:00", "The app is great."),  # 304 days before: older window
    ("2023-12-01 10:00", "The staff is excellent, thanks."),  # 213 days before
    ("2024-05-01 10:00", "Checkout is terrible now."),  # 61 days before: recent window
    ("2024-06-21 10:00", "The app has not changed much."),  # 10 days before
]


def test_comment_features_match_hand_computed_values() -> None:
    members, events = _frames(COMMENTS)
    s = events["sentiment"].to_numpy()
    row = build_features(members, events, AS_OF).loc[1]
    assert row["comments_365d"] == 4
    assert row["comment_sentiment_90d"] == pytest.approx((s[2] + s[3]) / 2)
    assert row["comment_sentiment_trend"] == pytest.approx((s[2] + s[3]) / 2 - (s[0] + s[1]) / 2)
    assert row["negative_comment_share_365d"] == pytest.approx(0.25)
    assert row["days_since_negative_comment"] == pytest.approx(61 - 10 / 24)
    # Without comments: neutral tone, no trend, none on record.
    empty = build_features(members, events.iloc[:0], AS_OF).loc[1]
    assert empty[sorted(TEXT_FEATURES)].to_dict() == {
        "comment_sentiment_90d": 0.0, "comment_sentiment_trend": 0.0, "comments_365d": 0.0,
        "days_since_negative_comment": NO_HISTORY_DAYS, "negative_comment_share_365d": 0.0,
    }


def test_comments_on_or_after_as_of_change_nothing() -> None:
    members, events = _frames(COMMENTS)
    before = build_features(members, events, AS_OF)
    late = [("2024-07-01 00:00", "Everything is terrible, awful, the worst."),
            ("2024-07-15 10:00", "I hate this, it keeps failing.")]
    _, extra = _frames(late)
    after = build_features(members, pd.concat([events, extra], ignore_index=True), AS_OF)
    pd.testing.assert_frame_equal(before, after)
    # ... while the same complaint a day earlier does change them (the test can fail).
    _, earlier = _frames([("2024-06-30 10:00", late[0][1])])
    changed = build_features(members, pd.concat([events, earlier], ignore_index=True), AS_OF)
    assert changed.loc[1, "comment_sentiment_90d"] < before.loc[1, "comment_sentiment_90d"]
    assert changed.loc[1, "days_since_negative_comment"] < 1


def test_text_drivers_read_in_plain_words() -> None:
    names = list(FEATURE_NAMES)
    values = np.zeros(len(names))
    shap = np.zeros(len(names))
    for name, value, effect in [
        ("comment_sentiment_90d", -0.4, -0.9), ("comment_sentiment_trend", -0.6, -0.5),
        ("days_since_negative_comment", 12, -0.3), ("comments_365d", 3, 0.1),
    ]:
        values[names.index(name)], shap[names.index(name)] = value, effect
    texts = [d["text"] for d in describe_drivers(names, values, shap, top=4)]
    assert texts == [
        "recent feedback has been negative", "more negative comments than usual",
        "last negative comment 12 days ago", "left 3 feedback comments in a year",
    ]
    values[:] = 0
    values[names.index("days_since_negative_comment")] = NO_HISTORY_DAYS
    texts = [d["text"] for d in describe_drivers(names, values, shap, top=3)]
    assert texts == ["no feedback comments recently", "comments as positive or negative as usual",
                     "no negative comment on record"]


def test_simulated_comments_carry_signal_beyond_the_numbers() -> None:
    from sklearn.metrics import roc_auc_score

    from loyalty.simulator import simulate_program
    from recommendations.quality import text_signal_auc

    # App sessions already reveal most of a member's engagement, so the comments' extra AUC
    # is small next to the noise of ~1,000 held-out members: one seed can show +0.001, another
    # +0.005 (seeds 0-2 at 5,000 members). Pooled over three programs the gain is clear and
    # every program gains. The "current form" features (engagement read from visit length)
    # overlap with what comments tell: the pooled gain went from +0.0044 to +0.0027 here
    # (20,000 members, seeds 0-2: +0.0041 to +0.0035, every seed still gaining). A comment
    # must not be the label in disguise either: with text the model stays below the
    # Bayes-optimal AUC.
    gains = []
    for seed in (0, 1, 2):
        program = simulate_program(members=5000, seed=seed)
        result = text_signal_auc(program, seed=seed)
        gains.append(result["auc_with_text"] - result["auc_without_text"])
        assert 0.3 < result["members_with_comments"] < 0.6
        truth = program.ground_truth
        assert result["auc_with_text"] < roc_auc_score(truth["engaged"], truth["p_engage"])
    assert min(gains) > 0, gains
    assert np.mean(gains) > 0.002, gains


def test_bench_reports_auc_with_and_without_text() -> None:
    # A small embedded bench run (SQLite, tasks in-process): the keys and their sanity.
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "manage.py", "bench", "--members", "1000", "--seed", "2", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["mode"] == "embedded"
    assert 0.5 < results["auc_without_text"] < 1 and 0.5 < results["auc_with_text"] < 1
    assert results["text_auc_members"] > 100


@pytest.mark.django_db
def test_loaders_read_stored_sentiment_of_feedback_only_and_no_text() -> None:
    from datetime import UTC, date, datetime

    from loyalty.models import Event, Member
    from recommendations.selectors import _frames_orm, _frames_sql

    member = Member.objects.create(member_id="TXT1", consent_profiling=True)
    rows = [
        ("feedback", datetime(2024, 6, 1, tzinfo=UTC), "The staff is excellent, thanks."),
        ("feedback", datetime(2024, 6, 2, tzinfo=UTC), ""),
        # A comment on another kind of event is never read (nor decrypted).
        ("purchase", datetime(2024, 6, 3, tzinfo=UTC), "Terrible, awful, the worst."),
        ("feedback", datetime(2024, 7, 2, tzinfo=UTC), "Terrible, awful, the worst."),  # after as_of
    ]
    for i, (kind, at, text) in enumerate(rows):
        Event.objects.create(member=member, kind=kind, occurred_at=at, comment=text, fingerprint=f"txt-{i}")
    expected = comment_sentiments(["The staff is excellent, thanks."])[0]
    # The score was stored with the event: loading decrypts nothing, so even comments no key
    # can read any more (a lost key, a botched rotation) do not stop scoring.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("UPDATE loyalty_event SET comment = 'not-a-fernet-token' WHERE fingerprint = 'txt-0'")
    for load in (_frames_sql, _frames_orm):
        _, events = load(as_of=date(2024, 7, 1), pk_from=None, pk_to=None, consenting_only=True, pks=None)
        events = events.sort_values("occurred_at")
        assert events["kind"].tolist() == ["feedback", "feedback", "purchase"], load.__name__
        assert events["sentiment"].iloc[0] == pytest.approx(expected) and expected > 0.5
        assert events["sentiment"].iloc[1:].isna().all()
        assert not {"comment", "comment_token", "feedback_comment"} & set(events.columns)


def test_text_features_are_what_if_sliders_but_never_recourse() -> None:
    from recommendations.features import FEATURE_BY_NAME
    from recommendations.whatif import lock_reason

    for name in TEXT_FEATURES:
        spec = FEATURE_BY_NAME[name]
        # A manager may ask "what if their feedback had been positive?" ...
        assert lock_reason(name) == "" and spec.min < spec.max
        # ... but no recourse hint tells anyone to change what a member said.
        assert not spec.actionable and not spec.protected


@pytest.mark.django_db
def test_every_writer_stores_the_feedback_sentiment_and_the_backfill_fills_old_rows(tmp_path) -> None:
    import importlib

    from django.apps import apps

    from loyalty.importers import import_csv
    from loyalty.models import Event, Member
    from loyalty.simulator import program_write_db, simulate_program

    program = simulate_program(members=60, seed=3)
    program_write_db(program)
    stored = pd.DataFrame(Event.objects.values("kind", "comment", "sentiment"))
    feedback = stored[(stored["kind"] == "feedback") & (stored["comment"] != "")]
    assert len(feedback) > 5
    assert np.allclose(feedback["sentiment"], comment_sentiments(feedback["comment"]))
    assert stored.loc[stored["kind"] != "feedback", "sentiment"].isna().all()

    member = Member.objects.order_by("pk").first()
    csv = tmp_path / "events.csv"
    csv.write_text(
        "member_id,occurred_at,kind,amount,points,quantity,duration_seconds,score,offer_code,comment\n"
        f"{member.member_id},2026-06-01T10:00:00Z,feedback,0,0,0,0,,,\"Awful queue, rude staff.\"\n"
        f"{member.member_id},2026-06-02T10:00:00Z,purchase,10,10,1,0,,,\"Lovely!\"\n"
    )
    result = import_csv(kind="events", source=csv)
    assert result.status == "succeeded", result
    imported = {e.kind: e.sentiment for e in Event.objects.filter(occurred_at__date__in=["2026-06-01", "2026-06-02"],
                                                                    member=member)}
    assert imported["feedback"] == pytest.approx(comment_sentiments(["Awful queue, rude staff."])[0])
    assert imported["feedback"] < -0.05 and imported["purchase"] is None

    # Rows stored before the column existed get their score from the migration's backfill.
    Event.objects.update(sentiment=None)
    backfill = importlib.import_module("loyalty.migrations.0005_event_sentiment").backfill
    backfill(apps, None)
    again = pd.DataFrame(Event.objects.values("kind", "comment", "sentiment"))
    again_feedback = again[(again["kind"] == "feedback") & (again["comment"] != "")]
    assert np.allclose(again_feedback["sentiment"], comment_sentiments(again_feedback["comment"]))
    assert again.loc[again["kind"] != "feedback", "sentiment"].isna().all()
