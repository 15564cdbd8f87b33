"""Exports for data people: the feedback the next model learns from, runs and model artifacts."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command
from django.test import Client

from governance.models import AuditEvent
from governance.privacy import member_erase
from loyalty.simulator import program_write_db, simulate_program
from recommendations.decisions import decision_record
from recommendations.exports import FEEDBACK_COLUMNS
from recommendations.features import FEATURE_NAMES
from recommendations.learning import labeled_examples_load
from recommendations.models import ModelVersion, Recommendation
from recommendations.runs import EXPORT_COLUMNS, run_start
from recommendations.services import model_version_train

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def decided(artifacts, eager_celery, role_users):
    """A scored program with an approval, an override and a decided member who was then erased."""
    program = simulate_program(members=400, seed=5)
    program_write_db(program)
    model_version_train(as_of=program.as_of, horizon_days=program.horizon_days)
    run = run_start(as_of=program.as_of)
    manager = role_users["senior_manager"]
    approved, overridden, erased = Recommendation.objects.filter(
        run=run, status__in=["pending", "escalated"], offer__isnull=False).order_by("pk")[:3]
    decision_record(recommendation_id=approved.pk, actor=manager, action="approve", label_engaged=True)
    other = "D10" if overridden.offer.code != "D10" else "B500"
    decision_record(recommendation_id=overridden.pk, actor=manager, action="override", chosen_offer_code=other,
                    reason_code="model_wrong", reason_text="told me on the phone she moved away", label_engaged=False)
    decision_record(recommendation_id=erased.pk, actor=manager, action="approve", label_engaged=True)
    member_erase(member_pk=erased.member_id, actor=role_users["admin"])
    return {"run": run, "approved": approved, "overridden": overridden, "erased": erased, "other": other}


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_feedback_export_is_what_retraining_learns_from(decided, role_users, tmp_path, capsys):
    path = tmp_path / "feedback.csv"
    call_command("export_feedback", format="csv", out=str(path))
    frame = pd.read_csv(path, keep_default_na=True, dtype={"member_id": str})
    assert list(frame.columns) == [*FEEDBACK_COLUMNS, *FEATURE_NAMES]

    examples = labeled_examples_load()
    expected = pd.concat([examples.train, examples.evaluation])
    erased = decided["erased"]
    assert erased.pk in set(expected["recommendation_id"])  # training still holds the decision ...
    assert erased.pk not in set(frame["recommendation_id"])  # ... the export leaves the person out
    assert len(frame) == (expected["recommendation_id"] != erased.pk).sum()

    overridden, approved = decided["overridden"], decided["approved"]
    mine = frame[frame["recommendation_id"] == overridden.pk]
    assert set(mine["source"]) == {"manager", "manager_choice"}
    assert set(mine.loc[mine["source"] == "manager_choice", "offer_code"]) == {decided["other"], overridden.offer.code}
    assert (mine.loc[mine["source"] == "manager", "engaged"] == 0).all()
    assert set(frame["split"]) <= {"train", "evaluation"}
    assert frame.loc[frame["recommendation_id"] == approved.pk, "member_id"].iloc[0] == approved.member.member_id
    # The feature snapshot is the one the manager saw, decoded with the model's schema.
    snapshot = ModelVersion.objects.get(pk=approved.model_version_id).feature_schema["features"]
    values = np.frombuffer(bytes(Recommendation.objects.get(pk=approved.pk).features), dtype=np.float32)
    shown = dict(zip([f["name"] for f in snapshot], values, strict=True))
    row = frame[frame["recommendation_id"] == approved.pk].iloc[0]
    for name in FEATURE_NAMES[:5]:
        assert row[name] == pytest.approx(float(shown[name]), rel=1e-6, abs=1e-9)
    assert "moved away" not in path.read_text()  # no free text leaves
    audit = AuditEvent.objects.get(action="export.feedback")
    assert audit.new["rows"] == len(frame) and audit.new["format"] == "csv"

    # The same rows as parquet through the API, for an auditor; managers may not export.
    response = client_for(role_users["auditor"]).get("/api/feedback/export/", {"file_format": "parquet"})
    assert response.status_code == 200 and response["Content-Type"] == "application/vnd.apache.parquet"
    assert 'filename="feedback.parquet"' in response["Content-Disposition"]
    parquet = pd.read_parquet(io.BytesIO(b"".join(response.streaming_content)))
    assert len(parquet) == len(frame) and list(parquet.columns) == list(frame.columns)
    assert client_for(role_users["manager"]).get("/api/feedback/export/").status_code == 403
    for wrong in ("xlsx", ""):
        bad = client_for(role_users["admin"]).get("/api/feedback/export/", {"file_format": wrong})
        assert bad.status_code == 400 and "file_format" in bad.json()["fields"]


def test_run_export_and_model_artifact_downloads(decided, role_users):
    run, admin = decided["run"], client_for(role_users["admin"])
    response = admin.get(f"/api/runs/{run.pk}/export/", {"file_format": "csv"})
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    frame = pd.read_csv(io.BytesIO(b"".join(response.streaming_content)), dtype={"member_id": str})
    assert list(frame.columns) == list(EXPORT_COLUMNS)
    assert len(frame) == Recommendation.objects.filter(run=run).count()
    assert AuditEvent.objects.filter(action="export.recommendations", object_id=str(run.pk),
                                     actor=role_users["admin"]).exists()
    assert admin.get("/api/runs/999999/export/").status_code == 404

    mv = ModelVersion.objects.get(pk=run.model_version_id)
    response = admin.get(f"/api/models/{mv.pk}/artifact/")
    body = b"".join(response.streaming_content)
    assert response.status_code == 200 and response["X-Artifact-SHA256"] == mv.sha256
    assert hashlib.sha256(body).hexdigest() == mv.sha256
    assert AuditEvent.objects.filter(action="export.model", object_id=str(mv.pk)).exists()
    # A file that is not the one the version recorded is refused, never served.
    Path(mv.artifact_path).write_bytes(body + b"tampered")
    refused = admin.get(f"/api/models/{mv.pk}/artifact/")
    assert refused.status_code == 409 and refused.json()["code"] == "artifact_mismatch"
    assert admin.get("/api/models/999999/artifact/").status_code == 404
    assert client_for(role_users["manager"]).get(f"/api/models/{mv.pk}/artifact/").status_code == 403


def test_queue_export_holds_exactly_the_filtered_queue(world, role_users):
    """Label Studio's complaint (#2164: filtered exports are wrong): the file holds every item
    the filtered queue lists across its pages, in its order, and nothing else."""
    from recommendations.queue import QUEUE_EXPORT_COLUMNS

    auditor = client_for(role_users["auditor"])
    params = {"offer": world.recs["top"].offer.code, "sort": "expected_value", "limit": 1}
    listed, cursor = [], None
    while True:  # the API's pages, one item each
        page = auditor.get("/api/recommendations/", {**params, **({"cursor": cursor} if cursor else {})}).json()
        listed += [item["id"] for item in page["results"]]
        if not (cursor := page["next_cursor"]):
            break
    response = auditor.get("/api/recommendations/export/", {**params, "file_format": "csv"})
    assert response.status_code == 200 and 'filename="queue.csv"' in response["Content-Disposition"]
    frame = pd.read_csv(io.BytesIO(b"".join(response.streaming_content)), dtype={"member_id": str})
    assert list(frame.columns) == list(QUEUE_EXPORT_COLUMNS)
    assert frame["recommendation_id"].tolist() == listed and len(listed) >= 1
    assert set(frame["offer_code"]) == {world.recs["top"].offer.code}
    parquet = auditor.get("/api/recommendations/export/", {**params, "file_format": "parquet"})
    assert pd.read_parquet(io.BytesIO(b"".join(parquet.streaming_content)))["recommendation_id"].tolist() == listed
    audit = AuditEvent.objects.filter(action="export.queue").first()
    assert audit.new["rows"] == len(listed) and audit.new["filters"]["sort"] == "expected_value"
    assert client_for(role_users["manager"]).get("/api/recommendations/export/").status_code == 403
    # The queue page offers the link with its own filters.
    html = auditor.get("/", {"offer": params["offer"]}).content.decode()
    assert f"/api/recommendations/export/?offer={params['offer']}&amp;file_format=csv" in html


def test_parquet_is_written_in_row_groups_with_the_first_batchs_types() -> None:
    from recommendations.tabular import rows_write

    rows = [(1, "M1", "", 0.5), (2, "M2", "B500", 0.25), (3, "M3", "", 1.0)]
    out = io.BytesIO()
    assert rows_write(iter(rows), columns=["id", "member_id", "offer_code", "p"], fmt="parquet", out=out, batch_rows=2) == 3
    out.seek(0)
    assert list(pd.read_parquet(out).itertuples(index=False, name=None)) == rows

    # A column with no value in the first batch has no type a later value could be cast to:
    # refused with its name before anything is written.
    out = io.BytesIO()
    with pytest.raises(ValueError, match="export column.s. decided_at have no value in the first 2 rows"):
        rows_write(iter([(1, None), (2, None), (3, "2026-06-30")]), columns=["id", "decided_at"], fmt="parquet",
                   out=out, batch_rows=2)
    assert out.getvalue() == b""
