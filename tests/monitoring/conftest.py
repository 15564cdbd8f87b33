from __future__ import annotations

import pytest
from django.core.cache import cache

from tests.desk.factories import World, build_world


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def world(db, role_users) -> World:
    return build_world()
