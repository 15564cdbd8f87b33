"""Decision services: the one code path for the queue, the detail page, the API and bulk.

A decision, the recommendation's status change and the audit row are written in one
transaction. The status change is a conditional UPDATE on the status that was read, so
when two people decide the same item at once exactly one UPDATE matches; the other gets
DecisionConflict naming who decided first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from governance.audit import audit_log, audit_log_many
from governance.models import AuditEvent
from loyalty.models import Offer
from loyalty.roles import has_capability
from recommendations.claims import ReviewClaim, claim_take, claims_forget
from recommendations.models import OPEN_STATUSES, Decision, Recommendation, RecommendationStatus
from recommendations.queue import (
    bulk_refusal,
    can_claim_status,
    queue_counts_forget,
    queue_counts_shift,
)

User = AbstractBaseUser | AnonymousUser

# Why a manager overrode the model. Fixed so overrides can be counted and learned from.
REASON_CODES: dict[str, str] = {
    "too_costly": "Too costly for this member",
    "member_context": "Member context the model cannot see",
    "offer_fatigue": "Member already received too many offers",
    "model_wrong": "The model's estimate looks wrong",
    "policy": "Program policy",
    "other": "Other",
}
NO_ACTION = ""  # chosen_offer_code for "no action"
ACTIONS = ("approve", "override", "escalate")
NEW_STATUS = {
    "approve": RecommendationStatus.APPROVED,
    "override": RecommendationStatus.OVERRIDDEN,
    "escalate": RecommendationStatus.ESCALATED,
}


class DecisionError(Exception):
    code = "decision_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DecisionInvalid(DecisionError):
    code = "invalid"


class DecisionForbidden(DecisionError):
    code = "forbidden"


class DecisionConflict(DecisionError):
    code = "conflict"


class DecisionNotFound(DecisionError):
    code = "not_found"


class UndoExpired(DecisionError):
    code = "undo_window_closed"


def _fmt_time(at: datetime) -> str:
    return timezone.localtime(at).strftime("%Y-%m-%d %H:%M:%S %Z")


def _conflict(rec_id: int, status: str) -> DecisionConflict:
    last = Decision.objects.filter(recommendation_id=rec_id).order_by("-sequence").first()
    if last is None:
        return DecisionConflict(f"Recommendation {rec_id} is no longer open (status {status}).")
    return DecisionConflict(
        f"Recommendation {rec_id} was already decided by {last.actor_label} at {_fmt_time(last.at)} "
        f"({last.action}; now {status})."
    )


def _allowed_statuses(actor: User, action: str) -> set[str]:
    if not has_capability(actor, "decide"):
        raise DecisionForbidden("Your role may not decide recommendations.")
    allowed = {RecommendationStatus.PENDING}
    if has_capability(actor, "decide_escalated") and action != "escalate":
        allowed.add(RecommendationStatus.ESCALATED)
    if action == "override":
        # Automation is reversible: a manager may override what the system auto-approved.
        allowed.add(RecommendationStatus.AUTO_APPROVED)
    return {str(s) for s in allowed}


def _write(
    *,
    rec: Recommendation,
    actor: User,
    action: str,
    old_status: str,
    new_status: str,
    chosen_offer: Offer | None = None,
    reason_code: str = "",
    reason_text: str = "",
    label: str = "",
    is_feedback: bool = False,
    compensates: Decision | None = None,
    label_engaged: bool | None = None,
) -> Decision:
    """Inside a transaction, after the conditional UPDATE matched: decision + audit row."""
    last = Decision.objects.filter(recommendation_id=rec.pk).aggregate(m=Max("sequence"))["m"] or 0
    is_user = getattr(actor, "is_authenticated", False)
    decision = Decision.objects.create(
        recommendation=rec,
        sequence=last + 1,
        actor=actor if is_user else None,
        actor_label=actor.get_username() if is_user else "system",
        action=action,
        chosen_offer=chosen_offer,
        reason_code=reason_code,
        reason_text=reason_text,
        compensates=compensates,
        model_version_id=rec.model_version_id,
        shown_probability=rec.probability,
        shown_p_low=rec.p_low,
        shown_p_high=rec.p_high,
        shown_expected_value=rec.expected_value,
        shown_shap_values=bytes(rec.shap_values),
        label_offer_code=label,
        is_feedback=is_feedback,
        label_engaged=label_engaged,
    )
    audit_log(
        actor=actor,
        action=f"decision.{action}",
        object_type="recommendation",
        object_id=rec.pk,
        member_pseudo_id=rec.member.pseudo_id,
        old={"status": old_status},
        new={
            "status": new_status,
            "decision_id": decision.pk,
            "chosen_offer": chosen_offer.code if chosen_offer else None,
            "reason_code": reason_code or None,
            "compensates": compensates.pk if compensates else None,
        },
    )
    transaction.on_commit(lambda: queue_counts_shift(old_status, new_status))
    # Decided, escalated or undone: whoever had the item open was looking at what it was.
    transaction.on_commit(lambda: claims_forget(recommendation_id=rec.pk))
    return decision


def _validate(
    *, rec: Recommendation, action: str, chosen_offer_code: str | None, reason_code: str, reason_text: str, note: str
) -> tuple[Offer | None, str, str, str, bool]:
    """(chosen offer, reason code, reason text, feedback label, is_feedback) for the action."""
    recommended = rec.offer.code if rec.offer else NO_ACTION
    if action == "approve":
        return rec.offer, "", note.strip(), recommended, True
    if action == "escalate":
        if not note.strip():
            raise DecisionInvalid("Escalating needs a note for the senior manager.")
        return None, "", note.strip(), "", False
    # override
    code = (chosen_offer_code or NO_ACTION).strip()
    if code == "no_action":
        code = NO_ACTION
    if reason_code not in REASON_CODES:
        raise DecisionInvalid(f"Pick an override reason: {', '.join(REASON_CODES)}.")
    if not reason_text.strip():
        raise DecisionInvalid("Explain the override in a few words.")
    if code == recommended:
        raise DecisionInvalid("That is the recommended action: approve it instead of overriding.")
    offer = None
    if code:
        offer = Offer.objects.filter(code=code, active=True).first()
        if offer is None:
            raise DecisionInvalid(f"Unknown or inactive offer {code!r}.")
    return offer, reason_code, reason_text.strip(), code, True


def decision_record(
    *,
    recommendation_id: int,
    actor: User,
    action: str,
    chosen_offer_code: str | None = None,
    reason_code: str = "",
    reason_text: str = "",
    note: str = "",
    label_engaged: bool | None = None,
) -> Decision:
    """Approve, override or escalate one recommendation. Raises a DecisionError subclass.

    ``label_engaged``: the manager's judgement of whether the member will engage in the
    horizon (optional; stored with an approval or override as a training label)."""
    if action not in ACTIONS:
        raise DecisionInvalid(f"Unknown action {action!r}: use approve, override or escalate.")
    allowed = _allowed_statuses(actor, action)
    rec = (
        Recommendation.objects.select_related("member", "offer")
        .defer("alternatives", "features", "member__name", "member__email", "member__birth_date")
        .filter(pk=recommendation_id)
        .first()
    )
    if rec is None:
        raise DecisionNotFound(f"Recommendation {recommendation_id} does not exist.")
    old_status = rec.status
    if old_status == RecommendationStatus.ESCALATED and old_status not in allowed and action != "escalate":
        raise DecisionForbidden("Escalated items are decided by a senior manager.")
    if old_status not in allowed:
        raise _conflict(rec.pk, old_status)
    offer, code, text, label, is_feedback = _validate(
        rec=rec,
        action=action,
        chosen_offer_code=chosen_offer_code,
        reason_code=reason_code,
        reason_text=reason_text,
        note=note,
    )
    new_status = str(NEW_STATUS[action])
    with transaction.atomic():
        changed = Recommendation.objects.filter(pk=rec.pk, status=old_status).update(
            status=new_status,
            decided_at=None if action == "escalate" else timezone.now(),
        )
        if changed != 1:
            # Someone else's UPDATE committed between our read and ours.
            raise _conflict(rec.pk, Recommendation.objects.values_list("status", flat=True).get(pk=rec.pk))
        return _write(
            rec=rec,
            actor=actor,
            action=action,
            old_status=old_status,
            new_status=new_status,
            chosen_offer=offer,
            reason_code=code,
            reason_text=text,
            label=label,
            is_feedback=is_feedback,
            label_engaged=None if action == "escalate" else label_engaged,
        )


def decision_undo(*, decision_id: int, actor: User) -> Decision:
    """Compensate the actor's own latest decision within DECISION_UNDO_SECONDS. Never deletes."""
    original = (
        Decision.objects.select_related("recommendation__member", "recommendation__offer")
        .filter(pk=decision_id)
        .first()
    )
    if original is None:
        raise DecisionNotFound(f"Decision {decision_id} does not exist.")
    if not has_capability(actor, "decide"):
        raise DecisionForbidden("Your role may not decide recommendations.")
    if original.actor_id != getattr(actor, "pk", None):
        raise DecisionForbidden("Only the person who decided can undo a decision.")
    if original.action not in ACTIONS:
        raise DecisionInvalid(f"A {original.action} decision cannot be undone.")
    window = int(settings.DECISION_UNDO_SECONDS)
    elapsed = (timezone.now() - original.at).total_seconds()
    if elapsed > window:
        raise UndoExpired(
            f"The undo window of {window} s closed {int(elapsed - window)} s ago; "
            "the decision stands. Ask a senior manager to review the item if it was wrong."
        )
    audit = AuditEvent.objects.filter(
        action=f"decision.{original.action}", object_type="recommendation", object_id=str(original.recommendation_id)
    ).filter(new__decision_id=original.pk).first()
    if audit is None:
        raise DecisionConflict("The audit trail for this decision is missing; it cannot be undone safely.")
    rec = original.recommendation
    restored, current = audit.old["status"], audit.new["status"]
    with transaction.atomic():
        changed = Recommendation.objects.filter(pk=rec.pk, status=current).update(
            status=restored, decided_at=None
        )
        latest = Decision.objects.filter(recommendation_id=rec.pk).aggregate(m=Max("sequence"))["m"]
        if changed != 1 or latest != original.sequence:
            # Leaving the atomic block by exception rolls the UPDATE back.
            raise _conflict(rec.pk, Recommendation.objects.values_list("status", flat=True).get(pk=rec.pk))
        return _write(
            rec=rec,
            actor=actor,
            action=Decision.Action.UNDO,
            old_status=current,
            new_status=restored,
            reason_text=f"undo of decision {original.pk} ({original.action})",
            compensates=original,
        )


