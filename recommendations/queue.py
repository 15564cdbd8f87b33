"""Queue selectors: what a user sees in the review queue, filtered, sorted and keyset-paginated.

Pagination is keyset on (sort key, id), never OFFSET and never a COUNT(*) of the filtered
set, so page 1 and page 10,000 cost the same. Every sort has a partial index over the open
statuses (migration 0002_desk_queue_indexes).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.cache import cache
from django.db.models import Count, F, Q, QuerySet
from django.db.models.functions import TruncMonth
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from loyalty.models import Event, EventKind, Offer, Tier
from loyalty.roles import has_capability
from recommendations.claims import claims_by_others
from recommendations.explain import describe_drivers
from recommendations.models import (
    OPEN_STATUSES,
    Decision,
    ModelVersion,
    Recommendation,
    RecommendationStatus,
    model_offer_code_picked,
)
from recommendations.selectors import as_of_instant, standing_decisions
from recommendations.text import comment_sentiments, sentiment_label, shorten

User = AbstractBaseUser | AnonymousUser

# Churn risk is 1 - probability. Bands as probability ranges (low, high], so the filter
# is a plain range on an indexed column.
RISK_BANDS: dict[str, tuple[float, float]] = {
    "low": (0.7, 1.0),  # churn < 30%
    "medium": (0.4, 0.7),  # churn 30-60%
    "high": (-0.01, 0.4),  # churn >= 60%
}
# Width of the 90% probability interval.
CONFIDENCE_BANDS: dict[str, tuple[float, float]] = {
    "narrow": (-1.0, 0.10),
    "medium": (0.10, 0.25),
    "wide": (0.25, 2.0),
}
# sort name -> (ordering expression name, descending?)
SORTS: dict[str, tuple[str, bool]] = {
    "priority": ("priority", True),
    "expected_value": ("expected_value", True),
    "churn_risk": ("probability", False),  # low engagement probability = high churn first
    "uncertainty": ("interval_width", True),
    "age": ("created_at", False),  # oldest first
}
SORT_LABELS = {
    "priority": "Cost of a wrong decision",
    "expected_value": "Expected value",
    "churn_risk": "Churn risk",
    "uncertainty": "Uncertainty",
    "age": "Oldest first",
}
NO_OFFER = "none"  # the offer filter's value for "No action" recommendations
MAX_LIMIT = 200
COUNT_CACHE_PREFIX = "desk:queue-count:"


class InvalidCursor(ValueError):
    pass


@dataclass(frozen=True)
class QueueFilters:
    offer: str = ""
    tier: str = ""
    region: str = ""
    risk: str = ""
    confidence: str = ""
    model: int | None = None
    status: str = ""
    escalated: str = ""  # "yes" | "no" | ""
    member: str = ""
    sort: str = "priority"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> QueueFilters:
        """Parse GET parameters; unknown values are dropped rather than failing the page."""

        def get(name: str) -> str:
            return str(params.get(name) or "").strip()

        model = get("model")
        return cls(
            offer=get("offer")[:32],
            tier=get("tier") if get("tier") in Tier.values else "",
            region=get("region")[:32],
            risk=get("risk") if get("risk") in RISK_BANDS else "",
            confidence=get("confidence") if get("confidence") in CONFIDENCE_BANDS else "",
            model=int(model) if model.isdigit() else None,
            status=get("status") if get("status") in RecommendationStatus.values else "",
            escalated=get("escalated") if get("escalated") in {"yes", "no"} else "",
            member=get("member")[:64],
            sort=get("sort") if get("sort") in SORTS else "priority",
        )

    def to_params(self) -> dict[str, str]:
        """The non-default filters as GET parameters, so a view can be shared by URL."""
        out: dict[str, str] = {}
        for name in ("offer", "tier", "region", "risk", "confidence", "status", "escalated", "member"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        if self.model is not None:
            out["model"] = str(self.model)
        if self.sort != "priority":
            out["sort"] = self.sort
        return out


@dataclass
class QueueRow:
    rec: Recommendation
    drivers: list[dict]
    age: str
    can_decide: bool
    bulk_eligible: bool
    reasons: list[str]
    last_decision: Decision | None = None
    # This user may claim the item; another manager has it open: their name, else None.
    claimable: bool = False
    claimed_by: str | None = None
    # The override whose choice the desk recommends instead of the model's pick (recalled_choices).
    recalled: Decision | None = None


@dataclass
class QueuePage:
    rows: list[QueueRow]
    next_cursor: str | None
    filters: QueueFilters
    limit: int
    cursor: str | None = None
    statuses: tuple[str, ...] = field(default_factory=tuple)

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


# ---------------------------------------------------------------- roles


def decidable_statuses(user: User) -> tuple[str, ...]:
    """Statuses this user may decide: seniors take escalated items too; others none."""
    if has_capability(user, "decide_escalated"):
        return (RecommendationStatus.PENDING, RecommendationStatus.ESCALATED)
    if has_capability(user, "decide"):
        return (RecommendationStatus.PENDING,)
    return ()


def can_decide_status(user: User, status: str, allowed: tuple[str, ...] | set[str] | None = None) -> bool:
    """Whether the user may act on an item in this status: their open statuses, plus an
    override of what the system auto-approved (automation is reversible)."""
    allowed = decidable_statuses(user) if allowed is None else allowed
    return status in allowed or (bool(allowed) and status == RecommendationStatus.AUTO_APPROVED)


def can_claim_status(user: User, status: str, allowed: tuple[str, ...] | set[str] | None = None) -> bool:
    """Whether the user may claim an item in this status (recommendations.claims): an open item
    they may decide. An auto-approved item can be overridden but is in no one's queue."""
    return status in OPEN_STATUSES and can_decide_status(user, status, allowed)


