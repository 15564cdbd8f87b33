"""API shapes for the review desk. Input validation of shape only; rules live in decisions.py."""

from __future__ import annotations

import numpy as np
from rest_framework import serializers

from loyalty.api_errors import ErrorSerializer  # noqa: F401 - re-exported for the desk's views
from loyalty.api_fields import StrictBooleanField, StrictFloatField, StrictIntegerField
from recommendations.decisions import ACTIONS, REASON_CODES
from recommendations.models import Decision, ModelVersion, ScoringRun
from recommendations.queue import CONFIDENCE_BANDS, RISK_BANDS, SORTS
from recommendations.tabular import EXPORT_FORMATS


class DriverSerializer(serializers.Serializer):
    feature = serializers.CharField()
    text = serializers.CharField()
    effect = serializers.CharField(help_text='"raises engagement" or "lowers engagement"')
    shap = serializers.FloatField()
    value = serializers.FloatField(required=False)


class RecalledChoiceSerializer(serializers.Serializer):
    """The manager's earlier choice the desk recommends instead of the model's pick."""

    decision = serializers.IntegerField(source="pk")
    decided_by = serializers.CharField(source="actor_label")
    recommendation = serializers.IntegerField(source="recommendation_id", help_text="the earlier item it was made on")
    as_of = serializers.DateField(source="recommendation.as_of")
    chosen_offer_code = serializers.SerializerMethodField()
    reason_code = serializers.CharField()
    reason_text = serializers.CharField()

    def get_chosen_offer_code(self, decision) -> str | None:
        return decision.chosen_offer.code if decision.chosen_offer is not None else None


class QueueItemSerializer(serializers.Serializer):
    """One queue row (a queue.QueueRow): what a manager needs to decide, no PII."""

    id = serializers.IntegerField(source="rec.pk")
    member_id = serializers.CharField(source="rec.member.member_id")
    tier = serializers.CharField(source="rec.member.tier")
    region = serializers.CharField(source="rec.member.region")
    offer_code = serializers.SerializerMethodField()
    offer_name = serializers.SerializerMethodField()
    high_stakes = serializers.SerializerMethodField()
    expected_value = serializers.FloatField(source="rec.expected_value")
    ev_low = serializers.FloatField(source="rec.ev_low")
    ev_high = serializers.FloatField(source="rec.ev_high")
    probability = serializers.FloatField(source="rec.probability")
    p_low = serializers.FloatField(source="rec.p_low")
    p_high = serializers.FloatField(source="rec.p_high")
    churn_risk = serializers.SerializerMethodField()
    priority = serializers.FloatField(source="rec.priority")
    status = serializers.CharField(source="rec.status")
    # The model that served this member (a canary's members are served by the canary).
    model_version = serializers.IntegerField(source="rec.model_version_id")
    route = serializers.CharField(source="rec.route")
    route_reasons = serializers.ListField(source="reasons", child=serializers.CharField())
    drivers = DriverSerializer(many=True)
    claimed_by = serializers.CharField(
        allow_null=True, help_text="another manager who has this item open right now (advice: deciding is still allowed)"
    )
    recalled = RecalledChoiceSerializer(
        allow_null=True, help_text="the model picked again an offer a manager turned down for this member: the desk "
                                   "recommends that manager's choice instead (null: the model's pick)"
    )
    model_offer_code = serializers.SerializerMethodField(
        help_text="with a recalled choice, the model's own pick (null: no action); else the recommended offer")
    created_at = serializers.DateTimeField(source="rec.created_at")
    age = serializers.CharField()
    can_decide = serializers.BooleanField()
    bulk_eligible = serializers.BooleanField()

    def get_offer_code(self, row) -> str | None:
        return row.rec.offer.code if row.rec.offer else None

    def get_offer_name(self, row) -> str:
        return row.rec.offer.name if row.rec.offer else "No action"

    def get_model_offer_code(self, row) -> str | None:
        offer = row.rec.model_offer_picked
        return offer.code if offer is not None else None

    def get_high_stakes(self, row) -> bool:
        return bool(row.rec.offer and row.rec.offer.high_stakes)

    def get_churn_risk(self, row) -> float:
        return 1.0 - row.rec.probability


class QueuePageSerializer(serializers.Serializer):
    results = QueueItemSerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)
    limit = serializers.IntegerField()


