"""Retention: events past LOYALTY_EVENT_RETENTION_DAYS are purged by the beat task, in batches, audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from governance.models import AuditEvent
from governance.privacy import events_purge_expired
from loyalty.celery import app
from loyalty.models import Event, Member
from loyalty.tasks import purge_expired_events

pytestmark = pytest.mark.django_db


def _events(member: Member, days_ago: list[int]) -> None:
    now = timezone.now()
    Event.objects.bulk_create([
        Event(member=member, occurred_at=now - timedelta(days=d), kind="feedback", comment=f"old note {i}",
              fingerprint=f"{i:040d}")
        for i, d in enumerate(days_ago)
    ])


def test_beat_schedules_the_purge_task() -> None:
    entry = django_settings.CELERY_BEAT_SCHEDULE["purge-expired-events"]
    assert entry["task"] == purge_expired_events.name == "loyalty.purge_expired_events"
    app.loader.import_default_modules()
    assert entry["task"] in app.tasks


def test_task_purges_expired_events_in_audited_batches(settings, eager_celery) -> None:
    settings.LOYALTY_EVENT_RETENTION_DAYS = 365
    settings.LOYALTY_RETENTION_BATCH_SIZE = 2
    member = Member.objects.create(member_id="RET1")
    _events(member, [400, 500, 366, 800, 1000, 364, 10])  # five expired, two kept

    outcome = purge_expired_events.delay().get()

    assert outcome["deleted"] == 5 and outcome["batches"] == 3
    kept = Event.objects.all()
    assert kept.count() == 2 and all(timezone.now() - e.occurred_at < timedelta(days=365) for e in kept)
    batches = AuditEvent.objects.filter(action="privacy.retention.batch").order_by("id")
    assert [b.new["deleted"] for b in batches] == [2, 2, 1]
    summary = AuditEvent.objects.get(action="privacy.retention.purge")
    assert summary.new["deleted"] == 5 and summary.new["retention_days"] == 365 and summary.actor_label == "system"


def test_nothing_due_is_still_recorded_and_a_rerun_is_harmless(settings) -> None:
    settings.LOYALTY_EVENT_RETENTION_DAYS = 30
    member = Member.objects.create(member_id="RET2")
    _events(member, [1, 2])
    first = events_purge_expired()
    second = events_purge_expired()
    assert (first.deleted, second.deleted) == (0, 0)
    assert Event.objects.count() == 2
    assert AuditEvent.objects.filter(action="privacy.retention.purge").count() == 2
    assert not AuditEvent.objects.filter(action="privacy.retention.batch").exists()


def test_explicit_cutoff_arguments() -> None:
    member = Member.objects.create(member_id="RET3")
    _events(member, [40, 20])
    result = events_purge_expired(retention_days=30, batch_size=10)
    assert result.deleted == 1 and result.batches == 1
    assert result.cutoff < timezone.now() - timedelta(days=29)


def test_purged_comments_leave_the_text_features_and_the_desk(settings) -> None:
    from recommendations.features import build_features
    from recommendations.queue import member_recent_comments
    from recommendations.selectors import member_frames_load

    settings.LOYALTY_EVENT_RETENTION_DAYS = 365
    member = Member.objects.create(member_id="RET3", consent_profiling=True)
    now = timezone.now()
    for i, (days, text) in enumerate([(400, "The app is terrible and slow."), (10, "The staff is great.")]):
        Event.objects.create(member=member, occurred_at=now - timedelta(days=days), kind="feedback",
                             comment=text, fingerprint=f"ret3-{i}")
    tomorrow = (now + timedelta(days=1)).date()

    def negative_days() -> float:
        members, events = member_frames_load(as_of=tomorrow)
        return build_features(members, events, now).loc[member.pk, "days_since_negative_comment"]

    assert negative_days() < 401  # the expired complaint is still read
    assert events_purge_expired().deleted == 1
    assert negative_days() == 730  # "none on record"
    shown = member_recent_comments(member_id=member.pk, before=now)
    assert [c["text"] for c in shown] == ["The staff is great."]
    assert not Event.objects.filter(member=member, occurred_at__lt=now - timedelta(days=365)).exists()
