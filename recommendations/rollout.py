"""Controlled rollout: feature flags, shadow and canary models, and their comparison.

Feature flags switch a new offer, a routing rule or a model on for a share of members and/or
segments (tier, region). A member is in a flag when the flag is enabled, the member matches
every listed segment, and hash(flag name, member pseudo_id) < share: the same member is in or
out on every run, and raising the share only adds members (no one flips back and forth).
django-waffle was considered; its flags decide per web request (cookie-kept percentages,
users and groups of the desk's staff), not per loyalty member and segment, so this is a
small model of our own (recommendations.models.FeatureFlag).

Models: a candidate can be a *shadow* (scored on every member of each run beside the
champion, stored in ShadowPrediction, never shown) or a *canary* (serves the members of its
model flag: their Recommendation is the canary's and records its version). For every member
the model that does not serve them is stored as a ShadowPrediction as well, so champion and
challenger are compared on the same members (rollout_compare).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from django.db import transaction
from django.db.models import Exists, OuterRef

from governance.audit import audit_log
from loyalty.errors import FieldErrors
from loyalty.models import Member, Offer
from recommendations.learning import hash_fraction
from recommendations.models import (
    FeatureFlag,
    ModelVersion,
    Outcome,
    Recommendation,
    RecommendationStatus,
    ScoringRun,
    ShadowPrediction,
)

SEGMENT_DIMENSIONS = ("tier", "region")
ROLLOUT_MODES = ("", "shadow", "canary")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class FlagInvalid(FieldErrors):
    """A flag or rollout change that cannot be saved."""


# ------------------------------------------------------------------------------ membership


@dataclass(frozen=True)
class MemberKeys:
    """What flag membership reads of each member, in a given member order."""

    pks: np.ndarray
    pseudo_ids: list[str]
    tier: np.ndarray
    region: np.ndarray

    def __len__(self) -> int:
        return len(self.pks)


def member_keys(member_pks: Sequence[int]) -> MemberKeys:
    """One query: pseudonymous id, tier and region of `member_pks`, in that order."""
    pks = [int(pk) for pk in member_pks]
    found = {
        pk: (str(pseudo), tier, region)
        for pk, pseudo, tier, region in Member.objects.filter(pk__in=pks).values_list(
            "pk", "pseudo_id", "tier", "region"
        ).iterator(chunk_size=20_000)
    }
    rows = [found.get(pk, ("", "", "")) for pk in pks]
    return MemberKeys(
        pks=np.asarray(pks, dtype=np.int64),
        pseudo_ids=[r[0] for r in rows],
        tier=np.asarray([r[1] for r in rows], dtype=object),
        region=np.asarray([r[2] for r in rows], dtype=object),
    )


def flag_members(flag: FeatureFlag, keys: MemberKeys) -> np.ndarray:
    """Which of `keys`' members are in `flag` (bool per member, same order)."""
    n = len(keys)
    if not flag.enabled or flag.share <= 0 or not n:
        return np.zeros(n, dtype=bool)
    mask = np.ones(n, dtype=bool)
    columns = {"tier": keys.tier, "region": keys.region}
    for dimension, values in (flag.segments or {}).items():
        mask &= np.isin(columns[dimension], list(values))
    # The salt is the flag's name: two flags at 10% pick different members.
    salt = f"flag:{flag.name}"
    for i in np.flatnonzero(mask):
        mask[i] = keys.pseudo_ids[i] != "" and hash_fraction(keys.pseudo_ids[i], salt) < flag.share
    return mask


def member_in_flag(*, flag_name: str, member: Member) -> bool:
    flag = FeatureFlag.objects.filter(name=flag_name).first()
    if flag is None:
        return False
    keys = MemberKeys(np.asarray([member.pk]), [str(member.pseudo_id)],
                      np.asarray([member.tier], dtype=object), np.asarray([member.region], dtype=object))
    return bool(flag_members(flag, keys)[0])


def offer_eligibility(*, flags: Sequence[FeatureFlag], offers: Sequence[Offer], keys: MemberKeys) -> np.ndarray | None:
    """(n members, n offers) bool: an offer behind a flag is only for the flag's members.
    None when no offer is behind a flag (every offer is open to everyone)."""
    by_code = {f.target: f for f in flags if f.kind == FeatureFlag.Kind.OFFER}
    gated = [j for j, offer in enumerate(offers) if offer.code in by_code]
    if not gated:
        return None
    eligible = np.ones((len(keys), len(offers)), dtype=bool)
    for j in gated:
        eligible[:, j] = flag_members(by_code[offers[j].code], keys)
    return eligible