class QueueQuerySerializer(serializers.Serializer):
    """Query parameters of the list endpoint (documented; parsing is QueueFilters.from_params)."""

    # An empty parameter means "not given" (DRF reads query strings as form input): any value
    # for a filter, the default for sort; the queue page's filter form sends them that way.
    offer = serializers.CharField(required=False, allow_blank=True, help_text='offer code, or "none" for No action')
    tier = serializers.CharField(required=False, allow_blank=True)
    region = serializers.CharField(required=False, allow_blank=True)
    risk = serializers.ChoiceField(choices=list(RISK_BANDS), required=False, allow_blank=True, help_text="churn risk band")
    confidence = serializers.ChoiceField(choices=list(CONFIDENCE_BANDS), required=False, allow_blank=True)
    # A string of digits, not an integer: empty means "any model", as for the other filters,
    # and the schema must say so (an integer type would make "" a schema violation).
    model = serializers.RegexField(r"^[0-9]*$", required=False, allow_blank=True, max_length=18,
                                   help_text="model version id (empty: any)")
    status = serializers.CharField(required=False, allow_blank=True)
    escalated = serializers.ChoiceField(choices=["yes", "no"], required=False, allow_blank=True)
    member = serializers.CharField(required=False, allow_blank=True, help_text="exact external member id")
    sort = serializers.ChoiceField(choices=list(SORTS), required=False, allow_blank=True, default="priority")
    cursor = serializers.CharField(required=False, allow_blank=True, help_text="next_cursor of the previous page")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200, default=50)


class AlternativeSerializer(serializers.Serializer):
    code = serializers.CharField(allow_blank=True, allow_null=True)
    p_response = serializers.FloatField(required=False)
    p_low = serializers.FloatField(required=False)
    p_high = serializers.FloatField(required=False)
    ev = serializers.FloatField()
    ev_low = serializers.FloatField(required=False)
    ev_high = serializers.FloatField(required=False)


class FeatureContributionSerializer(serializers.Serializer):
    name = serializers.CharField()
    value = serializers.FloatField()
    shap = serializers.FloatField()


class DecisionSerializer(serializers.ModelSerializer):
    chosen_offer_code = serializers.SerializerMethodField()
    shown_shap_values = serializers.SerializerMethodField()

    class Meta:
        model = Decision
        fields = [
            "id", "recommendation", "sequence", "at", "actor_label", "action", "chosen_offer_code",
            "reason_code", "reason_text", "compensates", "model_version", "shown_probability",
            "shown_p_low", "shown_p_high", "shown_expected_value", "shown_shap_values",
            "label_offer_code", "is_feedback",
        ]
        read_only_fields = fields

    def get_chosen_offer_code(self, obj: Decision) -> str | None:
        return obj.chosen_offer.code if obj.chosen_offer_id else None

    def get_shown_shap_values(self, obj: Decision) -> list[float]:
        return np.frombuffer(bytes(obj.shown_shap_values), dtype=np.float32).astype(float).tolist()


class RecentCommentSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    text = serializers.CharField(help_text="shortened to 140 characters")
    sentiment = serializers.ChoiceField(choices=["positive", "neutral", "negative"])
    score = serializers.FloatField(help_text="VADER compound score, -1 .. 1")


class EarlierItemSerializer(serializers.Serializer):
    """One of the member's earlier recommendations (queue.EarlierItem)."""

    id = serializers.IntegerField(source="rec.pk")
    run = serializers.IntegerField(source="rec.run_id")
    as_of = serializers.DateField(source="rec.as_of")
    status = serializers.CharField(source="rec.status")
    offer_code = serializers.SerializerMethodField(help_text="the recommended offer (null: no action)")
    probability = serializers.FloatField(source="rec.probability")
    decision_action = serializers.CharField(source="decision.action", allow_null=True, default=None)
    decided_by = serializers.CharField(source="decision.actor_label", allow_null=True, default=None)
    reason_code = serializers.CharField(source="decision.reason_code", allow_null=True, default=None)
    reason_text = serializers.CharField(source="decision.reason_text", allow_null=True, default=None)
    sent_offer_code = serializers.SerializerMethodField(help_text="what the program sent (null: nothing)")
    responded = serializers.BooleanField(allow_null=True, help_text="null: nothing sent or not known yet")
    engaged = serializers.BooleanField(
        allow_null=True, help_text="bought within the horizon; null until imported events cover it"
    )

    def get_offer_code(self, item) -> str | None:
        return item.rec.offer.code if item.rec.offer_id else None

    def get_sent_offer_code(self, item) -> str | None:
        return item.sent_offer.code if item.sent_offer is not None else None


