from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.core.cache import cache

from tests.desk.factories import make_model, make_offer, make_rec, make_run


@dataclass
class World:
    model: object
    run: object
    bonus: object
    discount: object
    upgrade: object  # high stakes
    recs: dict


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def world(db, role_users) -> World:
    model = make_model(status="champion")
    run = make_run(model)
    bonus = make_offer("bonus_500")
    discount = make_offer("discount_10", kind="discount")
    upgrade = make_offer("tier_upgrade", high_stakes=True, kind="tier_upgrade")
    recs = {
        "top": make_rec(run=run, offer=bonus, priority=90, probability=0.2, width=0.3, expected_value=40),
        "mid": make_rec(run=run, offer=discount, priority=50, probability=0.5, width=0.15, expected_value=20),
        "low": make_rec(run=run, offer=None, priority=10, probability=0.85, width=0.05, expected_value=0),
        "stakes": make_rec(run=run, offer=upgrade, priority=70, probability=0.35, width=0.2, expected_value=60),
        "esc": make_rec(
            run=run, offer=bonus, priority=80, probability=0.3, width=0.4, expected_value=30,
            status="escalated", route="senior", route_reasons=["interval wider than 0.35", {"text": "EV above 50"}],
        ),
        "done": make_rec(run=run, offer=bonus, priority=100, status="approved"),
    }
    return World(model, run, bonus, discount, upgrade, recs)
