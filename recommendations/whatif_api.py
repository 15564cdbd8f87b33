"""What-if API: the same services as the pages (recommendations.whatif)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.audit import audit_log
from recommendations.api import ERRORS, can
from recommendations.models import Scenario
from recommendations.whatif import (
    WhatIfError,
    member_for_whatif,
    member_whatif_evaluate,
    model_feature_names,
    model_version_for_whatif,
    scenario_get,
    segment_scenario_start,
    segment_spec_validate,
    whatif_evaluate,
)


def _invalid(exc: WhatIfError) -> ValidationError:
    return ValidationError({exc.field: [exc.message]})


class WhatIfRequestSerializer(serializers.Serializer):
    member_id = serializers.CharField(required=False, help_text="A stored member: features as the scoring run builds them")
    features = serializers.DictField(
        required=False, help_text="Or a complete feature vector (every feature of the model) of a hypothetical member"
    )
    changes = serializers.DictField(
        required=False, default=dict,
        help_text="Feature name -> new value. Locked (protected, derived, immutable) features are refused; "
                  "linked features are propagated (see the page's help).",
    )
    model_version = serializers.IntegerField(required=False, help_text="Default: the champion")
    as_of = serializers.DateField(required=False, help_text="Default: the date of the member's latest recommendation")
    recourse = serializers.BooleanField(required=False, default=True)

    def validate(self, attrs: dict) -> dict:
        if ("member_id" in attrs) == ("features" in attrs):
            raise ValidationError({"member_id": ["give either member_id or features"]})
        return attrs


class WhatIfAlternativeSerializer(serializers.Serializer):
    code = serializers.CharField()
    kind = serializers.CharField()
    cost = serializers.FloatField()
    value = serializers.FloatField()
    source = serializers.CharField(help_text="learned | default_policy")
    p_response = serializers.FloatField()
    p_low = serializers.FloatField()
    p_high = serializers.FloatField()
    ev = serializers.FloatField()
    ev_low = serializers.FloatField()
    ev_high = serializers.FloatField()


class WhatIfSideSerializer(serializers.Serializer):
    probability = serializers.FloatField()
    p_low = serializers.FloatField()
    p_high = serializers.FloatField()
    offer = serializers.CharField(allow_null=True)
    expected_value = serializers.FloatField()
    ev_low = serializers.FloatField()
    ev_high = serializers.FloatField()
    alternatives = WhatIfAlternativeSerializer(many=True)
    shap = serializers.ListField(child=serializers.FloatField(), help_text="in feature_names order")
    shap_base = serializers.FloatField()
    drivers = serializers.ListField(child=serializers.DictField())


class WhatIfFeatureStateSerializer(serializers.Serializer):
    name = serializers.CharField()
    base = serializers.FloatField()
    value = serializers.FloatField()
    changed = serializers.BooleanField()
    adjusted = serializers.BooleanField(help_text="moved by propagation from a linked feature")
    locked = serializers.CharField(help_text="why it cannot be edited; empty when it can")
    outside_training_range = serializers.BooleanField()


class WhatIfResultSerializer(serializers.Serializer):
    model_version = serializers.IntegerField()
    member_id = serializers.CharField(required=False)
    as_of = serializers.CharField(required=False)
    feature_names = serializers.ListField(child=serializers.CharField())
    changes = serializers.DictField(child=serializers.FloatField())
    features = WhatIfFeatureStateSerializer(many=True)
    base = WhatIfSideSerializer()
    scenario = WhatIfSideSerializer()
    delta = serializers.DictField(child=serializers.FloatField())
    recommendation_changed = serializers.BooleanField()
    warnings = serializers.ListField(child=serializers.DictField())
    recourse = serializers.DictField(allow_null=True)
    server_ms = serializers.FloatField()


class WhatIfAPI(APIView):
    permission_classes = can("run_whatif")

    @extend_schema(
        operation_id="whatif_evaluate",
        summary="Score a member as they are and with changes, side by side",
        description="Engagement probability with its 90% interval, every offer's expected value with its "
        "range for members like this (calibration uncertainty, not a 90% interval for this member), the recommended offer and SHAP values for the member as they are and edited; warnings "
        "for values outside the model's training range; the smallest single actionable change that flips "
        "the recommendation. Invalid input (unknown or locked feature, wrong type, value outside the "
        "feasible range) is a 400 naming the field.",
        request=WhatIfRequestSerializer,
        responses={200: WhatIfResultSerializer, **ERRORS},
        examples=[OpenApiExample("more visits", value={"member_id": "M00042", "changes": {"sessions_30d": 8}},
                                 request_only=True)],
        tags=["whatif"],
    )
    def post(self, request: Request) -> Response:
        body = WhatIfRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            version = model_version_for_whatif(data.get("model_version"))
            if "member_id" in data:
                member = member_for_whatif(member_id=data["member_id"])
                result = member_whatif_evaluate(
                    member=member, model_version=version, changes=data["changes"], as_of=data.get("as_of"),
                    recourse=data["recourse"],
                )
                # Audit rows name members by pseudonym only.
                audit_log(actor=request.user, action="member.view", object_type="whatif",
                          member_pseudo_id=member.pseudo_id, ip=request.META.get("REMOTE_ADDR"))
            else:
                result = whatif_evaluate(model_version=version, base_features=data["features"],
                                         changes=data["changes"], recourse=data["recourse"])
        except WhatIfError as exc:
            raise _invalid(exc) from exc
        return Response(result)


class SegmentRequestSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, max_length=120)
    model_version = serializers.IntegerField(required=False)
    tier = serializers.CharField(required=False, allow_blank=True)
    region = serializers.CharField(required=False, allow_blank=True)
    risk = serializers.CharField(required=False, allow_blank=True, help_text="low | medium | high churn risk")
    offer = serializers.CharField(required=False, allow_blank=True,
                                  help_text="recommended offer before the change; none = no action")
    feature = serializers.CharField(required=False, allow_blank=True)
    op = serializers.ChoiceField(choices=["scale", "add", "set"], required=False, default="scale")
    amount = serializers.FloatField(required=False, default=1.0)
    offer_costs = serializers.DictField(child=serializers.FloatField(), required=False, default=dict)


class WhatIfScenarioSerializer(serializers.ModelSerializer):
    member_id = serializers.CharField(source="member.member_id", default=None, read_only=True)
    created_by = serializers.CharField(source="created_by.get_username", default=None, read_only=True)
    # Plain strings: the choice sets are documented here rather than as yet another "status" enum.
    kind = serializers.CharField(read_only=True, help_text="member | segment")
    status = serializers.CharField(read_only=True, help_text="pending | running | succeeded | failed")

    class Meta:
        model = Scenario
        fields = ["id", "name", "kind", "status", "progress", "members_total", "members_done", "model_version",
                  "member_id", "as_of", "inputs", "result", "error", "created_by", "created_at", "finished_at"]


class SegmentScenarioAPI(APIView):
    permission_classes = can("run_whatif")

    @extend_schema(
        operation_id="whatif_segment_start",
        summary="Start a segment scenario",
        description="Applies one change (scale/add/set a feature, and/or a different offer cost) to every "
        "member of a segment and sums the predicted effect with intervals. Runs as a Celery task; poll "
        "the scenario for progress.",
        request=SegmentRequestSerializer,
        responses={202: WhatIfScenarioSerializer, **ERRORS},
        tags=["whatif"],
    )
    def post(self, request: Request) -> Response:
        body = SegmentRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            version = model_version_for_whatif(data.get("model_version"))
            spec = segment_spec_validate(data, feature_names=model_feature_names(version))
            scenario = segment_scenario_start(actor=request.user, name=data.get("name", ""), spec=spec,
                                              model_version=version)
        except WhatIfError as exc:
            raise _invalid(exc) from exc
        scenario.refresh_from_db()
        return Response(WhatIfScenarioSerializer(scenario).data, status=status.HTTP_202_ACCEPTED)


class ScenarioAPI(APIView):
    permission_classes = can("run_whatif")

    @extend_schema(
        operation_id="whatif_scenario",
        summary="A saved scenario: inputs, model version, status, progress and result",
        responses={200: WhatIfScenarioSerializer, 403: ERRORS[403], 404: OpenApiResponse(description="not found")},
        tags=["whatif"],
    )
    def get(self, request: Request, pk: int) -> Response:
        try:
            scenario = scenario_get(scenario_id=pk)
        except Scenario.DoesNotExist as exc:
            raise NotFound(f"Scenario {pk} does not exist.") from exc
        return Response(WhatIfScenarioSerializer(scenario).data)
