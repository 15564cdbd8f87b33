"""Reads for the prediction engine: member/event frames, offer terms, the champion model."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Any

import numpy as np
import pandas as pd
from django.db import connection
from django.db.models import Case, Value, When

from loyalty.models import Event, Member, Offer
from loyalty.pii import EncryptedTextField, decrypt
from recommendations.models import ModelVersion
from recommendations.scoring import OfferTerms
from recommendations.text import comment_sentiments

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
    never read. Events come back with ``member_pk`` (the members' pk), tz-aware UTC
    ``occurred_at`` and ``sentiment``: the VADER score of a feedback event's comment (NaN
    without one). Only feedback events' comments are read and decrypted, and the text is
    dropped once scored: the frames hold no comment text.

    On Postgres each frame is one query returning CSV text, parsed by pandas' C reader: no
    ORM instances or per-row Python tuples (a 10,000-member chunk has ~200,000 events).
    Other backends (the embedded SQLite) read through the ORM.
    """
    if pks is not None:
        pks = np.unique(np.asarray(pks, dtype=np.int64))
    if connection.vendor == "postgresql":
        return _frames_sql(
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
    # The comment of feedback events only (decrypted by the field), as "feedback_comment".
    events_qs = events_qs.annotate(feedback_comment=Case(
        When(kind="feedback", then="comment"), default=Value(""), output_field=EncryptedTextField()
    ))
    events = pd.DataFrame.from_records(
        # The same order as _frames_sql: by member, time and id.
        events_qs.order_by("member_id", "occurred_at", "pk")
        .values_list(*EVENT_FIELDS, "feedback_comment").iterator(chunk_size=20_000),
        columns=[*EVENT_FIELDS, "feedback_comment"],
    ).rename(columns={"member_id": "member_pk"})
    events["sentiment"] = comment_sentiments(events.pop("feedback_comment"))
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


def _csv_field(expression: str, *, text: bool) -> str:
    """SQL for one CSV field: text quoted (quotes doubled), NULL as an empty field."""
    if text:
        return f"""'"' || replace(({expression})::text, '"', '""') || '"'"""
    return f"coalesce(({expression})::text, '')"


def _csv_frame(*, fields: list[tuple[str, str, Any]], source: str, params: list, order: str = "") -> pd.DataFrame:
    """One query whose single value is the whole result as CSV text, parsed by pandas' C reader.

    ``fields`` are (name, SQL expression, dtype); ``str`` dtypes are text. Postgres joins the
    rows (string_agg), so Python sees one string instead of one message per row: a chunk's
    ~200,000 events cost one round trip and one C parse, no per-row Python work.
    """
    line = " || ',' || ".join(_csv_field(sql, text=dtype is str) for _, sql, dtype in fields)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT string_agg({line}, E'\\n' {order}) FROM {source}", params)
        body = cursor.fetchone()[0]
    dtypes = {name: dtype for name, _, dtype in fields}
    if not body:
        return pd.DataFrame({name: pd.Series(dtype=object if dtype is str else dtype) for name, dtype in dtypes.items()})
    numeric_nulls = {name: [""] for name, dtype in dtypes.items() if dtype == "float64"}
    return pd.read_csv(
        io.StringIO(body), header=None, names=list(dtypes), dtype=dtypes, keep_default_na=False,
        na_values=numeric_nulls, engine="c",
    )


# (column name in the frame, SQL expression, dtype); numeric NULLs become NaN, text stays "".
_MEMBER_COLUMNS: list[tuple[str, str, Any]] = [
    ("pk", "m.id", "int64"), ("member_id", "m.member_id", str), ("birth_year", "m.birth_year", "float64"),
    ("gender", "m.gender", str), ("region", "m.region", str), ("tier", "m.tier", str),
    ("points_balance", "m.points_balance", "int64"), ("joined_at", "m.joined_at - DATE '1970-01-01'", "float64"),  # days since the epoch
    ("consent_profiling", "m.consent_profiling::int", "int8"),
]
_EVENT_COLUMNS: list[tuple[str, str, Any]] = [
    ("member_pk", "e.member_id", "int64"),
    # Integer microseconds since the epoch: parsed as a number, not as timestamp text.
    ("occurred_us", "(extract(epoch FROM e.occurred_at) * 1000000)::bigint", "int64"),
    ("kind", "e.kind", str), ("amount", "e.amount", "float64"), ("points", "e.points", "int64"),
    ("quantity", "e.quantity", "int64"), ("duration_seconds", "e.duration_seconds", "int64"),
    ("score", "e.score", "float64"), ("offer_code", "e.offer_code", str),
    # Ciphertext of feedback comments only; other kinds never carry one worth reading.
    ("comment_token", "CASE WHEN e.kind = 'feedback' THEN e.comment ELSE '' END", str),
    # Only to put the rows in a fixed order (below); dropped from the frame.
    ("event_pk", "e.id", "int64"),
]
# A sample of pks is sent in slices: one array parameter per query, bounded in size.
_PK_SLICE = 50_000


def _frames_sql(
    *, as_of: date, pk_from: int | None, pk_to: int | None, consenting_only: bool, pks: np.ndarray | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    where = ["m.erased_at IS NULL"]
    params: list = []
    if consenting_only:
        where.append("m.consent_profiling")
    # The pk bounds go on both sides so the (member, occurred_at) index is scanned by range.
    event_where = ["e.occurred_at < %s"]
    event_params: list = [as_of_instant(as_of)]
    for op, value in ((">=", pk_from), ("<=", pk_to)):
        if value is not None:
            where.append(f"m.id {op} %s")
            params.append(int(value))
            event_where.append(f"e.member_id {op} %s")
            event_params.append(int(value))
    member_table, event_table = Member._meta.db_table, Event._meta.db_table
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
        member_parts.append(_csv_frame(
            fields=_MEMBER_COLUMNS, source=f"{member_table} m WHERE {clause}", params=[*params, *extra],
            order="ORDER BY m.id",
        ))
        event_parts.append(_csv_frame(
            fields=_EVENT_COLUMNS,
            source=f"{event_table} e JOIN {member_table} m ON m.id = e.member_id "
                   f"WHERE {' AND '.join(event_where)} AND {clause}",
            params=[*event_params, *params, *extra],
        ))
    members = member_parts[0] if len(member_parts) == 1 else pd.concat(member_parts, ignore_index=True)
    events = event_parts[0] if len(event_parts) == 1 else pd.concat(event_parts, ignore_index=True)
    # string_agg without ORDER BY returns rows in the plan's order: a sequential scan's is the
    # table's physical layout, which updates and vacuum change, and on a table over a quarter
    # of shared_buffers a synchronized scan starts where an earlier one stopped. The order
    # reaches the models (float sums in the features, the row order a tree is fitted on), so
    # sort by member, time and id: here, in C, rather than inside the aggregate.
    order = np.lexsort((events["event_pk"].to_numpy(), events["occurred_us"].to_numpy(), events["member_pk"].to_numpy()))
    events = events.drop(columns=["event_pk"]).take(order).reset_index(drop=True)
    # Dates as datetime64 (NaT when unknown); birth_year stays float (NaN when unknown).
    members["joined_at"] = pd.to_datetime(members["joined_at"], unit="D")
    members["consent_profiling"] = members["consent_profiling"].astype(bool)
    events.insert(1, "occurred_at", pd.to_datetime(events.pop("occurred_us"), unit="us", utc=True))
    events["sentiment"] = _token_sentiments(events.pop("comment_token"))
    return members, events[["member_pk", *EVENT_FIELDS[1:], "sentiment"]]


def _token_sentiments(tokens: pd.Series) -> np.ndarray:
    """VADER score per encrypted comment (NaN when empty); only non-empty tokens are decrypted."""
    out = np.full(len(tokens), np.nan)
    present = (tokens.fillna("") != "").to_numpy()
    if present.any():
        out[present] = comment_sentiments(decrypt(token) for token in tokens[present])
    return out


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
