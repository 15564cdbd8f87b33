"""Escalation policy API (admins only): the policy in force, its versions, save and preview.

Same services as the settings page: policy_save and policy_preview.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.models import EscalationPolicy
from governance.routing import (
    BUDGET_DIMENSIONS,
    BUDGET_PERIODS,
    PHASES,
    ROUTES,
    RULES,
    PolicyConfig,
    PolicyInvalid,
)
from governance.selectors import policy_active, policy_config, policy_versions
from governance.services import policy_preview, policy_save
from loyalty.api_fields import StrictBooleanField, StrictCharField, StrictFloatField
from loyalty.permissions import HasCapability
from recommendations.serializers import ErrorSerializer

ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="invalid policy: `fields` names what is wrong"),
    403: OpenApiResponse(ErrorSerializer, description="not logged in, or not an admin"),
}


class RuleSerializer(serializers.Serializer):
    enabled = StrictBooleanField()
    threshold = serializers.JSONField(allow_null=True, help_text="number, tier name, or null for flag rules")
    route = serializers.ChoiceField(choices=[r for r in ROUTES if r != "auto"])


class BudgetSerializer(serializers.Serializer):
    dimension = serializers.ChoiceField(choices=BUDGET_DIMENSIONS)
    value = StrictCharField(max_length=64)
    period = serializers.ChoiceField(choices=BUDGET_PERIODS)
    amount = StrictFloatField(min_value=0)


class PolicyConfigSerializer(serializers.Serializer):
    phase = serializers.ChoiceField(choices=PHASES)
    sample_rate = StrictFloatField(min_value=0, max_value=1)
    limited_max_offer_cost = StrictFloatField(min_value=0)
    sla_review_hours = StrictFloatField()
    stale_after_hours = StrictFloatField()
    rules = serializers.DictField(
        child=RuleSerializer(), required=False, help_text=f"by rule: {', '.join(RULES)}; missing rules keep defaults"
    )
    budgets = BudgetSerializer(many=True, required=False)


class PolicySaveSerializer(PolicyConfigSerializer):
    note = serializers.CharField(max_length=300, required=False, allow_blank=True)


class PolicyVersionSerializer(PolicyConfigSerializer):
    version = serializers.IntegerField()
    active = serializers.BooleanField()
    created_at = serializers.DateTimeField(allow_null=True)
    created_by = serializers.CharField(allow_null=True)
    note = serializers.CharField(allow_blank=True)


class PreviewSerializer(serializers.Serializer):
    policy_version = serializers.IntegerField()
    items = serializers.IntegerField(help_text="open items routing decides (no decision on them yet)")
    auto = serializers.IntegerField()
    review = serializers.IntegerField()
    senior = serializers.IntegerField()
    auto_offer_cost = serializers.FloatField(help_text="offer cost that would flow without a person's look")
    spot_checks = serializers.IntegerField()
    over_budget = serializers.IntegerField()
    kept = serializers.IntegerField(help_text="open items a person already acted on: left as they are")
    changed = serializers.IntegerField()
    by_reason = serializers.DictField(child=serializers.IntegerField())


def version_data(policy: EscalationPolicy | None) -> dict[str, Any]:
    config = policy_config(policy)
    return {
        **config.snapshot(),
        "version": config.version,
        "active": policy.active if policy is not None else True,
        "created_at": policy.created_at if policy is not None else None,
        "created_by": policy.created_by.get_username() if policy is not None and policy.created_by else None,
        "note": policy.note if policy is not None else "built-in default: pilot, everything reviewed",
    }


def _parse(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    body = serializer_class(data=data)
    body.is_valid(raise_exception=True)
    return dict(body.validated_data)


def _invalid(exc: PolicyInvalid) -> ValidationError:
    return ValidationError(exc.errors)


ADMIN = [IsAuthenticated, HasCapability("manage_policy")]


class PolicyAPI(APIView):
    permission_classes = ADMIN

    @extend_schema(
        operation_id="policy_get",
        summary="The escalation policy in force",
        responses={200: PolicyVersionSerializer, **ERRORS},
        tags=["governance"],
    )
    def get(self, request: Request) -> Response:
        return Response(PolicyVersionSerializer(version_data(policy_active())).data)

    @extend_schema(
        operation_id="policy_save",
        summary="Save a new policy version",
        description="Creates the next version and puts it in force; the change is audited with old and "
        "new values, and open items are routed again after commit.",
        request=PolicySaveSerializer,
        responses={201: PolicyVersionSerializer, **ERRORS},
        tags=["governance"],
    )
    def post(self, request: Request) -> Response:
        values = _parse(PolicySaveSerializer, request.data)
        try:
            saved = policy_save(actor=request.user, **values)
        except PolicyInvalid as exc:
            raise _invalid(exc) from exc
        return Response(PolicyVersionSerializer(version_data(saved)).data, status=status.HTTP_201_CREATED)


class PolicyVersionsAPI(APIView):
    permission_classes = ADMIN

    @extend_schema(
        operation_id="policy_versions",
        summary="Policy version history, newest first",
        responses={200: PolicyVersionSerializer(many=True), **ERRORS},
        tags=["governance"],
    )
    def get(self, request: Request) -> Response:
        return Response(PolicyVersionSerializer([version_data(p) for p in policy_versions()], many=True).data)


class PolicyPreviewAPI(APIView):
    permission_classes = ADMIN

    @extend_schema(
        operation_id="policy_preview",
        summary="What a policy would do to the current queue",
        description="Counts of open items it would auto-approve, send to review and to senior review, "
        "and the offer cost that would flow without a person's look. Saves nothing.",
        request=PolicyConfigSerializer,
        responses={200: PreviewSerializer, **ERRORS},
        tags=["governance"],
    )
    def post(self, request: Request) -> Response:
        values = _parse(PolicyConfigSerializer, request.data)
        try:
            config = PolicyConfig.from_values(**values)
        except PolicyInvalid as exc:
            raise _invalid(exc) from exc
        return Response(PreviewSerializer(policy_preview(config).as_dict()).data)
