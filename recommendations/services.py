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
from recommendations.features import FEATURE_SPEC, LONGEST_WINDOW_DAYS, build_features
from recommendations.model_store import bundle_save
from recommendations.models import ModelVersion
from recommendations.selectors import member_frames_load, offer_terms_list
from recommendations.training import (
    ALGORITHMS,
    HGB_PARAMS,
    RESPONSE_PARAMS,
    RF_PARAMS,
    population_at,
    train_bundle,
    training_features,
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


def feature_schema(features: pd.DataFrame, *, drift_reference: pd.DataFrame, drift_reference_at: dict) -> dict:
    """Ordered feature schema with the range seen in training (what-if clamps to it) and the
    drift monitor's reference: decile bins ("psi_bins") of ``drift_reference``, which
    ``drift_reference_at`` describes (see drift_reference)."""
    from recommendations.monitoring import psi_reference

    rows = []
    for spec in FEATURE_SPEC:
        column = features[spec.name] if spec.name in features else pd.Series(dtype=float)
        reference = drift_reference[spec.name] if spec.name in drift_reference else pd.Series(dtype=float)
        rows.append({
            "name": spec.name,
            "min": float(column.min()) if len(column) else spec.min,
            "max": float(column.max()) if len(column) else spec.max,
            "text": spec.text,
            "actionable": spec.actionable,
            "protected": spec.protected,
            "psi_bins": psi_reference(reference.to_numpy(float)),
        })
    return {"features": rows, "drift_reference": drift_reference_at}


def drift_reference(
    members: pd.DataFrame, events: pd.DataFrame, *, as_of: date, t0: date, train_features: pd.DataFrame
) -> tuple[pd.DataFrame, dict]:
    """The population a model's runs are compared with for drift, and what it is.

    The training snapshot (features at t0 = as_of - horizon) when a full year of history lay
    behind it. Otherwise its year-long counts were annualized from a shorter history, and a
    handful of offers or comments scaled by 365/275 falls in other bins than whole counts do,
    so a program with one year of history would raise a drift alert on its first run: the
    reference is then the same members at as_of, as the model's first run sees them."""
    first_event = pd.to_datetime(events["occurred_at"], utc=True).min() if len(events) else None
    full_year = first_event is not None and first_event <= pd.Timestamp(
        t0 - timedelta(days=LONGEST_WINDOW_DAYS), tz="UTC")
    if full_year:
        return train_features, {"snapshot": "training", "at": t0.isoformat()}
    at = pd.Timestamp(as_of, tz="UTC")
    return build_features(population_at(members, events, at), events, at), {"snapshot": "as_of", "at": as_of.isoformat()}


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
    train_features = training_features(members, events, as_of=pd.Timestamp(as_of, tz="UTC"), horizon_days=horizon_days)
    reference, reference_at = drift_reference(members, events, as_of=as_of, t0=t0, train_features=train_features)
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
            feature_schema=feature_schema(train_features, drift_reference=reference, drift_reference_at=reference_at),
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
