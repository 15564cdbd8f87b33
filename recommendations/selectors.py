"""Reads for the prediction engine: member/event frames, offer terms, the champion model."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, date, datetime, time

import numpy as np
import pandas as pd
from django.db import connection

from loyalty.models import Event, Member, Offer
from recommendations.models import ModelVersion
from recommendations.scoring import OfferTerms

MEMBER_FIELDS = [
    "pk", "member_id", "birth_year", "gender", "region", "tier", "points_balance",
    "joined_at", "consent_profiling",
]
EVENT_FIELDS = [
    "member_id", "occurred_at", "kind", "amount", "points", "quantity", "duration_seconds",
    "score", "offer_code",
]


def as_of_instant(as_of: date) -> datetime:
    """Midnight UTC at the start of ``as_of``: features use events strictly before it."""
    return datetime.combine(as_of, time.min, tzinfo=UTC)


def member_frames_load(
    *,
    as_of: date,
    pk_from: int | None = None,
    pk_to: int | None = None,
    consenting_only: bool = True,
    pks: Sequence[int] | np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(members, events) frames for recommendations.features, for members with pk in
    [pk_from, pk_to] (inclusive; open when None) and their events before ``as_of``.

    ``pks``, when given, further restricts the members to those primary keys (a training
    sample). consenting_only keeps members who consented to profiling; erased members are
    never read. Events come back with ``member_pk`` (the members' pk) and tz-aware UTC
    ``occurred_at``.

    On Postgres each frame is one ``COPY (SELECT ...) TO STDOUT`` parsed by pandas' C reader:
    no ORM instances or per-row Python tuples (a 10,000-member chunk has ~200,000 events).
    Other backends (the embedded SQLite) read through the ORM.
    """
    if pks is not None:
        pks = np.unique(np.asarray(pks, dtype=np.int64))
    if connection.vendor == "postgresql":
        return _frames_copy(
            as_of=as_of, pk_from=pk_from, pk_to=pk_to, consenting_only=consenting_only, pks=pks
        )
    return _frames_orm(as_of=as_of, pk_from=pk_from, pk_to=pk_to, consenting_only=consenting_only, pks=pks)