def queue_statuses(*, user: User, filters: QueueFilters) -> tuple[str, ...]:
    """The statuses a page shows: the user's own work by default, or what the filters ask."""
    statuses: tuple[str, ...] = decidable_statuses(user) or tuple(OPEN_STATUSES)
    if filters.status:
        statuses = (filters.status,)
    if filters.escalated == "yes":
        statuses = tuple(s for s in statuses if s == RecommendationStatus.ESCALATED) if filters.status else (
            RecommendationStatus.ESCALATED,
        )
    elif filters.escalated == "no":
        statuses = tuple(s for s in statuses if s != RecommendationStatus.ESCALATED)
    return tuple(str(s) for s in statuses)


# ---------------------------------------------------------------- cursor


def encode_cursor(value: Any, pk: int) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    raw = json.dumps([value, pk], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, pk = json.loads(raw)
        pk = int(pk)
        if SORTS[sort][0] == "created_at":
            value = parse_datetime(value)
            if value is None:
                raise ValueError("bad timestamp")
        else:
            value = float(value)
    except (ValueError, TypeError, json.JSONDecodeError, KeyError) as exc:
        raise InvalidCursor("The page cursor is not valid for this sort order.") from exc
    return value, pk


# ---------------------------------------------------------------- queryset


# What a queue row shows (page and API): loading every column of three tables cost more
# CPU than rendering the rows. The alternatives and PII only appear on the detail page.
QUEUE_ROW_FIELDS = (
    "id", "run", "status", "route", "route_reasons", "created_at", "priority", "model_version",
    "probability", "p_low", "p_high", "expected_value", "ev_low", "ev_high", "shap_values", "features",
    "member", "member__member_id", "member__tier", "member__region",
    "offer", "offer__code", "offer__name", "offer__high_stakes", "recalled_decision",
    "model_offer", "model_offer__code", "model_offer__name",
)


def queue_queryset(*, user: User, filters: QueueFilters) -> QuerySet[Recommendation]:
    """Filtered and ordered, not yet sliced. One query, members and offers joined in."""
    statuses = queue_statuses(user=user, filters=filters)
    qs = (
        Recommendation.objects.filter(status__in=statuses)
        .select_related("member", "offer", "model_offer")
        .only(*QUEUE_ROW_FIELDS)
        .annotate(interval_width=F("p_high") - F("p_low"))
    )
    if filters.offer == NO_OFFER:
        qs = qs.filter(offer__isnull=True)
    elif filters.offer:
        # By id, not by a join on the code: the planner then sees the value and, with the
        # (status, offer) statistics of migration 0011, finds an offer with no open items
        # empty at once instead of walking the whole sort index looking for one.
        offer_id = Offer.objects.filter(code=filters.offer).values_list("id", flat=True).first()
        qs = qs.filter(offer_id=offer_id) if offer_id is not None else qs.none()
    if filters.tier:
        qs = qs.filter(member__tier=filters.tier)
    if filters.region:
        qs = qs.filter(member__region=filters.region)
    if filters.risk:
        low, high = RISK_BANDS[filters.risk]
        qs = qs.filter(probability__gt=low, probability__lte=high)
    if filters.confidence:
        low, high = CONFIDENCE_BANDS[filters.confidence]
        qs = qs.filter(interval_width__gte=low, interval_width__lt=high)
    if filters.model is not None:
        qs = qs.filter(model_version_id=filters.model)
    if filters.member:
        qs = qs.filter(member__member_id=filters.member)
    key, descending = SORTS[filters.sort]
    order = F(key).desc() if descending else F(key).asc()
    return qs.order_by(order, "id")


def _after_cursor(qs: QuerySet, *, sort: str, value: Any, pk: int) -> QuerySet:
    key, descending = SORTS[sort]
    if descending:
        # The first condition bounds the index range; the second breaks ties by id.
        return qs.filter(Q(**{f"{key}__lte": value})).filter(
            Q(**{f"{key}__lt": value}) | Q(**{key: value, "id__gt": pk})
        )
    return qs.filter(Q(**{f"{key}__gte": value})).filter(
        Q(**{f"{key}__gt": value}) | Q(**{key: value, "id__gt": pk})
    )


def queue_page(
    *,
    user: User,
    filters: QueueFilters | Mapping[str, Any] | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> QueuePage:
    """One page of the queue. Cost is independent of the queue's size and the page number."""
    if not isinstance(filters, QueueFilters):
        filters = QueueFilters.from_params(filters or {})
    limit = max(1, min(int(limit), MAX_LIMIT))
    qs = queue_queryset(user=user, filters=filters)
    if cursor:
        value, pk = decode_cursor(cursor, filters.sort)
        qs = _after_cursor(qs, sort=filters.sort, value=value, pk=pk)
    recs = list(qs[: limit + 1])
    next_cursor = None
    if len(recs) > limit:
        recs = recs[:limit]
        last = recs[-1]
        next_cursor = encode_cursor(getattr(last, SORTS[filters.sort][0]), last.pk)
    return QueuePage(
        rows=build_rows(recs, user=user),
        next_cursor=next_cursor,
        filters=filters,
        limit=limit,
        cursor=cursor,
        statuses=queue_statuses(user=user, filters=filters),
    )


# What a queue export holds per item, in order (recommendations.exports writes it).
QUEUE_EXPORT_COLUMNS = (
    "recommendation_id", "member_id", "tier", "region", "offer_code", "probability", "interval_low",
    "interval_high", "expected_value", "ev_low", "ev_high", "priority", "status", "route", "model_version",
    "created_at", "model_offer_code", "recalled",  # as in runs.EXPORT_COLUMNS
)


def queue_export_rows(*, user: User, filters: QueueFilters) -> Iterator[tuple]:
    """Every item the queue shows this user with these filters, in the queue's order: all pages,
    from the same queryset as the page, so the file holds exactly what the filtered queue does."""
    rows = (
        queue_queryset(user=user, filters=filters)
        .annotate(model_offer_code=model_offer_code_picked(), recalled=Q(recalled_decision__isnull=False))
        .values_list(
            "id", "member__member_id", "member__tier", "member__region", "offer__code", "probability", "p_low",
            "p_high", "expected_value", "ev_low", "ev_high", "priority", "status", "route", "model_version_id",
            "created_at", "model_offer_code", "recalled",
        )
    )
    for row in rows.iterator(chunk_size=5000):
        yield (*row[:4], row[4] or "", *row[5:])


# ---------------------------------------------------------------- rows


def feature_names(model_version: ModelVersion) -> list[str]:
    return [f["name"] for f in (model_version.feature_schema or {}).get("features", [])]


def _feature_names_by_version(version_ids: set[int]) -> dict[int, list[str]]:
    versions = ModelVersion.objects.filter(id__in=version_ids).only("id", "feature_schema")
    return {v.id: feature_names(v) for v in versions}


def recommendation_arrays(rec: Recommendation) -> tuple[np.ndarray, np.ndarray]:
    """(features, shap values) as float32 arrays in the model's feature order."""
    shap = np.frombuffer(bytes(rec.shap_values), dtype=np.float32)
    feats = np.frombuffer(bytes(rec.features), dtype=np.float32)
    return feats, shap


def recommendation_drivers(rec: Recommendation, names: list[str], top: int = 3) -> list[dict]:
    feats, shap = recommendation_arrays(rec)
    n = min(len(names), len(shap), len(feats))
    if n == 0:
        return []
    return describe_drivers(names[:n], feats[:n], shap[:n], top=top)


def age_label(created_at: datetime, now: datetime | None = None) -> str:
    seconds = max(0, int(((now or timezone.now()) - created_at).total_seconds()))
    if seconds < 3600:
        return f"{max(1, seconds // 60)} min"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def reason_texts(route_reasons: Any) -> list[str]:
    """route_reasons as plain sentences, whatever shape the router stored."""
    out = []
    for reason in route_reasons or []:
        if isinstance(reason, dict):
            out.append(str(reason.get("text") or reason.get("message") or reason.get("code") or reason))
        else:
            out.append(str(reason))
    return out


def bulk_refusal(rec: Recommendation) -> str:
    """Why an item cannot be bulk approved, or "" when it can."""
    if rec.status == RecommendationStatus.ESCALATED or rec.route == "senior":
        return "escalated: needs an individual decision by a senior manager"
    if rec.offer is not None and rec.offer.high_stakes:
        return f"high-stakes offer {rec.offer.code}: decide it individually"
    if rec.status != RecommendationStatus.PENDING:
        return f"not open (status {rec.status})"
    return ""


def build_rows(recs: list[Recommendation], *, user: User) -> list[QueueRow]:
    names = _feature_names_by_version({r.model_version_id for r in recs}) if recs else {}
    allowed = set(decidable_statuses(user))
    now = timezone.now()
    claims = claims_by_others(recommendation_ids=[r.pk for r in recs if r.status in OPEN_STATUSES], user=user)
    recalled = recalled_choices(recs)
    return [
        QueueRow(
            rec=rec,
            drivers=recommendation_drivers(rec, names.get(rec.model_version_id, [])),
            age=age_label(rec.created_at, now),
            can_decide=can_decide_status(user, rec.status, allowed),
            bulk_eligible=rec.status in allowed and not bulk_refusal(rec),
            reasons=reason_texts(rec.route_reasons),
            claimable=can_claim_status(user, rec.status, allowed),
            claimed_by=claims[rec.pk].name if rec.pk in claims else None,
            recalled=recalled.get(rec.pk),
        )
        for rec in recs
    ]


def queue_row(*, user: User, recommendation_id: int) -> QueueRow:
    """One row, for an htmx swap after a decision, with the decision that closed it."""
    rec = (
        Recommendation.objects.select_related("member", "offer", "model_offer")
        .defer("alternatives", "member__name", "member__email", "member__birth_date")
        .get(pk=recommendation_id)
    )
    row = build_rows([rec], user=user)[0]
    row.last_decision = rec.decisions.order_by("-sequence").first()
    return row


# ---------------------------------------------------------------- counts and lists


# Rows a desk page may ask about at once (a page shows at most MAX_LIMIT).
PRESENCE_MAX_IDS = 200


def queue_presence(*, user: User, recommendation_ids: list[int]) -> list[dict[str, Any]]:
    """What has changed on the rows a manager has on screen since the page was served: each
    item's status now, whether this user may still decide it, and who else has it open
    (claims; only open items hold one). Unknown ids are left out. One indexed lookup and one
    cache round trip."""
    statuses = dict(Recommendation.objects.filter(pk__in=recommendation_ids).values_list("pk", "status"))
    claims = claims_by_others(
        recommendation_ids=[pk for pk, status in statuses.items() if status in OPEN_STATUSES], user=user
    )
    allowed = decidable_statuses(user)
    return [
        {"id": pk, "status": statuses[pk], "can_decide": can_decide_status(user, statuses[pk], allowed),
         "claimed_by": claims[pk].name if pk in claims else None}
        for pk in recommendation_ids if pk in statuses
    ]


def _count_key(status: str) -> str:
    return f"{COUNT_CACHE_PREFIX}{status}"


def queue_status_counts() -> dict[str, int]:
    """Items per status: one GROUP BY over the status index, cached for a few seconds."""
    statuses = list(RecommendationStatus.values)
    keys = [_count_key(s) for s in statuses]
    cached = cache.get_many(keys)
    if len(cached) == len(keys):
        return {s: int(cached[_count_key(s)]) for s in statuses}
    counts = dict.fromkeys(statuses, 0)
    for row in Recommendation.objects.order_by().values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    cache.set_many({_count_key(s): n for s, n in counts.items()}, settings.QUEUE_COUNTS_CACHE_SECONDS)
    return counts


def queue_counts_forget() -> None:
    """Drop the cached counts after the system changed many items at once; the next read recounts."""
    cache.delete_many([_count_key(s) for s in RecommendationStatus.values])


def queue_counts_shift(old_status: str, new_status: str) -> None:
    """Keep cached counts right after a decision without recounting a million rows."""
    for status, delta in ((old_status, -1), (new_status, 1)):
        try:
            cache.incr(_count_key(status), delta)
        except ValueError:
            pass  # not cached: the next read recounts


def filter_choices() -> dict[str, list]:
    """Options for the filter bar. Offers and models are small tables."""
    return {
        "offers": list(Offer.objects.order_by("code").values_list("code", "name")),
        "tiers": list(Tier.values),
        "models": list(ModelVersion.objects.order_by("-id").values_list("id", "status")[:20]),
        "statuses": list(RecommendationStatus.values),
        "risks": list(RISK_BANDS),
        "confidences": list(CONFIDENCE_BANDS),
        "sorts": list(SORT_LABELS.items()),
    }


def override_offers() -> list[Offer]:
    return list(Offer.objects.filter(active=True).order_by("code").only("id", "code", "name"))


def recommendation_get(*, recommendation_id: int) -> Recommendation:
    return Recommendation.objects.select_related("member", "offer", "model_offer", "model_version", "run").get(
        pk=recommendation_id
    )


def member_purchase_history(*, member_id: int, until: datetime | None = None, months: int = 12) -> list[dict]:
    """Purchases per calendar month for the sparkline, oldest first, missing months as 0."""
    end = until or timezone.now()
    month_starts = []
    year, month = end.year, end.month
    for _ in range(months):
        month_starts.append(f"{year:04d}-{month:02d}")
        month -= 1
        if month == 0:
            year, month = year - 1, 12
    month_starts.reverse()
    start = datetime(int(month_starts[0][:4]), int(month_starts[0][5:]), 1, tzinfo=end.tzinfo or timezone.utc)
    rows = (
        Event.objects.filter(
            member_id=member_id, kind=EventKind.PURCHASE, occurred_at__gte=start, occurred_at__lte=end
        )
        .annotate(month=TruncMonth("occurred_at"))
        .values("month")
        .annotate(n=Count("id"))
        .order_by("month")
    )
    counts = {r["month"].strftime("%Y-%m"): r["n"] for r in rows}
    return [{"month": m, "purchases": counts.get(m, 0)} for m in month_starts]


EARLIER_ITEMS = 5


@dataclass(frozen=True)
class EarlierItem:
    """One of the member's recommendations from an earlier run, the decision that stood on it
    and what happened after: what a manager should know before deciding on the member again."""

    rec: Recommendation
    decision: Decision | None  # the standing approve / override / auto-approve (None: undecided)
    sent_offer: Offer | None  # what the program sent: the recommended offer, or the one chosen instead
    responded: bool | None  # None: nothing sent, or no response known yet
    engaged: bool | None  # None until imported events cover the horizon after the run's as_of


def member_earlier_items(*, rec: Recommendation, limit: int = EARLIER_ITEMS) -> list[EarlierItem]:
    """The member's recommendations of earlier runs, newest first, with the standing decision
    (the latest deciding action no undo took back) and the realized outcome where known."""
    earlier = list(
        Recommendation.objects.filter(member_id=rec.member_id, run_id__lt=rec.run_id)
        .select_related("offer", "outcome").order_by("-run_id")[:limit]
    )
    standing = standing_decisions(Decision.objects.filter(recommendation__in=earlier))
    items = []
    for item in earlier:
        decision = standing.get(item.pk)
        sent = None
        if decision is not None and not item.holdout:
            sent = decision.chosen_offer if decision.action == Decision.Action.OVERRIDE else item.offer
        outcome = getattr(item, "outcome", None)
        items.append(EarlierItem(
            rec=item, decision=decision, sent_offer=sent,
            responded=outcome.responded if outcome is not None and sent is not None else None,
            engaged=outcome.engaged if outcome is not None else None,
        ))
    return items


def recalled_choices(recs: list[Recommendation]) -> dict[int, Decision]:
    """Per recommendation pk: the override whose choice the desk recommends instead of the
    model's pick (Recommendation.recalled_decision), with who made it, on which run and the
    offer it turned down. No query when no item recalls one."""
    ids = {r.recalled_decision_id for r in recs if r.recalled_decision_id}
    if not ids:
        return {}
    by_id = Decision.objects.select_related("recommendation__offer", "chosen_offer").in_bulk(ids)
    return {r.pk: by_id[r.recalled_decision_id] for r in recs if r.recalled_decision_id in by_id}


RECENT_COMMENTS = 3


def member_recent_comments(*, member_id: int, before: datetime, limit: int = RECENT_COMMENTS) -> list[dict]:
    """The member's latest feedback comments strictly before ``before`` (the run's as-of
    instant: what the model saw), newest first, shortened, each with its VADER sentiment.

    Comments are personal data: they are decrypted here for display and never logged.
    """
    rows = (
        Event.objects.filter(member_id=member_id, kind=EventKind.FEEDBACK, occurred_at__lt=before)
        .exclude(comment="")  # "" is stored as is (loyalty.pii): no decryption needed to skip it
        .order_by("-occurred_at")
        .values_list("occurred_at", "comment")[:limit]
    )
    rows = list(rows)
    scores = comment_sentiments(text for _, text in rows)
    return [
        {"at": at, "text": shorten(text), "sentiment": sentiment_label(score), "score": float(score)}
        for (at, text), score in zip(rows, scores, strict=True)
    ]


def decision_history(*, recommendation_id: int) -> list[Decision]:
    return list(
        Decision.objects.filter(recommendation_id=recommendation_id)
        .select_related("chosen_offer")
        .order_by("sequence")
    )


def with_filters(filters: QueueFilters, **changes: Any) -> QueueFilters:
    return replace(filters, **changes)


@dataclass
class DetailRow(QueueRow):
    features: list[dict] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    recent_comments: list[dict] = field(default_factory=list)
    earlier: list[EarlierItem] = field(default_factory=list)


def recommendation_detail_row(*, user: User, recommendation_id: int) -> DetailRow:
    """Everything the API's detail answer shows; raises Recommendation.DoesNotExist."""
    rec = recommendation_get(recommendation_id=recommendation_id)
    names = feature_names(rec.model_version)
    feats, shap = recommendation_arrays(rec)
    n = min(len(names), len(shap), len(feats))
    base = build_rows([rec], user=user)[0]
    return DetailRow(
        **{f: getattr(base, f) for f in ("rec", "drivers", "age", "can_decide", "bulk_eligible", "reasons", "claimed_by",
                                               "recalled")},
        features=[{"name": names[i], "value": float(feats[i]), "shap": float(shap[i])} for i in range(n)],
        decisions=decision_history(recommendation_id=rec.pk),
        recent_comments=member_recent_comments(member_id=rec.member_id, before=as_of_instant(rec.as_of)),
        earlier=member_earlier_items(rec=rec),
    )
