"""Writes of the prediction engine: train a model version, promote it.

Scoring-run services live in recommendations.runs.
"""

from __future__ import annotations

import math
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from governance.audit import audit_log
from recommendations.features import FEATURE_SPEC, build_features
from recommendations.model_store import bundle_save
from recommendations.models import ModelVersion
from recommendations.selectors import member_frames_load, offer_terms_list
from recommendations.training import (
    ALGORITHMS,
    HGB_PARAMS,
    RESPONSE_PARAMS,
    RF_PARAMS,
    train_bundle,
)


class TrainingDataError(ValueError):
    """Not enough data before as_of to train a model."""


# Training reads at most this many consenting members, a uniform random sample (seeded by the
# training seed) when the program is larger. Loading and fitting grow linearly with members
# (~21 events each: 1M members would be ~21M events in one process), while a model of these
# 28 features gains little beyond a few hundred thousand members. Scoring always covers
# every member; the sample size is recorded in the model version's params.
TRAIN_MAX_MEMBERS = 200_000


def training_members_sample(*, max_members: int, seed: int) -> tuple[np.ndarray | None, int]:
    """(pks to train on, or None for all; how many consenting members there are)."""
    from recommendations.selectors import consenting_member_pks

    pks = consenting_member_pks()
    if len(pks) <= max_members:
        return None, len(pks)
    sample = np.random.default_rng(seed).choice(pks, size=max_members, replace=False)
    return np.sort(sample), len(pks)


def _json_safe(value: Any) -> Any:
    """Metrics as strict JSON: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _actor_label(actor) -> str:
    return actor.get_username() if actor is not None and getattr(actor, "is_authenticated", False) else "system"


def _status_entry(status: str, actor, reason: str) -> dict:
    return {"at": timezone.now().isoformat(), "status": status, "by": _actor_label(actor), "reason": reason}


def feature_schema(features: pd.DataFrame) -> dict:
    """Ordered feature schema with the range seen in training (what-if clamps to it) and the
    training distribution's decile bins ("psi_bins": the drift monitor's reference)."""
    from recommendations.monitoring import psi_reference

    rows = []
    for spec in FEATURE_SPEC:
        column = features[spec.name] if spec.name in features else pd.Series(dtype=float)
        rows.append({
            "name": spec.name,
            "min": float(column.min()) if len(column) else spec.min,
            "max": float(column.max()) if len(column) else spec.max,
            "text": spec.text,
            "actionable": spec.actionable,
            "protected": spec.protected,
            "psi_bins": psi_reference(column.to_numpy(float)),
        })
    return {"features": rows}


def model_version_train(
    *,
    as_of: date,
    horizon_days: int,
    algorithm: str = "hgb",
    actor=None,
    seed: int = 0,
    max_members: int = TRAIN_MAX_MEMBERS,
    labeled_examples: pd.DataFrame | None = None,
    feedback_summary: dict | None = None,
) -> ModelVersion:
    """Train on the data before ``as_of``, store the artifact, record the ModelVersion.

    Uses every consenting member, or a random sample of ``max_members`` of them when there
    are more (see TRAIN_MAX_MEMBERS). The first model ever trained becomes champion; later
    ones are candidates until promoted. ``labeled_examples``: decision feedback and realized
    outcomes (recommendations.learning), passed to train_bundle; ``feedback_summary`` is
    stored in params["feedback"].
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
    if horizon_days <= 0:
        raise ValueError("horizon_days must be positive")
    if max_members < 1:
        raise ValueError("max_members must be at least 1")
    sample, available = training_members_sample(max_members=max_members, seed=seed)
    members, events = member_frames_load(as_of=as_of, pks=sample)
    t0 = as_of - timedelta(days=horizon_days)
    if not len(members) or not len(events):
        raise TrainingDataError(f"no consenting members with events before {as_of.isoformat()}")
    if not (events["occurred_at"] < pd.Timestamp(t0, tz="UTC")).any():
        raise TrainingDataError(
            f"no events before {t0.isoformat()} (as_of - horizon): features would be empty"
        )
    offers = offer_terms_list(active_only=False)
    bundle, metrics = train_bundle(
        members=members, events=events, offers=offers, as_of=pd.Timestamp(as_of, tz="UTC"),
        horizon_days=horizon_days, algorithm=algorithm, seed=seed, labeled_examples=labeled_examples,
    )
    path, sha = bundle_save(bundle, settings.ARTIFACT_DIR)
    train_features = build_features(members, events, pd.Timestamp(t0, tz="UTC"))
    params = {
        "engagement": HGB_PARAMS if algorithm == "hgb" else RF_PARAMS,
        "response": RESPONSE_PARAMS if bundle.response_model is not None else None,
        "default_policy": bundle.default_policy_params,
        "seed": seed,
        "offer_codes": bundle.offer_codes,
        # How many consenting members the model saw, out of how many the program had.
        "train_members": int(len(members)),
        "train_members_available": int(available),
        "feedback": feedback_summary or {},
    }
    with transaction.atomic():
        has_champion = ModelVersion.objects.select_for_update().filter(
            status=ModelVersion.Status.CHAMPION
        ).exists()
        status = ModelVersion.Status.CANDIDATE if has_champion else ModelVersion.Status.CHAMPION
        history = [_status_entry(ModelVersion.Status.CANDIDATE, actor, "trained")]
        if status == ModelVersion.Status.CHAMPION:
            history.append(_status_entry(status, actor, "first model: champion by default"))
        version = ModelVersion.objects.create(
            algorithm=algorithm,
            artifact_path=path,
            sha256=sha,
            feature_schema=feature_schema(train_features),
            as_of=as_of,
            horizon_days=horizon_days,
            train_start=t0,
            params=_json_safe(params),
            metrics=_json_safe(metrics),
            offer_policy=bundle.offer_policy,
            status=status,
            status_history=history,
            created_by=actor if actor is not None and getattr(actor, "is_authenticated", False) else None,
        )
        audit_log(
            actor=actor, action="model.train", object_type="model_version", object_id=version.pk,
            new={"status": status, "algorithm": algorithm, "as_of": as_of.isoformat(),
                 "horizon_days": horizon_days, "auc": _json_safe(metrics.get("auc")), "sha256": sha},
        )
        if status == ModelVersion.Status.CHAMPION:
            audit_log(
                actor=actor, action="model.promote", object_type="model_version", object_id=version.pk,
                old=None, new={"status": status, "reason": "first model"},
            )
    return version


