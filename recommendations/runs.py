"""Scoring runs: one run = many idempotent chunks of members, scored by Celery workers.

Correctness comes from Postgres, not from Celery delivering a message exactly once:

* a chunk is claimed with a conditional UPDATE (`filter(...).update(...)`, then the count);
* recommendations are inserted with `ignore_conflicts` against the unique (run, member)
  constraint, so a chunk executed twice writes each row once;
* a chunk is marked done, and the run's counters move, in the same transaction as its rows,
  again with a conditional UPDATE, so counters move exactly once per chunk;
* the run succeeds with a conditional UPDATE on `chunks_done = chunks_total`, exactly once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from governance.audit import audit_log
from governance.services import auto_approvals_record
from loyalty.models import Member, Offer
from recommendations.models import (
    Decision,
    ModelVersion,
    Recommendation,
    RecommendationStatus,
    ScoringChunk,
    ScoringRun,
    model_offer_code_picked,
)
from recommendations.tabular import rows_write

if TYPE_CHECKING:
    from governance.routing import PolicyConfig

logger = logging.getLogger(__name__)

# A chunk "running" for longer than this has lost its worker: `run_resume` hands it out again.
# Re-running a chunk that is in fact still alive costs time, never correctness.
DEFAULT_STALE_AFTER = timedelta(minutes=15)

EXPORT_COLUMNS = [
    "member_id", "offer_code", "probability", "interval_low", "interval_high",
    "expected_value", "ev_low", "ev_high", "status", "model_version",
    # offer_code is what the desk recommends; where it recalled a manager's earlier choice
    # (recalled true), model_offer_code is the model's own pick that the choice replaced.
    "model_offer_code", "recalled",
]
ALTERNATIVE_KEYS = ("p_response", "p_low", "p_high", "ev", "ev_low", "ev_high")


class ScoringError(Exception):
    """A scoring request that cannot be carried out, with a message for the operator."""


# --------------------------------------------------------------------------------------------
# Priority and route: one function each, used by every chunk.
# --------------------------------------------------------------------------------------------


def recommendation_priority(
    *,
    probability: np.ndarray | float,
    p_low: np.ndarray | float,
    p_high: np.ndarray | float,
    offer_cost: np.ndarray | float,
    member_value: np.ndarray | float,
) -> np.ndarray:
    """What a wrong decision on this recommendation would cost, in program currency.

        priority = offer_cost
                 + member_value * (1 - probability)     # value at risk: churn risk x value
                 + member_value * (p_high - p_low)      # how unsure the model is, in value

    * offer_cost: money spent if the recommended offer is sent to someone who did not need it
      (0 when the recommendation is "no action").
    * member_value: what the member is worth to the program (trailing spend; see
      `member_values`); a valuable member likely to leave is worth a manager's attention first.
    * the interval width turns uncertainty into value: a wide 90% interval on a valuable member
      means the model can be badly wrong, which is exactly what a human should look at.

    Works elementwise on arrays; the review queue sorts by it, highest first.
    """
    at_risk, uncertainty = _priority_terms(probability=probability, p_low=p_low, p_high=p_high, member_value=member_value)
    return np.asarray(offer_cost, np.float64) + at_risk + uncertainty


def _priority_terms(*, probability, p_low, p_high, member_value) -> tuple[np.ndarray, np.ndarray]:
    """(value at risk, uncertainty in value) of recommendation_priority."""
    width = np.clip(np.asarray(p_high, np.float64) - np.asarray(p_low, np.float64), 0.0, 1.0)
    value = np.maximum(np.asarray(member_value, np.float64), 0.0)
    churn = np.clip(1.0 - np.asarray(probability, dtype=np.float64), 0.0, 1.0)
    return value * churn, value * width


def recommendation_priority_parts(rec: Recommendation, features: pd.DataFrame) -> dict[str, float] | None:
    """A stored recommendation's cost of a wrong decision split into its terms, for the people
    who read it: member value (from the feature snapshot it was scored on), value at risk,
    uncertainty, and the offer cost as what remains (the cost when it was scored, whatever the
    catalog says now). None when the snapshot has no member value or the parts do not add up
    (a priority from another formula)."""
    if "spend_365d" not in features:
        return None
    value = float(member_values(features)[0])
    at_risk, uncertainty = (float(t) for t in _priority_terms(
        probability=rec.probability, p_low=rec.p_low, p_high=rec.p_high, member_value=value))
    offer_cost = float(rec.priority) - at_risk - uncertainty
    if offer_cost < -0.005:
        return None
    return {"member_value": max(value, 0.0), "value_at_risk": at_risk, "uncertainty": uncertainty,
            "offer_cost": max(offer_cost, 0.0), "interval_width": min(max(rec.p_high - rec.p_low, 0.0), 1.0)}


def recommendation_route(
    *,
    run: ScoringRun,
    member_ids: Any,
    offers: list[Offer | None],
    batch: Any,
    recall: EarlierChoices,
    model: ModelVersion | None = None,
) -> Any:
    """Who must look at each recommendation of a chunk: governance.routing under the
    escalation policy in force. Returns a governance.routing.RoutingResult (route
    "auto" | "review" | "senior" and human-readable reasons per item)."""
    from governance.services import routes_for_scoring

    return routes_for_scoring(
        run_id=run.pk,
        model_version=model or run.model_version,
        member_ids=[int(m) for m in member_ids],
        offers=offers,
        probability=np.asarray(batch.probability, np.float64),
        p_low=np.asarray(batch.p_low, np.float64),
        p_high=np.asarray(batch.p_high, np.float64),
        expected_value=recall.expected_value,
        model_offers=recall.model_offers,
        turned_down=recall.turned_down,
        config=recall.policy,
        as_of=run.as_of,
    )


@dataclass
class EarlierChoices:
    """A chunk's picks after recalling the managers' earlier choices (see earlier_choices_recall)."""

    offer_index: np.ndarray  # into the active offers, -1 = no action: what the desk recommends
    expected_value: np.ndarray
    ev_low: np.ndarray
    ev_high: np.ndarray
    recalled_decision_id: np.ndarray  # the override recalled, -1 where the model's pick stands
    model_offer_id: np.ndarray  # the model's own pick where a choice was recalled, else -1
    model_offers: list[Offer | None]  # the model's own picks
    turned_down: list[Any]  # per item, the standing override of the model's pick, or None
    # The escalation policy in force, read once: the recall's window and the routing of the
    # same chunk come from one version even if an admin saves a new one meanwhile.
    policy: PolicyConfig


def earlier_choices_recall(*, run: ScoringRun, member_ids: Any, batch: Any, offers: list[Offer]) -> EarlierChoices:
    """Where the model picks again the offer a manager's standing override turned down for the
    member on their latest recommendation of it (selectors.turned_down_before), recommend that
    manager's choice instead, at the model's own figures for it (its alternatives row).

    A manager who corrected the desk for a member should not have to correct it again next
    month; the retrained model learns from the override too, but slowly (docs/learning-loop.md).
    The routing rule ``rejected_before`` says how long a manager's turn-down holds and sends
    the recalled items to a person: no recall when the rule is off or the override is older
    than its threshold. A choice that is no longer an active offer is not recalled: the
    model's pick stands, and the rule applies. One query for the chunk (and the policy's,
    which routing reuses)."""
    from governance.selectors import policy_config_active, rejections_held
    from recommendations.selectors import turned_down_before

    policy = policy_config_active()
    picks = np.asarray(batch.offer_index, dtype=np.int64)
    model_offers = [offers[j] if j >= 0 else None for j in picks]
    n = len(picks)
    turned = turned_down_before(
        run_ids=[run.pk] * n, member_ids=[int(m) for m in member_ids],
        offer_ids=[o.pk if o else None for o in model_offers],
    )
    held = rejections_held(policy, turned, run.as_of)
    index = picks.copy()
    expected = [np.array(batch.expected_value, np.float64), np.array(batch.ev_low, np.float64),
                np.array(batch.ev_high, np.float64)]
    recalled = np.full(n, -1, dtype=np.int64)
    position = {offer.pk: j for j, offer in enumerate(offers)}
    for i, decision in enumerate(turned):
        if not held[i]:
            continue
        j = -1 if decision.chosen_offer_id is None else position.get(decision.chosen_offer_id)
        if j is None:
            continue
        index[i], recalled[i] = j, decision.pk
        for column, key in zip(expected, ("ev", "ev_low", "ev_high"), strict=True):
            column[i] = float(batch.alternatives[i, j, ALTERNATIVE_KEYS.index(key)]) if j >= 0 else 0.0
    return EarlierChoices(
        offer_index=index, expected_value=expected[0], ev_low=expected[1], ev_high=expected[2],
        recalled_decision_id=recalled, model_offers=model_offers, turned_down=turned, policy=policy,
        model_offer_id=np.where(recalled >= 0, np.array([o.pk if o else -1 for o in model_offers], np.int64), -1),
    )


# --------------------------------------------------------------------------------------------
# Starting and resuming runs
# --------------------------------------------------------------------------------------------


def member_pk_ranges(*, chunk_size: int) -> list[tuple[int, int, int]]:
    """(pk_from, pk_to inclusive, member count) slices of all members, `chunk_size` per slice.

    One query numbers the primary keys in order and groups them by slice in the database,
    so 1M members cost one index scan and 1M/chunk_size rows back, not 1M Python ints.
    """
    if chunk_size < 1:
        raise ScoringError("chunk size must be at least 1")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT MIN(id), MAX(id), COUNT(*) FROM ("
            f"  SELECT id, (ROW_NUMBER() OVER (ORDER BY id) - 1) / %s AS slice FROM {Member._meta.db_table}"
            ") numbered GROUP BY slice ORDER BY slice",
            [int(chunk_size)],
        )
        return [(int(lo), int(hi), int(count)) for lo, hi, count in cursor.fetchall()]


def _model_for_run(model_version_id: int | None) -> ModelVersion:
    if model_version_id is None:
        model = ModelVersion.objects.filter(status=ModelVersion.Status.CHAMPION).first()
        if model is None:
            raise ScoringError("no champion model: train one first, or pass --model ID")
        return model
    try:
        return ModelVersion.objects.get(pk=model_version_id)
    except ModelVersion.DoesNotExist:
        raise ScoringError(f"model version {model_version_id} does not exist") from None


def _enqueue_chunks(chunk_ids: list[int], *, reclaim: bool) -> None:
    """Send one task per chunk. Runs after commit, so a worker always finds its chunk."""
    from recommendations.tasks import score_chunk

    for chunk_id in chunk_ids:
        # One chunk failing in eager mode must not stop the others from being sent: it marks
        # itself (and the run) failed, and `run_resume` retries it.
        try:
            score_chunk.delay(chunk_id, reclaim=reclaim)
        except Exception:  # noqa: BLE001 - recorded on the chunk by the task's failure hook
            logger.exception("scoring chunk %s failed", chunk_id)


def run_start(
    *,
    as_of: date,
    model_version_id: int | None = None,
    chunk_size: int = 10_000,
    actor: AbstractBaseUser | None = None,
) -> ScoringRun:
    """Create a run and its chunks in one transaction; enqueue one task per chunk on commit.

    With the champion unless `model_version_id` is given. Without a broker (the embedded
    default) the tasks run in-process right after the commit, so the run is finished when
    this returns.
    """
    model = _model_for_run(model_version_id)
    with transaction.atomic():
        ranges = member_pk_ranges(chunk_size=chunk_size)
        run = ScoringRun.objects.create(
            model_version=model,
            as_of=as_of,
            chunk_size=chunk_size,
            chunks_total=len(ranges),
            members_total=sum(count for _, _, count in ranges),
            requested_by=actor if actor is not None and actor.is_authenticated else None,
        )
        chunks = ScoringChunk.objects.bulk_create(
            [
                ScoringChunk(run=run, index=index, member_pk_from=lo, member_pk_to=hi)
                for index, (lo, hi, _) in enumerate(ranges)
            ]
        )
        if not chunks:
            now = timezone.now()
            ScoringRun.objects.filter(pk=run.pk).update(
                status=ScoringRun.Status.SUCCEEDED, started_at=now, finished_at=now
            )
        audit_log(
            actor=actor,
            action="scoring.run_start",
            object_type="scoring_run",
            object_id=run.pk,
            new={
                "model_version": model.pk,
                "as_of": as_of.isoformat(),
                "chunks": len(chunks),
                "members": run.members_total,
            },
        )
        chunk_ids = [chunk.pk for chunk in chunks]
        transaction.on_commit(lambda: _enqueue_chunks(chunk_ids, reclaim=False))
    run.refresh_from_db()
    return run


def run_resume(
    *,
    run_id: int,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    actor: AbstractBaseUser | None = None,
) -> list[int]:
    """Re-enqueue the chunks of a run that are pending, failed, or running for longer than
    `stale_after` (their worker died, or Redis lost the message). Returns the chunk ids sent.

    Safe to call while workers are alive: a chunk executed twice writes its rows once.
    A failed run goes back to running; a run whose chunks are all done succeeds.
    """
    try:
        run = ScoringRun.objects.get(pk=run_id)
    except ScoringRun.DoesNotExist:
        raise ScoringError(f"scoring run {run_id} does not exist") from None
    if run.status == ScoringRun.Status.SUCCEEDED:
        return []
    stale_before = timezone.now() - stale_after
    with transaction.atomic():
        chunk_ids = list(
            ScoringChunk.objects.filter(run_id=run_id)
            .filter(
                Q(status__in=[ScoringChunk.Status.PENDING, ScoringChunk.Status.FAILED])
                | Q(status=ScoringChunk.Status.RUNNING, started_at__lte=stale_before)
            )
            .order_by("index")
            .values_list("pk", flat=True)
        )
        ScoringRun.objects.filter(pk=run_id, status=ScoringRun.Status.FAILED).update(
            status=ScoringRun.Status.RUNNING if run.started_at else ScoringRun.Status.PENDING,
            error="",
            finished_at=None,
        )
        audit_log(
            actor=actor,
            action="scoring.run_resume",
            object_type="scoring_run",
            object_id=run_id,
            old={"status": run.status, "chunks_done": run.chunks_done},
            new={"chunks_requeued": len(chunk_ids)},
        )
        _run_finish_if_complete(run_id)
        transaction.on_commit(lambda: _enqueue_chunks(chunk_ids, reclaim=True))
    return chunk_ids


# --------------------------------------------------------------------------------------------
# One chunk
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkOutcome:
    chunk_id: int
    claimed: bool
    rows_written: int = 0
    skipped_no_consent: int = 0
    run_finished: bool = False
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_cpu_seconds: dict[str, float] = field(default_factory=dict)
    stage_db_cpu_seconds: dict[str, float] = field(default_factory=dict)


def worker_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def chunk_claim(*, chunk_id: int, reclaim: bool = False) -> bool:
    """Take a chunk for this process. False when another attempt finished (or holds) it.

    Pending and failed chunks are always claimable. A "running" chunk is claimable only by a
    redelivery, a retry or a resume (`reclaim`): the attempt that marked it running is dead
    or gave up. Two live attempts on one chunk are harmless, only wasteful.
    """
    statuses = [ScoringChunk.Status.PENDING, ScoringChunk.Status.FAILED]
    if reclaim:
        statuses.append(ScoringChunk.Status.RUNNING)
    now = timezone.now()
    with transaction.atomic():
        claimed = ScoringChunk.objects.filter(pk=chunk_id, status__in=statuses).update(
            status=ScoringChunk.Status.RUNNING,
            attempts=F("attempts") + 1,
            started_at=now,
            worker=worker_label(),
        )
        if claimed:
            run_id = ScoringChunk.objects.values_list("run_id", flat=True).get(pk=chunk_id)
            ScoringRun.objects.filter(pk=run_id, status=ScoringRun.Status.PENDING).update(
                status=ScoringRun.Status.RUNNING, started_at=now
            )
    return bool(claimed)


def offers_active() -> tuple[list[Offer], list[Any]]:
    """Active offers and the engine's terms for them, in the same order (the engine's selector
    decides which offers are scored: active ones, by code, without the no-action pseudo offer)."""
    from recommendations.selectors import offer_terms_list

    terms = offer_terms_list(active_only=True)
    by_code = Offer.objects.in_bulk([term.code for term in terms], field_name="code")
    return [by_code[term.code] for term in terms], terms


def chunk_score(*, chunk_id: int, reclaim: bool = False) -> ChunkOutcome:
    """Score one chunk: claim, load, build features, score, write, mark done. Idempotent."""
    from recommendations.features import build_features
    from recommendations.model_store import bundle_load
    from recommendations.rollout import chunk_scores, shadow_predictions_insert
    from recommendations.selectors import member_frames_load

    if not chunk_claim(chunk_id=chunk_id, reclaim=reclaim):
        return ChunkOutcome(chunk_id=chunk_id, claimed=False)
    clock = StageClock()
    chunk = ScoringChunk.objects.select_related("run__model_version").get(pk=chunk_id)
    run = chunk.run
    model = run.model_version
    bundle = bundle_load(model.pk, model.artifact_path, model.sha256)
    as_of = pd.Timestamp(run.as_of)

    members_df, events_df = member_frames_load(
        as_of=run.as_of, pk_from=chunk.member_pk_from, pk_to=chunk.member_pk_to, consenting_only=True
    )
    # Erased members count as not consenting: their profile may no longer be processed.
    skipped = Member.objects.filter(pk__gte=chunk.member_pk_from, pk__lte=chunk.member_pk_to).filter(
        Q(consent_profiling=False) | Q(erased_at__isnull=False)
    ).count()
    clock.lap("load")
    # (serving model, its members' rows): one part unless a canary serves some members.
    rows: list[tuple[ModelVersion, RecommendationColumns]] = []
    shadow: list = []
    if len(members_df):
        features = build_features(members_df, events_df, as_of)
        del members_df, events_df
        clock.lap("features")
        offers, terms = offers_active()
        # Controlled rollout (recommendations.rollout): offer flags, canary and shadow models.
        scores = chunk_scores(run=run, bundle=bundle, features=features, offers=offers, terms=terms)
        clock.lap("score")
        rows = [
            (part.model, _recommendations_build(
                run=run, model=part.model, features=part.features, batch=part.batch, offers=offers))
            for part in scores.served
        ]
        shadow = scores.shadow
        del features, scores
        clock.lap("build")

    with transaction.atomic():
        for served_by, part_rows in rows:
            recommendations_insert(run=run, rows=part_rows, model=served_by)
        shadow_predictions_insert(rows=shadow)
        # Items the policy automates are auto-approved by the system, in this transaction.
        auto_approvals_record(run_id=run.pk, member_pk_from=chunk.member_pk_from, member_pk_to=chunk.member_pk_to)
        # What this run holds for the range is the truth, whoever inserted it.
        written = Recommendation.objects.filter(
            run_id=run.pk, member_id__gte=chunk.member_pk_from, member_id__lte=chunk.member_pk_to
        ).count()
        done = ScoringChunk.objects.filter(pk=chunk_id, status=ScoringChunk.Status.RUNNING).update(
            status=ScoringChunk.Status.DONE,
            rows_written=written,
            skipped_no_consent=skipped,
            finished_at=timezone.now(),
        )
        if not done:
            # A parallel attempt finished the chunk first: its counters stand, ours must not.
            transaction.set_rollback(True)
            return ChunkOutcome(chunk_id=chunk_id, claimed=False)
        ScoringRun.objects.filter(pk=run.pk).update(
            chunks_done=F("chunks_done") + 1,
            members_scored=F("members_scored") + written,
            members_skipped_no_consent=F("members_skipped_no_consent") + skipped,
        )
        finished = _run_finish_if_complete(run.pk)
    clock.lap("write")
    logger.info(
        "scoring run %s chunk %s: %s written, %s skipped (no consent); seconds %s; cpu %s; db cpu %s",
        run.pk, chunk.index, written, skipped, clock.seconds, clock.cpu_seconds, clock.db_cpu_seconds,
    )
    return ChunkOutcome(
        chunk_id=chunk_id, claimed=True, rows_written=written,
        skipped_no_consent=skipped, run_finished=finished, stage_seconds=clock.seconds,
        stage_cpu_seconds=clock.cpu_seconds, stage_db_cpu_seconds=clock.db_cpu_seconds,
    )


def db_backend_cpu_seconds() -> float | None:
    """CPU seconds used so far by the Postgres backend serving this connection, or None when
    that process cannot be read here (another backend, a remote server, no permission).

    On a shared machine a stage's wall seconds include waiting for a core; CPU seconds, in the
    worker and in its backend, say what the stage costs."""
    import psutil

    if connection.vendor != "postgresql":
        return None
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            process = psutil.Process(cursor.fetchone()[0])
            # A pid of this host that is not a postgres process: the server runs elsewhere.
            if "postgres" not in process.name():
                return None
            times = process.cpu_times()
    except (psutil.Error, OSError):
        return None
    return times.user + times.system


class StageClock:
    """Seconds per stage of a chunk (load, features, score, build, write): wall clock, CPU of
    this process, and CPU of its Postgres backend when readable (`db_backend_cpu_seconds`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.db_cpu_seconds: dict[str, float] = {}
        self._last = (time.perf_counter(), time.process_time(), db_backend_cpu_seconds())

    def lap(self, stage: str) -> None:
        now = (time.perf_counter(), time.process_time(), db_backend_cpu_seconds())
        for totals, before, after in zip(
            (self.seconds, self.cpu_seconds, self.db_cpu_seconds), self._last, now, strict=True
        ):
            if before is not None and after is not None:
                totals[stage] = round(totals.get(stage, 0.0) + after - before, 4)
        self._last = now


def member_values(features: pd.DataFrame) -> np.ndarray:
    """What each member (in `features` order) is worth to the program: trailing 365-day spend,
    read from the engine's features so spend has one definition."""
    return features["spend_365d"].to_numpy(dtype=np.float64)


# The per-row columns of a recommendation, in the order they are staged for COPY. The rest
# (run, model version, as_of, created_at, offer_policy, status) is the same for every row.
ROW_COLUMNS = (
    "member_id", "probability", "p_low", "p_high", "offer_id", "expected_value", "ev_low",
    "ev_high", "alternatives", "shap_values", "shap_base", "features", "priority", "route",
    "route_reasons", "status", "holdout", "recalled_decision_id", "model_offer_id",
)
_BYTES_COLUMNS = ("shap_values", "features")


@dataclass
class RecommendationColumns:
    """One chunk's recommendations as columns (no model instances).

    Numbers are numpy arrays; ``offer_id`` is -1 for "no action"; JSON columns hold compact
    JSON text; ``shap_values`` and ``features`` are (n, n_features) float32 matrices stored as
    the bytes of each row.
    """

    member_id: np.ndarray
    probability: np.ndarray
    p_low: np.ndarray
    p_high: np.ndarray
    offer_id: np.ndarray
    expected_value: np.ndarray
    ev_low: np.ndarray
    ev_high: np.ndarray
    alternatives: Any  # pyarrow string array of compact JSON
    shap_values: np.ndarray
    shap_base: np.ndarray
    features: np.ndarray
    priority: np.ndarray
    route: np.ndarray
    route_reasons: np.ndarray
    status: np.ndarray
    holdout: np.ndarray
    recalled_decision_id: np.ndarray  # -1: the model's pick stands
    model_offer_id: np.ndarray  # the model's own pick where a choice was recalled; -1: none or no action

    def __len__(self) -> int:
        return len(self.member_id)


def _alternatives_json(codes: list[str], alternatives: np.ndarray) -> Any:
    """Compact JSON per row: [{"code": ..., "p_response": ..., ...}, ...] in offer order, as an
    Arrow string array.

    Built column-wise by Arrow (a chunk has ~10,000 rows x offers x 6 numbers): each number is
    cast to its shortest exact decimal text, then each row's pieces are joined with the fixed
    JSON text between them. No per-row or per-number Python work.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(alternatives)
    if not codes:
        return pa.array(["[]"] * n, pa.string())
    flat = np.asarray(alternatives, dtype=np.float64).reshape(n, len(codes) * len(ALTERNATIVE_KEYS))
    pieces: list[Any] = []
    text = "["
    for j, code in enumerate(codes):
        for k, key in enumerate(ALTERNATIVE_KEYS):
            text += (f'{{"code":{json.dumps(code)},' if k == 0 else ",") + f'"{key}":'
            pieces += [pa.scalar(text), pc.cast(pa.array(flat[:, j * len(ALTERNATIVE_KEYS) + k]), pa.string())]
            text = ""
        text = "}," if j < len(codes) - 1 else "}]"
    return pc.binary_join_element_wise(*pieces, pa.scalar(text), pa.scalar(""))


def _recommendations_build(
    *, run: ScoringRun, features: pd.DataFrame, batch: Any, offers: list[Offer], model: ModelVersion | None = None
) -> RecommendationColumns:
    model = model or run.model_version  # the serving model: a canary for its members
    n = len(features)
    feature_names = [item["name"] for item in model.feature_schema.get("features", [])]
    matrix = features[feature_names] if feature_names else features
    recall = earlier_choices_recall(run=run, member_ids=features.index, batch=batch, offers=offers)
    offer_index = recall.offer_index
    costs = np.array([float(offer.cost) for offer in offers] + [0.0])
    priority = recommendation_priority(
        probability=batch.probability,
        p_low=batch.p_low,
        p_high=batch.p_high,
        offer_cost=costs[offer_index],  # index -1 picks the trailing 0.0: no offer, no cost
        member_value=member_values(features),
    )
    chosen_offers = [offers[j] if j >= 0 else None for j in offer_index]
    routing = recommendation_route(run=run, member_ids=features.index, offers=chosen_offers, batch=batch,
                                   recall=recall, model=model)
    # Members of the randomized holdout are recorded but never routed to anyone or offered.
    from recommendations.learning import HOLDOUT_REASON, holdout_member_pks

    in_holdout = holdout_member_pks(member_pks=[int(pk) for pk in features.index])
    holdout = np.array([int(pk) in in_holdout for pk in features.index], dtype=bool)
    route = np.where(holdout, "holdout", np.asarray(routing.routes, dtype=object)).astype(object)
    compact = json.JSONEncoder(separators=(",", ":")).encode
    reasons = [[HOLDOUT_REASON] if held else why for held, why in zip(holdout, routing.reasons, strict=True)]
    status = np.where(
        holdout, str(RecommendationStatus.HOLDOUT),
        np.where(route == "senior", str(RecommendationStatus.ESCALATED), str(RecommendationStatus.PENDING)),
    ).astype(object)
    return RecommendationColumns(
        member_id=features.index.to_numpy(dtype=np.int64),
        probability=np.asarray(batch.probability, np.float64),
        p_low=np.asarray(batch.p_low, np.float64),
        p_high=np.asarray(batch.p_high, np.float64),
        offer_id=np.array([offer.pk for offer in offers] + [-1], dtype=np.int64)[offer_index],
        expected_value=recall.expected_value,
        ev_low=recall.ev_low,
        ev_high=recall.ev_high,
        alternatives=_alternatives_json([offer.code for offer in offers], batch.alternatives),
        shap_values=np.ascontiguousarray(batch.shap_values, dtype=np.float32),
        shap_base=np.broadcast_to(np.asarray(batch.shap_base, np.float64).ravel(), (n,))
        if np.ndim(batch.shap_base) else np.full(n, float(batch.shap_base)),
        features=np.ascontiguousarray(matrix.to_numpy(dtype=np.float64), dtype=np.float32),
        priority=np.asarray(priority, np.float64),
        route=route,
        route_reasons=np.array([compact(why) for why in reasons], dtype=object),
        # Routed to a senior manager: escalated from the start.
        status=status,
        holdout=holdout,
        recalled_decision_id=recall.recalled_decision_id,
        model_offer_id=recall.model_offer_id,
    )


def _bytea_hex(matrix: np.ndarray) -> Any:
    """Each row's bytes as Postgres bytea hex input (\\x...), as an Arrow string array, without
    a Python loop: one hex pass over the whole buffer, the prefix added as two byte columns."""
    import pyarrow as pa

    n, width = len(matrix), 2 * matrix.shape[1] * matrix.itemsize
    digits = np.frombuffer(np.ascontiguousarray(matrix).tobytes().hex().encode(), np.uint8).reshape(n, width)
    prefixed = np.empty((n, width + 2), np.uint8)
    prefixed[:, :2] = np.frombuffer(b"\\x", np.uint8)
    prefixed[:, 2:] = digits
    return pa.array(prefixed.view(f"S{width + 2}").ravel(), pa.binary(width + 2)).cast(pa.string())


# Per chunk, the same for every row: written into each CSV line so COPY can fill the table
# directly (the table has no database defaults for them). decided_at stays NULL.
_CONSTANT_COLUMNS = ("run_id", "model_version_id", "as_of", "created_at", "offer_policy")


def _copy_csv(rows: RecommendationColumns, constants: dict[str, Any]) -> memoryview:
    """The rows as COPY CSV, in ROW_COLUMNS then _CONSTANT_COLUMNS order, written by Arrow's
    C++ CSV writer.

    Arrow quotes every string (JSON quotes doubled) and leaves NULL empty and unquoted, which
    is how Postgres' CSV mode reads them; floats are written in their shortest exact form.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    columns = {name: getattr(rows, name) for name in ROW_COLUMNS}
    columns["offer_id"] = pa.array(rows.offer_id, mask=rows.offer_id < 0)  # -1: no action, NULL
    for name in ("recalled_decision_id", "model_offer_id"):  # -1: NULL
        columns[name] = pa.array(getattr(rows, name), mask=getattr(rows, name) < 0)
    for name in _BYTES_COLUMNS:
        columns[name] = _bytea_hex(getattr(rows, name))
    for name in ("route", "route_reasons", "status"):
        columns[name] = pa.array(columns[name], pa.string())
    for name in _CONSTANT_COLUMNS:
        columns[name] = pa.repeat(pa.scalar(constants[name]), len(rows))
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(pa.table(columns), sink, pa_csv.WriteOptions(include_header=False))
    return memoryview(sink.getvalue())


def recommendations_insert(*, run: ScoringRun, rows: RecommendationColumns, model: ModelVersion | None = None) -> None:
    """Insert a chunk's rows for `run`, skipping members the run already holds. `model` is the
    serving model the rows record (default: the run's; a canary for its members).

    Call inside the chunk's transaction. Postgres: one COPY straight into the table, in a
    savepoint. If the run already holds any of these members (a redelivered chunk, or a
    parallel attempt that committed first), the unique (run, member) constraint refuses that
    COPY as a whole; the savepoint is rolled back and the rows go through a temporary staging
    table and INSERT ... SELECT ... ON CONFLICT DO NOTHING, which writes only the missing ones.
    The first attempt of a chunk, the common case, costs one COPY instead of COPY + INSERT.
    Other backends: bulk_create(ignore_conflicts).
    """
    import psycopg

    if not len(rows):
        return
    model = model or run.model_version
    if connection.vendor != "postgresql":
        _insert_orm(run=run, rows=rows, model=model)
        return
    table = Recommendation._meta.db_table
    columns = ", ".join((*ROW_COLUMNS, *_CONSTANT_COLUMNS))
    payload = _copy_csv(rows, {
        "run_id": run.pk, "model_version_id": model.pk, "as_of": run.as_of.isoformat(),
        "created_at": timezone.now().isoformat(), "offer_policy": model.offer_policy,
    })
    try:
        with transaction.atomic(), connection.cursor() as cursor, cursor.connection.cursor() as raw, raw.copy(
            f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)"
        ) as copy:
            copy.write(payload)
        return
    except psycopg.errors.UniqueViolation:
        pass  # some of these members are already written for this run: add only the others
    with connection.cursor() as cursor:
        # Same column types as the table. Dropped below; ON COMMIT DROP covers a failure
        # between here and there (a rolled-back savepoint takes it away too).
        cursor.execute(
            f"CREATE TEMPORARY TABLE recommendation_stage ON COMMIT DROP AS "
            f"SELECT {columns} FROM {table} WITH NO DATA"
        )
        with cursor.connection.cursor() as raw, raw.copy(
            f"COPY recommendation_stage ({columns}) FROM STDIN WITH (FORMAT csv)"
        ) as copy:
            copy.write(payload)
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM recommendation_stage "
            "ORDER BY member_id ON CONFLICT (run_id, member_id) DO NOTHING"
        )
        cursor.execute("DROP TABLE recommendation_stage")


