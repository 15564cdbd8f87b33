"""Review claims: who has a queue item open right now (soft, expiring).

Fifty managers on one queue all see the same top rows; without a sign of who is already on
an item, two of them read the same member and the slower one gets a 409 for nothing. A claim
says "Dana has this open" for REVIEW_CLAIM_SECONDS: others see it on the row and in the API,
and the desk's keyboard skips it when moving to the next open item.

A claim is advice, not a lock. It never refuses a decision (the decision's own row lock and
status check settle real races, see decisions.decision_record), and it expires by itself, so
a manager who walks away holds nothing. It lives in the cache (Redis in production, shared by
every web process), not in the database: presence is not a record, and the audit trail
already has the member.view of the detail page.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.utils import timezone

KEY_PREFIX = "review-claim:"


@dataclass(frozen=True)
class ReviewClaim:
    user_id: int
    name: str
    since: float  # epoch seconds of the claim's first take

    def as_value(self) -> dict:
        return {"user_id": self.user_id, "name": self.name, "since": self.since}

    @classmethod
    def from_value(cls, value: dict) -> ReviewClaim:
        return cls(user_id=int(value["user_id"]), name=str(value["name"]), since=float(value["since"]))


def _key(recommendation_id: int) -> str:
    return f"{KEY_PREFIX}{int(recommendation_id)}"


def claimant_name(user: User) -> str:
    """What other managers see: the first name if set, else the username (staff, not members)."""
    return user.first_name or user.username


def claim_take(*, recommendation_id: int, user: User) -> ReviewClaim | None:
    """Claim the item for `user`, or refresh their claim; return the OTHER holder's claim when
    someone else has it (theirs stays), else None."""
    mine = ReviewClaim(user_id=user.pk, name=claimant_name(user), since=timezone.now().timestamp())
    key, seconds = _key(recommendation_id), settings.REVIEW_CLAIM_SECONDS
    # add() is atomic (SET NX on Redis): of two managers opening the item together, one wins.
    # Twice, for a claim that expires between the add and the get.
    for _ in range(2):
        if cache.add(key, mine.as_value(), seconds):
            return None
        current = cache.get(key)
        if current is not None:
            break
    else:
        return None  # it kept expiring under us: nobody holds it long enough to matter
    holder = ReviewClaim.from_value(current)
    if holder.user_id != user.pk:
        return holder
    cache.touch(key, seconds)
    return None


def claims_by_others(*, recommendation_ids: list[int], user: User) -> dict[int, ReviewClaim]:
    """The live claims of other users on these items (one cache round trip)."""
    if not recommendation_ids:
        return {}
    found = cache.get_many([_key(pk) for pk in recommendation_ids])
    claims = {}
    for pk in recommendation_ids:
        value = found.get(_key(pk))
        if value is not None and int(value["user_id"]) != user.pk:
            claims[pk] = ReviewClaim.from_value(value)
    return claims


def claim_release(*, recommendation_id: int, user: User) -> None:
    """Drop `user`'s claim when they move on without deciding; someone else's stays."""
    key = _key(recommendation_id)
    current = cache.get(key)
    if current is not None and int(current["user_id"]) == user.pk:
        cache.delete(key)


def claims_forget(*, recommendation_id: int) -> None:
    """A decided item is nobody's to review: drop whoever's claim it had (one round trip)."""
    cache.delete(_key(recommendation_id))
