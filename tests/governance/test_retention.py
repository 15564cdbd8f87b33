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
