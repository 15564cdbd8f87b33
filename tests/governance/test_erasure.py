"""Right to be forgotten: page, API and command share one service; nothing readable remains."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from governance.models import AuditEvent
from governance.privacy import member_erase
from loyalty.importers import import_csv
from loyalty.models import Event, Member
from loyalty.roles import ADMIN, MANAGER
from recommendations.decisions import decision_record
from recommendations.models import Decision, Recommendation, RecommendationStatus
from tests.desk.factories import make_model, make_offer, make_rec, make_run
from tests.loyalty.csvfiles import events_csv, members_csv

EXTERNAL_ID = "EXT-4471-ZQ"
NAME = "Quintessa Brightwater"
EMAIL = "quintessa.b@example.org"
COMMENT = "Quintessa complained about parking"


@pytest.fixture
def subject(db, role_users, tmp_path: Path) -> dict:
    # An events file that arrives before the member: its error report names the external id.
    early = import_csv(kind="events", source=events_csv(tmp_path / "early.csv", {"member_id": EXTERNAL_ID}),
                       skip_invalid=True)
    assert early.rows_rejected == 1
    result = import_csv(kind="members", source=members_csv(
        tmp_path / "m.csv", {"member_id": EXTERNAL_ID, "name": NAME, "email": EMAIL, "birth_date": "1979-04-02"},
        {"member_id": "KEEP-1", "name": "Other Person", "email": "other@example.org"},
    ))
    assert result.succeeded, result.errors
    events = import_csv(kind="events", source=events_csv(
        tmp_path / "e.csv",
        {"member_id": EXTERNAL_ID, "kind": "feedback", "score": "1", "comment": COMMENT},
        {"member_id": EXTERNAL_ID, "occurred_at": "2024-03-05T10:00:00"},
        {"member_id": "KEEP-1", "occurred_at": "2024-03-06T10:00:00"},
    ))
    assert events.succeeded, events.errors
    member = Member.objects.get(member_id=EXTERNAL_ID)
    model = make_model(status="champion")
    offer = make_offer("bonus_500")
    decided = make_rec(run=make_run(model), member=member, offer=offer)
    decision = decision_record(recommendation_id=decided.pk, actor=role_users[MANAGER], action="approve")
    open_rec = make_rec(run=make_run(model), member=member, offer=offer)
    return {"member": member, "decision": decision, "decided": decided, "open": open_rec, "tmp": tmp_path}


def _text_columns() -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND data_type IN ('text', 'character varying', 'jsonb', 'json')"
        )
        return cursor.fetchall()


def _readable_anywhere(needle: str) -> list[str]:
    found = []
    with connection.cursor() as cursor:
        for table, column in _text_columns():
            cursor.execute(
                f'SELECT count(*) FROM "{table}" WHERE "{column}"::text ILIKE %s', [f"%{needle}%"]
            )
            if cursor.fetchone()[0]:
                found.append(f"{table}.{column}")
    return found


def test_erasure_via_api_leaves_nothing_readable_and_keeps_decisions(subject, role_users) -> None:
    member = subject["member"]
    assert _readable_anywhere(EXTERNAL_ID)  # the probe works: before erasure the id is stored
    client = Client()
    client.force_login(role_users[ADMIN])
    response = client.post(reverse("api-privacy-erasure"), {"member": EXTERNAL_ID}, content_type="application/json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["member_pseudo_id"] == str(member.pseudo_id) and not body["already_erased"]
    assert body["events_deleted"] == 2 and body["recommendations_withdrawn"] == 1
    assert body["import_reports_scrubbed"] == 1

    for needle in (EXTERNAL_ID, NAME, EMAIL, COMMENT, "Quintessa", "1979-04-02"):
        assert not _readable_anywhere(needle), needle
    erased = Member.objects.get(pk=member.pk)
    assert erased.erased_at is not None and erased.member_id.startswith("erased-")
    assert (erased.name, erased.email, erased.birth_date, erased.consent_profiling) == ("", "", None, False)
    assert erased.pseudo_id == member.pseudo_id
    assert not Event.objects.filter(member=erased).exists()
    assert Event.objects.filter(member__member_id="KEEP-1").count() == 1  # others untouched
    # Decisions and recommendations stay, under the pseudonymous member row.
    assert Decision.objects.filter(pk=subject["decision"].pk, recommendation__member=erased).exists()
    assert Recommendation.objects.get(pk=subject["decided"].pk).status == RecommendationStatus.APPROVED
    assert Recommendation.objects.get(pk=subject["open"].pk).status == RecommendationStatus.EXPIRED
    audit = AuditEvent.objects.get(action="privacy.erasure")
    assert audit.member_pseudo_id == member.pseudo_id and audit.actor == role_users[ADMIN]
    assert audit.new == {"events_deleted": 2, "recommendations_withdrawn": 1, "import_reports_scrubbed": 1}

    # Asking again answers "already erased" (found through the keyed hash) and changes nothing.
    again = client.post(reverse("api-privacy-erasure"), {"member": EXTERNAL_ID}, content_type="application/json")
    assert again.status_code == 200 and again.json()["already_erased"] is True
    assert AuditEvent.objects.filter(action="privacy.erasure").count() == 1


def test_erased_member_is_not_reimported(subject, tmp_path: Path) -> None:
    member_erase(member_pk=subject["member"].pk, actor=None)
    result = import_csv(kind="members", source=members_csv(
        tmp_path / "again.csv", {"member_id": EXTERNAL_ID, "name": NAME, "email": EMAIL}))
    assert not result.succeeded
    assert "erased" in result.errors[0].message
    assert not Member.objects.filter(member_id=EXTERNAL_ID).exists()
    events = import_csv(kind="events", source=events_csv(tmp_path / "ev.csv", {"member_id": EXTERNAL_ID}))
    assert not events.succeeded and not Event.objects.filter(member_id=subject["member"].pk).exists()


def test_erasure_page_needs_confirmation_and_erases(subject, role_users) -> None:
    client = Client()
    client.force_login(role_users[ADMIN])
    page = client.get(reverse("privacy-erasure"))
    assert page.status_code == 200 and b"Erase member" in page.content
    unconfirmed = client.post(reverse("privacy-erasure"), {"member": EXTERNAL_ID})
    assert unconfirmed.status_code == 400
    assert Member.objects.get(pk=subject["member"].pk).erased_at is None
    unknown = client.post(reverse("privacy-erasure"), {"member": "NOPE", "confirm": "on"})
    assert unknown.status_code == 400 and b"no member with that id" in unknown.content
    done = client.post(reverse("privacy-erasure"), {"member": str(subject["member"].pseudo_id), "confirm": "on"})
    assert done.status_code == 302
    assert Member.objects.get(pk=subject["member"].pk).erased_at is not None
    listing = client.get(reverse("privacy-erasure"))
    assert str(subject["member"].pseudo_id).encode() in listing.content


def test_erase_member_command(subject, capsys) -> None:
    call_command("erase_member", EXTERNAL_ID)
    out = capsys.readouterr().out
    assert f"erased member {subject['member'].pseudo_id}: 2 events deleted" in out
    assert AuditEvent.objects.get(action="privacy.erasure").actor_label == "system"
    call_command("erase_member", EXTERNAL_ID)
    assert "already erased" in capsys.readouterr().out
    with pytest.raises(Exception, match="no member with that id"):
        call_command("erase_member", "UNKNOWN-ID")


def test_erasure_keeps_birth_year_as_coarse_copy(subject) -> None:
    member_erase(member_pk=subject["member"].pk, actor=None)
    erased = Member.objects.get(pk=subject["member"].pk)
    assert erased.birth_date is None and erased.birth_year == date(1979, 4, 2).year


def test_erasure_removes_comments_from_text_features_and_the_desk(subject) -> None:
    from recommendations.features import build_features
    from recommendations.queue import member_recent_comments
    from recommendations.selectors import as_of_instant, member_frames_load

    member, as_of = subject["member"], date(2024, 4, 1)
    members, events = member_frames_load(as_of=as_of, consenting_only=False)
    before = build_features(members, events, as_of_instant(as_of)).loc[member.pk]
    assert before["comments_365d"] == 1 and before["negative_comment_share_365d"] == 1  # the probe works
    assert [c["sentiment"] for c in member_recent_comments(member_id=member.pk, before=as_of_instant(as_of))] == [
        "negative"
    ]

    member_erase(member_pk=member.pk, actor=None)

    members, events = member_frames_load(as_of=as_of, consenting_only=False)
    assert member.pk not in set(members["pk"]) and member.pk not in set(events["member_pk"])
    assert member_recent_comments(member_id=member.pk, before=as_of_instant(as_of)) == []
    assert not Event.objects.filter(kind="feedback").exclude(comment="").exists()