def member_offer_eligibility(*, member_pk: int, offers: Sequence[Any]) -> np.ndarray | None:
    """One member's row of offer_eligibility (what-if scores a member as scoring does)."""
    flags = list(FeatureFlag.objects.filter(kind=FeatureFlag.Kind.OFFER))
    eligible = offer_eligibility(flags=flags, offers=offers, keys=member_keys([member_pk])) if flags else None
    return None if eligible is None else eligible[0]


def rule_flag_masks(member_pks: Sequence[int]) -> dict[str, np.ndarray]:
    """{rule kind: bool per member} for routing rules behind a flag: such a rule holds only
    for its flag's members (governance.routing.route_items). {} when no rule is flagged."""
    flags = list(FeatureFlag.objects.filter(kind=FeatureFlag.Kind.ROUTING_RULE))
    if not flags:
        return {}
    keys = member_keys(member_pks)
    return {flag.target: flag_members(flag, keys) for flag in flags}


# ------------------------------------------------------------------------------ switching


def _flag_state(flag: FeatureFlag | None) -> dict[str, Any] | None:
    if flag is None:
        return None
    return {"kind": flag.kind, "target": flag.target, "enabled": flag.enabled, "share": flag.share,
            "segments": flag.segments, "description": flag.description}


def _clean_flag(values: dict[str, Any], current: FeatureFlag | None) -> dict[str, Any]:
    from governance.routing import RULES, TIERS

    errors: dict[str, str] = {}
    kind = str(values.get("kind", current.kind if current else "")).strip()
    target = str(values.get("target", current.target if current else "")).strip()
    if kind not in FeatureFlag.Kind.values:
        errors["kind"] = f"one of {', '.join(FeatureFlag.Kind.values)}"
    elif kind == FeatureFlag.Kind.OFFER and not Offer.objects.filter(code=target).exists():
        errors["target"] = f"no offer with code {target!r}"
    elif kind == FeatureFlag.Kind.ROUTING_RULE and target not in RULES:
        errors["target"] = f"a routing rule: one of {', '.join(RULES)}"
    elif kind == FeatureFlag.Kind.MODEL and not (target.isdigit() and ModelVersion.objects.filter(pk=int(target)).exists()):
        # Any version: a promoted canary's flag can still be switched off. Only a candidate in
        # canary mode serves anyone (rollout_models).
        errors["target"] = f"no model version {target!r}"
    raw_share = values.get("share", current.share if current else 0.0)
    try:
        share = float(raw_share)
        if not 0.0 <= share <= 1.0:
            raise ValueError
    except (TypeError, ValueError):
        errors["share"] = f"a share between 0 and 1 (got {raw_share!r})"
        share = 0.0
    segments = values.get("segments", current.segments if current else {}) or {}
    clean_segments: dict[str, list[str]] = {}
    if not isinstance(segments, dict):
        errors["segments"] = 'an object such as {"tier": ["gold"], "region": ["north"]}'
    else:
        for dimension, listed in segments.items():
            items = [listed] if isinstance(listed, str) else listed
            if dimension not in SEGMENT_DIMENSIONS:
                errors[f"segments.{dimension}"] = f"segments are by {' or '.join(SEGMENT_DIMENSIONS)}"
            elif not isinstance(items, list) or not all(isinstance(v, str) and v.strip() for v in items):
                errors[f"segments.{dimension}"] = "a list of names"
            elif dimension == "tier" and (bad := [v for v in items if v not in TIERS]):
                errors["segments.tier"] = f"unknown tier(s) {', '.join(bad)}: use {', '.join(TIERS)}"
            elif items:
                clean_segments[dimension] = sorted({v.strip() for v in items})
    enabled = values.get("enabled", current.enabled if current else False)
    if isinstance(enabled, str):
        enabled = enabled.lower() in ("1", "true", "on", "yes")
    if errors:
        raise FlagInvalid(errors)
    return {"kind": kind, "target": target, "share": share, "segments": clean_segments, "enabled": bool(enabled),
            "description": str(values.get("description", current.description if current else ""))[:200]}


