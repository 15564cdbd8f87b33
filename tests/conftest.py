"""Shared fixtures. Integration fixtures use the real Postgres, Redis and a celery worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


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


class WorkerProcess:
    """A real `celery -A loyalty worker` subprocess; stop() ends it and its pool children."""

    def __init__(self, concurrency: int = 2, name: str = "test") -> None:
        self.log_path = Path(settings.DATA_DIR) / f"worker-{name}-{os.getpid()}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "loyalty", "worker",
                "--loglevel=INFO", f"--concurrency={concurrency}", f"--hostname={name}-{os.getpid()}@%h",
                "--without-gossip", "--without-mingle",
            ],
            cwd=ROOT, env=worker_env(), stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        from loyalty.celery import ping

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                if ping.delay("ready").get(timeout=2) == "pong:ready":
                    return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.5)
        raise RuntimeError(f"celery worker not ready:\n{self.log_path.read_text()[-3000:]}")

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(pid) for pid in out.stdout.split()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)
                self.proc.wait(timeout=20)
            except Exception:  # noqa: BLE001 - make sure nothing is left running
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=10)
        self.log.close()


def purge_broker() -> None:
    from loyalty.celery import app

    app.control.purge()


@pytest.fixture
def celery_worker_process(transactional_db) -> Iterator[WorkerProcess]:
    require_services()
    purge_broker()
    worker = WorkerProcess()
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()
