"""Model versions, scoring runs, recommendations and the decisions managers make on them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Case, F, Q, Value, When
from django.db.models.functions import Coalesce

from loyalty.models import Member, Offer


class ModelVersion(models.Model):
    """One trained bundle: the engagement model and the offer-response model, with metrics."""

    class Status(models.TextChoices):
        CANDIDATE = "candidate"
        CHAMPION = "champion"
        RETIRED = "retired"

    class Algorithm(models.TextChoices):
        HGB = "hgb", "HistGradientBoosting"
        RF = "rf", "RandomForest"

    created_at = models.DateTimeField(auto_now_add=True)
    algorithm = models.CharField(max_length=8, choices=Algorithm.choices, default=Algorithm.HGB)
    artifact_path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    # Ordered feature names with dtype and training range: {"features": [{"name", "min", "max", ...}]}
    feature_schema = models.JSONField(default=dict)
    as_of = models.DateField(help_text="Features use events strictly before this date")
    horizon_days = models.PositiveIntegerField()
    train_start = models.DateField(null=True, blank=True)
    params = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict)
    # "learned" when offer exposures trained a response model, else "default_policy".
    offer_policy = models.CharField(max_length=16, default="learned")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.CANDIDATE)
    status_history = models.JSONField(default=list)
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Input drift against the training data (population stability index over the features),
    # written by the drift monitor; routing can send a drifting model's items to people.
    drift_psi = models.FloatField(null=True, blank=True)
    drift_flagged = models.BooleanField(default=False)
    # Controlled rollout of a candidate (recommendations.rollout): "shadow" scores beside the
    # champion and is never shown; "canary" serves the members of its FeatureFlag.
    rollout = models.CharField(
        max_length=8, blank=True, default="", choices=[("", "off"), ("shadow", "shadow"), ("canary", "canary")]
    )

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="champion"), name="one_champion_model"
            ),
            # Two canaries would compete for the same members: one at a time.
            models.UniqueConstraint(fields=["rollout"], condition=Q(rollout="canary"), name="one_canary_model"),
        ]

    def __str__(self) -> str:
        return f"model v{self.pk} ({self.algorithm}, {self.status})"


class ScoringRun(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    created_at = models.DateTimeField(auto_now_add=True)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="runs")
    as_of = models.DateField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    chunk_size = models.PositiveIntegerField(default=10_000)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    members_total = models.PositiveIntegerField(default=0)
    members_scored = models.PositiveIntegerField(default=0)
    members_skipped_no_consent = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"


class ScoringChunk(models.Model):
    """A slice of a run by member primary key. Workers claim it with a conditional UPDATE."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    run = models.ForeignKey(ScoringRun, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    member_pk_from = models.BigIntegerField()
    member_pk_to = models.BigIntegerField(help_text="inclusive")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    rows_written = models.PositiveIntegerField(default=0)
    skipped_no_consent = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Last failure, kept after a successful retry so operators can see what happened.
    error = models.TextField(blank=True)
    # "hostname:pid" of the process that last claimed the chunk: who to look at when it hangs.
    worker = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="chunk_unique_index")]

    def __str__(self) -> str:
        return f"chunk {self.index} of run {self.run_id} ({self.status})"


class RecommendationStatus(models.TextChoices):
    PENDING = "pending"  # waiting for a manager
    ESCALATED = "escalated"  # waiting for a senior manager
    APPROVED = "approved"
    OVERRIDDEN = "overridden"
    AUTO_APPROVED = "auto_approved"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"  # a newer run re-scored the member before anyone decided
    HOLDOUT = "holdout"  # the member is in the randomized holdout: recorded, never offered


OPEN_STATUSES = (RecommendationStatus.PENDING, RecommendationStatus.ESCALATED)


