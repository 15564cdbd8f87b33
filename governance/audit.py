"""The one way to write an audit row. Call it inside the transaction of the change it records."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from governance.models import AuditEvent


def audit_log(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    action: str,
    object_type: str = "",
    object_id: Any = "",
    member_pseudo_id: uuid.UUID | None = None,
    old: Any = None,
    new: Any = None,
    ip: str | None = None,
) -> AuditEvent:
    is_user = actor is not None and getattr(actor, "is_authenticated", False)
    return AuditEvent.objects.create(
        actor=actor if is_user else None,
        actor_label=actor.get_username() if is_user else "system",
        action=action,
        object_type=object_type,
        object_id=str(object_id) if object_id != "" else "",
        member_pseudo_id=member_pseudo_id,
        old=old,
        new=new,
        ip=ip,
    )


def audit_log_many(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    action: str,
    object_type: str,
    entries: list[dict[str, Any]],
) -> list[AuditEvent]:
    """One audit row per entry ({"object_id", "member_pseudo_id", "old", "new"}), in one INSERT.

    For changes the system makes to many items at once (auto-approvals, expiries); same rows
    as audit_log would write one by one. Call it inside the transaction of the change.
    """
    is_user = actor is not None and getattr(actor, "is_authenticated", False)
    return AuditEvent.objects.bulk_create(
        [
            AuditEvent(
                actor=actor if is_user else None,
                actor_label=actor.get_username() if is_user else "system",
                action=action,
                object_type=object_type,
                object_id=str(entry.get("object_id", "")),
                member_pseudo_id=entry.get("member_pseudo_id"),
                old=entry.get("old"),
                new=entry.get("new"),
            )
            for entry in entries
        ],
        batch_size=1000,
    )