def _insert_orm(*, run: ScoringRun, rows: RecommendationColumns, model: ModelVersion) -> None:
    policy = model.offer_policy
    alternatives = rows.alternatives.to_pylist()
    objects = [
        Recommendation(
            run_id=run.pk,
            member_id=int(rows.member_id[i]),
            model_version_id=model.pk,
            as_of=run.as_of,
            probability=float(rows.probability[i]),
            p_low=float(rows.p_low[i]),
            p_high=float(rows.p_high[i]),
            offer_id=int(rows.offer_id[i]) if rows.offer_id[i] >= 0 else None,
            expected_value=float(rows.expected_value[i]),
            ev_low=float(rows.ev_low[i]),
            ev_high=float(rows.ev_high[i]),
            alternatives=json.loads(alternatives[i]),
            shap_values=rows.shap_values[i].tobytes(),
            shap_base=float(rows.shap_base[i]),
            features=rows.features[i].tobytes(),
            offer_policy=policy,
            priority=float(rows.priority[i]),
            route=str(rows.route[i]),
            route_reasons=json.loads(rows.route_reasons[i]),
            status=str(rows.status[i]),
            holdout=bool(rows.holdout[i]),
            recalled_decision_id=int(rows.recalled_decision_id[i]) if rows.recalled_decision_id[i] >= 0 else None,
            model_offer_id=int(rows.model_offer_id[i]) if rows.model_offer_id[i] >= 0 else None,
        )
        for i in range(len(rows))
    ]
    Recommendation.objects.bulk_create(objects, batch_size=1000, ignore_conflicts=True)


