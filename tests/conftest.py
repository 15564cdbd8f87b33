"""Shared fixtures. Integration fixtures use the real Postgres, Redis and a celery worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from loyalty.workers import WorkerProcess


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # role_users hashes four passwords per test; PBKDF2 would dominate the role tests' time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clear_cache():
    """Queue counts and member features are cached: no test sees another's."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def world(db, role_users):
    """A small desk world (tests/desk/factories.py): offers, a model, members and open items."""
    from tests.desk.factories import build_world

    return build_world()


@pytest.fixture
def role_users(db) -> dict:
    """One user per role, named after the role; password 'pw-<role>'."""
    from django.contrib.auth.models import Group, User

    from loyalty.roles import ALL_ROLES

    users = {}
    for role in ALL_ROLES:
        group, _ = Group.objects.get_or_create(name=role)
        user = User.objects.create_user(username=role, password=f"pw-{role}")
        user.groups.add(group)
        users[role] = user
    return users


@pytest.fixture
def eager_celery() -> Iterator[None]:
    """Run tasks in-process, as the embedded default does, even when a broker is configured."""
    from loyalty.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = before


def require_services() -> None:
    """Integration tests fail loudly, never skip, when the real services are not configured."""
    engine = settings.DATABASES["default"]["ENGINE"]
    if not engine.endswith("postgresql") or not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.fail(
            "integration tests need DATABASE_URL=postgres://... and CELERY_BROKER_URL=redis://... "
            "(`make test` sets both to the local services)"
        )


def worker_env() -> dict[str, str]:
    """Environment for a worker that sees the test database this session created."""
    db = settings.DATABASES["default"]
    url = f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = dict(os.environ, DATABASE_URL=url, CELERY_BROKER_URL=settings.CELERY_BROKER_URL)
    env["LOYALTY_ARTIFACT_DIR"] = str(settings.ARTIFACT_DIR)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def start_worker(*, name: str = "test", concurrency: int = 2) -> WorkerProcess:
    """A real worker on the test database, logging under DATA_DIR."""
    log_path = Path(settings.DATA_DIR) / f"worker-{name}-{os.getpid()}.log"
    return WorkerProcess(env=worker_env(), log_path=log_path, concurrency=concurrency, name=name)


def purge_broker() -> None:
    from loyalty.celery import app

    app.control.purge()


@pytest.fixture
def celery_worker_process(transactional_db) -> Iterator[WorkerProcess]:
    require_services()
    purge_broker()
    worker = start_worker()
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()
