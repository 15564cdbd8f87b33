"""Scoring runs through a real Celery worker (Postgres + Redis), including killed workers."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from functools import partial

import psutil
import pytest
from django.db import connection

from loyalty.models import Member
from recommendations.models import Recommendation, ScoringChunk, ScoringRun
from recommendations.runs import run_resume, run_start
from tests.conftest import start_worker
from tests.recommendations.scoring_support import champion_model, consenting_pks, program_in_db

pytestmark = pytest.mark.integration

MEMBERS, SEED, CHUNK = 3000, 5, 150


@pytest.fixture
def program(celery_worker_process):
    program = program_in_db(members=MEMBERS, seed=SEED)
    champion_model(program, members=MEMBERS, seed=SEED)
    return program


def _wait_for(predicate, *, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _finished(run_id: int, timeout: float = 240) -> ScoringRun:
    def done():
        run = ScoringRun.objects.get(pk=run_id)
        return run if run.status in (ScoringRun.Status.SUCCEEDED, ScoringRun.Status.FAILED) else None

    return _wait_for(done, timeout=timeout, what=f"run {run_id} to finish")


def _running_chunk(run_id: int, *, chunks_left: int = 0) -> ScoringChunk | None:
    """A chunk a worker is scoring right now, once the run is past its first chunk and while
    more than `chunks_left` chunks are not done (a fast worker can otherwise finish the run
    between this query and the test's next step)."""
    run = ScoringRun.objects.get(pk=run_id)
    if run.chunks_done < 1 or run.chunks_total - run.chunks_done <= chunks_left:
        return None
    return ScoringChunk.objects.filter(run_id=run_id, status=ScoringChunk.Status.RUNNING).exclude(worker="").first()


def _assert_complete(run: ScoringRun) -> None:
    consenting = consenting_pks()
    assert run.status == ScoringRun.Status.SUCCEEDED, run.error
    assert run.chunks_done == run.chunks_total
    assert run.members_scored == len(consenting)
    assert run.members_skipped_no_consent == Member.objects.filter(consent_profiling=False).count()
    members = list(Recommendation.objects.filter(run=run).values_list("member_id", flat=True))
    assert len(members) == len(set(members)) == len(consenting)
    assert set(members) == consenting
    assert not ScoringChunk.objects.filter(run=run).exclude(status=ScoringChunk.Status.DONE).exists()


def test_real_worker_scores_every_consenting_member_once(program, celery_worker_process) -> None:
    started = time.perf_counter()
    run = run_start(as_of=program.as_of, chunk_size=CHUNK)
    # The worker ids checked below prove the chunks ran in the worker, not here; the run's
    # status right after run_start is a race with that worker, so it is not asserted.
    run = _finished(run.pk)
    elapsed = time.perf_counter() - started

    _assert_complete(run)
    assert run.chunks_total == MEMBERS // CHUNK
    # The finishing chunk refreshed the planner's statistics for the desk's filters (right
    # after its commit, so shortly after the run shows as finished).
    deadline, analyzed = time.monotonic() + 30, None
    while time.monotonic() < deadline and (analyzed is None or analyzed < run.finished_at):
        with connection.cursor() as cursor:
            cursor.execute("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = %s",
                           [Recommendation._meta.db_table])
            (analyzed,) = cursor.fetchone()
        time.sleep(0.2)
    assert analyzed is not None and analyzed >= run.finished_at
    workers = set(ScoringChunk.objects.filter(run=run).values_list("worker", flat=True))
    assert all(":" in worker for worker in workers) and str(os.getpid()) not in {w.split(":")[1] for w in workers}
    print(f"\nreal worker: {run.members_total} members ({run.members_scored} scored) in {elapsed:.1f}s "
          f"= {run.members_total / elapsed:.0f} members/s, {run.chunks_total} chunks, concurrency 2")


def test_killed_pool_child_hands_its_chunk_back(program, celery_worker_process) -> None:
    run = run_start(as_of=program.as_of, chunk_size=CHUNK)
    victim = None
    for _ in range(5):
        candidate = _wait_for(lambda: _running_chunk(run.pk), timeout=120, what="a running chunk")
        pid = int(candidate.worker.rsplit(":", 1)[1])
        assert pid in celery_worker_process.children()
        os.kill(pid, signal.SIGKILL)
        _wait_for(partial(_gone, pid), timeout=10, what=f"pool child {pid} to die")
        # A COMMIT the child sent just before the signal still lands once Postgres reads it:
        # give the server a moment before judging. If the first attempt did not finish the
        # chunk, the child died in the middle of it (else it finished just before the signal).
        time.sleep(1.0)
        if not ScoringChunk.objects.filter(
            pk=candidate.pk, status=ScoringChunk.Status.DONE, attempts=1, worker=candidate.worker
        ).exists():
            victim = candidate
            break
    assert victim is not None, "never caught a pool child in the middle of a chunk"

    run = _finished(run.pk)

    _assert_complete(run)
    victim.refresh_from_db()
    # Its first attempt died with the child; the redelivered message took it over.
    assert victim.attempts >= 2 and victim.status == ScoringChunk.Status.DONE
    assert celery_worker_process.proc.poll() is None  # the worker itself survived


def test_killed_worker_then_new_worker_and_resume(program, celery_worker_process) -> None:
    run = run_start(as_of=program.as_of, chunk_size=CHUNK)
    # More chunks left than the two pool processes can hold: the run cannot finish before the kill.
    _wait_for(lambda: _running_chunk(run.pk, chunks_left=4), timeout=120, what="a running chunk")
    os.killpg(celery_worker_process.proc.pid, signal.SIGKILL)
    celery_worker_process.proc.wait(timeout=10)
    run.refresh_from_db()
    assert run.status != ScoringRun.Status.SUCCEEDED and run.chunks_done < run.chunks_total
    # Chunks left "running" by a worker that no longer exists (usually one; none when the kill
    # lands between two chunks) and chunks it had taken from the queue but not started.
    stuck = list(ScoringChunk.objects.filter(run=run, status=ScoringChunk.Status.RUNNING).values_list("pk", flat=True))
    unfinished = list(
        ScoringChunk.objects.filter(run=run).exclude(status=ScoringChunk.Status.DONE).values_list("pk", flat=True)
    )
    assert unfinished

    replacement = start_worker(name="replacement")
    try:
        replacement.wait_ready()
        # The dead worker's unacked messages come back only after the visibility timeout:
        # resume hands out the stale chunks (and re-sends pending ones, harmlessly) now.
        requeued = run_resume(run_id=run.pk, stale_after=timedelta(0))
        assert set(stuck) <= set(requeued)
        run = _finished(run.pk)
    finally:
        replacement.stop()

    _assert_complete(run)
    assert all(
        attempts >= 2
        for attempts in ScoringChunk.objects.filter(pk__in=stuck).values_list("attempts", flat=True)
    )
