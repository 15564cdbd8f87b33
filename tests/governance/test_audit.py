"""The audit trail: append-only in the database, filterable page, streamed CSV export (audited)."""

from __future__ import annotations

import csv
import io
import json
import uuid

import pytest
from django.db import DatabaseError, connection, transaction
from django.http import StreamingHttpResponse
from django.test import Client
from django.urls import reverse

from governance.audit import audit_log
from governance.models import AuditEvent
from loyalty.roles import ADMIN, AUDITOR, MANAGER

pytestmark = pytest.mark.django_db
MEMBER_A, MEMBER_B = uuid.uuid4(), uuid.uuid4()


def _insert(at: str, actor: str, action: str, member: uuid.UUID | None = None, object_id: str = "1") -> None:
    # INSERT is what the trail allows; the timestamp is explicit so date ranges can be tested.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO governance_auditevent (at, actor_label, action, object_type, object_id, member_pseudo_id, "
            "new) VALUES (%s, %s, %s, 'recommendation', %s, %s, %s)",
            [at, actor, action, object_id, member, json.dumps({"n": 1})],
        )


@pytest.fixture
def trail(role_users) -> None:
    _insert("2026-01-05T10:00:00Z", "manager", "decision.approve", MEMBER_A, "11")
    _insert("2026-01-20T10:00:00Z", "senior_manager", "decision.override", MEMBER_B, "12")
    _insert("2026-02-03T10:00:00Z", "admin", "policy.update", None, "3")
    _insert("2026-02-10T10:00:00Z", "manager", "member.view", MEMBER_B, "12")


@pytest.mark.parametrize("sql", ["UPDATE governance_auditevent SET action = 'x'", "DELETE FROM governance_auditevent"])
def test_database_refuses_update_and_delete(role_users, sql: str) -> None:
    audit_log(actor=role_users[MANAGER], action="decision.approve", object_type="recommendation", object_id=1)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    assert AuditEvent.objects.get().action == "decision.approve"


def test_orm_changes_are_refused_too(role_users) -> None:
    event = audit_log(actor=None, action="import.members", object_type="import_batch", object_id=1)
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(action="tampered")
    with pytest.raises(DatabaseError), transaction.atomic():
        event.delete()
    assert AuditEvent.objects.filter(action="import.members").count() == 1


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _labels(response) -> list[str]:
    return [e.action for e in response.context["page"].object_list]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["member.view", "policy.update", "decision.override", "decision.approve"]),
        ({"actor": "manager"}, ["member.view", "decision.approve"]),
        ({"action": "decision.override"}, ["decision.override"]),
        ({"action": "decision."}, ["decision.override", "decision.approve"]),
        ({"object_type": "recommendation", "object_id": "12"}, ["member.view", "decision.override"]),
        ({"member": str(MEMBER_B)}, ["member.view", "decision.override"]),
        ({"date_from": "2026-01-20", "date_to": "2026-02-03"}, ["policy.update", "decision.override"]),
        ({"date_to": "2026-01-05"}, ["decision.approve"]),
    ],
)
def test_audit_page_filters(trail, role_users, params: dict, expected: list[str]) -> None:
    response = _client(role_users[AUDITOR]).get(reverse("audit"), params)
    assert response.status_code == 200
    assert [a for a in _labels(response) if not a.startswith("auth.")] == expected


def test_audit_page_rejects_bad_filters(role_users) -> None:
    client = _client(role_users[ADMIN])
    assert client.get(reverse("audit"), {"member": "not-a-uuid"}).status_code == 400
    assert client.get(reverse("audit"), {"date_from": "31/01/2026"}).status_code == 400


def test_csv_export_is_streamed_filtered_and_audited(trail, role_users) -> None:
    response = _client(role_users[AUDITOR]).get(reverse("audit-export"), {"member": str(MEMBER_B)})
    assert response.status_code == 200 and isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [r["action"] for r in rows] == ["member.view", "decision.override"]
    assert {r["member_pseudo_id"] for r in rows} == {str(MEMBER_B)}
    assert json.loads(rows[0]["new"]) == {"n": 1}
    export = AuditEvent.objects.get(action="audit.export")
    assert export.actor == role_users[AUDITOR]
    assert export.new == {"filters": {"member": str(MEMBER_B)}, "rows": 2}


def test_export_and_page_are_closed_to_managers(trail, role_users) -> None:
    client = _client(role_users[MANAGER])
    assert client.get(reverse("audit")).status_code == 403
    assert client.get(reverse("audit-export")).status_code == 403
    assert not AuditEvent.objects.filter(action="audit.export").exists()
