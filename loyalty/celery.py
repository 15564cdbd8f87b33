"""Celery application. Tasks take ids, own their retry policy and are idempotent."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loyalty.settings")

app = Celery("loyalty")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="loyalty.ping")
def ping(value: str) -> str:
    """Round-trip check used by the integration tests and `manage.py healthcheck`."""
    return f"pong:{value}"
