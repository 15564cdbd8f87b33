"""Reads for the prediction engine: member/event frames, offer terms, the champion model."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from django.db import connection

from loyalty.models import Event, EventKind, Member, Offer
from recommendations.models import DECIDING_ACTIONS, Decision, ModelVersion
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
    never read. Events come back with ``member_pk`` (the members' pk), tz-aware UTC
    ``occurred_at`` and ``sentiment``: the VADER score of a feedback event's comment (NaN
    without one), stored when the event was written (``Event.sentiment``): no comment is
    decrypted and the frames hold no comment text.

    On Postgres each frame is one query returning one value (members: CSV text for pandas' C
    reader; events: fixed-width binary rows for numpy): no ORM instances or per-row Python
    tuples (a 10,000-member chunk has ~700,000 events).
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
    events = pd.DataFrame.from_records(
        # The order the Postgres path gives (see _frames_sql): same data, same features.
        events_qs.order_by("member_id", "occurred_at", "id")
        .values_list(*EVENT_FIELDS, "sentiment").iterator(chunk_size=20_000),
        columns=[*EVENT_FIELDS, "sentiment"],
    ).rename(columns={"member_id": "member_pk"})
    events["sentiment"] = pd.to_numeric(events["sentiment"], errors="coerce").astype(float)
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


def _csv_quoted(expression: str) -> str:
    """SQL for a free-text CSV field: quoted, quotes doubled (the text may hold commas)."""
    return f"""'"' || replace(({expression})::text, '"', '""') || '"'"""


def _csv_or_empty(expression: str) -> str:
    """SQL for a nullable CSV field: its text, or an empty field for NULL."""
    return f"coalesce(({expression})::text, '')"


def _csv_frame(
    *, fields: list[tuple[str, str, Any]], source: str, params: list, order: str | None = None
) -> pd.DataFrame:
    """One query whose single value is the whole result as CSV text, parsed by pandas' C reader.

    ``fields`` are (name, SQL expression, dtype); ``object`` dtypes are text. Each expression
    must already be a CSV field and never NULL (concat_ws skips NULLs, which would shift the
    columns): wrap free text in _csv_quoted and nullable values in _csv_or_empty; values that
    cannot hold a comma, quote or newline (numbers, choices, Fernet tokens) go in as they are,
    which costs Postgres no quoting and no extra concatenation.

    Postgres joins the rows (string_agg), so Python sees one string instead of one message per
    row: one round trip and one C parse, no per-row Python work. (Events, ~70 a member, take the
    binary path below, which skips the text entirely.)
    With ``order`` the rows come sorted by a subquery, not by ``string_agg(... ORDER BY)``,
    which on Postgres 15 sorts again even when the rows arrive in index order.
    """
    line = ", ".join(sql for _, sql, _ in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT string_agg(line, E'\\n') FROM (SELECT concat_ws(',', {line}) AS line FROM {source}"
            f"{f' ORDER BY {order}' if order else ''}) lines",
            params,
        )
        body = cursor.fetchone()[0]
    dtypes = {name: dtype for name, _, dtype in fields}
    if not body:
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in dtypes.items()})
    numeric_nulls = {name: [""] for name, dtype in dtypes.items() if dtype == "float64"}
    # Text as object columns (Python str), as the ORM path gives: pandas 3's own string dtype
    # took ~0.3 s more CPU to parse a chunk's events.
    return pd.read_csv(
        io.StringIO(body), header=None, names=list(dtypes), dtype=dtypes, keep_default_na=False,
        na_values=numeric_nulls, engine="c",
    )


# (column name in the frame, SQL expression, dtype); numeric NULLs become NaN, text stays "".
_MEMBER_COLUMNS: list[tuple[str, str, Any]] = [
    ("pk", "m.id", "int64"), ("member_id", _csv_quoted("m.member_id"), object),
    ("birth_year", _csv_or_empty("m.birth_year"), "float64"),
    ("gender", _csv_quoted("m.gender"), object), ("region", _csv_quoted("m.region"), object),
    ("tier", _csv_quoted("m.tier"), object), ("points_balance", "m.points_balance", "int64"),
    ("joined_at", _csv_or_empty("m.joined_at - DATE '1970-01-01'"), "float64"),  # days since the epoch
    ("consent_profiling", "m.consent_profiling::int", "int8"),
]
# Events travel as binary: per row, each field's binary send form (fixed width, big-endian)
# concatenated, and all rows joined by string_agg into one bytea that np.frombuffer reads as
# a structured array. Nothing is parsed here: the frames of a 5,000-member slice (347k
# events) cost the client 0.125 s of CPU instead of 0.225 s with CSV text and pandas' C reader,
# and the database 0.37 s instead of 0.34 s (each send function allocates a buffer per value).
# At 1M members the workers' CPU fell 181 -> 159 s and the backends' rose 145 -> 161 s: a small
# net gain that moves work off the workers, which scale out. The two text fields travel
# as their position in a list sent as a parameter: the kind in EventKind, the offer code in
# the catalog (0 for anything else, rare: those rows' text is read by id afterwards).
_EVENT_KINDS = [kind.value for kind in EventKind]
_POSTGRES_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC: where timestamptz_send counts from
# (name, numpy dtype, SQL); the two %s are the text[] parameters: the kinds, then the codes.
_EVENT_BINARY_FIELDS = [
    ("event_id", ">i8", "int8send(e.id)"),
    ("member_pk", ">i8", "int8send(e.member_id)"),
    ("occurred_us", ">i8", "timestamptz_send(e.occurred_at)"),  # microseconds since 2000
    ("kind", ">i4", "int4send(coalesce(array_position(%s::text[], e.kind::text), 0))"),
    ("amount", ">f8", "float8send(e.amount)"),
    ("points", ">i4", "int4send(e.points)"),
    ("quantity", ">i4", "int4send(e.quantity)"),
    ("duration_seconds", ">i4", "int4send(e.duration_seconds)"),
    ("score", ">f8", "float8send(coalesce(e.score::float8, 'NaN'))"),
    ("offer_code", ">i4", "int4send(coalesce(array_position(%s::text[], e.offer_code::text), 0))"),
    # The comment's score, stored when the event was written: no comment is decrypted here.
    ("sentiment", ">f8", "float8send(coalesce(e.sentiment, 'NaN'))"),
]
_EVENT_BINARY_DTYPE = np.dtype([(name, dtype) for name, dtype, _ in _EVENT_BINARY_FIELDS])
_EVENT_BINARY_ROW = " || ".join(sql for _, _, sql in _EVENT_BINARY_FIELDS)


def _events_binary(*, source: str, params: list) -> pd.DataFrame:
    """The events of ``source`` (FROM/WHERE over ``e`` with its %s ``params``) as a frame
    with the columns of _frames_orm plus ``event_id`` and ``occurred_us``, in no set order."""
    codes = ["", *Offer.objects.order_by("code").values_list("code", flat=True)]
    with connection.cursor() as cursor:
        # A binary result needs server-side binding; Django's own cursors bind on the client.
        raw = psycopg.Cursor(cursor.connection)
        raw.execute(f"SELECT string_agg({_EVENT_BINARY_ROW}, ''::bytea) FROM {source}",
                    [_EVENT_KINDS, codes, *params], binary=True)
        body = raw.fetchone()[0] or b""
    rows = np.frombuffer(body, dtype=_EVENT_BINARY_DTYPE)
    kind, code = rows["kind"], rows["offer_code"]  # 1-based positions, 0 = not in the list
    frame = pd.DataFrame({
        "event_id": rows["event_id"].astype(np.int64),
        "member_pk": rows["member_pk"].astype(np.int64),
        "occurred_us": rows["occurred_us"].astype(np.int64) + _POSTGRES_EPOCH_US,
        # Text as object columns (Python str), as the ORM path gives.
        "kind": pd.Series(np.array(["", *_EVENT_KINDS], dtype=object)[kind], dtype=object),
        "amount": rows["amount"].astype(np.float64),
        **{name: rows[name].astype(np.int64) for name in ("points", "quantity", "duration_seconds")},
        "score": rows["score"].astype(np.float64),
        "offer_code": pd.Series(np.array(["", *codes], dtype=object)[code], dtype=object),
        "sentiment": rows["sentiment"].astype(np.float64),
    })
    unknown = np.flatnonzero((kind == 0) | (code == 0))
    if len(unknown):
        ids = frame["event_id"].to_numpy()[unknown]
        text = {pk: (k, c) for pk, k, c in Event.objects.filter(pk__in=ids.tolist()).values_list("pk", "kind", "offer_code")}
        frame.loc[unknown, "kind"] = [text[i][0] for i in ids]
        frame.loc[unknown, "offer_code"] = [text[i][1] for i in ids]
    return frame


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
            order="m.id",
        ))
        event_parts.append(_events_binary(
            source=f"{event_table} e JOIN {member_table} m ON m.id = e.member_id "
                   f"WHERE {' AND '.join(event_where)} AND {clause}",
            params=[*event_params, *params, *extra],
        ))
    members = member_parts[0] if len(member_parts) == 1 else pd.concat(member_parts, ignore_index=True)
    events = event_parts[0] if len(event_parts) == 1 else pd.concat(event_parts, ignore_index=True)
    # Dates as datetime64 (NaT when unknown); birth_year stays float (NaN when unknown).
    members["joined_at"] = pd.to_datetime(members["joined_at"], unit="D")
    members["consent_profiling"] = members["consent_profiling"].astype(bool)
    occurred_us = events.pop("occurred_us").to_numpy()
    events.insert(1, "occurred_at", pd.to_datetime(occurred_us, unit="us", utc=True))
    order = _event_order(
        events["member_pk"].to_numpy(), occurred_us, events.pop("event_id").to_numpy()
    )
    if order is not None:
        events = events.take(order).reset_index(drop=True)
    return members, events[["member_pk", *EVENT_FIELDS[1:], "sentiment"]]


def _event_order(member_pk: np.ndarray, occurred_us: np.ndarray, event_id: np.ndarray) -> np.ndarray | None:
    """Positions that put events in (member, time, id) order; None when they already are.

    One fixed order whatever plan Postgres picked (a parallel scan or a hash join returns rows
    in varying order): the features add floats per member in this order and take the latest
    of same-time events by it, so the same data always gives the same features.

    Sorted here rather than by an ORDER BY: the incremental sort cost the database ~0.3-0.4 s
    of CPU per 10,000-member chunk. Rows usually arrive grouped by member (the pk-range index
    scan) with a few members' events out of time order, so only those members are sorted.
    """
    step_member = np.diff(member_pk)
    if (step_member < 0).any():  # members interleaved: sort everything
        return np.lexsort((event_id, occurred_us, member_pk))
    step_time = np.diff(occurred_us)
    back = (step_member == 0) & ((step_time < 0) | ((step_time == 0) & (np.diff(event_id) < 0)))
    if not back.any():
        return None
    # Each member's rows are contiguous: sorting the rows of the members out of order by
    # (member, time, id) keeps every member in its own block.
    rows = np.flatnonzero(np.isin(member_pk, member_pk[1:][back]))
    order = np.arange(len(member_pk))
    order[rows] = rows[np.lexsort((event_id[rows], occurred_us[rows], member_pk[rows]))]
    return order


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


def standing_decisions(decisions) -> dict[int, Decision]:
    """Per recommendation id: the decision that stands on it, i.e. its latest approve, override
    or auto-approve that no undo took back. ``decisions`` is a Decision queryset narrowed to the
    recommendations of interest; one query."""
    undone = Decision.objects.filter(compensates__isnull=False).values("compensates_id")
    standing: dict[int, Decision] = {}
    for d in (decisions.filter(action__in=DECIDING_ACTIONS).exclude(pk__in=undone)
              .select_related("chosen_offer", "recommendation").order_by("sequence")):
        standing[d.recommendation_id] = d  # later in sequence replaces earlier
    return standing


def standing_decisions_frame(decisions, columns: dict[str, str]) -> pd.DataFrame:
    """standing_decisions for bulk readers (outcomes, retraining): one row per recommendation
    (the index, ``recommendation_id``) with ``columns`` (frame column -> Decision lookup) of the
    decision that stands on it. One query, streamed; no model instances."""
    undone = Decision.objects.filter(compensates__isnull=False).values("compensates_id")
    rows = pd.DataFrame.from_records(
        decisions.filter(action__in=DECIDING_ACTIONS).exclude(pk__in=undone)
        .order_by("recommendation_id", "sequence")
        .values_list("recommendation_id", *columns.values()).iterator(chunk_size=20_000),
        columns=["recommendation_id", *columns],
    )
    # Later in sequence replaces earlier, as in standing_decisions.
    return rows.drop_duplicates("recommendation_id", keep="last").set_index("recommendation_id")


# Up to this many members are looked up by id; more (a scoring chunk, a re-routing of the whole
# queue) by the pk range they span, which Postgres scans instead of parsing a long IN list.
_MEMBERS_BY_ID = 500


def turned_down_before(
    *, run_ids: Sequence[int], member_ids: Sequence[int], offer_ids: Sequence[int | None],
) -> list[Decision | None]:
    """Per item (run, member, the MODEL's pick; None = no action): the manager's override that
    stands against that pick for the member, or None.

    It is read from the member's latest earlier recommendation where the model picked the same
    offer (Recommendation.model_offer_id_picked) and a decision stands: an override there is
    it; an approval of a recalled choice there confirms the override it recalled; an approval
    of the model's pick lifts it. One query for all items."""
    out: list[Decision | None] = [None] * len(member_ids)
    if not len(member_ids):
        return out
    members = {int(m) for m in member_ids}
    decisions = Decision.objects.filter(recommendation__run_id__lt=max(int(r) for r in run_ids))
    decisions = decisions.filter(recommendation__member_id__in=members) if len(members) <= _MEMBERS_BY_ID else (
        decisions.filter(recommendation__member_id__gte=min(members), recommendation__member_id__lte=max(members)))
    by_pick: dict[tuple[int, int | None], list[Decision]] = {}
    standing = standing_decisions(decisions.select_related("recommendation__recalled_decision__recommendation"))
    for d in sorted(standing.values(), key=lambda d: d.recommendation.run_id):
        by_pick.setdefault((d.recommendation.member_id, d.recommendation.model_offer_id_picked), []).append(d)
    for i, (run_id, member, offer) in enumerate(zip(run_ids, member_ids, offer_ids, strict=True)):
        last = next((d for d in reversed(by_pick.get((int(member), offer), ())) if d.recommendation.run_id < run_id), None)
        if last is None:
            continue
        if last.action == Decision.Action.OVERRIDE:
            out[i] = last
        elif last.recommendation.recalled_decision is not None:
            out[i] = last.recommendation.recalled_decision
    return out

