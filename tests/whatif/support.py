"""A small simulated program in the database and a real model trained on it, once per session.

Later tests (whose database was rolled back or flushed) re-register the same artifact
(path + sha256) as a new champion ModelVersion row, the way tests/recommendations does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loyalty.models import Member
from recommendations.models import ModelVersion

MEMBERS = 400
SEED = 5
COPIED = (
    "algorithm", "artifact_path", "sha256", "feature_schema", "as_of", "horizon_days",
    "train_start", "params", "metrics", "offer_policy",
)
_CACHE: dict[str, Any] = {}


@dataclass
class WhatIfWorld:
    program: Any
    model: ModelVersion
    member: Member  # a consenting member with purchases


def whatif_world() -> WhatIfWorld:
    from loyalty.simulator import program_write_db, simulate_program
    from recommendations.services import model_version_train

    if "program" not in _CACHE:
        _CACHE["program"] = simulate_program(members=MEMBERS, seed=SEED)
    program = _CACHE["program"]
    program_write_db(program, replace=True)
    if "model" not in _CACHE:
        model = model_version_train(as_of=program.as_of, horizon_days=program.horizon_days, seed=SEED)
        _CACHE["model"] = {f: getattr(model, f) for f in COPIED}
    else:
        model = ModelVersion.objects.create(status=ModelVersion.Status.CHAMPION, **_CACHE["model"])
    member = (
        Member.objects.filter(consent_profiling=True, erased_at__isnull=True, events__kind="purchase")
        .distinct().order_by("pk").first()
    )
    return WhatIfWorld(program=program, model=model, member=member)
