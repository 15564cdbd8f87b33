"""PII at rest: raw SQL sees Fernet tokens, the ORM sees plaintext, on every write path."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from governance.models import AuditEvent
from governance.privacy import pii_rotate_keys
from loyalty import importers, pii
from loyalty.importers import import_csv
from loyalty.models import Event, Member
from loyalty.simulator import program_write_db, simulate_program
from tests.loyalty.csvfiles import events_csv, members_csv

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
OLD_KEY, NEW_KEY = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def raw_member(pk: int) -> tuple:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, email, birth_date FROM loyalty_member WHERE id = %s", [pk])
        return cursor.fetchone()


def raw_comments() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT comment FROM loyalty_event WHERE comment <> '' ORDER BY id")
        return [row[0] for row in cursor.fetchall()]


def opens_with(key: str, token: str) -> str:
    return Fernet(key.encode()).decrypt(token.encode()).decode()


def test_orm_writes_tokens_and_reads_plaintext() -> None:
    member = Member.objects.create(member_id="X1", name="Zora Quill", email="zora@example.com",
                                   birth_date=date(1971, 2, 3), birth_year=1971)
    Event.objects.create(member=member, occurred_at="2026-01-01T00:00:00Z", kind="feedback",
                         comment="Zora hated the queue", fingerprint="f" * 40)
    name, email, birth = raw_member(member.pk)
    for token in (name, email, birth):
        assert token.startswith(pii.TOKEN_PREFIX)
    assert "Zora" not in name and "zora@" not in email and "1971" not in birth
    [comment] = raw_comments()
    assert comment.startswith(pii.TOKEN_PREFIX) and "Zora" not in comment
    fresh = Member.objects.get(pk=member.pk)
    assert (fresh.name, fresh.email, fresh.birth_date, fresh.birth_year) == (
        "Zora Quill", "zora@example.com", date(1971, 2, 3), 1971
    )
    assert Event.objects.get().comment == "Zora hated the queue"
    # Same plaintext, different tokens: equal values cannot be spotted in the table.
    other = Member.objects.create(member_id="X2", name="Zora Quill")
    assert raw_member(other.pk)[0] != name


def test_empty_values_stay_empty_and_wrong_key_fails_loudly(settings) -> None:
    member = Member.objects.create(member_id="X3", name="", email="")
    assert raw_member(member.pk) == ("", "", None)
    assert Member.objects.get(pk=member.pk).birth_date is None
    token = pii.encrypt("secret")
    settings.LOYALTY_PII_KEYS = [NEW_KEY]
    with pytest.raises(pii.PIIDecryptionError):
        pii.decrypt(token)


def test_importer_member_and_event_copy_paths_store_tokens(tmp_path: Path) -> None:
    assert importers._use_copy(), "the events import must take the Postgres COPY path here"
    members = import_csv(kind="members", source=members_csv(tmp_path / "m.csv", {"member_id": "M1"}))
    assert members.succeeded, members.errors
    events = import_csv(kind="events", source=events_csv(
        tmp_path / "e.csv", {"member_id": "M1", "kind": "feedback", "score": "2", "comment": "Ann says hi"},
        {"member_id": "M1", "occurred_at": "2024-03-02T10:00:00"},
    ))
    assert events.succeeded, events.errors
    member = Member.objects.get(member_id="M1")
    name, email, birth = raw_member(member.pk)
    assert opens_with(_current_key(), name) == "Ann Example"
    assert pii.decrypt(email) == "ann@example.com" and pii.decrypt(birth) == "1985-06-30"
    assert "Ann" not in name + email + birth
    [comment] = raw_comments()
    assert "Ann" not in comment and pii.decrypt(comment) == "Ann says hi"
    assert Event.objects.get(comment__gt="").comment == "Ann says hi"


def test_importer_event_orm_path_stores_tokens(tmp_path: Path, monkeypatch) -> None:
    import_csv(kind="members", source=members_csv(tmp_path / "m.csv", {"member_id": "M1"}))
    monkeypatch.setattr(importers, "_use_copy", lambda: False)  # the path other databases take
    result = import_csv(kind="events", source=events_csv(
        tmp_path / "e.csv", {"member_id": "M1", "kind": "feedback", "score": "4", "comment": "Ann again"}))
    assert result.succeeded, result.errors
    [comment] = raw_comments()
    assert "Ann" not in comment and pii.decrypt(comment) == "Ann again"


def test_simulator_copy_path_stores_tokens() -> None:
    program = simulate_program(members=40, seed=3)
    program_write_db(program, replace=True)
    first = program.members.iloc[0]
    member = Member.objects.get(member_id=first["member_id"])
    name, email, birth = raw_member(member.pk)
    assert first["name"] not in name and first["email"] not in email
    assert pii.decrypt(name) == first["name"] and pii.decrypt(email) == first["email"]
    assert member.birth_date == first["birth_date"].date() and member.birth_year == first["birth_date"].year
    comments = raw_comments()
    assert comments and all(c.startswith(pii.TOKEN_PREFIX) for c in comments)
    plain = set(program.events["comment"]) - {""}
    assert not plain & set(comments)
    assert {pii.decrypt(c) for c in comments} <= plain


def _current_key() -> str:
    from django.conf import settings

    return settings.LOYALTY_PII_KEYS[0]


def test_rotation_reencrypts_under_the_new_key_and_is_resumable(settings) -> None:
    settings.LOYALTY_PII_KEYS = [OLD_KEY]
    members = [
        Member.objects.create(member_id=f"R{i}", name=f"Rot Name {i}", email=f"rot{i}@example.com",
                              birth_date=date(1990, 1, i + 1))
        for i in range(5)
    ]
    Event.objects.create(member=members[0], occurred_at="2026-01-01T00:00:00Z", kind="feedback",
                         comment="rotating comment", fingerprint="a" * 40)
    settings.LOYALTY_PII_KEYS = [NEW_KEY, OLD_KEY]
    # Still readable before rotation (old key is second in line).
    assert Member.objects.get(pk=members[2].pk).name == "Rot Name 2"

    # An interrupted run: one committed batch of two members, then a resumed full run.
    from governance.privacy import _rotate_batch

    _, checked, rotated = _rotate_batch("loyalty_member", ("name", "email", "birth_date"), 0, 2)
    assert (checked, rotated) == (2, 6)
    result = pii_rotate_keys(batch_size=2)
    assert result.rows_checked == {"loyalty_member": 5, "loyalty_event": 1}
    assert result.values_rotated == {"loyalty_member": 9, "loyalty_event": 1}

    for m in members:
        name, email, birth = raw_member(m.pk)
        assert opens_with(NEW_KEY, name) == m.name and opens_with(NEW_KEY, email) == m.email
        assert opens_with(NEW_KEY, birth) == m.birth_date.isoformat()
    assert opens_with(NEW_KEY, raw_comments()[0]) == "rotating comment"
    # With the old key retired, everything still reads.
    settings.LOYALTY_PII_KEYS = [NEW_KEY]
    assert [Member.objects.get(pk=m.pk).email for m in members] == [m.email for m in members]
    assert Event.objects.get().comment == "rotating comment"
    # A repeated run finds nothing to do, and each run is audited with its counts.
    again = pii_rotate_keys(batch_size=2)
    assert again.values_rotated == {"loyalty_member": 0, "loyalty_event": 0}
    audits = AuditEvent.objects.filter(action="privacy.pii_keys_rotated").order_by("id")
    assert [a.new["values_rotated"]["loyalty_member"] for a in audits] == [9, 0]


def test_rotate_pii_keys_command(settings, capsys) -> None:
    settings.LOYALTY_PII_KEYS = [OLD_KEY]
    member = Member.objects.create(member_id="C1", name="Cmd Person", email="cmd@example.com")
    settings.LOYALTY_PII_KEYS = [NEW_KEY, OLD_KEY]
    call_command("rotate_pii_keys", "--batch-size", "1")
    assert "loyalty_member: 1 rows checked, 2 values re-encrypted" in capsys.readouterr().out
    assert opens_with(NEW_KEY, raw_member(member.pk)[0]) == "Cmd Person"


def _manage(env: dict[str, str], tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "LOYALTY_PII_KEYS"}}
    base.update(env, LOYALTY_DATA_DIR=str(tmp_path))
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=base, capture_output=True,
                          text=True, timeout=120)


def test_production_refuses_to_start_without_pii_keys(tmp_path: Path) -> None:
    production = {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "s" * 60, "DJANGO_ALLOWED_HOSTS": "desk.example.com"}
    refused = _manage(production, tmp_path, "check")
    assert refused.returncode != 0 and "LOYALTY_PII_KEYS must be set" in refused.stderr
    accepted = _manage({**production, "LOYALTY_PII_KEYS": f"{NEW_KEY},{OLD_KEY}"}, tmp_path, "check")
    assert accepted.returncode == 0, accepted.stderr


def test_development_default_key_is_derived_from_secret_key(tmp_path: Path) -> None:
    code = "from django.conf import settings; print(','.join(settings.LOYALTY_PII_KEYS))"
    out = _manage({"DJANGO_DEBUG": "1", "DJANGO_SECRET_KEY": "k" * 50}, tmp_path, "shell", "-c", code)
    assert out.returncode == 0, out.stderr
    [key] = out.stdout.strip().splitlines()[-1].split(",")
    Fernet(key.encode())  # a valid Fernet key, not the secret itself
    other = _manage({"DJANGO_DEBUG": "1", "DJANGO_SECRET_KEY": "j" * 50}, tmp_path, "shell", "-c", code)
    assert other.stdout.strip().splitlines()[-1] != key