def flag_save(*, actor: Any, name: str, values: dict[str, Any]) -> FeatureFlag:
    """Create or change the flag `name` (kind, target, enabled, share, segments, description);
    every change is audited with its old and new state, in the same transaction."""
    name = (name or "").strip().lower()
    if not NAME_PATTERN.match(name):
        raise FlagInvalid({"name": "lowercase letters, digits, - and _ (at most 64)"})
    with transaction.atomic():
        current = FeatureFlag.objects.select_for_update().filter(name=name).first()
        clean = _clean_flag(values, current)
        if current is not None and (clean["kind"], clean["target"]) != (current.kind, current.target):
            raise FlagInvalid({"target": "a flag keeps its kind and target; create another flag"})
        clash = FeatureFlag.objects.filter(kind=clean["kind"], target=clean["target"]).exclude(name=name).first()
        if clash is not None:
            raise FlagInvalid({"target": f"{clean['kind']} {clean['target']} is already behind flag {clash.name}"})
        old = _flag_state(current)
        flag = current or FeatureFlag(name=name)
        for field_name, value in clean.items():
            setattr(flag, field_name, value)
        if old is not None and _flag_state(flag) == old:
            return flag
        flag.updated_by = actor if getattr(actor, "is_authenticated", False) else None
        flag.save()
        audit_log(actor=actor, action="flag.update" if current else "flag.create", object_type="feature_flag",
                  object_id=name, old=old, new=_flag_state(flag))
    return flag


def model_flag_name(model_version_id: int) -> str:
    return f"model-{model_version_id}-canary"


def model_rollout_set(
    *, actor: Any, model_version_id: int, mode: str, share: Any = None, segments: dict | None = None
) -> ModelVersion:
    """Put a candidate in shadow, in canary (serving `share` of the members in `segments`) or
    back off; audited. The canary's share is its model flag, switchable on the flags page too."""
    if mode not in ROLLOUT_MODES:
        raise FlagInvalid({"mode": "off, shadow or canary"})
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().filter(pk=model_version_id).first()
        if version is None:
            raise FlagInvalid({"model": f"model version {model_version_id} does not exist"})
        if mode and version.status != ModelVersion.Status.CANDIDATE:
            raise FlagInvalid({"model": f"v{version.pk} is {version.status}: only a candidate runs in {mode}"})
        other = ModelVersion.objects.filter(rollout="canary").exclude(pk=version.pk).first()
        if mode == "canary" and other is not None:
            raise FlagInvalid({"mode": f"v{other.pk} is the canary already: set it off or to shadow first"})
        flag_name = model_flag_name(version.pk)
        old = {"rollout": version.rollout, "flag": _flag_state(FeatureFlag.objects.filter(name=flag_name).first())}
        if mode == "canary":
            flag_save(actor=actor, name=flag_name, values={
                "kind": FeatureFlag.Kind.MODEL, "target": str(version.pk), "enabled": True,
                "share": share if share is not None else 0.0, "segments": segments or {},
                "description": f"canary of model v{version.pk}",
            })
        elif FeatureFlag.objects.filter(name=flag_name, enabled=True).exists():
            flag_save(actor=actor, name=flag_name, values={"enabled": False})
        version.rollout = mode
        version.save(update_fields=["rollout"])
        audit_log(actor=actor, action="model.rollout", object_type="model_version", object_id=version.pk, old=old,
                  new={"rollout": mode, "flag": _flag_state(FeatureFlag.objects.filter(name=flag_name).first())})
    return version


# ------------------------------------------------------------------------------ scoring hook


@dataclass
class ServedPart:
    """Members of a chunk served by one model: their Recommendation rows come from here."""

    model: ModelVersion
    features: pd.DataFrame
    batch: Any


@dataclass
class ChunkScores:
    served: list[ServedPart]
    shadow: list[ShadowPrediction]


def rollout_models(run: ScoringRun) -> tuple[ModelVersion | None, list[ModelVersion]]:
    """(the canary or None, every challenger in rollout) for a run with run.model_version."""
    challengers = list(
        ModelVersion.objects.filter(status=ModelVersion.Status.CANDIDATE, rollout__in=["shadow", "canary"])
        .exclude(pk=run.model_version_id).order_by("pk")
    )
    return next((m for m in challengers if m.rollout == "canary"), None), challengers


