"""A scoring run with a shadow challenger through a real Celery worker (Postgres + Redis)."""

from __future__ import annotations

import os
import time

import pytest

from recommendations.models import Recommendation, ScoringChunk, ScoringRun, ShadowPrediction
from recommendations.rollout import model_rollout_set
from recommendations.runs import run_start
from tests.recommendations.scoring_support import consenting_pks
from tests.rollout.support import CHUNK, program_with_challenger

pytestmark = pytest.mark.integration


def _finished(run_id: int, timeout: float = 240) -> ScoringRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = ScoringRun.objects.get(pk=run_id)
        if run.status in (ScoringRun.Status.SUCCEEDED, ScoringRun.Status.FAILED):
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s")


def test_real_worker_scores_the_shadow_beside_the_champion(celery_worker_process, role_users) -> None:
    program, champion, challenger = program_with_challenger()
    model_rollout_set(actor=role_users["admin"], model_version_id=challenger.pk, mode="shadow")

    run = _finished(run_start(as_of=program.as_of, chunk_size=CHUNK).pk)

    assert run.status == ScoringRun.Status.SUCCEEDED, run.error
    consenting = consenting_pks()
    recs = Recommendation.objects.filter(run=run)
    shadow = ShadowPrediction.objects.filter(run=run)
    assert set(recs.values_list("member_id", flat=True)) == consenting == set(shadow.values_list("member_id", flat=True))
    assert recs.count() == shadow.count() == run.members_scored
    assert set(recs.values_list("model_version_id", flat=True)) == {champion.pk}
    assert set(shadow.values_list("model_version_id", flat=True)) == {challenger.pk}
    # The chunks ran in the worker's processes, not in this one.
    workers = set(ScoringChunk.objects.filter(run=run).values_list("worker", flat=True))
    assert workers and str(os.getpid()) not in {w.split(":")[1] for w in workers}
