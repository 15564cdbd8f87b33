"""The fast paths of scoring (Postgres): SQL frame loading, columnar COPY writes, training sample.

Each fast path is checked against the plain ORM path it replaces, on the same data.
"""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from loyalty.models import Event, Member
from recommendations.features import build_features
from recommendations.model_store import bundle_load
from recommendations.models import Recommendation, RecommendationStatus, ScoringChunk, ScoringRun
from recommendations.runs import (
    ALTERNATIVE_KEYS,
    RecommendationColumns,
    _insert_orm,
    _recommendations_build,
    chunk_score,
    member_pk_ranges,
    offers_active,
    recommendations_insert,
)
from recommendations.scoring import score_features
from recommendations.selectors import _event_order, _frames_orm, _frames_sql, member_frames_load
from recommendations.services import model_version_train
from tests.conftest import require_services
from tests.recommendations.scoring_support import champion_model, consenting_pks, program_in_db

MEMBERS, SEED = 900, 11


@pytest.fixture
def program(db, settings, tmp_path):
    require_services()
    settings.ARTIFACT_DIR = tmp_path / "artifacts"
    return program_in_db(members=MEMBERS, seed=SEED)


def _same_frames(left: tuple[pd.DataFrame, pd.DataFrame], right: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    (members_a, events_a), (members_b, events_b) = left, right
    assert list(members_a["pk"]) == list(members_b["pk"])
    for column in ("pk", "points_balance", "consent_profiling", "tier", "member_id", "gender", "region"):
        assert members_a[column].tolist() == members_b[column].tolist(), column
    assert np.array_equal(members_a["birth_year"].to_numpy(float), members_b["birth_year"].to_numpy(float), equal_nan=True)
    assert (pd.to_datetime(members_a["joined_at"]) == pd.to_datetime(members_b["joined_at"])).all()
    order = ["member_pk", "occurred_at", "kind", "amount", "points", "offer_code"]
    events_a = events_a.sort_values(order).reset_index(drop=True)
    events_b = events_b.sort_values(order).reset_index(drop=True)
    assert list(events_a.columns) == list(events_b.columns)
    assert len(events_a) == len(events_b) > 0
    for column in events_a.columns:
        a, b = events_a[column], events_b[column]
        if column == "occurred_at":
            assert (a.dt.tz_convert("UTC") == b.dt.tz_convert("UTC")).all()
        elif column in ("score", "sentiment"):
            assert np.array_equal(a.to_numpy(float), b.to_numpy(float), equal_nan=True)
        else:
            assert a.tolist() == b.tolist(), column


def test_sql_frames_equal_the_orm_frames_and_give_the_same_features(program) -> None:
    erased = Member.objects.filter(consent_profiling=True).order_by("pk")[5]
    Member.objects.filter(pk=erased.pk).update(erased_at=timezone.now())
    lo, hi, _ = member_pk_ranges(chunk_size=300)[1]
    for consenting_only in (True, False):
        sql = _frames_sql(as_of=program.as_of, pk_from=lo, pk_to=hi, consenting_only=consenting_only, pks=None)
        orm = _frames_orm(as_of=program.as_of, pk_from=lo, pk_to=hi, consenting_only=consenting_only, pks=None)
        _same_frames(sql, orm)
        assert erased.pk not in set(sql[0]["pk"]) and erased.pk not in set(sql[1]["member_pk"])
        as_of = pd.Timestamp(program.as_of, tz="UTC")
        assert build_features(*sql, as_of).equals(build_features(*orm, as_of))
    # A sample of pks (training), across the whole pk range.
    sample = np.array(sorted(consenting_pks()))[::7]
    sql = member_frames_load(as_of=program.as_of, pks=sample)
    orm = _frames_orm(as_of=program.as_of, pk_from=None, pk_to=None, consenting_only=True, pks=sample)
    _same_frames(sql, orm)
    assert set(sql[0]["pk"]) == set(sample) - {erased.pk}


def test_sql_frames_read_offer_codes_outside_the_catalog(program) -> None:
    """Events travel as binary with the offer code as its place in the catalog; a code the
    catalog does not hold (a retired campaign, an odd import) still arrives as written."""
    lo, hi, _ = member_pk_ranges(chunk_size=300)[0]
    member = Member.objects.filter(pk__gte=lo, pk__lte=hi, consent_profiling=True).order_by("pk").first()
    when = pd.Timestamp(program.as_of, tz="UTC") - pd.Timedelta(days=20)
    for i, code in enumerate(["SPRING'19", "B500", "retired-campaign"]):
        Event.objects.create(member=member, occurred_at=when + pd.Timedelta(hours=i), kind="offer_sent",
                             offer_code=code, fingerprint=f"outside-catalog-{i}")
    sql = _frames_sql(as_of=program.as_of, pk_from=lo, pk_to=hi, consenting_only=True, pks=None)
    _same_frames(sql, _frames_orm(as_of=program.as_of, pk_from=lo, pk_to=hi, consenting_only=True, pks=None))
    mine = sql[1][(sql[1]["member_pk"] == member.pk) & (sql[1]["occurred_at"] >= when)]
    assert mine["offer_code"].tolist()[:3] == ["SPRING'19", "B500", "retired-campaign"]


def test_sql_frames_come_in_one_order_whatever_the_physical_order(program) -> None:
    """Scoring and training see the events in the same order on every run: the order reaches
    the models (float sums in the features, the rows a tree is fitted on), and a sequential
    scan returns rows in whatever order they lie on disk, which updates and imports change."""
    as_of = program.as_of
    _, before = _frames_sql(as_of=as_of, pk_from=None, pk_to=None, consenting_only=True, pks=None)
    # Rewriting the first members' events moves their row versions to the end of the table.
    first = list(Member.objects.order_by("pk").values_list("pk", flat=True)[:50])
    Event.objects.filter(member_id__in=first).update(amount=F("amount"))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT member_id FROM {Event._meta.db_table}")
        assert cursor.fetchone()[0] not in first  # the table's own order did change
    _, after = _frames_sql(as_of=as_of, pk_from=None, pk_to=None, consenting_only=True, pks=None)
    pd.testing.assert_frame_equal(before, after)
    ordered = after.sort_values(["member_pk", "occurred_at"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(after, ordered)


def test_events_come_in_one_order_whatever_plan_postgres_picks(program) -> None:
    """The features add floats per member in event order: both loaders give (member, time, id)
    order, so a parallel or hash plan cannot change the features of the same data."""
    lo, hi, _ = member_pk_ranges(chunk_size=300)[1]
    serial = _frames_sql(as_of=program.as_of, pk_from=lo, pk_to=hi, consenting_only=True, pks=None)
    with connection.cursor() as cursor:  # a parallel sequential scan: rows in varying order
        for setting in ("parallel_setup_cost = 0", "parallel_tuple_cost = 0", "min_parallel_table_scan_size = 0",
                        "enable_indexscan = off", "enable_bitmapscan = off"):
            cursor.execute(f"SET LOCAL {setting}")
        parallel = _frames_sql(as_of=program.as_of, pk_from=lo, pk_to=hi, consenting_only=True, pks=None)
    orm = _frames_orm(as_of=program.as_of, pk_from=lo, pk_to=hi, consenting_only=True, pks=None)
    events = serial[1]
    key = ["member_pk", "occurred_at"]
    assert events[key].equals(events[key].sort_values(key, kind="stable", ignore_index=True))
    pd.testing.assert_frame_equal(events, parallel[1])
    for column in ("member_pk", "occurred_at", "kind", "amount"):
        assert events[column].tolist() == orm[1][column].tolist(), column


def test_event_order_sorts_by_member_time_and_id() -> None:
    rng = np.random.default_rng(5)
    for trial in range(300):
        n = int(rng.integers(0, 40))
        member = np.sort(rng.integers(1, 6, n))
        when, event_id = rng.integers(0, 4, n), rng.permutation(n) + 100
        if trial % 3 == 0:  # members interleaved, as a parallel plan returns them
            shuffle = rng.permutation(n)
            member, when, event_id = member[shuffle], when[shuffle], event_id[shuffle]
        order = _event_order(member, when, event_id)
        expected = np.lexsort((event_id, when, member))
        assert np.array_equal(np.arange(n) if order is None else order, expected)
    assert _event_order(np.array([1, 1, 2]), np.array([5, 6, 1]), np.array([3, 2, 1])) is None


def test_training_uses_a_seeded_sample_when_the_program_is_larger(program) -> None:
    available = len(consenting_pks())
    model = model_version_train(as_of=program.as_of, horizon_days=program.horizon_days, seed=3, max_members=400)
    assert model.params["train_members"] == 400
    assert model.params["train_members_available"] == available > 400
    with pytest.raises(ValueError, match="max_members"):
        model_version_train(as_of=program.as_of, horizon_days=program.horizon_days, max_members=0)


def _chunk_columns(run: ScoringRun, lo: int, hi: int):
    model = run.model_version
    bundle = bundle_load(model.pk, model.artifact_path, model.sha256)
    members, events = member_frames_load(as_of=run.as_of, pk_from=lo, pk_to=hi)
    features = build_features(members, events, pd.Timestamp(run.as_of))
    offers, terms = offers_active()
    batch = score_features(bundle, features, terms)
    return _recommendations_build(run=run, features=features, batch=batch, offers=offers), batch, offers


def test_copy_write_equals_the_orm_write_and_writes_each_member_once(program) -> None:
    model = champion_model(program, members=MEMBERS, seed=SEED)
    copy_run, orm_run = (ScoringRun.objects.create(model_version=model, as_of=program.as_of) for _ in range(2))
    lo, hi, _ = member_pk_ranges(chunk_size=400)[0]
    rows, batch, offers = _chunk_columns(copy_run, lo, hi)
    assert connection.vendor == "postgresql"
    with transaction.atomic():
        recommendations_insert(run=copy_run, rows=rows)
    # A second attempt of the same chunk (a redelivery racing the first) adds nothing.
    with transaction.atomic():
        recommendations_insert(run=copy_run, rows=rows)
        recommendations_insert(run=copy_run, rows=rows)
    _insert_orm(run=orm_run, rows=rows, model=model)

    fields = [
        "member_id", "model_version_id", "as_of", "probability", "p_low", "p_high", "offer_id",
        "expected_value", "ev_low", "ev_high", "alternatives", "shap_values", "shap_base", "features",
        "offer_policy", "priority", "status", "route", "route_reasons", "decided_at",
    ]
    copied = list(Recommendation.objects.filter(run=copy_run).order_by("member_id").values(*fields))
    plain = list(Recommendation.objects.filter(run=orm_run).order_by("member_id").values(*fields))
    assert len(copied) == len(rows) == len(consenting_pks() & set(range(lo, hi + 1)))
    for a, b in zip(copied, plain, strict=True):
        a["shap_values"], b["shap_values"] = bytes(a["shap_values"]), bytes(b["shap_values"])
        a["features"], b["features"] = bytes(a["features"]), bytes(b["features"])
        assert a == b
    # Exact values, not just equal paths: floats, bytes and JSON round-trip unchanged.
    codes = [offer.code for offer in offers]
    for i, row in enumerate(copied):
        assert row["probability"] == batch.probability[i] and row["priority"] == rows.priority[i]
        assert np.array_equal(np.frombuffer(row["shap_values"], np.float32), batch.shap_values[i])
        assert [alt["code"] for alt in row["alternatives"]] == codes
        values = [[alt[key] for key in ALTERNATIVE_KEYS] for alt in row["alternatives"]]
        assert np.array_equal(np.array(values), batch.alternatives[i])
        chosen = batch.offer_index[i]
        assert row["offer_id"] == (offers[chosen].pk if chosen >= 0 else None)
        assert row["status"] == (RecommendationStatus.ESCALATED if row["route"] == "senior" else RecommendationStatus.PENDING)
        assert row["route_reasons"] == json.loads(rows.route_reasons[i])
    created = set(Recommendation.objects.filter(run=copy_run).values_list("created_at", flat=True))
    assert len(created) == 1  # one instant per chunk


def _first(rows: RecommendationColumns, count: int) -> RecommendationColumns:
    return RecommendationColumns(**{f.name: getattr(rows, f.name)[:count] for f in fields(rows)})


def test_a_partly_written_chunk_gets_only_its_missing_members(program) -> None:
    """A retried chunk whose run already holds some of its members (the straight COPY is then
    refused by the unique constraint) adds the others and leaves the existing rows alone."""
    model = champion_model(program, members=MEMBERS, seed=SEED)
    run = ScoringRun.objects.create(model_version=model, as_of=program.as_of)
    lo, hi, _ = member_pk_ranges(chunk_size=400)[0]
    rows, _, _ = _chunk_columns(run, lo, hi)
    with transaction.atomic():
        recommendations_insert(run=run, rows=_first(rows, 50))
    before = dict(Recommendation.objects.filter(run=run).values_list("member_id", "created_at"))
    assert len(before) == 50

    with transaction.atomic():
        recommendations_insert(run=run, rows=rows)

    members = list(Recommendation.objects.filter(run=run).values_list("member_id", flat=True))
    assert sorted(members) == sorted(rows.member_id.tolist())  # each member exactly once
    kept = dict(Recommendation.objects.filter(run=run, member_id__in=list(before)).values_list("member_id", "created_at"))
    assert kept == before


def test_chunk_reports_worker_and_database_cpu_per_stage(program) -> None:
    model = champion_model(program, members=MEMBERS, seed=SEED)
    run = ScoringRun.objects.create(model_version=model, as_of=program.as_of, chunks_total=1)
    lo, hi, _ = member_pk_ranges(chunk_size=400)[0]
    chunk = ScoringChunk.objects.create(run=run, index=0, member_pk_from=lo, member_pk_to=hi)

    outcome = chunk_score(chunk_id=chunk.pk)

    stages = ["load", "features", "score", "build", "write"]
    assert list(outcome.stage_seconds) == list(outcome.stage_cpu_seconds) == stages
    assert all(seconds >= 0 for seconds in outcome.stage_cpu_seconds.values())
    assert outcome.stage_cpu_seconds["score"] > 0
    # The test database runs on this host: its backend's CPU is readable and is spent on the
    # reads and the writes.
    assert list(outcome.stage_db_cpu_seconds) == stages
    assert outcome.stage_db_cpu_seconds["load"] + outcome.stage_db_cpu_seconds["write"] > 0
