"""The env-driven settings: embedded defaults, and a production configuration that is clean."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_manage(env_overrides: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    # The browser tests allow async-unsafe calls in this process; production never would.
    dropped = {"DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_deploy_check_passes_with_production_settings(tmp_path: Path) -> None:
    result = run_manage(
        {
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "x" * 20 + "production-secret-key-with-enough-entropy-1234567890",
            "DJANGO_ALLOWED_HOSTS": "desk.example.com",
            "LOYALTY_PII_KEYS": "Vh0yyrFUSzrxh9mUFm5Yu3BoVEKRGEvx-zj9RAPcCx8=",
            "LOYALTY_DATA_DIR": str(tmp_path),
        },
        "check", "--deploy", "--fail-level", "WARNING",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_secret_key(tmp_path: Path) -> None:
    result = run_manage({"DJANGO_DEBUG": "0", "LOYALTY_DATA_DIR": str(tmp_path)}, "check")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_embedded_default_is_sqlite_wal_and_eager_tasks(tmp_path: Path) -> None:
    code = (
        "import django; django.setup();"
        "from django.conf import settings; from django.db import connection;"
        "c = connection.cursor(); c.execute('PRAGMA journal_mode'); mode = c.fetchone()[0];"
        "print(settings.DATABASES['default']['ENGINE'], mode, settings.CELERY_TASK_ALWAYS_EAGER)"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env.update({"DJANGO_SETTINGS_MODULE": "loyalty.settings", "LOYALTY_DATA_DIR": str(tmp_path)})
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["django.db.backends.sqlite3", "wal", "True"], out.stderr
