"""The loyalty domain: members, their events, and the offer catalog."""

from __future__ import annotations

import math
import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from loyalty.pii import EncryptedDateField, EncryptedTextField

# Offer codes appear in URLs, CSV files and feature names: keep them to a safe alphabet.
OFFER_CODE_PATTERN = r"^[A-Za-z0-9_-]+$"


class Tier(models.TextChoices):
    BRONZE = "bronze"
    SILVER = "silver"
    GOLD = "gold"
    PLATINUM = "platinum"


TIER_RANK = {Tier.BRONZE: 0, Tier.SILVER: 1, Tier.GOLD: 2, Tier.PLATINUM: 3}


class Member(models.Model):
    member_id = models.CharField(max_length=64, unique=True, help_text="External id, as imported")
    # Decisions, audit rows and exports outside the desk reference members by this id only.
    pseudo_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    joined_at = models.DateField(null=True, blank=True)
    birth_date = EncryptedDateField(null=True, blank=True)  # PII, encrypted at rest
    # Coarse, non-identifying copy of the birth date: enough for age features and age bands.
    birth_year = models.SmallIntegerField(null=True, blank=True)
    gender = models.CharField(max_length=16, blank=True)
    region = models.CharField(max_length=32, blank=True)
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.BRONZE)
    points_balance = models.IntegerField(default=0)
    consent_profiling = models.BooleanField(default=False)
    consent_at = models.DateTimeField(null=True, blank=True)
    name = EncryptedTextField(max_length=200, blank=True)  # PII, encrypted at rest
    email = EncryptedTextField(max_length=254, blank=True)  # PII, encrypted at rest
    erased_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["consent_profiling", "id"], name="member_consent_idx")]

    def __str__(self) -> str:
        return f"member {self.member_id}"


class EventKind(models.TextChoices):
    PURCHASE = "purchase"
    REDEMPTION = "redemption"
    SESSION = "session"
    FEEDBACK = "feedback"
    OFFER_SENT = "offer_sent"
    OFFER_REDEEMED = "offer_redeemed"


class Event(models.Model):
    # Indexed by event_member_time_idx (member first): a second index on member alone would
    # only cost every imported event another write.
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="events", db_index=False)
    occurred_at = models.DateTimeField()
    kind = models.CharField(max_length=16, choices=EventKind.choices)
    # Float, not Decimal: events feed analytics over millions of rows, not a ledger.
    amount = models.FloatField(default=0.0)
    points = models.IntegerField(default=0)
    quantity = models.IntegerField(default=0)
    duration_seconds = models.IntegerField(default=0)
    score = models.SmallIntegerField(null=True, blank=True)
    offer_code = models.CharField(max_length=32, blank=True)
    comment = EncryptedTextField(blank=True)  # PII-bearing free text, encrypted at rest
    # The comment's sentiment (recommendations.text.feedback_sentiments), computed when the
    # event is written: scoring reads this number instead of decrypting every comment of
    # every chunk on every run. NULL for other kinds and for feedback without a comment.
    sentiment = models.FloatField(null=True, blank=True)
    # Hash of the row's content: re-importing the same file writes nothing twice. Unique by a
    # constraint, not unique=True, which on Postgres adds a second (LIKE) index of the same
    # random hashes that no query uses and every import pays for.
    fingerprint = models.CharField(max_length=40)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["fingerprint"], name="event_fingerprint_unique")]
        indexes = [
            models.Index(fields=["member", "occurred_at"], name="event_member_time_idx"),
            models.Index(fields=["occurred_at"], name="event_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of member #{self.member_id} at {self.occurred_at:%Y-%m-%d}"

    def save(self, *args, **kwargs) -> None:
        # One event at a time (bulk writers set the column themselves, with the same function).
        from recommendations.text import feedback_sentiments

        score = feedback_sentiments([self.kind], [self.comment])[0]
        self.sentiment = None if math.isnan(score) else float(score)
        super().save(*args, **kwargs)


class OfferKind(models.TextChoices):
    BONUS_POINTS = "bonus_points"
    DISCOUNT = "discount"
    TIER_UPGRADE = "tier_upgrade"
    RETENTION_CALL = "retention_call"
    NO_ACTION = "no_action"


class Offer(models.Model):
    code = models.CharField(
        max_length=32,
        unique=True,
        validators=[RegexValidator(OFFER_CODE_PATTERN, "use only letters, digits, '-' and '_'")],
    )
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=16, choices=OfferKind.choices)
    cost = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    value = models.DecimalField(
        max_digits=10, decimal_places=2, default=0, help_text="Value to the program when the member responds"
    )
    active = models.BooleanField(default=True)
    high_stakes = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(condition=models.Q(cost__gte=0), name="offer_cost_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class ImportBatch(models.Model):
    """One import of a CSV file, by command or upload: what was read, written and rejected."""

    class Kind(models.TextChoices):
        MEMBERS = "members"
        EVENTS = "events"
        OFFERS = "offers"

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    filename = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    rows_read = models.IntegerField(default=0)
    rows_written = models.IntegerField(default=0)
    rows_rejected = models.IntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.kind} import {self.filename} ({self.status})"