def _undecided_open() -> Q:
    """Pending items, and items escalated by routing rather than by a person (no decision)."""
    return Q(status=RecommendationStatus.PENDING) | (
        Q(status=RecommendationStatus.ESCALATED) & ~Q(Exists(Decision.objects.filter(recommendation=OuterRef("pk"))))
    )


def _queue_statistics_refresh() -> None:
    """Fresh planner statistics once a run has written: its rows are most of the open queue,
    and until autovacuum's next analyze (a minute or more, or never where it is off) the desk's
    filters are planned on the table as it was. At 93k rows, with statistics from before the
    run, ?risk=high took 224 ms and ?tier=platinum&region=north 164 ms; after ANALYZE (~1 s,
    sampled, so about the same at 1M rows) 19 and 34 ms."""
    if connection.vendor != "postgresql":
        return  # the embedded demo's queue is small enough to plan without fresh statistics
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Recommendation._meta.db_table}")
    except DatabaseError as exc:
        # The run has committed and succeeded; stale statistics only slow the desk's filters
        # until autovacuum analyzes, so a failure here must not fail (and retry) the chunk.
        logger.warning("statistics refresh after the run failed: %s", type(exc).__name__)


def _run_finish_if_complete(run_id: int) -> bool:
    """Succeed the run once every chunk is done (exactly once), then supersede older items.

    Call inside the transaction that marked the last chunk done: the run row's lock makes
    concurrent chunk completions see each other's increments, so one of them wins.
    """
    finished = ScoringRun.objects.filter(
        pk=run_id,
        status__in=[ScoringRun.Status.PENDING, ScoringRun.Status.RUNNING],
        chunks_done__gte=F("chunks_total"),
    ).update(status=ScoringRun.Status.SUCCEEDED, finished_at=timezone.now(), error="")
    if not finished:
        return False
    run_members = Recommendation.objects.filter(run_id=run_id).values("member_id")
    # Older undecided items of the re-scored members leave the queue. Decided items
    # (approved, overridden, escalated, ...) are never touched.
    superseded = Recommendation.objects.filter(
        _undecided_open(), run_id__lt=run_id, member_id__in=run_members
    ).update(status=RecommendationStatus.SUPERSEDED)
    # A later run that already succeeded wins over this one for the members both scored.
    newer = Recommendation.objects.filter(
        run_id__gt=run_id, run__status=ScoringRun.Status.SUCCEEDED
    ).values("member_id")
    superseded += Recommendation.objects.filter(
        _undecided_open(), run_id=run_id, member_id__in=newer
    ).update(status=RecommendationStatus.SUPERSEDED)
    logger.info("scoring run %s succeeded; %s older recommendations superseded", run_id, superseded)
    # After the commit: ANALYZE would hold the finishing chunk's transaction open a second longer.
    transaction.on_commit(_queue_statistics_refresh)
    return True


