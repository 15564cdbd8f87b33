"""CSV imports of members, events and offers: one streaming service for commands and the API.

The file is read in chunks with pandas (never whole), each chunk is validated with vectorised
checks and written in bulk, all inside one transaction: in the default mode a single bad row
anywhere rolls back everything. `ImportBatch` is created before and finalised after that
transaction, so a failed import still leaves its record.

Row numbers in errors are 1-based data rows: the header is not counted, so data row N is
usually line N + 1 of the file (unless a quoted field spans several lines).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection, transaction
from django.utils import timezone
from tqdm import tqdm

from governance.audit import audit_log
from loyalty.definitions import EVENT_COLUMNS, MEMBER_COLUMNS, OFFER_COLUMNS, event_fingerprints
from loyalty.models import (
    OFFER_CODE_PATTERN,
    Event,
    EventKind,
    ImportBatch,
    Member,
    Offer,
    OfferKind,
    Tier,
)
from loyalty.pii import encrypt_series, erasure_token
from recommendations.text import feedback_sentiments

CHUNK_ROWS = 50_000
# How many row errors an ImportResult / ImportBatch keeps; the total is always counted.
MAX_REPORTED_ERRORS = 100
BULK_BATCH_SIZE = 5_000
INT32_MAX = 2**31 - 1
MAX_DECIMAL = Decimal("99999999.99")  # DecimalField(max_digits=10, decimal_places=2)

_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
_EMAIL_RE = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

Actor = AbstractBaseUser | AnonymousUser | None
Source = str | Path | IO[bytes]


class ImportFileError(Exception):
    """The file as a whole cannot be imported: encoding, header, CSV syntax."""

    def __init__(self, message: str, *, column: str = "") -> None:
        super().__init__(message)
        self.column = column


@dataclass(frozen=True)
class RowError:
    row: int | None  # 1-based data row (header not counted); None for a file-level error
    column: str
    message: str
    # The offending cell, except for personal data columns whose values are never echoed.
    value: str | None = None

    def __str__(self) -> str:
        if self.row is None:
            return self.message  # file-level messages name their columns themselves
        column = f", column {self.column}" if self.column else ""
        shown = f" (got {self.value!r})" if self.value is not None else ""
        return f"row {self.row}{column}: {self.message}{shown}"


@dataclass
class ImportResult:
    kind: str
    batch_id: int
    filename: str
    status: str = ImportBatch.Status.RUNNING
    rows_read: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    created: int = 0
    updated: int = 0
    # Events already stored (or repeated within the file): valid, but written only once.
    duplicates: int = 0
    error_count: int = 0
    errors: list[RowError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rejects_path: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == ImportBatch.Status.SUCCEEDED

    def counts(self) -> dict[str, int]:
        return {
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "rows_rejected": self.rows_rejected,
            "created": self.created,
            "updated": self.updated,
            "duplicates": self.duplicates,
            "error_count": self.error_count,
        }

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["errors"] = [dict(asdict(e), text=str(e)) for e in self.errors]
        return data


# --------------------------------------------------------------------------- row checks


class _RowChecker:
    """Problems found in one chunk, collected as boolean masks so the checks stay vectorised."""

    def __init__(self, chunk: pd.DataFrame, pii_columns: frozenset[str]) -> None:
        self.chunk = chunk
        self.pii_columns = pii_columns
        self.problems: list[tuple[pd.Series, str, str]] = []
        self.bad = pd.Series(False, index=chunk.index)

    def fail(self, mask: pd.Series, column: str, reason: str) -> None:
        mask = mask.fillna(False).astype(bool)
        if mask.any():
            self.problems.append((mask, column, reason))
            self.bad |= mask

    @property
    def error_count(self) -> int:
        return sum(int(mask.sum()) for mask, _, _ in self.problems)

    def _value(self, index: Any, column: str) -> str | None:
        if column in self.pii_columns or column not in self.chunk.columns:
            return None
        value = str(self.chunk.at[index, column])
        return value if value.strip() else None

    def row_errors(self, limit: int) -> list[RowError]:
        errors: list[RowError] = []
        for mask, column, reason in self.problems:
            for index in self.chunk.index[mask][:limit]:
                errors.append(RowError(int(index) + 1, column, reason, self._value(index, column)))
        errors.sort(key=lambda e: e.row or 0)
        return errors[:limit]

    def messages(self) -> pd.Series:
        """One text per bad row, for the rejects file."""
        texts: dict[Any, list[str]] = {}
        for mask, column, reason in self.problems:
            for index in self.chunk.index[mask]:
                texts.setdefault(index, []).append(
                    str(RowError(int(index) + 1, column, reason, self._value(index, column)))
                )
        return pd.Series({index: "; ".join(parts) for index, parts in texts.items()}, dtype=object)


def _text(chunk: pd.DataFrame, column: str) -> pd.Series:
    if column not in chunk.columns:
        return pd.Series("", index=chunk.index, dtype=object)
    return chunk[column].astype(str).str.strip()


def _require(check: _RowChecker, raw: pd.Series, column: str) -> None:
    check.fail(raw == "", column, "missing required value")


def _max_length(check: _RowChecker, raw: pd.Series, column: str, limit: int) -> None:
    check.fail(raw.str.len() > limit, column, f"longer than {limit} characters")


def _number(
    check: _RowChecker, raw: pd.Series, column: str, *, integer: bool, minimum: float | None,
    what: str = "",
) -> pd.Series:
    """Parsed floats (NaN where empty or bad); bad cells are reported on `check`."""
    present = raw != ""
    parsed = pd.to_numeric(raw.where(present), errors="coerce").astype(float)
    check.fail(present & ~np.isfinite(parsed), column, "not a number")
    ok = np.isfinite(parsed)
    if integer:
        check.fail(ok & (parsed % 1 != 0), column, "not a whole number")
        check.fail(ok & (parsed.abs() > INT32_MAX), column, "number too large")
    if minimum is not None:
        check.fail(ok & (parsed < minimum), column, f"negative {what or column}")
    return parsed.where(ok)


def _timestamps(check: _RowChecker, raw: pd.Series, column: str) -> pd.Series:
    present = raw != ""
    parsed = pd.to_datetime(raw.where(present), utc=True, format="ISO8601", errors="coerce")
    check.fail(present & parsed.isna(), column, "bad date (expected ISO 8601, e.g. 2024-03-31 or 2024-03-31T14:05:00)")
    return parsed


def _booleans(check: _RowChecker, raw: pd.Series, column: str, *, default: bool) -> pd.Series:
    lowered = raw.str.lower()
    check.fail(
        (lowered != "") & ~lowered.isin(_TRUE | _FALSE), column, "not a boolean (use true/false, yes/no or 1/0)"
    )
    return lowered.map(lambda v: True if v in _TRUE else False if v in _FALSE else default).astype(bool)


def _choice(check: _RowChecker, raw: pd.Series, column: str, allowed: Iterable[str], *, what: str) -> pd.Series:
    allowed = list(allowed)
    lowered = raw.str.lower()
    check.fail((lowered != "") & ~lowered.isin(allowed), column, f"unknown {what} (expected one of {', '.join(allowed)})")
    return lowered


def _decimals(check: _RowChecker, raw: pd.Series, column: str, *, non_negative: bool) -> pd.Series:
    def parse(text: str) -> Decimal | None | str:
        if text == "":
            return None
        try:
            value = Decimal(text)
        except InvalidOperation:
            return "bad"
        return value if value.is_finite() else "bad"

    parsed = raw.map(parse)
    is_bad = parsed.map(lambda v: isinstance(v, str))
    check.fail(is_bad, column, "not a number")
    numbers = parsed.where(~is_bad, None)
    is_num = numbers.map(lambda v: isinstance(v, Decimal))
    check.fail(is_num & numbers.map(lambda v: isinstance(v, Decimal) and v != v.quantize(Decimal("0.01"))),
               column, "more than 2 decimal places")
    check.fail(is_num & numbers.map(lambda v: isinstance(v, Decimal) and abs(v) > MAX_DECIMAL), column,
               "number too large")
    if non_negative:
        check.fail(is_num & numbers.map(lambda v: isinstance(v, Decimal) and v < 0), column, f"negative {column}")
    return numbers


def _check_nul(check: _RowChecker, chunk: pd.DataFrame, columns: Iterable[str]) -> None:
    # Postgres text cannot hold NUL; catch it here rather than as a failed COPY.
    for column in columns:
        if column in chunk.columns:
            check.fail(chunk[column].astype(str).str.contains("\x00", regex=False), column,
                       "contains a NUL character")


def _lookup(queryset_for: Callable[[list[str]], Iterable[tuple]], keys: list[str]) -> list[tuple]:
    """Run an `__in` lookup in slices small enough for every backend's parameter limit."""
    size = connection.features.max_query_params or 10_000
    size = min(size - 10, 10_000)
    rows: list[tuple] = []
    for start in range(0, len(keys), size):
        rows.extend(queryset_for(keys[start:start + size]))
    return rows