class QueueItemDetailSerializer(QueueItemSerializer):
    points_balance = serializers.IntegerField(source="rec.member.points_balance")
    as_of = serializers.DateField(source="rec.as_of")
    shap_base = serializers.FloatField(source="rec.shap_base")
    alternatives = AlternativeSerializer(source="rec.alternatives", many=True)
    features = FeatureContributionSerializer(many=True)
    model_metrics = serializers.DictField(source="rec.model_version.metrics")
    decisions = DecisionSerializer(many=True)
    recent_feedback = RecentCommentSerializer(
        source="recent_comments", many=True, help_text="the 3 newest comments before as_of, newest first"
    )
    earlier = EarlierItemSerializer(
        many=True, help_text="the member's recommendations of the 5 previous runs, newest first"
    )


class ReviewClaimSerializer(serializers.Serializer):
    claimed = serializers.BooleanField(help_text="true: the item is now shown as yours")
    claimed_by = serializers.CharField(allow_null=True, help_text="the manager who has it when it is not yours")
    seconds = serializers.IntegerField(help_text="how long a claim lasts without a new post")


class PresenceItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField(help_text="the item's status now")
    can_decide = serializers.BooleanField(help_text="whether the caller may still decide it")
    claimed_by = serializers.CharField(allow_null=True, help_text="another manager who has it open, if any")


class QueuePresenceSerializer(serializers.Serializer):
    items = PresenceItemSerializer(many=True, help_text="in the order asked; unknown ids are left out")


class ExportQuerySerializer(serializers.Serializer):
    # Not "format": DRF reads that query parameter to pick a renderer.
    file_format = serializers.ChoiceField(choices=list(EXPORT_FORMATS), default="csv",
                                          help_text="csv (text/csv) or parquet (application/vnd.apache.parquet)")

    def to_internal_value(self, data):
        # DRF reads an empty query value as "not given" and would serve the default format.
        if data.get("file_format") == "":
            raise serializers.ValidationError({"file_format": ['"" is not a valid choice: give csv or parquet.']})
        return super().to_internal_value(data)


class DecideRequestSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=list(ACTIONS))
    chosen_offer_code = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, help_text='override only; "" = no action'
    )
    reason_code = serializers.ChoiceField(choices=["", *REASON_CODES], required=False, default="")
    reason_text = serializers.CharField(required=False, allow_blank=True, default="")
    note = serializers.CharField(required=False, allow_blank=True, default="", help_text="required to escalate")
    label_engaged = serializers.BooleanField(
        required=False, allow_null=True, default=None,
        help_text="optional: will the member engage in the horizon? (a training label)",
    )


class BulkDecideRequestSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=["approve"], default="approve")
    ids = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=500)


class RefusalSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    reason = serializers.CharField()


class BulkResultSerializer(serializers.Serializer):
    approved = serializers.ListField(child=serializers.IntegerField())
    refused = RefusalSerializer(many=True)
    decisions = DecisionSerializer(many=True)


class ScoringRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = ScoringRun
        fields = [
            "id", "created_at", "model_version", "as_of", "status", "chunk_size", "chunks_total",
            "chunks_done", "members_total", "members_scored", "members_skipped_no_consent",
            "started_at", "finished_at", "error",
        ]
        read_only_fields = fields


class ModelVersionSerializer(serializers.ModelSerializer):
    features = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "id", "created_at", "algorithm", "sha256", "as_of", "horizon_days", "train_start",
            "params", "metrics", "offer_policy", "status", "status_history", "notes", "features", "rollout",
        ]
        read_only_fields = fields

    def get_features(self, obj: ModelVersion) -> list[str]:
        return [f.get("name", "") for f in (obj.feature_schema or {}).get("features", [])]


class ModelActionRequestSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=500)


class LearningSettingsSerializer(serializers.Serializer):
    override_weight = StrictFloatField(min_value=0, required=False)
    approval_weight = StrictFloatField(min_value=0, required=False)
    outcome_weight = StrictFloatField(min_value=0, required=False)
    choice_weight = StrictFloatField(min_value=0, required=False)
    holdout_share = StrictFloatField(min_value=0, max_value=0.5, required=False)
    evaluation_share = StrictFloatField(min_value=0, max_value=0.5, required=False)
    auc_tolerance = StrictFloatField(min_value=0, required=False)
    brier_tolerance = StrictFloatField(min_value=0, required=False)
    coverage_tolerance = StrictFloatField(min_value=0, required=False)
    policy_tolerance = StrictFloatField(min_value=0, required=False)
    fairness_tolerance = StrictFloatField(min_value=0, required=False)
    min_evaluation_examples = StrictIntegerField(min_value=0, required=False)
    auto_promote = StrictBooleanField(required=False)
