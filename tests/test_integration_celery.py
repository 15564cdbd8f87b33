"""A task round-trips through Redis to a real worker process and back."""

import pytest

pytestmark = pytest.mark.integration


def test_task_round_trips_through_redis_worker(celery_worker_process) -> None:
    from loyalty.celery import ping

    result = ping.delay("hello")
    assert result.get(timeout=30) == "pong:hello"
    # It really ran in the worker process, not eagerly here.
    assert celery_worker_process.log_path.read_text().count("loyalty.ping") >= 1


def test_worker_reads_the_test_database(celery_worker_process) -> None:
    from loyalty.celery import app
    from loyalty.models import Offer

    Offer.objects.create(code="B500", name="500 bonus points", kind="bonus_points", cost=5, value=20)
    assert app.send_task("loyalty.count_offers").get(timeout=30) == 1
