"""The CSV import service and its commands, against the real database."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from governance.models import AuditEvent
from loyalty import importers
from loyalty.definitions import EVENT_COLUMNS, MEMBER_COLUMNS
from loyalty.importers import import_csv
from loyalty.models import Event, ImportBatch, Member, Offer
from tests.loyalty.csvfiles import events_csv, members_csv, offers_csv, write_csv

pytestmark = pytest.mark.django_db


def make_members(tmp_path: Path, *ids: str) -> None:
    rows = [{"member_id": m, "email": f"{m.lower()}@example.com"} for m in ids]
    result = import_csv(kind="members", source=members_csv(tmp_path / "seed-members.csv", *rows))
    assert result.succeeded, result.errors


def only_error(result: importers.ImportResult) -> importers.RowError:
    assert not result.succeeded
    assert len(result.errors) == 1, [str(e) for e in result.errors]
    return result.errors[0]


# --------------------------------------------------------------------------- members


def test_members_import_sets_birth_year_and_consent_time_and_warns_on_unknown_columns(tmp_path: Path) -> None:
    path = members_csv(
        tmp_path / "members.csv",
        {"member_id": "M1", "favourite_colour": "red"},
        {"member_id": "M2", "consent_profiling": "no", "birth_date": "", "tier": "", "points_balance": ""},
        columns=[*MEMBER_COLUMNS, "favourite_colour"],
    )
    result = import_csv(kind="members", source=path)

    assert result.succeeded
    assert (result.rows_read, result.rows_written, result.created, result.updated) == (2, 2, 2, 0)
    assert result.warnings == ["ignoring unknown column: favourite_colour"]
    ann = Member.objects.get(member_id="M1")
    assert (ann.birth_date, ann.birth_year, ann.tier, ann.points_balance) == (date(1985, 6, 30), 1985, "gold", 1200)
    assert ann.consent_profiling and ann.consent_at is not None
    other = Member.objects.get(member_id="M2")
    assert (other.birth_year, other.tier, other.points_balance, other.consent_at) == (None, "bronze", 0, None)
    batch = ImportBatch.objects.get(pk=result.batch_id)
    assert (batch.kind, batch.status, batch.rows_written, batch.filename) == ("members", "succeeded", 2, "members.csv")
    assert len(batch.sha256) == 64
    audit = AuditEvent.objects.get(action="import.members")
    assert audit.object_type == "import_batch" and audit.object_id == str(batch.pk)
    assert audit.new["rows_written"] == 2
    assert "Ann" not in str(audit.new) and "example.com" not in str(audit.new)


def test_member_reimport_updates_in_place_and_tracks_when_consent_turns_true(tmp_path: Path) -> None:
    first = members_csv(tmp_path / "a.csv", {"member_id": "M1", "consent_profiling": "false"},
                        {"member_id": "M2", "consent_profiling": "true"})
    assert import_csv(kind="members", source=first).succeeded
    m2_consent_at = Member.objects.get(member_id="M2").consent_at
    pseudo = Member.objects.get(member_id="M1").pseudo_id

    second = members_csv(tmp_path / "b.csv", {"member_id": "M1", "consent_profiling": "yes", "tier": "platinum"},
                         {"member_id": "M2", "consent_profiling": "1"}, {"member_id": "M3"})
    result = import_csv(kind="members", source=second)

    assert (result.created, result.updated) == (1, 2)
    assert Member.objects.count() == 3
    m1 = Member.objects.get(member_id="M1")
    assert m1.tier == "platinum" and m1.consent_at is not None and m1.pseudo_id == pseudo
    # Consent that was already given keeps its original time.
    assert Member.objects.get(member_id="M2").consent_at == m2_consent_at

    third = members_csv(tmp_path / "c.csv", {"member_id": "M1", "consent_profiling": "false"})
    assert import_csv(kind="members", source=third).succeeded
    assert Member.objects.get(member_id="M1").consent_at is None


def test_member_file_without_a_column_keeps_the_stored_values(tmp_path: Path) -> None:
    make_members(tmp_path, "M1")
    path = write_csv(tmp_path / "tiers.csv", ["member_id", "tier"], [{"member_id": "M1", "tier": "silver"}])
    assert import_csv(kind="members", source=path).succeeded
    member = Member.objects.get(member_id="M1")
    assert member.tier == "silver" and member.email == "m1@example.com" and member.birth_year == 1985


@pytest.mark.parametrize(
    ("cells", "column", "message", "value"),
    [
        ({"member_id": ""}, "member_id", "missing required value", None),
        ({"tier": "diamond"}, "tier", "unknown tier", "diamond"),
        ({"consent_profiling": "maybe"}, "consent_profiling", "not a boolean", "maybe"),
        ({"points_balance": "-5"}, "points_balance", "negative points balance", "-5"),
        ({"points_balance": "ten"}, "points_balance", "not a number", "ten"),
        ({"joined_at": "2020-02-30"}, "joined_at", "bad date", "2020-02-30"),
        # Personal data is named by column, never echoed.
        ({"birth_date": "2999-01-01"}, "birth_date", "date in the future", None),
        ({"email": "not-an-email"}, "email", "not an email address", None),
        ({"region": "r" * 40}, "region", "longer than 32 characters", "r" * 40),
    ],
)
def test_bad_member_rows_name_row_column_and_reason(
    tmp_path: Path, cells: dict, column: str, message: str, value: str | None
) -> None:
    path = members_csv(tmp_path / "m.csv", {"member_id": "M1"}, {"member_id": "M2", **cells})
    error = only_error(import_csv(kind="members", source=path))
    assert (error.row, error.column, error.value) == (2, column, value)
    assert message in error.message
    assert Member.objects.count() == 0


def test_duplicate_member_ids_in_one_file_are_errors_even_across_chunks(tmp_path: Path) -> None:
    path = members_csv(tmp_path / "m.csv", *({"member_id": m} for m in ["A", "B", "C", "A", "D", "B"]))
    result = import_csv(kind="members", source=path, chunk_rows=2)
    assert [(e.row, e.column) for e in result.errors] == [(4, "member_id"), (6, "member_id")]
    assert "duplicate" in result.errors[0].message


def test_erased_members_are_not_re_imported(tmp_path: Path) -> None:
    make_members(tmp_path, "M1")
    Member.objects.filter(member_id="M1").update(name="", email="", erased_at=datetime(2024, 1, 1, tzinfo=UTC))
    error = only_error(import_csv(kind="members", source=members_csv(tmp_path / "m.csv", {"member_id": "M1"})))
    assert (error.row, error.column) == (1, "member_id") and "erased" in error.message
    assert Member.objects.get(member_id="M1").email == ""


# --------------------------------------------------------------------------- events


def test_events_import_and_reimport_writes_no_duplicates(tmp_path: Path) -> None:
    make_members(tmp_path, "M1", "M2")
    path = events_csv(
        tmp_path / "events.csv",
        {"occurred_at": "2024-03-01"},
        {"occurred_at": "2024-03-02T10:00:00+02:00", "kind": "feedback", "score": "4",
         "comment": 'great, "really"\nsecond line'},
        {"member_id": "M2", "occurred_at": "2024-03-03 09:30", "kind": "offer_sent", "amount": "", "points": "",
         "quantity": "", "offer_code": "BONUS500"},
    )
    first = import_csv(kind="events", source=path)
    assert first.succeeded and (first.rows_read, first.rows_written, first.duplicates) == (3, 3, 0)

    again = import_csv(kind="events", source=path)
    assert again.succeeded and (again.rows_written, again.duplicates) == (0, 3)
    assert Event.objects.count() == 3

    feedback = Event.objects.get(kind="feedback")
    assert feedback.occurred_at == datetime(2024, 3, 2, 8, 0, tzinfo=UTC)  # offset converted to UTC
    assert (feedback.score, feedback.comment) == (4, 'great, "really"\nsecond line')
    sent = Event.objects.get(kind="offer_sent")
    assert sent.occurred_at == datetime(2024, 3, 3, 9, 30, tzinfo=UTC)  # naive = UTC
    assert (sent.amount, sent.points, sent.score, sent.offer_code, sent.member.member_id) == (0.0, 0, None, "BONUS500", "M2")
    assert Event.objects.get(kind="purchase").occurred_at == datetime(2024, 3, 1, tzinfo=UTC)


def test_events_without_optional_columns_use_defaults(tmp_path: Path) -> None:
    make_members(tmp_path, "M1")
    path = events_csv(tmp_path / "e.csv", {}, columns=["member_id", "occurred_at", "kind"])
    result = import_csv(kind="events", source=path)
    assert result.succeeded and result.rows_written == 1
    event = Event.objects.get()
    assert (event.amount, event.points, event.quantity, event.score, event.comment) == (0.0, 0, 0, None, "")


def test_the_bulk_create_path_used_off_postgres_gives_the_same_result(tmp_path: Path, monkeypatch) -> None:
    make_members(tmp_path, "M1")
    monkeypatch.setattr(importers, "_use_copy", lambda: False)
    path = events_csv(tmp_path / "e.csv", {}, {"occurred_at": "2024-03-05", "score": "5", "kind": "feedback"}, {})
    first = import_csv(kind="events", source=path)
    # The third row repeats the first: stored once.
    assert (first.rows_written, first.duplicates) == (2, 1)
    again = import_csv(kind="events", source=path)
    assert (again.rows_written, again.duplicates) == (0, 3)
    assert Event.objects.count() == 2 and Event.objects.get(kind="feedback").score == 5


@pytest.mark.parametrize(
    ("cells", "column", "message"),
    [
        ({"member_id": ""}, "member_id", "missing required value"),
        ({"member_id": "NOBODY"}, "member_id", "unknown member"),
        ({"occurred_at": "31/12/2024"}, "occurred_at", "bad date"),
        ({"occurred_at": ""}, "occurred_at", "missing required value"),
        ({"amount": "-1.5"}, "amount", "negative amount"),
        ({"amount": "abc"}, "amount", "not a number"),
        ({"kind": "refund"}, "kind", "unknown event kind"),
        ({"score": "0"}, "score", "score outside 1-5"),
        ({"score": "6"}, "score", "score outside 1-5"),
        ({"quantity": "two"}, "quantity", "not a number"),
        ({"points": "1.5"}, "points", "not a whole number"),
        ({"duration_seconds": "-3"}, "duration_seconds", "negative duration"),
        ({"offer_code": "X" * 33}, "offer_code", "longer than 32 characters"),
    ],
)
def test_bad_event_rows_name_row_column_and_reason(tmp_path: Path, cells: dict, column: str, message: str) -> None:
    make_members(tmp_path, "M1")
    path = events_csv(tmp_path / "e.csv", {}, {"occurred_at": "2024-03-02"}, cells)
    error = only_error(import_csv(kind="events", source=path))
    assert (error.row, error.column) == (3, column)
    assert message in error.message
    assert str(error).startswith(f"row 3, column {column}: ")
    assert Event.objects.count() == 0


def test_row_numbers_count_data_rows_across_chunks(tmp_path: Path) -> None:
    make_members(tmp_path, "M1")
    rows = [{"occurred_at": f"2024-03-{day:02d}"} for day in range(1, 8)]
    rows[4]["kind"] = "nonsense"
    result = import_csv(kind="events", source=events_csv(tmp_path / "e.csv", *rows), chunk_rows=2)
    assert [(e.row, e.column) for e in result.errors] == [(5, "kind")]
    assert result.rows_read == 7


def test_a_bad_row_in_the_last_chunk_rolls_back_every_chunk_and_keeps_stored_data(tmp_path: Path) -> None:
    make_members(tmp_path, "M1")
    stored = events_csv(tmp_path / "old.csv", {"occurred_at": "2023-01-01"})
    assert import_csv(kind="events", source=stored).succeeded
    before_members = list(Member.objects.order_by("pk").values())
    rows = [{"occurred_at": f"2024-03-{day:02d}"} for day in range(1, 6)] + [{"amount": "-1"}]

    result = import_csv(kind="events", source=events_csv(tmp_path / "e.csv", *rows), chunk_rows=2)

    assert result.status == "failed" and (result.rows_written, result.rows_rejected, result.error_count) == (0, 1, 1)
    assert list(Event.objects.values_list("occurred_at", flat=True)) == [datetime(2023, 1, 1, tzinfo=UTC)]
    assert list(Member.objects.order_by("pk").values()) == before_members
    batch = ImportBatch.objects.get(pk=result.batch_id)
    assert batch.status == "failed" and batch.rows_written == 0 and batch.finished_at is not None
    assert batch.errors[0]["row"] == 6 and batch.errors[0]["column"] == "amount"
    assert AuditEvent.objects.filter(action="import.events", object_id=str(batch.pk)).get().new["status"] == "failed"


def test_a_bad_row_rolls_back_member_updates_too(tmp_path: Path) -> None:
    make_members(tmp_path, "M1", "M2")
    before = list(Member.objects.order_by("pk").values())
    path = members_csv(tmp_path / "m.csv", {"member_id": "M1", "tier": "platinum"}, {"member_id": "M9"},
                       {"member_id": "M2", "tier": "wood"})
    assert not import_csv(kind="members", source=path).succeeded
    assert list(Member.objects.order_by("pk").values()) == before


def test_skip_invalid_writes_good_rows_and_a_rejects_file_next_to_the_input(tmp_path: Path) -> None:
    make_members(tmp_path, "M1")
    path = events_csv(tmp_path / "events.csv", {}, {"kind": "refund"}, {"occurred_at": "2024-03-09"},
                      {"member_id": "GHOST", "score": "9"})
    result = import_csv(kind="events", source=path, skip_invalid=True)

    assert result.succeeded
    assert (result.rows_read, result.rows_written, result.rows_rejected, result.error_count) == (4, 2, 2, 3)
    assert Event.objects.count() == 2
    rejects = tmp_path / "events.rejects.csv"
    assert result.rejects_path == str(rejects)
    with rejects.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [*EVENT_COLUMNS, "error"]
    assert [r["kind"] for r in rows] == ["refund", "purchase"]
    assert rows[0]["error"].startswith("row 2, column kind: unknown event kind")
    assert "column member_id: unknown member" in rows[1]["error"] and "column score" in rows[1]["error"]
    assert ImportBatch.objects.get(pk=result.batch_id).rows_rejected == 2


def test_skip_invalid_honours_an_explicit_rejects_path_across_chunks(tmp_path: Path) -> None:
    make_members(tmp_path, "M1")
    rows = [{"occurred_at": f"2024-03-{day:02d}", "amount": "-1" if day % 2 else "1"} for day in range(1, 6)]
    target = tmp_path / "out" / "bad.csv"
    result = import_csv(kind="events", source=events_csv(tmp_path / "e.csv", *rows), skip_invalid=True,
                        rejects_path=target, chunk_rows=2)
    assert (result.rows_written, result.rows_rejected) == (2, 3)
    with target.open(newline="", encoding="utf-8") as handle:
        assert [r["occurred_at"] for r in csv.DictReader(handle)] == ["2024-03-01", "2024-03-03", "2024-03-05"]


def test_missing_required_columns_give_one_error_naming_them(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "e.csv", ["member_id", "amount"], [{"member_id": "M1", "amount": "1"}])
    error = only_error(import_csv(kind="events", source=path))
    assert error.row is None and error.column == "occurred_at, kind"
    assert "missing required columns: occurred_at, kind" in error.message
    assert ImportBatch.objects.get().status == "failed"


def test_a_file_that_is_not_utf8_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("member_id,name\nM1,Jos\u00e9 M\u00fcller\n".encode("latin-1"))
    error = only_error(import_csv(kind="members", source=path))
    assert error.row is None and "not UTF-8 encoded" in error.message
    assert Member.objects.count() == 0


def test_an_empty_file_is_refused_and_a_bom_is_accepted(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert "the file is empty" in only_error(import_csv(kind="offers", source=empty)).message
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfcode,name,kind\r\nB1,Bonus,bonus_points\r\n")
    assert import_csv(kind="offers", source=bom).succeeded
    assert Offer.objects.get().code == "B1"


def test_a_row_with_too_many_fields_is_a_file_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text("code,name,kind\nB1,Bonus,bonus_points\nB2,Bonus,bonus_points,extra\n", encoding="utf-8")
    error = only_error(import_csv(kind="offers", source=path))
    assert error.row is None and "malformed CSV" in error.message and "line 3" in error.message
    assert Offer.objects.count() == 0


# --------------------------------------------------------------------------- offers


def test_offers_upsert_by_code(tmp_path: Path) -> None:
    first = offers_csv(tmp_path / "o.csv", {}, {"code": "CALL", "kind": "retention_call", "cost": "12.5",
                                                 "high_stakes": "yes", "active": ""})
    assert import_csv(kind="offers", source=first).created == 2
    call = Offer.objects.get(code="CALL")
    assert (call.cost, call.high_stakes, call.active) == (Decimal("12.50"), True, True)
    second = offers_csv(tmp_path / "o2.csv", {"code": "CALL", "kind": "retention_call", "cost": "15", "active": "no"})
    result = import_csv(kind="offers", source=second)
    assert (result.created, result.updated) == (0, 1)
    call.refresh_from_db()
    assert (call.cost, call.active, Offer.objects.count()) == (Decimal("15.00"), False, 2)


@pytest.mark.parametrize(
    ("cells", "column", "message"),
    [
        ({"cost": "-1"}, "cost", "negative cost"),
        ({"cost": "1.234"}, "cost", "more than 2 decimal places"),
        ({"value": "lots"}, "value", "not a number"),
        ({"kind": "cashback"}, "kind", "unknown offer kind"),
        ({"name": ""}, "name", "missing required value"),
        ({"active": "sometimes"}, "active", "not a boolean"),
        ({"code": "BONUS500"}, "code", "duplicate"),
    ],
)
def test_bad_offer_rows(tmp_path: Path, cells: dict, column: str, message: str) -> None:
    path = offers_csv(tmp_path / "o.csv", {}, {"code": "OTHER", **cells})
    error = only_error(import_csv(kind="offers", source=path))
    assert (error.row, error.column) == (2, column) and message in error.message
    assert Offer.objects.count() == 0


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown import kind"):
        import_csv(kind="coupons", source=Path("whatever.csv"))


# --------------------------------------------------------------------------- commands


def test_command_imports_and_reports_counts(tmp_path: Path, capsys) -> None:
    make_members(tmp_path, "M1")
    call_command("import_events", str(events_csv(tmp_path / "e.csv", {}, {"occurred_at": "2024-04-01"})), "--quiet")
    out = capsys.readouterr().out
    assert "2 rows read, 2 written" in out and "0 already stored" in out
    assert Event.objects.count() == 2


def test_command_fails_without_writing_and_prints_errors_and_their_count(tmp_path: Path) -> None:
    make_members(tmp_path, "M1")
    rows = [{"amount": "-1", "occurred_at": f"2024-04-{day:02d}"} for day in range(1, 6)]
    with pytest.raises(CommandError) as failure:
        call_command("import_events", str(events_csv(tmp_path / "e.csv", {}, *rows)), "--max-errors", "2")
    text = str(failure.value)
    assert "5 error(s) in 5 of 6 rows; nothing was written" in text
    assert "row 2, column amount: negative amount (got '-1')" in text and "... and 3 more" in text
    assert Event.objects.count() == 0


def test_command_skip_invalid_writes_rejects_and_warns_on_unknown_columns(tmp_path: Path, capsys) -> None:
    path = members_csv(tmp_path / "m.csv", {"member_id": "M1"}, {"member_id": "M2", "tier": "x"},
                       columns=[*MEMBER_COLUMNS, "shoe_size"])
    call_command("import_members", str(path), "--skip-invalid", "--quiet")
    captured = capsys.readouterr()
    assert "2 rows read, 1 written" in captured.out and "1 rejected" in captured.out
    assert "m.rejects.csv" in captured.out
    assert "ignoring unknown column: shoe_size" in captured.err
    assert (tmp_path / "m.rejects.csv").exists() and Member.objects.count() == 1


def test_command_reports_file_errors_and_refuses_a_missing_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "o.csv", ["code"], [{"code": "X"}])
    with pytest.raises(CommandError, match="missing required columns: name, kind"):
        call_command("import_offers", str(path))
    with pytest.raises(CommandError, match="no such file"):
        call_command("import_offers", str(tmp_path / "nope.csv"))


@pytest.mark.django_db(transaction=True)
def test_failed_import_commits_its_batch_record_but_no_data(tmp_path: Path) -> None:
    """With real commits (no test transaction around it), as the commands run in production."""
    path = members_csv(tmp_path / "m.csv", {"member_id": "M1"}, {"member_id": "M2", "points_balance": "-1"})
    result = import_csv(kind="members", source=path)
    assert Member.objects.count() == 0
    batch = ImportBatch.objects.get(pk=result.batch_id)
    assert (batch.status, batch.rows_read, batch.rows_rejected) == ("failed", 2, 1)
    assert AuditEvent.objects.filter(action="import.members").count() == 1


# Review findings: each of these once crashed or let bad data in.


def test_offer_code_outside_safe_alphabet_is_a_row_error(tmp_path) -> None:
    path = tmp_path / "offers.csv"
    path.write_text("code,name,kind,cost,value\nA/B,Split test,discount,1,2\n")
    result = import_csv(kind="offers", source=path)
    assert not result.succeeded
    assert "row 1, column code" in str(result.errors[0])
    assert not Offer.objects.exists()


def test_header_repeating_a_column_in_another_case_is_a_file_error(tmp_path) -> None:
    path = tmp_path / "members.csv"
    path.write_text("member_id,name,Name\nM1,a,b\n")
    result = import_csv(kind="members", source=path)
    assert not result.succeeded
    assert "given more than once (names ignore case): name" in str(result.errors[0])
    assert not Member.objects.exists()


def test_offer_events_need_an_offer_code(tmp_path) -> None:
    Member.objects.create(member_id="M1")
    path = tmp_path / "events.csv"
    path.write_text("member_id,occurred_at,kind,offer_code\nM1,2026-01-02,offer_sent,\n")
    result = import_csv(kind="events", source=path)
    assert "row 1, column offer_code: required" in str(result.errors[0])


def test_joined_in_the_future_is_refused(tmp_path) -> None:
    path = tmp_path / "members.csv"
    path.write_text("member_id,joined_at\nM1,2999-01-01\n")
    result = import_csv(kind="members", source=path)
    assert "row 1, column joined_at: date in the future" in str(result.errors[0])
