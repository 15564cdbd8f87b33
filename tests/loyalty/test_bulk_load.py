"""program_write_db on Postgres drops secondary indexes and keys for the load: they come back."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from django.db import IntegrityError, connection, transaction

from loyalty.models import Event, Member
from loyalty.simulator import program_write_db, simulate_program
from tests.conftest import require_services


def _schema() -> set[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid IN ('loyalty_member'::regclass, 'loyalty_event'::regclass)"
        )
        constraints = {("constraint", *row) for row in cursor.fetchall()}
        cursor.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE tablename IN ('loyalty_member', 'loyalty_event')"
        )
        return constraints | {("index", *row) for row in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)
def test_load_restores_every_index_and_key_and_they_hold() -> None:
    require_services()
    before = _schema()
    assert any(kind == "constraint" and "FOREIGN KEY" in definition for kind, _, _, definition in before)
    program = simulate_program(members=300, seed=2, as_of=date(2026, 3, 31))
    program_write_db(program)
    assert _schema() == before
    program_write_db(simulate_program(members=200, seed=5, as_of=date(2026, 3, 31)), replace=True)
    assert _schema() == before and Member.objects.count() == 200

    event = Event.objects.first()
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.create(
            member_id=event.member_id, occurred_at=datetime(2026, 1, 1, tzinfo=UTC), kind="session",
            fingerprint=event.fingerprint,
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.create(
            member_id=10**9, occurred_at=datetime(2026, 1, 1, tzinfo=UTC), kind="session", fingerprint="x" * 40,
        )
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'loyalty_event'")
        assert cursor.fetchone()[0] > 0  # analyzed by the load
