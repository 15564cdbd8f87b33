from __future__ import annotations

import pytest
from django.core.cache import cache

from tests.desk.factories import World, build_world


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def world(db, role_users) -> World:
    return build_world()
