from __future__ import annotations

import pytest
from django.core.cache import cache

from tests.whatif.support import WhatIfWorld, whatif_world


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def world(db) -> WhatIfWorld:
    return whatif_world()