@dataclass
class _Checked:
    check: _RowChecker
    frame: pd.DataFrame  # typed values, one row per chunk row (only good rows are written)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Written:
    written: int = 0
    created: int = 0
    updated: int = 0
    duplicates: int = 0


@dataclass
class _Context:
    """State carried from chunk to chunk of one import."""

    present: frozenset[str]
    now: Any
    first_row_of_key: dict[str, int] = field(default_factory=dict)


def _duplicates_in_file(check: _RowChecker, keys: pd.Series, column: str, ctx: _Context) -> None:
    """A key may appear once per file: an upsert cannot apply two rows to one record."""
    earlier = keys.map(lambda k: ctx.first_row_of_key.get(k, 0)).astype(int)
    within = keys.duplicated(keep="first") & (keys != "")
    check.fail((earlier > 0) & (keys != ""), column, "duplicate key (it appears on an earlier row)")
    check.fail(within & (earlier == 0), column, "duplicate key (it appears on an earlier row)")
    for key, index in zip(keys, keys.index, strict=True):
        if key and key not in ctx.first_row_of_key:
            ctx.first_row_of_key[key] = int(index) + 1


# --------------------------------------------------------------------------- members


MEMBER_PII = frozenset({"birth_date", "name", "email"})


def _check_members(chunk: pd.DataFrame, ctx: _Context) -> _Checked:
    check = _RowChecker(chunk, MEMBER_PII)
    _check_nul(check, chunk, MEMBER_COLUMNS)
    member_id = _text(chunk, "member_id")
    _require(check, member_id, "member_id")
    _max_length(check, member_id, "member_id", 64)
    _duplicates_in_file(check, member_id, "member_id", ctx)

    joined = _timestamps(check, _text(chunk, "joined_at"), "joined_at")
    birth = _timestamps(check, _text(chunk, "birth_date"), "birth_date")
    check.fail(birth > ctx.now, "birth_date", "date in the future")
    check.fail(joined > ctx.now, "joined_at", "date in the future")
    gender = _text(chunk, "gender")
    _max_length(check, gender, "gender", 16)
    region = _text(chunk, "region")
    _max_length(check, region, "region", 32)
    tier = _choice(check, _text(chunk, "tier"), "tier", Tier.values, what="tier")
    points = _number(check, _text(chunk, "points_balance"), "points_balance", integer=True, minimum=0,
                     what="points balance")
    consent = _booleans(check, _text(chunk, "consent_profiling"), "consent_profiling", default=False)
    name = _text(chunk, "name")
    _max_length(check, name, "name", 200)
    email = _text(chunk, "email")
    _max_length(check, email, "email", 254)
    check.fail((email != "") & ~email.str.match(_EMAIL_RE), "email", "not an email address")

    keys = sorted(set(member_id[member_id != ""]))
    existing = {
        row[0]: row[1:]
        for row in _lookup(
            lambda part: Member.objects.filter(member_id__in=part).values_list(
                "member_id", "consent_profiling", "consent_at", "erased_at"
            ),
            keys,
        )
    }
    # An erased member's external id survives only as a keyed hash: refuse it under that name too.
    tokens = {erasure_token(k): k for k in keys}
    erased_ids = {tokens[t[0]] for t in _lookup(
        lambda part: Member.objects.filter(member_id__in=part).values_list("member_id"), sorted(tokens)
    )}
    erased = member_id.map(lambda k: k in erased_ids or (k in existing and existing[k][2] is not None))
    check.fail(erased, "member_id", "member was erased under a privacy request; its data is not re-imported")

    frame = pd.DataFrame({
        "member_id": member_id, "joined_at": joined, "birth_date": birth, "gender": gender,
        "region": region, "tier": tier.where(tier != "", Tier.BRONZE), "points_balance": points.fillna(0),
        "consent_profiling": consent, "name": name, "email": email,
    })
    return _Checked(check, frame, {"existing": existing})


