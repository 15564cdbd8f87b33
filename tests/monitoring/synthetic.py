"""Synthetic groups for fairness tests, with a known planted difference."""

from __future__ import annotations

import numpy as np


def north_churn_understated(*, n: int = 3000, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(groups, predicted churn risk, churned): the same true risk in every region, but the
    north's churn happens 15 points more often than predicted, as when its history is recorded
    worse than the others'."""
    rng = np.random.default_rng(seed)
    groups = rng.choice(["north", "south", "east"], size=n)
    risk = rng.uniform(0.1, 0.6, size=n)
    churned = (rng.random(n) < risk + np.where(groups == "north", 0.15, 0.0)).astype(int)
    return groups, risk, churned
