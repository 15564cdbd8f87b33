"""Governance records. AuditEvent is append-only: the database itself refuses changes."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept as text so the trail still names the actor after a user is removed.
    actor_label = models.CharField(max_length=150, default="system")
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    # Members appear only by pseudonymous id, never by name, email or external id.
    member_pseudo_id = models.UUIDField(null=True, blank=True, db_index=True)
    old = models.JSONField(null=True, blank=True)
    new = models.JSONField(null=True, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object_idx")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor_label} {self.action}"


class RolloutPhase(models.TextChoices):
    PILOT = "pilot", "Pilot: a person reviews everything"
    LIMITED = "limited", "Limited automation: low-cost, low-risk items are auto-approved"
    EXPANDED = "expanded", "Expanded: every item no rule stops is auto-approved"


class EscalationPolicy(models.Model):
    """One version of the routing policy. Never edited: saving writes the next version.

    The rule thresholds and budgets are plain JSON read by governance.routing.PolicyConfig
    (which validates them), so a version is a complete, self-contained snapshot.
    """

    version = models.PositiveIntegerField(unique=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    note = models.CharField(max_length=300, blank=True)
    phase = models.CharField(max_length=16, choices=RolloutPhase.choices, default=RolloutPhase.PILOT)
    # Share of would-be auto-approved items a person still reviews (spot checks), 0..1.
    sample_rate = models.FloatField(default=0.1)
    # In the limited phase only offers costing at most this are automated.
    limited_max_offer_cost = models.FloatField(default=10.0)
    sla_review_hours = models.FloatField(default=48.0)
    stale_after_hours = models.FloatField(default=14 * 24.0)
    # {"offer_cost": {"threshold": 50.0, "route": "senior"}, ...}: see governance.routing.RULES
    rules = models.JSONField(default=dict)
    # [{"dimension": "tier", "value": "gold", "period": "month", "amount": 5000.0}, ...]
    budgets = models.JSONField(default=list)

    class Meta:
        ordering = ["-version"]
        constraints = [
            models.UniqueConstraint(fields=["active"], condition=models.Q(active=True), name="one_active_policy"),
            models.CheckConstraint(
                condition=models.Q(sample_rate__gte=0) & models.Q(sample_rate__lte=1), name="policy_sample_rate_0_1"
            ),
            models.CheckConstraint(
                condition=models.Q(sla_review_hours__gt=0) & models.Q(stale_after_hours__gt=0),
                name="policy_hours_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"policy v{self.version} ({self.phase})"


class FairnessAlert(models.Model):
    """A group of members (column = value) whose outcomes look unfair. While open, routing can
    send the group's items to people (governance.fairness opens these from its reports).
    ``age_band`` values are governance.fairness.age_band labels ("25-34", "65+", ...)."""

    class Column(models.TextChoices):
        TIER = "tier"
        REGION = "region"
        GENDER = "gender"
        AGE_BAND = "age_band"

    class Status(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"

    column = models.CharField(max_length=16, choices=Column.choices)
    value = models.CharField(max_length=64)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    metric = models.CharField(max_length=64, blank=True)
    detail = models.TextField(blank=True)
    opened_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        indexes = [models.Index(fields=["status", "column", "value"], name="fairness_alert_open_idx")]

    def __str__(self) -> str:
        return f"fairness alert {self.column}={self.value} ({self.status})"


class MonitorThresholds(models.Model):
    """One version of the levels the model monitor alerts at. Never edited: saving writes the
    next row and the latest row is in force (defaults in recommendations.monitoring when none)."""

    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Interval coverage and AUC below these, Brier above, PSI above: a banner on the models page.
    coverage_min = models.FloatField()
    auc_min = models.FloatField()
    brier_max = models.FloatField()
    psi_max = models.FloatField()
    # Fairness: a group column whose difference is above these opens a FairnessAlert.
    parity_difference_max = models.FloatField()
    odds_difference_max = models.FloatField()
    # Mean predicted churn risk minus observed churn, compared between groups: a group whose
    # probabilities mean something else (e.g. its history is recorded worse).
    calibration_difference_max = models.FloatField(default=0.10)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(coverage_min__gte=0) & models.Q(coverage_min__lte=1)
                & models.Q(auc_min__gte=0) & models.Q(auc_min__lte=1)
                & models.Q(brier_max__gte=0) & models.Q(psi_max__gte=0)
                & models.Q(parity_difference_max__gte=0) & models.Q(parity_difference_max__lte=1)
                & models.Q(odds_difference_max__gte=0) & models.Q(odds_difference_max__lte=1)
                & models.Q(calibration_difference_max__gte=0) & models.Q(calibration_difference_max__lte=1),
                name="monitor_thresholds_in_range",
            )
        ]

    def __str__(self) -> str:
        return f"monitor thresholds #{self.pk}"


class FairnessReport(models.Model):
    """Per-group outcomes of one model version (governance.fairness builds it; never edited).

    kind "groups": selection rate, true and false positive rates per group with bootstrap
    intervals, and per column the demographic parity and equalized odds differences.
    kind "tradeoff": the same model data trained with and without fairness reweighing.
    """

    class Kind(models.TextChoices):
        GROUPS = "groups"
        TRADEOFF = "tradeoff"

    class Source(models.TextChoices):
        REALIZED = "realized", "Realized outcomes of a scoring run"
        HOLDOUT = "holdout", "Training holdout labels"

    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.GROUPS)
    model_version = models.ForeignKey(
        "recommendations.ModelVersion", on_delete=models.PROTECT, related_name="fairness_reports"
    )
    run = models.ForeignKey(
        "recommendations.ScoringRun", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    source = models.CharField(max_length=12, choices=Source.choices)
    n = models.PositiveIntegerField(default=0)
    # What "selected" and "positive" mean, the threshold used, bootstrap settings.
    definition = models.JSONField(default=dict)
    # [{"column", "value", "n", "selection_rate", "selection_rate_low", ..., "tpr", "fpr", ...}]
    groups = models.JSONField(default=list)
    # {"tier": {"demographic_parity_difference": .., "equalized_odds_difference": ..}, ...}
    differences = models.JSONField(default=dict)
    max_parity_difference = models.FloatField(null=True, blank=True)
    max_odds_difference = models.FloatField(null=True, blank=True)
    thresholds = models.JSONField(default=dict)
    # Alerts this report opened: [{"id", "column", "value", "metric"}]
    alerts = models.JSONField(default=list)
    # kind "tradeoff": {"column", "unweighted": {...metrics}, "reweighted": {...metrics}}
    tradeoff = models.JSONField(default=dict)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["model_version", "kind", "-id"], name="fairness_report_model_idx")]

    def __str__(self) -> str:
        return f"fairness report {self.pk} ({self.kind}) of model v{self.model_version_id}"
