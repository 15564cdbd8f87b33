"""Scoring runs in the embedded mode: tasks run in-process right after the run commits."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from loyalty.models import Member, Offer
from recommendations.models import (
    Decision,
    ModelVersion,
    Recommendation,
    RecommendationStatus,
    ScoringChunk,
    ScoringRun,
)
from recommendations.runs import (
    ScoringError,
    chunk_score,
    recommendation_priority,
    run_resume,
    run_start,
)
from recommendations.tasks import score_chunk
from tests.recommendations.scoring_support import champion_model, consenting_pks, program_in_db

MEMBERS, SEED, CHUNK = 900, 11, 250


@pytest.fixture
def scored_setup(transactional_db, eager_celery):
    """A simulated program and a champion model. transactional_db: on_commit really fires."""
    program = program_in_db(members=MEMBERS, seed=SEED)
    model = champion_model(program, members=MEMBERS, seed=SEED)
    return program, model


def _run(program, **kwargs) -> ScoringRun:
    run = run_start(as_of=program.as_of, chunk_size=CHUNK, **kwargs)
    run.refresh_from_db()
    return run


def test_run_writes_one_recommendation_per_consenting_member(scored_setup) -> None:
    program, model = scored_setup
    # An erased member is never profiled, whatever its consent flag says.
    erased = Member.objects.filter(consent_profiling=True).order_by("pk")[3]
    Member.objects.filter(pk=erased.pk).update(erased_at=timezone.now())
    consenting = consenting_pks() - {erased.pk}
    non_consenting = Member.objects.filter(consent_profiling=False).count() + 1
    assert 0 < len(consenting) < MEMBERS and non_consenting > 1

    run = _run(program)

    assert run.status == ScoringRun.Status.SUCCEEDED, run.error
    assert run.model_version_id == model.pk
    assert run.chunks_total == run.chunks_done == -(-MEMBERS // CHUNK)
    assert run.members_total == MEMBERS
    assert run.members_scored == len(consenting)
    assert run.members_skipped_no_consent == non_consenting
    assert run.started_at and run.finished_at
    recs = Recommendation.objects.filter(run=run)
    assert set(recs.values_list("member_id", flat=True)) == consenting
    assert recs.count() == len(consenting)
    chunks = list(run.chunks.order_by("index"))
    assert all(c.status == ScoringChunk.Status.DONE and c.attempts == 1 for c in chunks)
    assert sum(c.rows_written for c in chunks) == len(consenting)
    assert sum(c.skipped_no_consent for c in chunks) == non_consenting
    # Chunks tile the member pks without overlap.
    for left, right in zip(chunks, chunks[1:], strict=False):
        assert left.member_pk_to < right.member_pk_from


def test_recommendation_content(scored_setup) -> None:
    program, model = scored_setup
    run = _run(program)
    n_features = len(model.feature_schema["features"])
    codes = list(Offer.objects.filter(active=True).exclude(kind="no_action").order_by("code").values_list("code", flat=True))
    assert codes
    stakes = dict(Offer.objects.values_list("code", "high_stakes"))
    recs = list(Recommendation.objects.filter(run=run).select_related("offer", "member")[:300])
    assert any(r.offer_id for r in recs)
    for rec in recs:
        assert 0.0 <= rec.p_low <= rec.probability <= rec.p_high <= 1.0
        assert rec.ev_low <= rec.expected_value <= rec.ev_high
        shap = np.frombuffer(bytes(rec.shap_values), dtype=np.float32)
        features = np.frombuffer(bytes(rec.features), dtype=np.float32)
        assert shap.shape == features.shape == (n_features,)
        assert np.isfinite(shap).all() and np.isfinite(features).all()
        assert [alt["code"] for alt in rec.alternatives] == codes
        assert set(rec.alternatives[0]) == {"code", "p_response", "p_low", "p_high", "ev", "ev_low", "ev_high"}
        if rec.offer_id:
            best = next(alt for alt in rec.alternatives if alt["code"] == rec.offer.code)
            assert best["ev"] == pytest.approx(rec.expected_value, rel=1e-5, abs=1e-6)
        # The built-in policy (pilot, no saved version): a person sees everything, a senior
        # manager decides high-stakes offers; every item says why it was routed where it is.
        assert rec.route == ("senior" if rec.offer_id and stakes[rec.offer.code] else "review")
        assert rec.route_reasons and all(reason["text"] for reason in rec.route_reasons)
        expected_status = RecommendationStatus.ESCALATED if rec.route == "senior" else RecommendationStatus.PENDING
        assert rec.status == expected_status
        assert rec.as_of == program.as_of and rec.model_version_id == model.pk
        assert rec.priority >= (float(rec.offer.cost) if rec.offer_id else 0.0)
    # The spend feature is the member value in the priority: recompute it for one row.
    names = [f["name"] for f in model.feature_schema["features"]]
    rec = recs[0]
    features = np.frombuffer(bytes(rec.features), dtype=np.float32)
    expected = recommendation_priority(
        probability=rec.probability, p_low=rec.p_low, p_high=rec.p_high,
        offer_cost=float(rec.offer.cost) if rec.offer_id else 0.0,
        member_value=float(features[names.index("spend_365d")]),
    )
    assert rec.priority == pytest.approx(float(expected), rel=1e-4)


def test_priority_orders_by_cost_of_a_wrong_decision() -> None:
    base = dict(probability=0.5, p_low=0.4, p_high=0.6, offer_cost=5.0, member_value=100.0)
    value = float(recommendation_priority(**base))
    assert value == pytest.approx(5.0 + 100 * 0.5 + 100 * 0.2)
    assert float(recommendation_priority(**{**base, "member_value": 1000.0})) > value
    assert float(recommendation_priority(**{**base, "probability": 0.1, "p_low": 0.0, "p_high": 0.2})) > value
    assert float(recommendation_priority(**{**base, "p_low": 0.2, "p_high": 0.8})) > value
    assert float(recommendation_priority(**{**base, "offer_cost": 0.0})) == pytest.approx(value - 5.0)
    vector = recommendation_priority(
        probability=np.array([0.9, 0.1]), p_low=np.array([0.8, 0.0]), p_high=np.array([1.0, 0.3]),
        offer_cost=np.array([0.0, 2.0]), member_value=np.array([10.0, 10.0]),
    )
    assert vector.shape == (2,) and vector[1] > vector[0]


def test_scoring_routes_with_the_policy_in_force_and_auto_approves_as_the_system(scored_setup) -> None:
    from governance.routing import sample_fraction
    from governance.selectors import item_key
    from governance.services import policy_save

    program, model = scored_setup
    policy_save(
        actor=None, phase="expanded", sample_rate=0.3, limited_max_offer_cost=10, sla_review_hours=48,
        stale_after_hours=240, rules={"probability": {"enabled": False, "route": "review"},
                                      "uncertainty": {"enabled": False, "route": "review"},
                                      # Every offer dearer than B500 goes to a senior: some
                                      # items are escalated whichever offers the model picks.
                                      "offer_cost": {"enabled": True, "threshold": 6, "route": "senior"}},
    )
    run = _run(program)
    recs = list(Recommendation.objects.filter(run=run).select_related("offer"))
    by_status = {s: [r for r in recs if r.status == s] for s in RecommendationStatus.values}
    assert by_status["auto_approved"] and by_status["pending"] and by_status["escalated"]
    for rec in by_status["auto_approved"]:
        assert rec.route == "auto" and not (rec.offer_id and rec.offer.high_stakes)
        assert sample_fraction(item_key(run.pk, rec.member_id)) >= 0.3
    assert all(r.offer_id and (r.offer.high_stakes or r.offer.cost > 6) for r in by_status["escalated"])
    spot = [r for r in by_status["pending"] if r.route_reasons[-1]["code"] == "spot_check"]
    assert spot and all(r.route_reasons[-1]["text"].startswith("spot check sample") for r in spot)
    decisions = Decision.objects.filter(recommendation__run=run)
    assert decisions.count() == len(by_status["auto_approved"])
    assert set(decisions.values_list("action", "actor_label", "actor")) == {("auto_approve", "system", None)}


def test_second_run_supersedes_pending_but_never_touches_decided(scored_setup) -> None:
    program, model = scored_setup
    first = _run(program)
    decided = Recommendation.objects.filter(run=first).order_by("id").first()
    Decision.objects.create(
        recommendation=decided, sequence=1, action=Decision.Action.APPROVE, actor_label="manager",
        chosen_offer=decided.offer, model_version=model, shown_probability=decided.probability,
        shown_p_low=decided.p_low, shown_p_high=decided.p_high,
        shown_expected_value=decided.expected_value, shown_shap_values=decided.shap_values,
        label_offer_code=decided.offer.code if decided.offer else "", is_feedback=True,
    )
    Recommendation.objects.filter(pk=decided.pk).update(status=RecommendationStatus.APPROVED)
    escalated = Recommendation.objects.filter(run=first).order_by("id")[1]
    # A person escalated it: a decided item (routing-escalated items without a decision are
    # superseded like pending ones).
    Decision.objects.create(
        recommendation=escalated, sequence=1, action=Decision.Action.ESCALATE, actor_label="manager",
        model_version=model, shown_probability=escalated.probability, shown_p_low=escalated.p_low,
        shown_p_high=escalated.p_high, shown_expected_value=escalated.expected_value,
        shown_shap_values=escalated.shap_values,
    )
    Recommendation.objects.filter(pk=escalated.pk).update(status=RecommendationStatus.ESCALATED)
    before = {
        r.pk: (r.status, r.probability, r.priority, r.offer_id, bytes(r.shap_values))
        for r in Recommendation.objects.filter(pk__in=[decided.pk, escalated.pk])
    }

    second = _run(program)

    assert second.status == ScoringRun.Status.SUCCEEDED
    assert Recommendation.objects.filter(run=second).count() == len(consenting_pks())
    assert not Recommendation.objects.filter(run=second).exclude(
        status__in=[RecommendationStatus.PENDING, RecommendationStatus.ESCALATED]
    ).exists()
    first_statuses = dict(
        Recommendation.objects.filter(run=first).values_list("pk", "status")
    )
    assert first_statuses.pop(decided.pk) == RecommendationStatus.APPROVED
    assert first_statuses.pop(escalated.pk) == RecommendationStatus.ESCALATED
    assert set(first_statuses.values()) == {RecommendationStatus.SUPERSEDED}
    after = {
        r.pk: (r.status, r.probability, r.priority, r.offer_id, bytes(r.shap_values))
        for r in Recommendation.objects.filter(pk__in=[decided.pk, escalated.pk])
    }
    assert after == before
    assert decided.decisions.count() == 1
    # The re-scored member has a fresh open item in the new run.
    assert Recommendation.objects.filter(
        run=second, member_id=decided.member_id,
        status__in=[RecommendationStatus.PENDING, RecommendationStatus.ESCALATED],
    ).exists()


def test_reexecuted_chunk_task_writes_nothing_twice(scored_setup) -> None:
    program, _ = scored_setup
    run = _run(program)
    counters = ScoringRun.objects.values("chunks_done", "members_scored", "members_skipped_no_consent").get(pk=run.pk)
    rows = Recommendation.objects.count()
    chunk = run.chunks.order_by("index").first()

    # A duplicate delivery, and a redelivery (which may take over running chunks), of a done chunk.
    assert score_chunk.apply(args=[chunk.pk]).get()["claimed"] is False
    assert score_chunk.apply(args=[chunk.pk], kwargs={"reclaim": True}).get()["claimed"] is False
    assert chunk_score(chunk_id=chunk.pk, reclaim=True).claimed is False

    assert Recommendation.objects.count() == rows
    assert ScoringRun.objects.values("chunks_done", "members_scored", "members_skipped_no_consent").get(pk=run.pk) == counters
    chunk.refresh_from_db()
    assert chunk.attempts == 1 and chunk.status == ScoringChunk.Status.DONE
    # A task for a chunk that no longer exists (old message, run deleted) does nothing.
    assert score_chunk.apply(args=[10**9]).get()["claimed"] is False


def test_chunk_stuck_running_is_taken_over_by_resume(scored_setup) -> None:
    """A worker claimed a chunk and died before committing: its rows never existed."""
    program, _ = scored_setup
    run = _run(program)
    chunk = run.chunks.order_by("index")[1]
    lost = Recommendation.objects.filter(run=run, member_id__gte=chunk.member_pk_from, member_id__lte=chunk.member_pk_to)
    lost_count = lost.count()
    assert lost_count > 0
    lost.delete()
    ScoringChunk.objects.filter(pk=chunk.pk).update(status=ScoringChunk.Status.RUNNING, rows_written=0)
    ScoringRun.objects.filter(pk=run.pk).update(
        status=ScoringRun.Status.RUNNING, finished_at=None, chunks_done=run.chunks_done - 1,
        members_scored=run.members_scored - lost_count,
        members_skipped_no_consent=run.members_skipped_no_consent - chunk.skipped_no_consent,
    )

    # A plain duplicate delivery does not take a chunk that a live worker may hold...
    assert score_chunk.apply(args=[chunk.pk]).get()["claimed"] is False
    # ...a resume before the chunk is stale leaves it alone too...
    assert run_resume(run_id=run.pk) == []
    # ...a resume after it is stale takes it over.
    assert run_resume(run_id=run.pk, stale_after=timedelta(0)) == [chunk.pk]

    run.refresh_from_db()
    chunk.refresh_from_db()
    assert run.status == ScoringRun.Status.SUCCEEDED
    assert chunk.status == ScoringChunk.Status.DONE and chunk.attempts == 2
    assert run.members_scored == len(consenting_pks()) == Recommendation.objects.filter(run=run).count()
    assert run.members_skipped_no_consent == Member.objects.filter(consent_profiling=False).count()
    assert run_resume(run_id=run.pk) == []


def test_failing_chunks_fail_the_run_with_a_clear_message_and_resume_recovers(scored_setup, capsys) -> None:
    program, model = scored_setup
    good_sha = model.sha256
    # A real failure: the artifact no longer matches its recorded checksum.
    ModelVersion.objects.filter(pk=model.pk).update(sha256="0" * 64)

    run = _run(program)

    assert run.status == ScoringRun.Status.FAILED
    assert "chunk 0" in run.error and f"score --resume {run.pk}" in run.error
    chunks = list(run.chunks.all())
    assert {c.status for c in chunks} == {ScoringChunk.Status.FAILED}
    assert all(c.error for c in chunks)
    assert not Recommendation.objects.filter(run=run).exists()
    assert run.chunks_done == 0 and run.members_scored == 0

    ModelVersion.objects.filter(pk=model.pk).update(sha256=good_sha)
    call_command("score", "--resume", str(run.pk), "--wait", "--poll", "0.05")
    assert f"run {run.pk}: re-enqueued {len(chunks)} chunk(s)" in capsys.readouterr().out
    run.refresh_from_db()
    assert run.status == ScoringRun.Status.SUCCEEDED and run.error == ""
    assert Recommendation.objects.filter(run=run).count() == len(consenting_pks())


def test_score_command_waits_in_embedded_mode(scored_setup, capsys) -> None:
    program, model = scored_setup
    call_command("score", "--as-of", program.as_of.isoformat(), "--chunk-size", "400", "--wait", "--poll", "0.05")
    out = capsys.readouterr().out
    run = ScoringRun.objects.get()
    assert f"run {run.pk} succeeded: {len(consenting_pks())} scored" in out
    assert run.chunks_total == 3

    ModelVersion.objects.filter(pk=model.pk).update(sha256="f" * 64)
    with pytest.raises(CommandError, match="failed: chunk 0"):
        call_command("score", "--as-of", program.as_of.isoformat(), "--wait", "--poll", "0.05")
    failed = ScoringRun.objects.order_by("-id").first()
    assert failed.status == ScoringRun.Status.FAILED


def test_score_command_without_wait_prints_the_run_id(scored_setup, capsys) -> None:
    program, model = scored_setup
    call_command("score", "--as-of", program.as_of.isoformat(), "--model", str(model.pk))
    run_id = int(capsys.readouterr().out.strip().splitlines()[-1])
    assert ScoringRun.objects.get(pk=run_id).model_version_id == model.pk


def test_run_needs_a_model(transactional_db) -> None:
    with pytest.raises(ScoringError, match="no champion"):
        run_start(as_of=date(2024, 1, 1))
    with pytest.raises(CommandError, match="model version 424242 does not exist"):
        call_command("score", "--as-of", "2024-01-01", "--model", "424242")
    with pytest.raises(CommandError, match="--as-of is required"):
        call_command("score")
    with pytest.raises(CommandError, match="scoring run 424242 does not exist"):
        call_command("score", "--resume", "424242")


def test_each_chunk_reads_the_escalation_policy_once(scored_setup) -> None:
    """The recall's window and the chunk's routing come from one read of the policy in force:
    one version even if an admin saves another meanwhile, and one query per chunk."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    program, _ = scored_setup
    with CaptureQueriesContext(connection) as captured:
        run = _run(program)
    policy_reads = [q["sql"] for q in captured.captured_queries
                    if q["sql"].startswith("SELECT") and '"governance_escalationpolicy"' in q["sql"].split(" WHERE ")[0]]
    assert run.chunks_total >= 3 and run.status == ScoringRun.Status.SUCCEEDED
    assert len(policy_reads) == run.chunks_total