def review_claim(*, recommendation_id: int, actor: User) -> ReviewClaim | None:
    """Show other managers that `actor` has this open item (recommendations.claims); returns
    the other manager's claim when someone else already has it. Refused like a decision would
    be: an unknown item, an item the actor may not decide, an item no longer open."""
    status = Recommendation.objects.filter(pk=recommendation_id).values_list("status", flat=True).first()
    if status is None:
        raise DecisionNotFound(f"Recommendation {recommendation_id} does not exist.")
    if status not in OPEN_STATUSES:
        raise _conflict(recommendation_id, status)
    if not can_claim_status(actor, status):
        raise DecisionForbidden("Your role may not decide this item, so it cannot be claimed.")
    return claim_take(recommendation_id=recommendation_id, user=actor)


@dataclass
class BulkResult:
    approved: list[int] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)  # {"id", "reason"}


def decision_bulk_approve(*, recommendation_ids: list[int], actor: User) -> BulkResult:
    """Approve low-risk items one by one through decision_record; each stands on its own."""
    if not has_capability(actor, "decide"):
        raise DecisionForbidden("Your role may not decide recommendations.")
    ids = list(dict.fromkeys(int(i) for i in recommendation_ids))
    recs = Recommendation.objects.select_related("offer").only(
        "id", "status", "route", "offer__code", "offer__high_stakes"
    ).in_bulk(ids)
    result = BulkResult()
    for rec_id in ids:
        rec = recs.get(rec_id)
        if rec is None:
            result.refused.append({"id": rec_id, "reason": "does not exist"})
            continue
        refusal = bulk_refusal(rec)
        if refusal:
            result.refused.append({"id": rec_id, "reason": refusal})
            continue
        try:
            decision = decision_record(recommendation_id=rec_id, actor=actor, action="approve")
        except DecisionError as exc:
            result.refused.append({"id": rec_id, "reason": exc.message})
            continue
        result.approved.append(rec_id)
        result.decisions.append(decision)
    return result


