import json
from datetime import date

import pytest
from django.core.management import CommandError, call_command

from governance.models import AuditEvent
from loyalty.definitions import event_fingerprints
from loyalty.models import Event, Member, Offer
from recommendations.model_store import (
    ArtifactIntegrityError,
    bundle_load,
    bundle_save,
    cache_clear,
)
from recommendations.models import ModelVersion
from recommendations.services import model_version_promote, model_version_train
from tests.recommendations.synth import OFFERS, synth_frames

AS_OF = date(2024, 7, 1)


@pytest.fixture
def program_in_db(db, settings, tmp_path):
    settings.ARTIFACT_DIR = tmp_path / "artifacts"
    members, events = synth_frames(n_members=500, seed=11)
    created = Member.objects.bulk_create([
        Member(member_id=r.member_id, birth_year=int(r.birth_year), gender=r.gender, region=r.region,
               tier=r.tier, points_balance=int(r.points_balance), joined_at=r.joined_at, consent_profiling=True)
        for r in members.itertuples()
    ])
    pk_map = dict(zip(members["pk"], [m.pk for m in created], strict=True))
    events = events.assign(member_id=events["member_pk"].map(dict(zip(members["pk"], members["member_id"], strict=True))))
    fingerprints = event_fingerprints(events.assign(score=events["score"]))
    Event.objects.bulk_create([
        Event(member_id=pk_map[r.member_pk], occurred_at=r.occurred_at.to_pydatetime(), kind=r.kind,
              amount=float(r.amount), points=int(r.points), quantity=int(r.quantity),
              duration_seconds=int(r.duration_seconds), score=None if r.score != r.score else int(r.score),
              offer_code=r.offer_code, fingerprint=fp)
        for r, fp in zip(events.itertuples(), fingerprints, strict=True)
    ], batch_size=5000)
    for o in OFFERS:
        Offer.objects.create(code=o.code, name=o.code, kind=o.kind, cost=o.cost, value=o.value, high_stakes=o.high_stakes)


def test_first_model_champion_and_promote_retires_previous(program_in_db):
    first = model_version_train(as_of=AS_OF, horizon_days=60)
    assert first.status == ModelVersion.Status.CHAMPION
    assert [h["status"] for h in first.status_history] == ["candidate", "champion"]
    names = [f["name"] for f in first.feature_schema["features"]]
    assert "age" in names and "gender" not in names
    assert first.metrics["auc"] > 0.6 and first.offer_policy == "learned"
    second = model_version_train(as_of=AS_OF, horizon_days=60, algorithm="rf", seed=1)
    assert second.status == ModelVersion.Status.CANDIDATE
    model_version_promote(model_version=second, actor=None, reason="better AUC")
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == "retired" and second.status == "champion"
    assert second.status_history[-1]["reason"] == "better AUC"
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["model.train", "model.promote", "model.train", "model.promote"]
    bundle = bundle_load(second.pk, second.artifact_path, second.sha256)
    assert bundle.algorithm == "rf"


def test_model_store_sha_mismatch_fails_loudly(trained, tmp_path):
    cache_clear()
    bundle, _ = trained
    path, sha = bundle_save(bundle, tmp_path)
    assert bundle_load(99, path, sha) is bundle_load(99, path, sha)
    with open(path, "ab") as handle:
        handle.write(b"tampered")
    cache_clear()
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        bundle_load(99, path, sha)


def test_train_command_json_and_errors(program_in_db, capsys):
    call_command("train", "--as-of", "2024-07-01", "--horizon-days", "60", "--json")
    payload = json.loads(capsys.readouterr().out)
    assert payload["status"] == "champion" and payload["model_version"] == ModelVersion.objects.get().pk
    assert {"auc", "brier", "interval_coverage"} <= set(payload["metrics"])
    call_command("train", "--as-of", "2024-07-01", "--horizon-days", "60")
    assert "AUC" in capsys.readouterr().out
    with pytest.raises(CommandError, match="YYYY-MM-DD"):
        call_command("train", "--as-of", "01/07/2024", "--horizon-days", "60")
    with pytest.raises(CommandError, match="unknown --algorithm"):
        call_command("train", "--as-of", "2024-07-01", "--horizon-days", "60", "--algorithm", "svm")
    with pytest.raises(CommandError, match="no consenting members with events|no events before"):
        call_command("train", "--as-of", "2020-01-01", "--horizon-days", "60")
