"""Small, explicit test data for the review desk: real rows in the real database."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
from django.contrib.auth.models import Group, User

from loyalty.models import Member, Offer
from recommendations.models import ModelVersion, Recommendation, ScoringRun

FEATURES = ["purchases_30d", "days_since_purchase", "points_balance", "tenure_days", "sessions_30d"]
_seq = itertools.count(1)


def make_model(*, status: str = "candidate", metrics: dict | None = None) -> ModelVersion:
    return ModelVersion.objects.create(
        artifact_path="var/artifacts/test.joblib",
        sha256="0" * 64,
        feature_schema={"features": [{"name": n, "min": 0, "max": 100} for n in FEATURES]},
        as_of=date(2026, 10, 1),
        horizon_days=90,
        metrics=metrics if metrics is not None else {"auc": 0.81, "brier": 0.14, "interval_coverage": 0.9},
        status=status,
    )


def make_run(model: ModelVersion) -> ScoringRun:
    return ScoringRun.objects.create(model_version=model, as_of=date(2026, 10, 1), status="succeeded")


def make_offer(code: str, *, high_stakes: bool = False, active: bool = True, kind: str = "bonus_points") -> Offer:
    return Offer.objects.create(
        code=code, name=code.replace("_", " ").title(), kind=kind, cost=5, value=40,
        high_stakes=high_stakes, active=active,
    )


def make_member(*, tier: str = "silver", region: str = "north", member_id: str | None = None) -> Member:
    n = next(_seq)
    return Member.objects.create(
        member_id=member_id or f"M{n:05d}", tier=tier, region=region, joined_at=date(2024, 1, 15),
        points_balance=1200, name=f"Secret Name {n}", email=f"secret{n}@example.com",
        birth_date=date(1980, 5, 17), consent_profiling=True,
    )


def make_rec(
    *,
    run: ScoringRun,
    member: Member | None = None,
    offer: Offer | None = None,
    probability: float = 0.5,
    width: float = 0.2,
    priority: float = 10.0,
    expected_value: float = 12.0,
    status: str = "pending",
    route: str = "review",
    route_reasons: list | None = None,
    shap: list[float] | None = None,
    alternatives: list | None = None,
) -> Recommendation:
    shap_arr = np.array(shap if shap is not None else [0.4, -0.3, 0.1, 0.05, -0.02], dtype=np.float32)
    feats = np.array([3, 12, 1200, 640, 7], dtype=np.float32)
    return Recommendation.objects.create(
        run=run, member=member or make_member(), model_version=run.model_version, as_of=run.as_of,
        probability=probability, p_low=max(0.0, probability - width / 2), p_high=min(1.0, probability + width / 2),
        offer=offer, expected_value=expected_value, ev_low=expected_value - 5, ev_high=expected_value + 5,
        alternatives=alternatives if alternatives is not None else [
            {"code": offer.code if offer else "", "p_response": 0.3, "p_low": 0.2, "p_high": 0.4,
             "ev": expected_value, "ev_low": expected_value - 5, "ev_high": expected_value + 5},
            {"code": "", "p_response": 0.0, "p_low": 0.0, "p_high": 0.0, "ev": 0.0, "ev_low": 0.0, "ev_high": 0.0},
        ],
        shap_values=shap_arr.tobytes(), shap_base=-0.2, features=feats.tobytes(),
        priority=priority, status=status, route=route, route_reasons=route_reasons or [],
    )


def make_user(name: str, role: str) -> User:
    user = User.objects.create_user(username=name, password=f"pw-{name}")
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def ago(rec: Recommendation, **delta: float) -> Recommendation:
    """Backdate created_at (auto_now_add) for age tests."""
    Recommendation.objects.filter(pk=rec.pk).update(created_at=rec.created_at - timedelta(**delta))
    rec.refresh_from_db()
    return rec


@dataclass
class World:
    model: ModelVersion
    run: ScoringRun
    bonus: Offer
    discount: Offer
    upgrade: Offer  # high stakes
    recs: dict[str, Recommendation]


def build_world() -> World:
    """A champion model, one run, three offers and six recommendations in known states."""
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
