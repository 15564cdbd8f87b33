from __future__ import annotations

import pytest
from django.core.cache import cache

from tests.desk.factories import World, build_world


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # role_users hashes four passwords per test; PBKDF2 would dominate the role matrix's time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def world(db, role_users) -> World:
    return build_world()


def policy_values(**changes) -> dict:
    """Raw values for policy_save: expanded phase, no sampling, default rules."""
    base = {
        "phase": "expanded",
        "sample_rate": 0.0,
        "limited_max_offer_cost": 10.0,
        "sla_review_hours": 48,
        "stale_after_hours": 240,
        "rules": {},
        "budgets": [],
    }
    return {**base, **changes}
