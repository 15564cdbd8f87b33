from __future__ import annotations


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