def _date_or_none(value: Any) -> Any:
    return None if pd.isna(value) else value.date()


def _write_members(rows: pd.DataFrame, checked: _Checked, ctx: _Context) -> _Written:
    existing: dict[str, tuple] = checked.extra["existing"]
    members = []
    for rec in rows.itertuples(index=False):
        birth_date = _date_or_none(rec.birth_date)
        before = existing.get(rec.member_id)
        if not rec.consent_profiling:
            consent_at = None
        elif before is not None and before[0] and before[1] is not None:
            consent_at = before[1]  # consent was already given: keep when
        else:
            consent_at = ctx.now  # consent turns true with this import
        members.append(Member(
            member_id=rec.member_id, joined_at=_date_or_none(rec.joined_at), birth_date=birth_date,
            birth_year=birth_date.year if birth_date else None, gender=rec.gender, region=rec.region,
            tier=rec.tier, points_balance=int(rec.points_balance), consent_profiling=rec.consent_profiling,
            consent_at=consent_at, name=rec.name, email=rec.email,
        ))
    # Only the columns the file has are overwritten: a file without `email` keeps stored emails.
    update_fields = [c for c in MEMBER_COLUMNS if c in ctx.present and c != "member_id"]
    if "birth_date" in ctx.present:
        update_fields.append("birth_year")
    if "consent_profiling" in ctx.present:
        update_fields.append("consent_at")
    update_fields.append("updated_at")
    Member.objects.bulk_create(
        members, batch_size=BULK_BATCH_SIZE, update_conflicts=True, unique_fields=["member_id"],
        update_fields=update_fields,
    )
    updated = sum(1 for key in rows["member_id"] if key in existing)
    return _Written(written=len(members), created=len(members) - updated, updated=updated)


