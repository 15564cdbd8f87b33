"""Privacy services: erasure (right to be forgotten), event retention, PII key rotation.

One code path each, whoever asks: the admin page, the API, the management commands and the
Celery beat task all call these functions. Each change is audited in the transaction that
makes it, and audit payloads name members only by pseudo_id.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection, transaction
from django.utils import timezone

from governance.audit import audit_log
from loyalty import pii
from loyalty.models import Event, ImportBatch, Member

logger = logging.getLogger(__name__)

Actor = AbstractBaseUser | AnonymousUser | None


# --------------------------------------------------------------------------- erasure


class ErasureError(Exception):
    """The erasure request cannot be carried out (no such member)."""


@dataclass(frozen=True)
class ErasureResult:
    member_pseudo_id: uuid.UUID
    already_erased: bool
    events_deleted: int = 0
    recommendations_withdrawn: int = 0
    import_reports_scrubbed: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["member_pseudo_id"] = str(self.member_pseudo_id)
        return data


def member_find(*, reference: str) -> Member:
    """The member an erasure request names: external member id, or pseudo id.

    An already-erased member is still found by its old external id (through the keyed hash
    that replaced it), so a repeated request answers "already erased", not "unknown".
    """
    reference = reference.strip()
    if not reference:
        raise ErasureError("give a member id or pseudo id")
    candidates = [reference, pii.erasure_token(reference)]
    member = Member.objects.filter(member_id__in=candidates).first()
    if member is None:
        try:
            member = Member.objects.filter(pseudo_id=uuid.UUID(reference)).first()
        except ValueError:
            member = None
    if member is None:
        raise ErasureError("no member with that id")
    return member


def _scrub_import_reports(external_id: str) -> int:
    """Import error reports echo non-personal cells, member_id among them: remove this one."""
    quoted = repr(external_id)
    scrubbed = 0
    for batch in ImportBatch.objects.exclude(errors=[]).only("id", "errors").iterator():
        errors = []
        for error in batch.errors or []:
            if isinstance(error, dict) and (error.get("value") == external_id or quoted in str(error.get("text"))):
                error = {**error, "value": None, "text": str(error.get("text", "")).replace(quoted, "'[erased]'")}
            errors.append(error)
        if errors != batch.errors:
            ImportBatch.objects.filter(pk=batch.pk).update(errors=errors)
            scrubbed += 1
    return scrubbed


def member_erase(*, member_pk: int, actor: Actor, ip: str | None = None) -> ErasureResult:
    """Erase one member's personal data; keep their decisions under the pseudonymous id.

    Deletes the member's events (comments with them), blanks name, email and birth date,
    replaces the external id by a keyed hash (so importers still refuse it), withdraws open
    recommendations and sets erased_at. Decisions and recommendations stay: they reference
    the member row, which now holds nothing identifying. Idempotent.
    """
    with transaction.atomic():
        member = Member.objects.select_for_update().get(pk=member_pk)
        if member.erased_at is not None:
            return ErasureResult(member_pseudo_id=member.pseudo_id, already_erased=True)
        external_id = member.member_id
        events_deleted, _ = Event.objects.filter(member_id=member.pk).delete()
        from recommendations.models import OPEN_STATUSES, Recommendation, RecommendationStatus

        withdrawn = Recommendation.objects.filter(member_id=member.pk, status__in=OPEN_STATUSES).update(
            status=RecommendationStatus.EXPIRED
        )
        scrubbed = _scrub_import_reports(external_id)
        now = timezone.now()
        Member.objects.filter(pk=member.pk).update(
            member_id=pii.erasure_token(external_id),
            name="",
            email="",
            birth_date=None,
            consent_profiling=False,
            consent_at=None,
            erased_at=now,
            updated_at=now,
        )
        result = ErasureResult(
            member_pseudo_id=member.pseudo_id,
            already_erased=False,
            events_deleted=events_deleted,
            recommendations_withdrawn=withdrawn,
            import_reports_scrubbed=scrubbed,
        )
        audit_log(
            actor=actor,
            action="privacy.erasure",
            object_type="member",
            object_id=member.pseudo_id,
            member_pseudo_id=member.pseudo_id,
            new={k: v for k, v in result.as_dict().items() if k not in ("member_pseudo_id", "already_erased")},
            ip=ip,
        )
    logger.info("erased member pseudo_id=%s events=%d", member.pseudo_id, events_deleted)
    return result


# --------------------------------------------------------------------------- retention


@dataclass
class PurgeResult:
    cutoff: datetime
    deleted: int = 0
    batches: int = 0


def events_purge_expired(
    *,
    now: datetime | None = None,
    retention_days: int | None = None,
    batch_size: int | None = None,
    actor: Actor = None,
) -> PurgeResult:
    """Delete events older than the retention period, one committed batch at a time.

    Each batch and its audit row commit together, so an interrupted purge has audited
    exactly what it removed and the next run carries on. A final row records the total,
    also when nothing was due, so the trail shows the job ran.
    """
    days = settings.LOYALTY_EVENT_RETENTION_DAYS if retention_days is None else retention_days
    size = batch_size or settings.LOYALTY_RETENTION_BATCH_SIZE
    cutoff = (now or timezone.now()) - timedelta(days=days)
    result = PurgeResult(cutoff=cutoff)
    while True:
        with transaction.atomic():
            ids = list(
                Event.objects.filter(occurred_at__lt=cutoff).order_by("id").values_list("id", flat=True)[:size]
            )
            if not ids:
                break
            deleted, _ = Event.objects.filter(id__in=ids).delete()
            result.deleted += deleted
            result.batches += 1
            audit_log(
                actor=actor, action="privacy.retention.batch", object_type="event",
                new={"cutoff": cutoff.isoformat(), "deleted": deleted, "batch": result.batches},
            )
    with transaction.atomic():
        audit_log(
            actor=actor, action="privacy.retention.purge", object_type="event",
            new={"cutoff": cutoff.isoformat(), "retention_days": days, "deleted": result.deleted,
                 "batches": result.batches},
        )
    logger.info("retention purge: %d events older than %s in %d batches", result.deleted, cutoff, result.batches)
    return result


# --------------------------------------------------------------------------- key rotation


ENCRYPTED_COLUMNS: dict[str, tuple[str, ...]] = {
    Member._meta.db_table: ("name", "email", "birth_date"),
    Event._meta.db_table: ("comment",),
}


@dataclass
class RotationResult:
    rows_checked: dict[str, int] = field(default_factory=dict)
    values_rotated: dict[str, int] = field(default_factory=dict)
    batches: int = 0


def _rotate_batch(table: str, columns: tuple[str, ...], after: int, size: int) -> tuple[int, int, int]:
    """(last id seen, rows checked, values re-encrypted) for the next batch; atomic."""
    quote = connection.ops.quote_name
    cols = ", ".join(quote(c) for c in columns)
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, {cols} FROM {quote(table)} WHERE id > %s ORDER BY id LIMIT %s{lock}", [after, size]
        )
        rows = cursor.fetchall()
        if not rows:
            return after, 0, 0
        updates = []
        rotated = 0
        for row in rows:
            values = list(row[1:])
            stale = [i for i, v in enumerate(values) if not pii.is_current(v)]
            if stale:
                for i in stale:
                    values[i] = pii.rotate(values[i])
                rotated += len(stale)
                updates.append([*values, row[0]])
        if updates:
            sets = ", ".join(f"{quote(c)} = %s" for c in columns)
            cursor.executemany(f"UPDATE {quote(table)} SET {sets} WHERE id = %s", updates)
        return rows[-1][0], len(rows), rotated


def pii_rotate_keys(
    *, batch_size: int = 1000, actor: Actor = None, progress: Callable[[str, int, int], None] | None = None
) -> RotationResult:
    """Re-encrypt every stored PII value under the newest key in LOYALTY_PII_KEYS.

    Batches commit one by one, and values already under the newest key are left alone, so
    an interrupted rotation is resumed by running it again. Remove an old key from the
    setting only after a rotation has completed.
    """
    result = RotationResult()
    for table, columns in ENCRYPTED_COLUMNS.items():
        after, checked, rotated = 0, 0, 0
        while True:
            after, n, r = _rotate_batch(table, columns, after, batch_size)
            if n == 0:
                break
            checked += n
            rotated += r
            result.batches += 1
            if progress is not None:
                progress(table, checked, rotated)
        result.rows_checked[table] = checked
        result.values_rotated[table] = rotated
    with transaction.atomic():
        audit_log(
            actor=actor, action="privacy.pii_keys_rotated", object_type="pii_keys",
            new={"rows_checked": result.rows_checked, "values_rotated": result.values_rotated,
                 "keys_configured": len(settings.LOYALTY_PII_KEYS)},
        )
    return result


__all__ = [
    "ErasureError",
    "ErasureResult",
    "PurgeResult",
    "RotationResult",
    "events_purge_expired",
    "member_erase",
    "member_find",
    "pii_rotate_keys",
]
