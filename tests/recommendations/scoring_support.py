"""Shared set-up for the scoring-run tests: a simulated program in the database and a model.

Training is the slow part, so a model is trained once per (program size, seed) per test
session: the first test trains it; later tests, whose database was rolled back or flushed,
re-register the same artifact file (path + sha256) as a new champion ModelVersion row.
"""

from __future__ import annotations

from typing import Any

from loyalty.models import Member
from recommendations.models import ModelVersion

_ARTIFACTS: dict[tuple[int, int], dict[str, Any]] = {}
_PROGRAMS: dict[tuple[int, int], Any] = {}

COPIED_FIELDS = (
    "algorithm", "artifact_path", "sha256", "feature_schema", "as_of", "horizon_days",
    "train_start", "params", "metrics", "offer_policy",
)


def simulated_program(*, members: int, seed: int) -> Any:
    """The simulated program (frames and ground truth), simulated once per session."""
    from loyalty.simulator import simulate_program

    key = (members, seed)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = simulate_program(members=members, seed=seed)
    return _PROGRAMS[key]


def program_in_db(*, members: int, seed: int) -> Any:
    """Write the simulated program to the (empty) test database and return it."""
    from loyalty.simulator import program_write_db

    program = simulated_program(members=members, seed=seed)
    program_write_db(program, replace=True)
    assert Member.objects.count() == members
    return program


def champion_model(program: Any, *, members: int, seed: int) -> ModelVersion:
    """A champion model for the program in the database; trained at most once per session."""
    from recommendations.services import model_version_train

    key = (members, seed)
    if key not in _ARTIFACTS:
        model = model_version_train(as_of=program.as_of, horizon_days=program.horizon_days, seed=seed)
        _ARTIFACTS[key] = {field: getattr(model, field) for field in COPIED_FIELDS}
        model.refresh_from_db()
        assert model.status == ModelVersion.Status.CHAMPION
        return model
    return ModelVersion.objects.create(status=ModelVersion.Status.CHAMPION, **_ARTIFACTS[key])


def consenting_pks() -> set[int]:
    return set(Member.objects.filter(consent_profiling=True).values_list("pk", flat=True))
