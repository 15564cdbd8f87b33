"""Writes of the loyalty domain. Bulk imports live in loyalty.importers (one streaming service)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction

from governance.audit import audit_log
from loyalty.models import Offer

OFFER_EDITABLE_FIELDS = ("name", "kind", "cost", "value", "active", "high_stakes")


def _offer_snapshot(offer: Offer) -> dict[str, Any]:
    # Decimals as strings: JSON-safe and exact in the audit trail.
    return {
        name: str(getattr(offer, name)) if isinstance(getattr(offer, name), Decimal) else getattr(offer, name)
        for name in OFFER_EDITABLE_FIELDS
    }


@transaction.atomic
def offer_upsert(
    *, code: str, fields: dict[str, Any], actor: AbstractBaseUser | AnonymousUser | None
) -> tuple[Offer, bool]:
    """Create offer `code` or change the given fields; returns (offer, created).

    Raises django.core.exceptions.ValidationError for invalid values (unknown kind, negative
    cost, ...) and ValueError for a field that is not editable. The audit row records the
    old and new values of what changed, in the same transaction as the change.
    """
    unknown = sorted(set(fields) - set(OFFER_EDITABLE_FIELDS))
    if unknown:
        raise ValueError(f"not editable offer field(s): {', '.join(unknown)}")
    offer = Offer.objects.select_for_update().filter(code=code).first()
    created = offer is None
    if offer is None:
        offer = Offer(code=code)
        before: dict[str, Any] = {}
    else:
        before = _offer_snapshot(offer)
    for name, value in fields.items():
        setattr(offer, name, value)
    offer.full_clean()
    after = _offer_snapshot(offer)
    changed = [name for name in OFFER_EDITABLE_FIELDS if before.get(name) != after[name]]
    if not created and not changed:
        return offer, False
    offer.save()
    audit_log(
        actor=actor,
        action="offer.create" if created else "offer.update",
        object_type="offer",
        object_id=offer.code,
        old=None if created else {name: before[name] for name in changed},
        new=after if created else {name: after[name] for name in changed},
    )
    return offer, created