# --------------------------------------------------------------------------- events


EVENT_PII = frozenset({"comment"})


def _check_events(chunk: pd.DataFrame, ctx: _Context) -> _Checked:
    check = _RowChecker(chunk, EVENT_PII)
    _check_nul(check, chunk, EVENT_COLUMNS)
    member_id = _text(chunk, "member_id")
    _require(check, member_id, "member_id")
    occurred_raw = _text(chunk, "occurred_at")
    _require(check, occurred_raw, "occurred_at")
    occurred = _timestamps(check, occurred_raw, "occurred_at")
    kind_raw = _text(chunk, "kind")
    _require(check, kind_raw, "kind")
    kind = _choice(check, kind_raw, "kind", EventKind.values, what="event kind")
    amount = _number(check, _text(chunk, "amount"), "amount", integer=False, minimum=0)
    points = _number(check, _text(chunk, "points"), "points", integer=True, minimum=None)
    quantity = _number(check, _text(chunk, "quantity"), "quantity", integer=True, minimum=0)
    duration = _number(check, _text(chunk, "duration_seconds"), "duration_seconds", integer=True, minimum=0,
                       what="duration")
    score = _number(check, _text(chunk, "score"), "score", integer=True, minimum=None)
    check.fail(score.notna() & ((score < 1) | (score > 5)), "score", "score outside 1-5")
    offer_code = _text(chunk, "offer_code")
    _max_length(check, offer_code, "offer_code", 32)
    # Responses are matched to exposures by code: an offer event without one is useless.
    check.fail(kind.isin(["offer_sent", "offer_redeemed"]) & (offer_code == ""), "offer_code",
               "required for offer_sent and offer_redeemed events")
    comment = chunk["comment"].astype(str) if "comment" in chunk.columns else pd.Series("", index=chunk.index)

    # Member pks for this chunk only: the member table is never loaded whole.
    keys = sorted(set(member_id[member_id != ""]))
    pks = dict(_lookup(
        lambda part: Member.objects.filter(member_id__in=part).values_list("member_id", "pk"), keys
    ))
    member_pk = member_id.map(pks)
    check.fail((member_id != "") & member_pk.isna(), "member_id", "unknown member")

    frame = pd.DataFrame({
        "member_id": member_id, "member_pk": member_pk, "occurred_at": occurred, "kind": kind,
        "amount": amount.fillna(0.0), "points": points.fillna(0), "quantity": quantity.fillna(0),
        "duration_seconds": duration.fillna(0), "score": score, "offer_code": offer_code, "comment": comment,
    })
    return _Checked(check, frame)


