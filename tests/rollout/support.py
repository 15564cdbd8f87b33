"""A simulated program with a champion and a genuinely different challenger (another seed),
each trained at most once per test session (tests.recommendations.scoring_support)."""

from __future__ import annotations

from typing import Any

from recommendations.models import ModelVersion
from tests.recommendations.scoring_support import COPIED_FIELDS, champion_model, program_in_db

MEMBERS, SEED, CHUNK = 900, 11, 250
_CHALLENGERS: dict[tuple[int, int], dict[str, Any]] = {}


def challenger_model(program: Any, *, members: int, seed: int) -> ModelVersion:
    """A candidate trained with another seed: it disagrees with the champion on some members."""
    from recommendations.services import model_version_train

    key = (members, seed)
    if key not in _CHALLENGERS:
        model = model_version_train(as_of=program.as_of, horizon_days=program.horizon_days, seed=seed + 1000)
        model.refresh_from_db()
        assert model.status == ModelVersion.Status.CANDIDATE
        _CHALLENGERS[key] = {field: getattr(model, field) for field in COPIED_FIELDS}
        return model
    return ModelVersion.objects.create(status=ModelVersion.Status.CANDIDATE, **_CHALLENGERS[key])


def program_with_challenger(*, members: int = MEMBERS, seed: int = SEED) -> tuple[Any, ModelVersion, ModelVersion]:
    program = program_in_db(members=members, seed=seed)
    champion = champion_model(program, members=members, seed=seed)
    return program, champion, challenger_model(program, members=members, seed=seed)