def chunk_fail(*, chunk_id: int, error: str) -> None:
    """Record a chunk's final failure (retries exhausted) and fail its run with a clear message."""
    error = error.strip()[:4000] or "unknown error"
    with transaction.atomic():
        chunk = ScoringChunk.objects.filter(pk=chunk_id).first()
        if chunk is None:
            return
        failed = ScoringChunk.objects.filter(pk=chunk_id).exclude(status=ScoringChunk.Status.DONE).update(
            status=ScoringChunk.Status.FAILED, error=error, finished_at=timezone.now()
        )
        if not failed:
            return
        ScoringRun.objects.filter(
            pk=chunk.run_id, status__in=[ScoringRun.Status.PENDING, ScoringRun.Status.RUNNING]
        ).update(
            status=ScoringRun.Status.FAILED,
            finished_at=timezone.now(),
            error=(
                f"chunk {chunk.index} (member pk {chunk.member_pk_from}-{chunk.member_pk_to}) failed "
                f"after {chunk.attempts} attempt(s): {error}. "
                f"Fix the cause, then `manage.py score --resume {chunk.run_id}`."
            ),
        )


# --------------------------------------------------------------------------------------------
# Export and evaluation
# --------------------------------------------------------------------------------------------


def run_get(*, run_id: int) -> ScoringRun:
    try:
        return ScoringRun.objects.select_related("model_version").get(pk=run_id)
    except ScoringRun.DoesNotExist:
        raise ScoringError(f"scoring run {run_id} does not exist") from None


