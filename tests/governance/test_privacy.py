"""A realistic flow (import, train, score, review, export, erase): consent is respected, and
neither the audit trail nor the logs carry a member's name, email or external id."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from governance.models import AuditEvent
from loyalty.importers import import_csv
from loyalty.models import Member
from loyalty.roles import ADMIN, AUDITOR, MANAGER
from loyalty.simulator import program_write_files, simulate_program
from recommendations.models import Recommendation, RecommendationStatus, ScoringRun
from recommendations.runs import run_start
from recommendations.services import model_version_train

MEMBERS, SEED = 300, 21


def _audit_text(event: AuditEvent) -> str:
    return json.dumps(
        [event.actor_label, event.action, event.object_type, event.object_id, str(event.member_pseudo_id),
         event.old, event.new], default=str,
    )


@pytest.fixture
def flow(transactional_db, eager_celery, role_users, tmp_path: Path, caplog) -> dict:
    caplog.set_level(logging.DEBUG, logger="loyalty")
    caplog.set_level(logging.DEBUG, logger="recommendations")
    caplog.set_level(logging.DEBUG, logger="governance")
    caplog.set_level(logging.INFO)
    program = simulate_program(members=MEMBERS, seed=SEED)
    paths = program_write_files(program, tmp_path)
    for kind in ("offers", "members", "events"):
        result = import_csv(kind=kind, source=paths[kind], actor=role_users[ADMIN])
        assert result.succeeded, result.errors
    model_version_train(as_of=program.as_of, horizon_days=program.horizon_days, seed=SEED)
    run = run_start(as_of=program.as_of, chunk_size=100, actor=role_users[ADMIN])
    run.refresh_from_db()
    assert run.status == ScoringRun.Status.SUCCEEDED, run.error

    manager = Client()
    manager.force_login(role_users[MANAGER])
    pending = list(Recommendation.objects.filter(run=run, status=RecommendationStatus.PENDING).order_by("pk")[:2])
    assert len(pending) == 2
    assert manager.get(reverse("desk-detail", args=[pending[0].pk])).status_code == 200
    manager.post(reverse("desk-decide", args=[pending[0].pk]), {"action": "approve"})
    response = manager.post(
        reverse("api-recommendation-decide", args=[pending[1].pk]),
        {"action": "escalate", "note": "needs a senior look"}, content_type="application/json",
    )
    assert response.status_code == 201, response.content

    auditor = Client()
    auditor.force_login(role_users[AUDITOR])
    b"".join(auditor.get(reverse("audit-export")).streaming_content)
    admin = Client()
    admin.force_login(role_users[ADMIN])
    erased = program.members.iloc[5]
    response = admin.post(reverse("api-privacy-erasure"), {"member": erased["member_id"]},
                          content_type="application/json")
    assert response.status_code == 200, response.content
    return {"program": program, "run": run}


def test_realistic_flow_respects_consent_and_keeps_pii_out_of_audit_and_logs(flow, caplog) -> None:
    program, run = flow["program"], flow["run"]
    members = program.members

    # No profiling without consent: never scored, and counted in the run report.
    non_consenting = set(members.loc[~members["consent_profiling"], "member_id"])
    assert non_consenting
    assert run.members_skipped_no_consent == len(non_consenting)
    scored = set(Recommendation.objects.filter(run=run).values_list("member__member_id", flat=True))
    assert not scored & non_consenting
    assert run.members_scored == MEMBERS - len(non_consenting)

    # Everything the flow did is on the trail...
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"import.members", "import.events", "member.view", "audit.export", "privacy.erasure"} <= actions
    assert any(a.startswith("decision") for a in actions), actions
    # ...and no row names a member other than by pseudo id.
    secrets = set(members["name"]) | set(members["email"]) | set(members["member_id"])
    comments = set(program.events["comment"]) - {""}
    for event in AuditEvent.objects.all():
        text = _audit_text(event)
        leaked = [s for s in secrets | comments if s in text]
        assert not leaked, f"{event.action} audit row carries personal data: {leaked[:3]}"
    assert AuditEvent.objects.filter(member_pseudo_id__isnull=False).exists()

    # The logs of import, scoring, decisions and erasure name nobody.
    records = caplog.get_records("setup") + caplog.get_records("call")  # the flow ran in the fixture
    logged = "\n".join(f"{r.name} {r.getMessage()}" for r in records)
    assert logged, "expected the flow to log something"
    names_and_emails = set(members["name"]) | set(members["email"])
    leaked = [s for s in names_and_emails if s in logged]
    assert not leaked, f"logs carry names or emails: {leaked[:3]}"


def test_erased_members_are_never_scored(flow) -> None:
    program = flow["program"]
    erased = Member.objects.get(erased_at__isnull=False)
    assert not Recommendation.objects.filter(member=erased, status__in=("pending", "escalated")).exists()
    again = run_start(as_of=program.as_of, chunk_size=100)
    again.refresh_from_db()
    assert again.status == ScoringRun.Status.SUCCEEDED, again.error
    assert not Recommendation.objects.filter(run=again, member=erased).exists()