def chunk_scores(*, run: ScoringRun, bundle: Any, features: pd.DataFrame, offers: list[Offer], terms: list) -> ChunkScores:
    """Score a chunk's members for runs.chunk_score. Without flags or challengers this is one
    score_features call with the run's model (the plain path). With a canary, its flag's
    members are served by the canary, the rest by the run's model; every challenger, and the
    model not serving a member, is also scored for that member into ShadowPrediction.

    Flags and rollout modes are read per chunk: a switch during a run applies from the next
    chunk on, and a redelivered chunk is all-or-nothing (its rows commit together)."""
    from recommendations.model_store import bundle_load
    from recommendations.scoring import score_features

    canary, challengers = rollout_models(run)
    flags = list(FeatureFlag.objects.all())
    keys = member_keys(features.index) if flags else None
    eligible = offer_eligibility(flags=flags, offers=offers, keys=keys) if keys is not None else None
    n = len(features)
    canary_mask = np.zeros(n, dtype=bool)
    if canary is not None and keys is not None:
        flag = next((f for f in flags if f.kind == FeatureFlag.Kind.MODEL and f.target == str(canary.pk)), None)
        canary_mask = flag_members(flag, keys) if flag is not None else canary_mask

    def score(model: ModelVersion, mask: np.ndarray, explain: bool) -> tuple[pd.DataFrame, Any]:
        model_bundle = bundle if model.pk == run.model_version_id else bundle_load(
            model.pk, model.artifact_path, model.sha256
        )
        part = features[mask]
        return part, score_features(
            model_bundle, part, terms, eligible=None if eligible is None else eligible[mask], explain=explain
        )

    served: list[ServedPart] = []
    shadow: list[ShadowPrediction] = []
    for model in [run.model_version, *challengers]:
        if model.pk == run.model_version_id:
            serves = ~canary_mask
        else:
            serves = canary_mask if model is canary else np.zeros(n, dtype=bool)
        if serves.any():
            part, batch = score(model, serves, explain=True)
            served.append(ServedPart(model=model, features=part, batch=batch))
        if challengers and (~serves).any():
            part, batch = score(model, ~serves, explain=False)
            shadow.extend(_shadow_rows(run=run, model=model, member_pks=part.index, batch=batch, offers=offers))
    return ChunkScores(served=served, shadow=shadow)


def _shadow_rows(*, run: ScoringRun, model: ModelVersion, member_pks: Any, batch: Any,
                 offers: list[Offer]) -> list[ShadowPrediction]:
    offer_ids = [offer.pk for offer in offers]
    return [
        ShadowPrediction(
            run_id=run.pk, member_id=int(pk), model_version_id=model.pk,
            probability=float(batch.probability[i]), p_low=float(batch.p_low[i]), p_high=float(batch.p_high[i]),
            offer_id=offer_ids[j] if (j := int(batch.offer_index[i])) >= 0 else None,
            expected_value=float(batch.expected_value[i]),
        )
        for i, pk in enumerate(member_pks)
    ]


def shadow_predictions_insert(*, rows: list[ShadowPrediction]) -> None:
    """Inside the chunk's transaction; a redelivered chunk writes nothing twice."""
    if rows:
        ShadowPrediction.objects.bulk_create(rows, batch_size=2000, ignore_conflicts=True)


# ------------------------------------------------------------------------------ comparison


def comparison_run(challenger: ModelVersion) -> ScoringRun | None:
    """The latest succeeded run that scored the challenger (served or in shadow)."""
    return (
        ScoringRun.objects.filter(status=ScoringRun.Status.SUCCEEDED)
        .filter(
            Exists(ShadowPrediction.objects.filter(run=OuterRef("pk"), model_version=challenger))
            | Exists(Recommendation.objects.filter(run=OuterRef("pk"), model_version=challenger))
        )
        .select_related("model_version").order_by("-pk").first()
    )