def run_export_rows(*, run_id: int, chunk_size: int = 5000) -> Iterator[tuple]:
    """Export rows of a run in EXPORT_COLUMNS order, streamed from the database cursor."""
    rows = (
        Recommendation.objects.filter(run_id=run_id)
        .order_by("member_id")
        .annotate(model_offer_code=model_offer_code_picked(), recalled=Q(recalled_decision__isnull=False))
        .values_list(
            "member__member_id", "offer__code", "probability", "p_low", "p_high",
            "expected_value", "ev_low", "ev_high", "status", "model_version_id", "model_offer_code", "recalled",
        )
    )
    for row in rows.iterator(chunk_size=chunk_size):
        yield (row[0], row[1] or "", *row[2:])


def run_export(
    *,
    run_id: int,
    fmt: str,
    out: IO,
    actor: AbstractBaseUser | None = None,
    batch_rows: int = 50_000,
) -> int:
    """Write a run's recommendations as csv (text stream) or parquet (binary stream).

    Member ids are the external ids as imported. Returns the row count and writes an audit
    row (counts and format only, no member data).
    """
    run_get(run_id=run_id)
    count = rows_write(run_export_rows(run_id=run_id), columns=EXPORT_COLUMNS, fmt=fmt, out=out,
                       batch_rows=batch_rows)
    audit_log(
        actor=actor,
        action="export.recommendations",
        object_type="scoring_run",
        object_id=run_id,
        new={"format": fmt, "rows": count},
    )
    return count