def _frames_orm(
    *, as_of: date, pk_from: int | None, pk_to: int | None, consenting_only: bool, pks: np.ndarray | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    members_qs = Member.objects.filter(erased_at__isnull=True)
    events_qs = Event.objects.filter(occurred_at__lt=as_of_instant(as_of), member__erased_at__isnull=True)
    if consenting_only:
        members_qs = members_qs.filter(consent_profiling=True)
        events_qs = events_qs.filter(member__consent_profiling=True)
    if pk_from is not None:
        members_qs = members_qs.filter(pk__gte=pk_from)
        events_qs = events_qs.filter(member_id__gte=pk_from)
    if pk_to is not None:
        members_qs = members_qs.filter(pk__lte=pk_to)
        events_qs = events_qs.filter(member_id__lte=pk_to)
    members = pd.DataFrame.from_records(
        members_qs.order_by("pk").values_list(*MEMBER_FIELDS), columns=MEMBER_FIELDS
    )
    events = pd.DataFrame.from_records(
        events_qs.values_list(*EVENT_FIELDS).iterator(chunk_size=20_000), columns=EVENT_FIELDS
    ).rename(columns={"member_id": "member_pk"})
    if pks is not None:
        members = members[members["pk"].isin(pks)].reset_index(drop=True)
        events = events[events["member_pk"].isin(pks)].reset_index(drop=True)
    events["occurred_at"] = pd.to_datetime(events["occurred_at"], utc=True)
    events["score"] = pd.to_numeric(events["score"], errors="coerce").astype(float)
    for name in ("amount",):
        events[name] = events[name].astype(float)
    for name in ("points", "quantity", "duration_seconds", "member_pk"):
        events[name] = events[name].astype("int64")
    members["pk"] = members["pk"].astype("int64")
    return members, events


# Column types of the COPY output; text columns keep "" (never NaN), numeric NULLs become NaN.
_MEMBER_DTYPES = {
    "pk": "int64", "member_id": str, "birth_year": "float64", "gender": str, "region": str,
    "tier": str, "points_balance": "int64", "joined_at": str, "consent_profiling": "int8",
}
_EVENT_DTYPES = {
    "member_pk": "int64", "occurred_us": "int64", "kind": str, "amount": "float64",
    "points": "int64", "quantity": "int64", "duration_seconds": "int64", "score": "float64",
    "offer_code": str,
}
# A sample of pks is sent in slices: one array parameter per COPY, bounded in size.
_PK_SLICE = 50_000


def _copy_csv(sql: str, params: list, dtypes: dict) -> pd.DataFrame:
    """Run ``COPY (sql) TO STDOUT (FORMAT csv)`` and parse the bytes with pandas' C reader."""
    buffer = io.BytesIO()
    with connection.cursor() as cursor:
        # cursor.connection is the psycopg 3 connection: COPY needs its own cursor.
        with cursor.connection.cursor() as raw, raw.copy(
            f"COPY ({sql}) TO STDOUT (FORMAT csv)", params
        ) as copy:
            for block in copy:
                buffer.write(block)
    if not buffer.tell():
        return pd.DataFrame({name: pd.Series(dtype=dtype if dtype is not str else object)
                             for name, dtype in dtypes.items()})
    buffer.seek(0)
    numeric_nulls = {name: [""] for name, dtype in dtypes.items() if dtype == "float64"}
    return pd.read_csv(
        buffer, header=None, names=list(dtypes), dtype=dtypes, keep_default_na=False,
        na_values=numeric_nulls, engine="c",
    )


def _frames_copy(
    *, as_of: date, pk_from: int | None, pk_to: int | None, consenting_only: bool, pks: np.ndarray | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    where = ["m.erased_at IS NULL"]
    params: list = []
    if consenting_only:
        where.append("m.consent_profiling")
    if pk_from is not None:
        where.append("m.id >= %s")
        params.append(int(pk_from))
    if pk_to is not None:
        where.append("m.id <= %s")
        params.append(int(pk_to))
    member_table, event_table = Member._meta.db_table, Event._meta.db_table
    member_sql = (
        "SELECT m.id, m.member_id, m.birth_year, m.gender, m.region, m.tier, m.points_balance, "
        f"m.joined_at, m.consent_profiling::int FROM {member_table} m WHERE {{where}} ORDER BY m.id"
    )
    # occurred_at as integer microseconds since the epoch: parsed as a number, not as text.
    event_sql = (
        "SELECT e.member_id, (extract(epoch FROM e.occurred_at) * 1000000)::bigint, e.kind, "
        "e.amount, e.points, e.quantity, e.duration_seconds, e.score, e.offer_code "
        f"FROM {event_table} e JOIN {member_table} m ON m.id = e.member_id "
        "WHERE e.occurred_at < %s AND {where}"
    )
    # The pk bounds are repeated on the event side so the (member, occurred_at) index is ranged.
    event_bounds = "".join(
        f" AND e.member_id {op} %s" for op, value in ((">=", pk_from), ("<=", pk_to)) if value is not None
    )
    before = as_of_instant(as_of)
    slices: list[np.ndarray | None] = [None] if pks is None else [
        pks[start : start + _PK_SLICE] for start in range(0, len(pks), _PK_SLICE)
    ] or [pks]
    member_parts, event_parts = [], []
    for part in slices:
        clause = " AND ".join(where)
        extra: list = []
        if part is not None:
            clause += " AND m.id = ANY(%s)"
            extra = [part.tolist()]
        member_parts.append(_copy_csv(member_sql.format(where=clause), [*params, *extra], _MEMBER_DTYPES))
        event_parts.append(_copy_csv(
            event_sql.format(where=clause) + event_bounds,
            [before, *params, *extra, *[int(v) for v in (pk_from, pk_to) if v is not None]],
            _EVENT_DTYPES,
        ))
    members = member_parts[0] if len(member_parts) == 1 else pd.concat(member_parts, ignore_index=True)
    events = event_parts[0] if len(event_parts) == 1 else pd.concat(event_parts, ignore_index=True)
    # Dates stay datetime64 (NaT when unknown); birth_year stays float (NaN when unknown).
    members["joined_at"] = pd.to_datetime(members["joined_at"].replace("", None), format="%Y-%m-%d")
    members["consent_profiling"] = members["consent_profiling"].astype(bool)
    events.insert(1, "occurred_at", pd.to_datetime(events.pop("occurred_us"), unit="us", utc=True))
    events = events[["member_pk", *EVENT_FIELDS[1:]]]
    return members, events


def consenting_member_pks() -> np.ndarray:
    """Primary keys of the members who may be profiled (consenting, not erased), ascending."""
    qs = Member.objects.filter(consent_profiling=True, erased_at__isnull=True).order_by("pk")
    return np.fromiter(qs.values_list("pk", flat=True).iterator(chunk_size=50_000), dtype=np.int64)


def offer_terms_list(*, active_only: bool = True, codes: list[str] | None = None) -> list[OfferTerms]:
    """Offer catalog as OfferTerms (ordered by code), excluding the no-action pseudo offer."""
    qs = Offer.objects.exclude(kind="no_action")
    if active_only:
        qs = qs.filter(active=True)
    if codes is not None:
        qs = qs.filter(code__in=codes)
    return [
        OfferTerms(code=o.code, kind=o.kind, cost=float(o.cost), value=float(o.value), high_stakes=o.high_stakes)
        for o in qs.order_by("code")
    ]


def model_version_champion() -> ModelVersion | None:
    return ModelVersion.objects.filter(status=ModelVersion.Status.CHAMPION).first()