def model_version_promote(*, model_version: ModelVersion, actor, reason: str) -> ModelVersion:
    """Make ``model_version`` the champion and retire the current one, atomically, with audit."""
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=model_version.pk)
        if version.status == ModelVersion.Status.CHAMPION:
            raise ValueError(f"model version {version.pk} is already the champion")
        if version.status == ModelVersion.Status.RETIRED and not reason:
            raise ValueError("re-promoting a retired model needs a reason")
        previous = (
            ModelVersion.objects.select_for_update().filter(status=ModelVersion.Status.CHAMPION).first()
        )
        if previous is not None:
            previous.status = ModelVersion.Status.RETIRED
            previous.status_history = [
                *previous.status_history,
                _status_entry(ModelVersion.Status.RETIRED, actor, f"replaced by v{version.pk}: {reason}"),
            ]
            previous.save(update_fields=["status", "status_history"])
        old_status = version.status
        version.status = ModelVersion.Status.CHAMPION
        version.status_history = [*version.status_history, _status_entry(version.status, actor, reason)]
        # A promoted shadow or canary now serves everyone: its rollout ends (its flag stays, as
        # the audit trail's subject, but no longer picks anyone: only candidates run as canaries).
        version.rollout = ""
        version.save(update_fields=["status", "status_history", "rollout"])
        audit_log(
            actor=actor, action="model.promote", object_type="model_version", object_id=version.pk,
            old={"status": old_status, "champion": previous.pk if previous else None},
            new={"status": version.status, "reason": reason},
        )
    model_version.refresh_from_db()
    return version