class Recommendation(models.Model):
    run = models.ForeignKey(ScoringRun, on_delete=models.CASCADE, related_name="recommendations")
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="recommendations")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    as_of = models.DateField()
    # Engagement within the model's horizon (churn is 1 - probability) and its 90% interval.
    probability = models.FloatField()
    p_low = models.FloatField()
    p_high = models.FloatField()
    offer = models.ForeignKey(Offer, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    expected_value = models.FloatField(help_text="Incremental value of the offer against no action")
    ev_low = models.FloatField()
    ev_high = models.FloatField()
    # Every active offer: [{"code", "p_response", "p_low", "p_high", "ev", "ev_low", "ev_high"}]
    alternatives = models.JSONField(default=list)
    # float32 arrays in the order of model_version.feature_schema: compact for 1M rows.
    shap_values = models.BinaryField()
    shap_base = models.FloatField()
    features = models.BinaryField()
    offer_policy = models.CharField(max_length=16, default="learned")
    # What a wrong decision would cost: the queue's sort key.
    priority = models.FloatField(default=0.0)
    status = models.CharField(
        max_length=16, choices=RecommendationStatus.choices, default=RecommendationStatus.PENDING
    )
    route = models.CharField(max_length=16, default="review")  # auto | review | senior
    route_reasons = models.JSONField(default=list)
    decided_at = models.DateTimeField(null=True, blank=True)
    # The member is in the randomized holdout (recommendations.learning.holdout_members):
    # the recommendation is recorded for lift measurement, but no offer is ever sent.
    holdout = models.BooleanField(default=False)
    # When the model picks again the offer a manager's standing override turned down for this
    # member (selectors.turned_down_before), the desk recommends that manager's choice instead
    # and keeps the override here, and the model's own pick in model_offer (None: no action).
    # Set on few rows: indexed where set only (rec_recalled_idx, rec_model_offer_idx), so the
    # scoring run's inserts do not maintain two indexes of NULLs.
    recalled_decision = models.ForeignKey(
        "Decision", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    model_offer = models.ForeignKey(
        Offer, null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_index=False
    )


    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "member"], name="one_recommendation_per_run_member")
        ]
        indexes = [
            models.Index(fields=["status", "-priority", "id"], name="rec_queue_idx"),
            models.Index(fields=["member", "status"], name="rec_member_status_idx"),
            models.Index(fields=["recalled_decision"], condition=Q(recalled_decision__isnull=False),
                         name="rec_recalled_idx"),
            models.Index(fields=["model_offer"], condition=Q(model_offer__isnull=False), name="rec_model_offer_idx"),
        ]

    def __str__(self) -> str:
        return f"recommendation {self.pk} for member #{self.member_id}"

    @property
    def model_offer_id_picked(self) -> int | None:
        """The model's own pick (None: no action): model_offer when a choice was recalled."""
        return self.model_offer_id if self.recalled_decision_id else self.offer_id

    @property
    def model_offer_picked(self) -> Offer | None:
        """The model's own pick as an Offer (None: no action), as model_offer_id_picked."""
        return self.model_offer if self.recalled_decision_id else self.offer


def model_offer_code_picked() -> Case:
    """SQL for the code of the model's own pick ("" for no action), model_offer_id_picked's
    counterpart in a query: the exports name it beside the recommended offer, which differs
    when a manager's earlier choice was recalled."""
    return Case(
        When(recalled_decision__isnull=False, then=Coalesce(F("model_offer__code"), Value(""))),
        default=Coalesce(F("offer__code"), Value("")),
    )