# What the system itself decides (governance: policy automation and deadlines).
SYSTEM_ACTIONS: dict[str, str] = {
    Decision.Action.AUTO_APPROVE: RecommendationStatus.AUTO_APPROVED,
    Decision.Action.EXPIRE: RecommendationStatus.EXPIRED,
    Decision.Action.ESCALATE: RecommendationStatus.ESCALATED,  # an SLA passed
}
SYSTEM_BATCH = 2000


def decisions_record_system(
    *,
    recommendation_ids: Sequence[int],
    action: str,
    reason_code: str,
    reason_text: str | Callable[[int], str],
    from_statuses: Sequence[str] = OPEN_STATUSES,
) -> list[int]:
    """Decisions the system takes: auto-approve, expire, or escalate past an SLA.

    The same records as a person's decision: a Decision (actor None, label "system") with what
    the item showed, the status change and an audit row, in one transaction. Rows are locked
    first, so an item someone decides meanwhile is skipped, never decided twice: only items
    still in `from_statuses` change. `reason_text` may be a function of the item id. Returns
    the ids that changed. Auto-approvals and expiries are not feedback labels (no person
    stood behind them).
    """
    if action not in SYSTEM_ACTIONS:
        raise DecisionInvalid(f"The system does not {action!r}: use {', '.join(SYSTEM_ACTIONS)}.")
    new_status = str(SYSTEM_ACTIONS[action])
    ids = list(dict.fromkeys(int(i) for i in recommendation_ids))
    text_of = reason_text if callable(reason_text) else (lambda _pk, _t=reason_text: _t)
    changed: list[int] = []
    with transaction.atomic():
        for start in range(0, len(ids), SYSTEM_BATCH):
            rows = list(
                Recommendation.objects.select_for_update(of=("self",))
                .filter(pk__in=ids[start : start + SYSTEM_BATCH], status__in=[str(s) for s in from_statuses])
                .order_by("pk")
                .values(
                    "pk", "status", "offer_id", "offer__code", "model_version_id", "probability", "p_low",
                    "p_high", "expected_value", "shap_values", "member__pseudo_id",
                )
            )
            if not rows:
                continue
            pks = [row["pk"] for row in rows]
            now = timezone.now()
            Recommendation.objects.filter(pk__in=pks).update(
                status=new_status, decided_at=None if action == Decision.Action.ESCALATE else now
            )
            last = dict(
                Decision.objects.filter(recommendation_id__in=pks)
                .values("recommendation_id")
                .annotate(m=Max("sequence"))
                .values_list("recommendation_id", "m")
            )
            chosen = action == Decision.Action.AUTO_APPROVE
            decisions = Decision.objects.bulk_create(
                [
                    Decision(
                        recommendation_id=row["pk"],
                        sequence=(last.get(row["pk"]) or 0) + 1,
                        actor=None,
                        actor_label="system",
                        action=action,
                        chosen_offer_id=row["offer_id"] if chosen else None,
                        reason_code=reason_code,
                        reason_text=text_of(row["pk"]),
                        model_version_id=row["model_version_id"],
                        shown_probability=row["probability"],
                        shown_p_low=row["p_low"],
                        shown_p_high=row["p_high"],
                        shown_expected_value=row["expected_value"],
                        shown_shap_values=bytes(row["shap_values"]),
                        label_offer_code="",
                        is_feedback=False,
                    )
                    for row in rows
                ]
            )
            audit_log_many(
                actor=None,
                action=f"decision.{action}",
                object_type="recommendation",
                entries=[
                    {
                        "object_id": row["pk"],
                        "member_pseudo_id": row["member__pseudo_id"],
                        "old": {"status": row["status"]},
                        "new": {
                            "status": new_status,
                            "decision_id": decision.pk,
                            "chosen_offer": row["offer__code"] if chosen else None,
                            "reason_code": reason_code or None,
                            "compensates": None,
                        },
                    }
                    for row, decision in zip(rows, decisions, strict=True)
                ],
            )
            changed.extend(pks)
        if changed:
            transaction.on_commit(queue_counts_forget)
    return changed
