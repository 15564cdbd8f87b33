"""A short version of `make load`: 10 managers for 10 seconds through gunicorn on Postgres.

Same generator and same database checks as `manage.py load` (loyalty/loadtest.py). The p95
bound here is looser than the command's 200 ms: `make test` shares a 2-core machine with
other jobs, and this test is about errors and exactly-once decisions under concurrency.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group, User

from loyalty.loadtest import ServerProcess, free_port, load_run, load_verify
from loyalty.roles import MANAGER
from recommendations.models import Decision, Recommendation
from tests.conftest import require_services, worker_env
from tests.desk.factories import make_model, make_offer, make_rec, make_run

pytestmark = pytest.mark.integration

USERS, SECONDS, ITEMS = 10, 10, 150
SANITY_P95_MS = 2000


@pytest.fixture
def server(transactional_db):
    require_services()
    env = worker_env()
    env.pop("CELERY_BROKER_URL")
    # The gunicorn processes share review claims through Redis, as in production.
    env.update(REDIS_URL="redis://127.0.0.1:6379/12", CACHE_KEY_PREFIX=f"test-load-{time.time_ns()}")
    process = ServerProcess(env=env, port=free_port(), log_path=Path(settings.DATA_DIR) / "test-gunicorn.log",
                            workers=2, threads=4)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_managers_working_the_queue_lose_nothing_and_store_each_decision_once(server, settings) -> None:
    run = make_run(make_model(status="champion"))
    offers = [make_offer("bonus_500"), make_offer("discount_10", kind="discount")]
    for i in range(ITEMS):
        make_rec(run=run, offer=offers[i % 2], priority=float(i))
    # One real (slow, as in production) password hash shared by the test managers; the test
    # process itself hashes with MD5 (tests/conftest.py), which the server does not accept.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    hashed = make_password("load-test-password")
    group = Group.objects.get_or_create(name=MANAGER)[0]
    credentials = []
    for i in range(USERS):
        user = User.objects.create(username=f"load-{i}", password=hashed)
        user.groups.add(group)
        credentials.append((user.username, "load-test-password"))

    result = load_run(base_url=server.base_url, credentials=credentials, seconds=SECONDS, think=(0.1, 0.4))
    figures = result.figures()

    assert result.errors == [], result.errors[:5]
    assert len(result.decisions) >= 10, figures
    assert load_verify(result, usernames=[u for u, _ in credentials]) == []
    assert figures["all_p95_ms"] < SANITY_P95_MS, figures
    # Their queue pages asked what changed on their rows, as the desk's script does.
    assert result.statuses["presence 200"] >= 1, result.statuses
    # What the managers saw is what the table holds: decided rows left the pending queue.
    decided = {rec for rec, _ in result.decisions}
    assert not Recommendation.objects.filter(pk__in=decided, status="pending").exists()
    assert Decision.objects.count() == len(result.decisions)