_EVENT_DB_COLUMNS = [
    "member_id", "occurred_at", "kind", "amount", "points", "quantity", "duration_seconds", "score",
    "offer_code", "comment", "fingerprint", "sentiment",
]
_EVENT_STAGING = "loyalty_event_import_staging"


def _event_rows(rows: pd.DataFrame) -> pd.DataFrame:
    out = rows.copy()
    for column in ("points", "quantity", "duration_seconds"):
        out[column] = out[column].astype("int64")
    out["fingerprint"] = event_fingerprints(out)
    out["member_id"] = out["member_pk"].astype("int64")
    out["score"] = out["score"].astype("Int64")
    out["sentiment"] = feedback_sentiments(out["kind"], out["comment"])
    return out[_EVENT_DB_COLUMNS]


def _use_copy() -> bool:
    return connection.vendor == "postgresql"


def _insert_events_copy(rows: pd.DataFrame) -> int:
    """COPY into a staging table, then one INSERT ... ON CONFLICT DO NOTHING (exact count)."""
    table = Event._meta.db_table
    columns = ", ".join(_EVENT_DB_COLUMNS)
    # numpy formats timestamps several times faster than pandas' to_csv does.
    utc = rows["occurred_at"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    rows = rows.assign(occurred_at=np.char.add(np.datetime_as_string(utc, unit="us"), "+00:00"),
                       comment=encrypt_series(rows["comment"]))
    payload = rows.to_csv(index=False, header=False)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_EVENT_STAGING} ("
            "member_id bigint, occurred_at timestamptz, kind varchar(16), amount double precision, "
            "points integer, quantity integer, duration_seconds integer, score smallint, "
            "offer_code varchar(32), comment text, fingerprint varchar(40), sentiment double precision) ON COMMIT DROP"
        )
        cursor.execute(f"TRUNCATE {_EVENT_STAGING}")
        # Empty text cells are '' (the columns are NOT NULL); an empty score stays NULL.
        with cursor.cursor.copy(
            f"COPY {_EVENT_STAGING} ({columns}) FROM STDIN WITH (FORMAT csv, FORCE_NOT_NULL (offer_code, comment))"
        ) as copy:
            copy.write(payload)
        cursor.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {_EVENT_STAGING} "
            "ON CONFLICT (fingerprint) DO NOTHING"
        )
        return cursor.rowcount


def _insert_events_orm(rows: pd.DataFrame) -> int:
    fingerprints = sorted(set(rows["fingerprint"]))
    stored = len(_lookup(
        lambda part: Event.objects.filter(fingerprint__in=part).values_list("fingerprint"), fingerprints
    ))
    Event.objects.bulk_create(
        [
            Event(
                member_id=int(r.member_id), occurred_at=r.occurred_at.to_pydatetime(), kind=r.kind,
                amount=float(r.amount), points=int(r.points), quantity=int(r.quantity),
                duration_seconds=int(r.duration_seconds), score=None if pd.isna(r.score) else int(r.score),
                offer_code=r.offer_code, comment=r.comment, fingerprint=r.fingerprint,
                sentiment=None if pd.isna(r.sentiment) else float(r.sentiment),
            )
            for r in rows.itertuples(index=False)
        ],
        batch_size=BULK_BATCH_SIZE,
        ignore_conflicts=True,
    )
    return len(fingerprints) - stored


def _write_events(rows: pd.DataFrame, checked: _Checked, ctx: _Context) -> _Written:
    prepared = _event_rows(rows)
    inserted = _insert_events_copy(prepared) if _use_copy() else _insert_events_orm(prepared)
    return _Written(written=inserted, created=inserted, duplicates=len(prepared) - inserted)


# --------------------------------------------------------------------------- offers


