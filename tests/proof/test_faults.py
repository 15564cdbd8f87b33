"""Faults: the broker restarts mid-run, the database connection drops mid-decision.

SIGKILL of a worker's pool child and of a whole worker mid-run are covered (with the same
"exactly one recommendation per consenting member" check) in
tests/recommendations/test_integration_scoring.py:
test_killed_pool_child_hands_its_chunk_back and test_killed_worker_then_new_worker_and_resume.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from governance.models import AuditEvent
from loyalty.loadtest import free_port
from loyalty.workers import WorkerProcess
from recommendations.models import Decision, Recommendation, ScoringRun
from tests.conftest import require_services, worker_env
from tests.recommendations.scoring_support import champion_model, program_in_db
from tests.recommendations.test_integration_scoring import _assert_complete, _finished, _wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MEMBERS, SEED, CHUNK = 3000, 5, 150


class RedisServer:
    """A private redis-server (never the machine's shared one) that can be restarted. It keeps
    an append-only file, as a production broker should, so queued chunks survive a restart."""

    def __init__(self, directory: Path) -> None:
        self.port, self.directory = free_port(), directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ping = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True)
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis flushes the append-only file and exits
            self.proc.wait(timeout=20)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_restart_mid_run_workers_reconnect_and_the_run_completes(transactional_db, private_redis) -> None:
    require_services()
    program = program_in_db(members=MEMBERS, seed=SEED)
    champion_model(program, members=MEMBERS, seed=SEED)
    env = dict(worker_env(), CELERY_BROKER_URL=private_redis.url, CELERY_RESULT_BACKEND=private_redis.url)
    worker = WorkerProcess(env=env, log_path=Path(settings.DATA_DIR) / f"worker-redis-fault-{os.getpid()}.log",
                           concurrency=2, name="redis-fault")
    try:
        # `score` in its own process: it enqueues on the private broker, not this process's.
        started = subprocess.run(
            [sys.executable, "manage.py", "score", "--as-of", str(program.as_of), "--chunk-size", str(CHUNK)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
        assert started.returncode == 0, started.stderr[-2000:]
        run = ScoringRun.objects.latest("pk")
        _wait_for(lambda: ScoringRun.objects.get(pk=run.pk).chunks_done >= 2, timeout=180, what="two chunks done")
        private_redis.stop()
        done_while_down = ScoringRun.objects.get(pk=run.pk).chunks_done
        assert done_while_down < run.chunks_total, "the run finished before the broker went down"
        time.sleep(2)
        private_redis.start()

        run = _finished(run.pk, timeout=300)
    finally:
        worker.stop()
    _assert_complete(run)
    assert "Connection to broker lost" in worker.log_tail(200_000) or "reconnect" in worker.log_tail(200_000).lower()


@pytest.fixture
def decide(world, role_users):
    """Post one decision for the top item, through the API or the desk form."""
    from django.test import Client

    client = Client()
    client.force_login(role_users["manager"])

    def post(via: str):
        rec = world.recs["top"]
        if via == "api":
            return client.post(f"/api/recommendations/{rec.pk}/decide/", {"action": "approve"},
                               content_type="application/json")
        return client.post(f"/queue/{rec.pk}/decide/", {"action": "approve"})

    return post


@pytest.mark.parametrize("via", ["api", "form"])
def test_database_connection_dropped_mid_decision_answers_503_and_writes_nothing(
    transactional_db, decide, world, monkeypatch, via
) -> None:
    require_services()
    import recommendations.decisions as decisions

    rec = world.recs["top"]
    real_audit_log = decisions.audit_log
    params = connection.get_connection_params()
    dsn = {k: params[k] for k in ("host", "port", "user", "dbname") if params.get(k)}

    def drop_then_audit(**kwargs):
        # The status UPDATE and the Decision INSERT are done; the audit row is next. Kill this
        # request's backend from outside, as a failover or a network cut would.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        with psycopg.connect(**dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        return real_audit_log(**kwargs)

    monkeypatch.setattr(decisions, "audit_log", drop_then_audit)
    response = decide(via)

    assert response.status_code == 503
    assert "nothing was saved" in response.content.decode()
    assert not Decision.objects.filter(recommendation=rec).exists()
    assert not AuditEvent.objects.filter(object_type="recommendation", object_id=str(rec.pk)).exists()
    assert Recommendation.objects.get(pk=rec.pk).status == "pending"

    # The next attempt (on a new connection) stores the decision once, with its audit row.
    monkeypatch.setattr(decisions, "audit_log", real_audit_log)
    response = decide(via)
    assert response.status_code in (201, 302)
    assert Decision.objects.filter(recommendation=rec).count() == 1
    assert AuditEvent.objects.filter(object_type="recommendation", object_id=str(rec.pk),
                                     action="decision.approve").count() == 1
    assert Recommendation.objects.get(pk=rec.pk).status == "approved"


def test_statistics_refresh_after_a_run_survives_a_dropped_connection(transactional_db, caplog) -> None:
    """The ANALYZE after a run's commit is an optimisation: a dropped connection there is
    logged, not raised (raising would fail, and retry, a chunk whose run already succeeded)."""
    require_services()
    from recommendations.runs import _queue_statistics_refresh

    params = connection.get_connection_params()
    dsn = {k: params[k] for k in ("host", "port", "user", "dbname") if params.get(k)}
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    with psycopg.connect(**dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])

    with caplog.at_level("WARNING", logger="recommendations.runs"):
        _queue_statistics_refresh()
    assert "statistics refresh after the run failed: OperationalError" in caplog.text
    connection.close()  # as Django does at the end of a request or task
    assert ScoringRun.objects.count() == 0  # a new connection works