class Decision(models.Model):
    """Immutable. Undo is a compensating decision, never a delete or an update."""

    class Action(models.TextChoices):
        APPROVE = "approve"
        OVERRIDE = "override"
        ESCALATE = "escalate"
        AUTO_APPROVE = "auto_approve"
        EXPIRE = "expire"
        UNDO = "undo"

    recommendation = models.ForeignKey(Recommendation, on_delete=models.PROTECT, related_name="decisions")
    sequence = models.PositiveIntegerField(help_text="1 for the first decision on the item, then 2, ...")
    at = models.DateTimeField(auto_now_add=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=150, default="system")
    action = models.CharField(max_length=16, choices=Action.choices)
    chosen_offer = models.ForeignKey(Offer, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reason_code = models.CharField(max_length=32, blank=True)
    reason_text = models.TextField(blank=True)
    compensates = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    # What the manager saw when deciding.
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    shown_probability = models.FloatField()
    shown_p_low = models.FloatField()
    shown_p_high = models.FloatField()
    shown_expected_value = models.FloatField()
    shown_shap_values = models.BinaryField()
    # Feedback label for retraining: the offer code the human stands behind ("" = no action).
    label_offer_code = models.CharField(max_length=32, blank=True)
    is_feedback = models.BooleanField(default=False)
    # The manager's judgement of the member's engagement in the horizon (None = not given):
    # a training label for the engagement model until the realized outcome is known.
    label_engaged = models.BooleanField(null=True, blank=True)

    class Meta:
        ordering = ["recommendation_id", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["recommendation", "sequence"], name="decision_sequence_unique")
        ]

    def __str__(self) -> str:
        return f"{self.action} on recommendation {self.recommendation_id} by {self.actor_label}"


# The actions that decide what is sent (an undo can take one back; escalate and expire send nothing).
DECIDING_ACTIONS = (Decision.Action.APPROVE, Decision.Action.OVERRIDE, Decision.Action.AUTO_APPROVE)


class Scenario(models.Model):
    """A saved what-if: one member's edits, or a change applied to a whole segment.

    Inputs and the model version are recorded so the scenario can be re-run and shared by
    URL; segment scenarios run as a Celery task and report progress here. No PII is stored:
    inputs are feature edits and filters; results are aggregates or scores.
    """

    class Kind(models.TextChoices):
        MEMBER = "member"
        SEGMENT = "segment"

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    member = models.ForeignKey(Member, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    as_of = models.DateField(help_text="Features use events strictly before this date")
    # member: {"changes": {feature: value}}; segment: {"filters", "change", "offer_costs"}
    inputs = models.JSONField(default=dict)
    result = models.JSONField(default=dict)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    progress = models.FloatField(default=0.0, help_text="0..1")
    members_total = models.PositiveIntegerField(default=0)
    members_done = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"scenario {self.pk} ({self.kind}, {self.status})"


class LearningSettings(models.Model):
    """Singleton (pk 1): how decision feedback is weighted in retraining, the holdout share,
    and the promotion gate's tolerances. Changed only through
    recommendations.learning.learning_settings_update, which audits every change."""

    # Training weight of one labeled example, relative to a history example (weight 1).
    override_weight = models.FloatField(default=3.0)
    approval_weight = models.FloatField(default=1.0)
    outcome_weight = models.FloatField(default=2.0)
    # Weight of an override's offer choice as response labels (the manager's offer responded,
    # the rejected recommended offer did not): how strongly overrides steer the offer choice.
    # 5: simulate_loop (5k members, seeds 0-2, last-touch response labels) lowers the override
    # rate by cycle 3 by 14/12/11% at 5, with the highest policy value of 3, 5 and 10 in every
    # seed (docs/learning-loop.md).
    choice_weight = models.FloatField(default=5.0)
    # Share of members (by hash of pseudo_id) in the randomized holdout that never gets offers
    # (0 = off until an admin sets it, e.g. 0.05: turning it on changes who gets offers).
    holdout_share = models.FloatField(default=0.0)
    # Share of members (by another hash) whose feedback is kept out of training to evaluate
    # champion and challenger on the same, unseen examples.
    evaluation_share = models.FloatField(default=0.2)
    # Gate: the challenger is promoted only if it is not worse than the champion by more than
    # these (AUC and policy agreement lower, Brier higher, coverage further from 0.90,
    # fairness differences higher).
    auc_tolerance = models.FloatField(default=0.01)
    brier_tolerance = models.FloatField(default=0.01)
    coverage_tolerance = models.FloatField(default=0.05)
    policy_tolerance = models.FloatField(default=0.02)
    fairness_tolerance = models.FloatField(default=0.05)
    # Fewer labeled evaluation examples than this: the gate uses the models' own holdouts.
    min_evaluation_examples = models.PositiveIntegerField(default=50)
    auto_promote = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(pk=1), name="learning_settings_singleton"),
            models.CheckConstraint(
                condition=Q(holdout_share__gte=0) & Q(holdout_share__lte=0.5), name="learning_holdout_share_0_05"
            ),
            models.CheckConstraint(
                condition=Q(evaluation_share__gte=0) & Q(evaluation_share__lte=0.5),
                name="learning_evaluation_share_0_05",
            ),
        ]

    def __str__(self) -> str:
        return "learning settings"