def _check_offers(chunk: pd.DataFrame, ctx: _Context) -> _Checked:
    check = _RowChecker(chunk, frozenset())
    _check_nul(check, chunk, OFFER_COLUMNS)
    code = _text(chunk, "code")
    _require(check, code, "code")
    _max_length(check, code, "code", 32)
    check.fail((code != "") & ~code.str.match(OFFER_CODE_PATTERN), "code",
               "use only letters, digits, '-' and '_'")
    _duplicates_in_file(check, code, "code", ctx)
    name = _text(chunk, "name")
    _require(check, name, "name")
    _max_length(check, name, "name", 120)
    kind_raw = _text(chunk, "kind")
    _require(check, kind_raw, "kind")
    kind = _choice(check, kind_raw, "kind", OfferKind.values, what="offer kind")
    cost = _decimals(check, _text(chunk, "cost"), "cost", non_negative=True)
    value = _decimals(check, _text(chunk, "value"), "value", non_negative=False)
    high_stakes = _booleans(check, _text(chunk, "high_stakes"), "high_stakes", default=False)
    active = _booleans(check, _text(chunk, "active"), "active", default=True)
    keys = sorted(set(code[code != ""]))
    existing = {row[0] for row in _lookup(
        lambda part: Offer.objects.filter(code__in=part).values_list("code"), keys
    )}
    frame = pd.DataFrame({
        "code": code, "name": name, "kind": kind, "cost": cost.map(lambda v: v if v is not None else Decimal(0)),
        "value": value.map(lambda v: v if v is not None else Decimal(0)), "high_stakes": high_stakes,
        "active": active,
    })
    return _Checked(check, frame, {"existing": existing})


def _write_offers(rows: pd.DataFrame, checked: _Checked, ctx: _Context) -> _Written:
    existing: set[str] = checked.extra["existing"]
    offers = [
        Offer(code=r.code, name=r.name, kind=r.kind, cost=r.cost, value=r.value, high_stakes=r.high_stakes,
              active=r.active)
        for r in rows.itertuples(index=False)
    ]
    update_fields = [c for c in OFFER_COLUMNS if c in ctx.present and c != "code"] + ["updated_at"]
    Offer.objects.bulk_create(
        offers, batch_size=BULK_BATCH_SIZE, update_conflicts=True, unique_fields=["code"],
        update_fields=update_fields,
    )
    updated = sum(1 for key in rows["code"] if key in existing)
    return _Written(written=len(offers), created=len(offers) - updated, updated=updated)


# --------------------------------------------------------------------------- the service


@dataclass(frozen=True)
class _Kind:
    columns: list[str]
    required: tuple[str, ...]
    check: Callable[[pd.DataFrame, _Context], _Checked]
    write: Callable[[pd.DataFrame, _Checked, _Context], _Written]


KINDS: dict[str, _Kind] = {
    ImportBatch.Kind.MEMBERS: _Kind(MEMBER_COLUMNS, ("member_id",), _check_members, _write_members),
    ImportBatch.Kind.EVENTS: _Kind(EVENT_COLUMNS, ("member_id", "occurred_at", "kind"), _check_events,
                                   _write_events),
    ImportBatch.Kind.OFFERS: _Kind(OFFER_COLUMNS, ("code", "name", "kind"), _check_offers, _write_offers),
}


class _RollBack(Exception):
    """Raised inside the import transaction to undo every write."""


def _file_digest(stream: IO[bytes]) -> tuple[str, int]:
    """sha256 and newline count in one pass (the count sizes the progress bar), then rewind."""
    digest = hashlib.sha256()
    lines = 0
    while block := stream.read(1 << 20):
        digest.update(block)
        lines += block.count(b"\n")
    stream.seek(0)
    return digest.hexdigest(), lines


def _read_csv(stream: IO[bytes], **kwargs: Any) -> Any:
    return pd.read_csv(
        stream, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig",
        skip_blank_lines=True, **kwargs,
    )


def _decode_error(exc: UnicodeDecodeError) -> ImportFileError:
    return ImportFileError(
        f"the file is not UTF-8 encoded (undecodable byte 0x{exc.object[exc.start]:02x}); "
        "save it as UTF-8 and import again"
    )


