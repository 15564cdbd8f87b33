"""No personal data in the logs: a simulated program imported from CSV, trained, scored,
decided on and partly erased, with every logger at DEBUG. Names, emails, birth dates and
feedback comments of the program's members must not appear in any log record."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
from django.test import Client

from governance.privacy import member_erase
from loyalty.importers import import_csv
from loyalty.models import Member, Offer
from loyalty.simulator import program_write_files, simulate_program
from recommendations.models import Recommendation
from recommendations.runs import run_start
from recommendations.services import model_version_train

MEMBERS, SEED = 300, 21


def _pii_values(program) -> set[str]:
    members = program.members
    values = set(members["name"].dropna().astype(str)) | set(members["email"].dropna().astype(str))
    values |= {pd.Timestamp(d).strftime("%Y-%m-%d") for d in members["birth_date"].dropna()}
    comments = program.events.get("comment", pd.Series(dtype=str)).dropna().astype(str)
    values |= {c for c in comments if len(c) >= 12}  # short stock words ("great") say nothing
    return {v for v in values if v.strip()}


@pytest.mark.django_db
def test_no_personal_data_in_logs_through_import_scoring_decisions_and_erasure(
    tmp_path: Path, caplog, eager_celery, role_users, django_capture_on_commit_callbacks
) -> None:
    program = simulate_program(members=MEMBERS, seed=SEED)
    pii = _pii_values(program)
    assert len(pii) > MEMBERS  # names, emails and birth dates at least
    paths = program_write_files(program, tmp_path)
    # A file with a bad row too: its error message must not echo the row's personal data.
    bad = pd.read_csv(paths["members"], dtype=str).head(3)
    bad.loc[1, "birth_date"] = "not-a-date"
    bad.to_csv(tmp_path / "bad_members.csv", index=False)

    caplog.set_level(logging.DEBUG)
    assert not import_csv(kind="members", source=tmp_path / "bad_members.csv").succeeded
    for kind in ("offers", "members", "events"):
        assert import_csv(kind=kind, source=paths[kind]).succeeded, kind
    model_version_train(as_of=program.as_of, horizon_days=program.horizon_days)
    with django_capture_on_commit_callbacks(execute=True):  # the chunks are sent on commit
        run_start(as_of=program.as_of)
    pending = list(Recommendation.objects.filter(status="pending").order_by("pk")[:3])
    assert len(pending) == 3
    manager = Client()
    manager.force_login(role_users["manager"])
    # Override to something other than what was recommended (no action, or else an offer).
    other = "" if pending[1].offer_id else Offer.objects.order_by("code").first().code
    for rec, body in zip(pending, [
        {"action": "approve"},
        {"action": "override", "chosen_offer_code": other, "reason_code": "member_context",
         "reason_text": "called the member"},
        {"action": "escalate", "note": "needs a senior look"},
    ], strict=True):
        assert manager.post(f"/api/recommendations/{rec.pk}/decide/", body,
                            content_type="application/json").status_code == 201
    for member in Member.objects.order_by("pk")[:5]:
        member_erase(member_pk=member.pk, actor=role_users["admin"])

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert len(caplog.records) > 10  # the steps above did log
    leaked = sorted(value for value in pii if value in logged)
    assert leaked == [], f"personal data in logs: {leaked[:5]}"
