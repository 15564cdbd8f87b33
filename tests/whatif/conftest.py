from __future__ import annotations

import pytest

from tests.whatif.support import WhatIfWorld, whatif_world


@pytest.fixture
def world(db) -> WhatIfWorld:
    return whatif_world()