class Outcome(models.Model):
    """What happened after a recommendation: the realized outcome joined to it and to the
    decision that stood (recommendations.outcomes.outcomes_refresh; recomputed, never edited
    by hand). ``engaged`` is None until the horizon after the run's as_of is covered by
    imported events; ``responded`` is None until an offer was sent and its response window
    closed."""

    recommendation = models.OneToOneField(
        Recommendation, on_delete=models.CASCADE, primary_key=True, related_name="outcome"
    )
    run = models.ForeignKey(ScoringRun, on_delete=models.CASCADE, related_name="+")
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="+")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    as_of = models.DateField()
    window_end = models.DateField(help_text="as_of + the model's horizon (exclusive)")
    engaged = models.BooleanField(null=True)
    purchases = models.PositiveIntegerField(null=True)
    holdout = models.BooleanField(default=False)
    # The decision that stood (not undone): its action, actor and offer ("" = no action).
    decision = models.ForeignKey(Decision, null=True, on_delete=models.SET_NULL, related_name="+")
    decision_action = models.CharField(max_length=16, blank=True)
    decided_by = models.CharField(max_length=150, blank=True)
    decided_offer_code = models.CharField(max_length=32, blank=True)
    recommended_offer_code = models.CharField(max_length=32, blank=True)
    sent_at = models.DateTimeField(null=True)
    responded = models.BooleanField(null=True)
    computed_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["run", "holdout"], name="outcome_run_holdout_idx")]

    def __str__(self) -> str:
        return f"outcome of recommendation {self.recommendation_id}"


class FeatureFlag(models.Model):
    """Switches a new offer, routing rule or model (canary) on for a share of members and/or
    segments. Membership is a hash of the flag name and the member's pseudonymous id, so a
    member is in or out the same way on every run (recommendations.rollout.flag_members).
    Changed only through recommendations.rollout.flag_save, which audits every switch."""

    class Kind(models.TextChoices):
        OFFER = "offer"  # target: an offer code
        ROUTING_RULE = "routing_rule"  # target: a rule kind of governance.routing.RULES
        MODEL = "model"  # target: a model version id; the canary's members

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    target = models.CharField(max_length=64)
    description = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=False)
    share = models.FloatField(default=0.0, help_text="0..1 of the members in the segments")
    # {"tier": ["gold", ...], "region": [...]}: a member must match every listed dimension.
    segments = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["kind", "name"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "target"], name="one_flag_per_target"),
            models.CheckConstraint(condition=Q(share__gte=0) & Q(share__lte=1), name="flag_share_0_1"),
        ]

    def __str__(self) -> str:
        return f"flag {self.name} ({self.kind} {self.target})"


class ShadowPrediction(models.Model):
    """A model's prediction for a member of a run that the member was NOT served: a shadow
    model's every prediction, and the champion's for canary members (so champion and
    challenger are compared on the same members). Never shown to managers: not in the queue,
    the API's queue and detail, or a run's export."""

    run = models.ForeignKey(ScoringRun, on_delete=models.CASCADE, related_name="shadow_predictions")
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="+")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    probability = models.FloatField()
    p_low = models.FloatField()
    p_high = models.FloatField()
    offer = models.ForeignKey(Offer, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    expected_value = models.FloatField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "member", "model_version"], name="one_shadow_prediction_per_run_member_model"
            )
        ]

    def __str__(self) -> str:
        return f"shadow prediction of v{self.model_version_id} for member #{self.member_id}"