def _predictions(run: ScoringRun, model_id: int) -> pd.DataFrame:
    """member -> (probability, offer) of one model in one run, served or shadow."""
    columns = ["member_id", "probability", "offer_id"]
    served = Recommendation.objects.filter(run=run, model_version_id=model_id).values_list(*columns)
    shadow = ShadowPrediction.objects.filter(run=run, model_version_id=model_id).values_list(*columns)
    frame = pd.DataFrame.from_records([*served.iterator(chunk_size=20_000), *shadow.iterator(chunk_size=20_000)],
                                      columns=columns)
    frame["offer_id"] = frame["offer_id"].fillna(-1).astype(np.int64)
    return frame.drop_duplicates("member_id")


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def _interval(values: list[float], level: float) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if len(values) < 20:
        return None, None
    tail = (1.0 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def _override_rate(run: ScoringRun, model_id: int) -> dict[str, Any]:
    statuses = list(Recommendation.objects.filter(
        run=run, model_version_id=model_id,
        status__in=[RecommendationStatus.APPROVED, RecommendationStatus.OVERRIDDEN],
    ).values_list("status", flat=True))
    overridden = sum(s == RecommendationStatus.OVERRIDDEN for s in statuses)
    return {"reviewed": len(statuses), "overridden": overridden,
            "rate": overridden / len(statuses) if statuses else None}


def rollout_compare(
    *, challenger_id: int, run_id: int | None = None, n_boot: int = 200, level: float = 0.9, seed: int = 0
) -> dict[str, Any]:
    """Champion (the run's model) and challenger on the SAME members of one run: agreement on
    the recommended offer, AUC and Brier against realized engagement (Outcome) with paired
    bootstrap intervals, override rates (canary only: shadow items are never reviewed) and
    the incremental engagement lift against the randomized holdout per served model."""
    from sklearn.metrics import brier_score_loss

    from recommendations.outcomes import holdout_lift

    challenger = ModelVersion.objects.filter(pk=challenger_id).first()
    if challenger is None:
        raise FlagInvalid({"model": f"model version {challenger_id} does not exist"})
    run = (ScoringRun.objects.select_related("model_version").filter(pk=run_id).first() if run_id
           else comparison_run(challenger))
    result: dict[str, Any] = {"challenger": challenger.pk, "mode": challenger.rollout or "off", "run": None}
    if run is None:
        return result
    champion_id = run.model_version_id
    both = _predictions(run, champion_id).merge(
        _predictions(run, challenger.pk), on="member_id", suffixes=("_champion", "_challenger")
    )
    result.update(run=run.pk, champion=champion_id, members=int(len(both)), level=level)
    if not len(both):
        return result
    result["agreement"] = float((both["offer_id_champion"] == both["offer_id_challenger"]).mean())
    engaged = pd.DataFrame.from_records(
        Outcome.objects.filter(run=run, engaged__isnull=False).values_list("member_id", "engaged"),
        columns=["member_id", "engaged"],
    )
    known = both.merge(engaged, on="member_id")
    result["members_with_outcome"] = int(len(known))
    metrics: dict[str, dict[str, Any]] = {}
    if len(known):
        y = known["engaged"].astype(int).to_numpy()
        rng = np.random.default_rng(seed)
        boots = [rng.integers(0, len(y), len(y)) for _ in range(n_boot)]
        for name in ("champion", "challenger"):
            p = known[f"probability_{name}"].to_numpy(float)
            auc_low, auc_high = _interval([_auc(y[b], p[b]) for b in boots], level)
            brier_low, brier_high = _interval([float(np.mean((p[b] - y[b]) ** 2)) for b in boots], level)
            metrics[name] = {"auc": _auc(y, p), "auc_low": auc_low, "auc_high": auc_high,
                             "brier": float(brier_score_loss(y, p)), "brier_low": brier_low, "brier_high": brier_high}
    result["metrics"] = metrics
    canary = challenger.rollout == "canary" or Recommendation.objects.filter(run=run, model_version=challenger).exists()
    result["overrides"] = {
        "champion": _override_rate(run, champion_id),
        "challenger": _override_rate(run, challenger.pk) if canary else None,
    }
    result["lift"] = {
        "champion": holdout_lift(run_id=run.pk, model_version_id=champion_id),
        "challenger": holdout_lift(run_id=run.pk, model_version_id=challenger.pk) if canary else None,
    }
    return result


def rollout_overview() -> list[dict[str, Any]]:
    """Every candidate in shadow or canary with its comparison, for the models page."""
    rows = []
    for model in ModelVersion.objects.filter(status=ModelVersion.Status.CANDIDATE).exclude(rollout="").order_by("pk"):
        flag = FeatureFlag.objects.filter(name=model_flag_name(model.pk)).first()
        rows.append({"model": model, "flag": flag, "compare": rollout_compare(challenger_id=model.pk)})
    return rows
