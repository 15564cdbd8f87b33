"""What data people take away: the feedback the next model learns from, the filtered queue
and model artifacts (a run's recommendations: runs.run_export).

Every export is audited with counts only, never member data. Member ids are the external ids
as imported, as in run_export (an erased member's is already a keyed token); the feedback
leaves erased members out, and no free text leaves (managers' reason texts stay in the desk).
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import pandas as pd

from governance.audit import audit_log
from loyalty.models import Member
from recommendations.features import FEATURE_NAMES
from recommendations.learning import labeled_examples_load
from recommendations.model_store import ArtifactIntegrityError, file_sha256
from recommendations.models import ModelVersion
from recommendations.queue import QUEUE_EXPORT_COLUMNS, QueueFilters, queue_export_rows
from recommendations.tabular import frame_write, rows_write

# One row per label, as recommendations.learning.LabeledExamples holds it, then the features.
FEEDBACK_COLUMNS = (
    "recommendation_id", "member_id", "model_version_id", "split", "source", "weight",
    "engaged", "offer_code", "responded", "recommended_offer_code", "decision_action", "label_offer_code",
)


class ExportError(Exception):
    """The model artifact asked for cannot be served (no such version, file missing)."""


def feedback_frame() -> pd.DataFrame:
    """The labeled rows retraining learns from (split "train", weight > 0) and gates the
    challenger on (split "evaluation"), each with the feature snapshot the manager saw.

    ``source``: outcome (realized), manager (the manager's engagement judgement) or
    manager_choice (an override's response-rate lesson: two rows, responded 1 and 0, whose
    weights split the choice weight). See docs/learning-loop.md.
    """
    examples = labeled_examples_load()
    parts = [frame.assign(split=split) for split, frame in (("train", examples.train),
                                                            ("evaluation", examples.evaluation)) if len(frame)]
    if not parts:
        return pd.DataFrame(columns=[*FEEDBACK_COLUMNS, *FEATURE_NAMES])
    frame = pd.concat(parts, ignore_index=True)
    external = dict(Member.objects.filter(pk__in=frame["member_pk"].unique().tolist(), erased_at__isnull=True)
                    .values_list("pk", "member_id"))
    frame = frame[frame["member_pk"].isin(external)].copy()
    frame["member_id"] = frame["member_pk"].map(external)
    return frame[[*FEEDBACK_COLUMNS, *FEATURE_NAMES]].reset_index(drop=True)


def queue_export(*, user: Any, filters: QueueFilters, fmt: str, out: IO) -> int:
    """The filtered queue as this user sees it, every page, as csv or parquet; audited with
    the filters and the count."""
    # Streamed: a filtered queue can hold a million items.
    count = rows_write(queue_export_rows(user=user, filters=filters), columns=QUEUE_EXPORT_COLUMNS, fmt=fmt, out=out)
    audit_log(actor=user, action="export.queue", object_type="queue", object_id="filtered",
              new={"format": fmt, "rows": count, "filters": filters.to_params()})
    return count


def feedback_export(*, fmt: str, out: IO, actor: Any = None) -> int:
    """Write feedback_frame as csv (text stream) or parquet (binary stream); returns the rows."""
    frame = feedback_frame()  # in memory anyway: retraining loads the same rows
    frame_write(frame, fmt=fmt, out=out)
    audit_log(actor=actor, action="export.feedback", object_type="feedback", object_id="all",
              new={"format": fmt, "rows": len(frame),
                   "by_source": {str(k): int(v) for k, v in frame["source"].value_counts().items()}})
    return len(frame)


def model_artifact(*, model_version_id: int, actor: Any = None) -> tuple[Path, str, str]:
    """(path, download name, sha256) of a model version's artifact after checking it is the file the
    version recorded (sha256); audited. The artifact is a joblib file of
    recommendations.scoring.ModelBundle: load it with this code base's version."""
    try:
        mv = ModelVersion.objects.get(pk=model_version_id)
    except ModelVersion.DoesNotExist as exc:
        raise ExportError(f"model version {model_version_id} does not exist") from exc
    path = Path(mv.artifact_path)
    if not path.is_file():
        raise ExportError(f"the artifact of model v{mv.pk} is missing at {path.name}")
    if file_sha256(path) != mv.sha256:
        raise ArtifactIntegrityError(f"the artifact of model v{mv.pk} does not match its recorded sha256")
    audit_log(actor=actor, action="export.model", object_type="model_version", object_id=mv.pk,
              new={"sha256": mv.sha256, "bytes": path.stat().st_size})
    return path, f"model-v{mv.pk}-{mv.sha256[:12]}.joblib", mv.sha256