def _header(stream: IO[bytes], spec: _Kind) -> tuple[list[str], list[str], list[str]]:
    """(original column names, normalised names, warnings), or ImportFileError."""
    try:
        original = [str(c) for c in _read_csv(stream, nrows=0).columns]
    except UnicodeDecodeError as exc:
        raise _decode_error(exc) from exc
    except pd.errors.EmptyDataError as exc:
        raise ImportFileError(f"the file is empty: expected a header row with {', '.join(spec.columns)}") from exc
    except pd.errors.ParserError as exc:
        raise ImportFileError(f"malformed CSV header: {exc}") from exc
    finally:
        stream.seek(0)
    normalised = [c.strip().lower() for c in original]
    repeated = sorted({n for n in normalised if normalised.count(n) > 1})
    if repeated:
        raise ImportFileError(
            f"column{'s' if len(repeated) > 1 else ''} given more than once (names ignore case): "
            f"{', '.join(repeated)}",
            column=", ".join(repeated),
        )
    missing = [c for c in spec.required if c not in normalised]
    if missing:
        raise ImportFileError(
            f"missing required column{'s' if len(missing) > 1 else ''}: {', '.join(missing)} "
            f"(found: {', '.join(original) or 'none'})",
            column=", ".join(missing),
        )
    warnings = []
    unknown = [o for o, n in zip(original, normalised, strict=True) if n not in spec.columns]
    if unknown:
        warnings.append(f"ignoring unknown column{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    return original, normalised, warnings


def _chunks(stream: IO[bytes], names: list[str], chunk_rows: int) -> Iterable[pd.DataFrame]:
    try:
        with _read_csv(stream, chunksize=chunk_rows) as reader:
            for chunk in reader:
                chunk.columns = names
                yield chunk.fillna("")
    except UnicodeDecodeError as exc:
        raise _decode_error(exc) from exc
    except pd.errors.ParserError as exc:
        raise ImportFileError(f"malformed CSV: {exc}") from exc


def _default_rejects_path(source: Source, kind: str, batch_id: int) -> Path:
    if isinstance(source, str | Path):
        path = Path(source)
        return path.with_name(f"{path.stem}.rejects.csv")
    return Path(settings.DATA_DIR) / "rejects" / f"{kind}-batch-{batch_id}.rejects.csv"


def import_csv(
    *,
    kind: str,
    source: Source,
    skip_invalid: bool = False,
    rejects_path: Path | None = None,
    actor: Actor = None,
    progress: bool = False,
    filename: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> ImportResult:
    """Import one CSV file of `kind` (members, events or offers).

    Default mode: any bad row means nothing is written and the result is `failed`, with the
    first errors and their total. `skip_invalid`: good rows are written, bad rows go to a
    rejects CSV (original columns plus `error`). Either way an ImportBatch row and an audit
    row record the outcome. Raises ValueError for an unknown kind.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown import kind {kind!r} (expected one of {', '.join(KINDS)})")
    spec = KINDS[kind]
    stream: IO[bytes]
    if isinstance(source, str | Path):
        stream = open(source, "rb")  # noqa: SIM115 - closed in the finally below
        name = filename or Path(source).name
    else:
        stream = source
        stream.seek(0)
        name = filename or Path(str(getattr(source, "name", "") or "upload.csv")).name
    try:
        sha256, lines = _file_digest(stream)
        batch = ImportBatch.objects.create(
            kind=kind, filename=name[:255], sha256=sha256,
            created_by=actor if actor is not None and actor.is_authenticated else None,
        )
        if skip_invalid and rejects_path is None:
            rejects_path = _default_rejects_path(source, kind, batch.pk)
        result = ImportResult(kind=kind, batch_id=batch.pk, filename=name)
        bar = tqdm(total=max(lines - 1, 0), unit="rows", desc=f"import {kind}", disable=not progress,
                   file=sys.stderr)
        try:
            with transaction.atomic():
                _run(spec, stream, result, skip_invalid=skip_invalid, rejects_path=rejects_path,
                     chunk_rows=chunk_rows, bar=bar)
                if result.error_count and not skip_invalid:
                    raise _RollBack
                result.status = ImportBatch.Status.SUCCEEDED
                # Recorded with the data it describes: both commit or neither does.
                _finish(batch, result, actor)
                if kind == "events" and result.rows_written:
                    _announce_events(batch.pk, result.rows_written)
        except _RollBack:
            _fail(batch, result, actor)
        except ImportFileError as exc:
            result.errors = [RowError(None, exc.column, str(exc))] + result.errors[: MAX_REPORTED_ERRORS - 1]
            result.error_count += 1
            _fail(batch, result, actor)
        except Exception as exc:
            result.errors = [RowError(None, "", f"internal error: {type(exc).__name__}")]
            result.error_count += 1
            _fail(batch, result, actor)
            raise
        finally:
            bar.close()
        return result
    finally:
        if isinstance(source, str | Path):
            stream.close()


def _run(
    spec: _Kind, stream: IO[bytes], result: ImportResult, *, skip_invalid: bool, rejects_path: Path | None,
    chunk_rows: int, bar: tqdm,
) -> None:
    original, names, warnings = _header(stream, spec)
    result.warnings.extend(warnings)
    ctx = _Context(present=frozenset(names), now=timezone.now())
    rejects_started = False
    for chunk in _chunks(stream, names, chunk_rows):
        checked = spec.check(chunk, ctx)
        check = checked.check
        result.rows_read += len(chunk)
        result.rows_rejected += int(check.bad.sum())
        result.error_count += check.error_count
        room = MAX_REPORTED_ERRORS - len(result.errors)
        if room > 0 and check.problems:
            result.errors.extend(check.row_errors(room))
        # In the default mode a bad row dooms the import: keep validating (to count the
        # errors) but stop writing, since everything will be rolled back.
        if skip_invalid or result.error_count == 0:
            good = checked.frame[~check.bad]
            if len(good):
                written = spec.write(good, checked, ctx)
                result.rows_written += written.written
                result.created += written.created
                result.updated += written.updated
                result.duplicates += written.duplicates
        if skip_invalid and check.problems and rejects_path is not None:
            rejects = chunk[check.bad].copy()
            rejects.columns = original
            rejects["error"] = check.messages()
            rejects_path.parent.mkdir(parents=True, exist_ok=True)
            rejects.to_csv(rejects_path, mode="a" if rejects_started else "w", header=not rejects_started,
                           index=False)
            rejects_started = True
            result.rejects_path = str(rejects_path)
        bar.update(len(chunk))


def _announce_events(batch_id: int, rows: int) -> None:
    """After commit: tell listeners (outcome joins) that new events are in."""
    from loyalty.signals import events_imported

    transaction.on_commit(lambda: events_imported.send(sender=ImportBatch, batch_id=batch_id, rows_written=rows))


def _batch_errors(result: ImportResult) -> list[dict[str, Any]]:
    return [dict(asdict(e), text=str(e)) for e in result.errors[:MAX_REPORTED_ERRORS]]


def _finish(batch: ImportBatch, result: ImportResult, actor: Actor) -> None:
    batch.status = result.status
    batch.rows_read = result.rows_read
    batch.rows_written = result.rows_written
    batch.rows_rejected = result.rows_rejected
    batch.errors = _batch_errors(result)
    batch.finished_at = timezone.now()
    batch.save(update_fields=["status", "rows_read", "rows_written", "rows_rejected", "errors", "finished_at"])
    audit_log(
        actor=actor, action=f"import.{batch.kind}", object_type="import_batch", object_id=batch.pk,
        new={"status": result.status, **result.counts()},
    )


def _fail(batch: ImportBatch, result: ImportResult, actor: Actor) -> None:
    """Record a failed import after its transaction was rolled back: nothing was written."""
    result.status = ImportBatch.Status.FAILED
    result.rows_written = result.created = result.updated = result.duplicates = 0
    if result.rejects_path:
        Path(result.rejects_path).unlink(missing_ok=True)
        result.rejects_path = None
    with transaction.atomic():
        _finish(batch, result, actor)


def format_errors(result: ImportResult, *, limit: int) -> str:
    """Human summary of a result's errors, for the commands."""
    lines = [str(e) for e in result.errors[:limit]]
    hidden = result.error_count - len(lines)
    if hidden > 0:
        lines.append(f"... and {hidden} more")
    return "\n".join(lines)


__all__ = ["ImportFileError", "ImportResult", "KINDS", "RowError", "format_errors", "import_csv"]