TRUTH_COLUMNS = ("member_id", "engaged")
TRUE_PROBABILITY_COLUMN = "p_engage"


def run_evaluate(*, run_id: int, truth: pd.DataFrame) -> dict[str, Any]:
    """Compare a run's engagement probabilities with observed outcomes.

    `truth` has member_id (external id, as imported) and engaged (0/1), optionally p_engage
    (the true engagement probability, which the simulator knows). Returns AUC, Brier score,
    the 90% interval's coverage and how many members matched. Members of the program the run
    did not score (no consent) are counted, not matched; ids not in the program are an error.

    Coverage follows the engine's definition of the interval (training.EngagementInterval):
    it is meant to contain each member's TRUE engagement probability (its guarantee is for the
    hindsight probability, an observable stand-in), so with p_engage it is the
    share of members whose p_engage lies in [p_low, p_high] (target ~0.90). One yes/no outcome
    per member cannot show where a member's true probability lies, so without p_engage the
    fallback is the engine's binned estimate (training.interval_coverage_binned: the share of
    members whose probability bin's observed engagement rate lies inside their own interval),
    and `interval_coverage_method` says which one was used.
    """
    from sklearn.metrics import brier_score_loss, roc_auc_score

    from recommendations.training import interval_coverage_binned

    run = run_get(run_id=run_id)
    missing = [column for column in TRUTH_COLUMNS if column not in truth.columns]
    if missing:
        raise ScoringError(
            f"truth file is missing column(s) {', '.join(missing)}; it needs {', '.join(TRUTH_COLUMNS)}"
            f" (and optionally {TRUE_PROBABILITY_COLUMN})"
        )
    has_true_p = TRUE_PROBABILITY_COLUMN in truth.columns
    truth = truth[[*TRUTH_COLUMNS, *([TRUE_PROBABILITY_COLUMN] if has_true_p else [])]].copy()
    truth["member_id"] = truth["member_id"].astype(str).str.strip()
    if truth["member_id"].duplicated().any():
        dupes = truth.loc[truth["member_id"].duplicated(), "member_id"].head(5).tolist()
        raise ScoringError(f"truth file lists members more than once, e.g. {dupes}")
    engaged = truth["engaged"].astype(str).str.strip().str.lower().map(
        {"1": 1, "0": 0, "true": 1, "false": 0, "1.0": 1, "0.0": 0}
    )
    if engaged.isna().any():
        bad = truth.loc[engaged.isna(), "member_id"].head(5).tolist()
        raise ScoringError(f"engaged must be 0/1 or true/false; not for members {bad}")
    truth["engaged"] = engaged.astype(int)
    if has_true_p:
        true_p = pd.to_numeric(truth[TRUE_PROBABILITY_COLUMN], errors="coerce")
        if true_p.isna().any() or not true_p.between(0, 1).all():
            raise ScoringError(f"{TRUE_PROBABILITY_COLUMN} must be a probability between 0 and 1")
        truth[TRUE_PROBABILITY_COLUMN] = true_p

    known = set(
        Member.objects.filter(member_id__in=truth["member_id"].tolist()).values_list("member_id", flat=True)
    )
    unknown = truth.loc[~truth["member_id"].isin(known), "member_id"]
    if len(unknown):
        raise ScoringError(
            f"{len(unknown)} member id(s) in the truth file are not in the program, "
            f"e.g. {unknown.head(5).tolist()}"
        )
    scored = pd.DataFrame.from_records(
        Recommendation.objects.filter(run_id=run.pk)
        .values_list("member__member_id", "probability", "p_low", "p_high")
        .iterator(chunk_size=20_000),
        columns=["member_id", "probability", "p_low", "p_high"],
    )
    matched = truth.merge(scored, on="member_id", how="inner")
    if not len(matched):
        raise ScoringError(f"no member of the truth file was scored by run {run.pk}")
    y = matched["engaged"].to_numpy(int)
    p = matched["probability"].to_numpy(float)
    low = matched["p_low"].to_numpy(float)
    high = matched["p_high"].to_numpy(float)
    if has_true_p:
        true_p = matched[TRUE_PROBABILITY_COLUMN].to_numpy(float)
        coverage = float(np.mean((low <= true_p) & (true_p <= high)))
        method = f"share of members whose true {TRUE_PROBABILITY_COLUMN} lies in [p_low, p_high]"
    else:
        coverage = interval_coverage_binned(y, p, low, high)
        method = "binned: share of members whose probability bin's observed rate lies in their interval"
    return {
        "run": run.pk,
        "model_version": run.model_version_id,
        "n_truth": int(len(truth)),
        "n_matched": int(len(matched)),
        "n_unscored": int(len(truth) - len(matched)),
        "base_rate": float(y.mean()),
        "auc": float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None,
        "brier": float(brier_score_loss(y, p)),
        "interval_coverage": coverage,
        "interval_coverage_method": method,
        "interval_mean_width": float(np.mean(high - low)),
    }
