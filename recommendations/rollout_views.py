"""Feature flags page and API, and the models page's shadow/canary switch. Admins only
(manage_flags / manage_models); each view parses input and calls one service in
recommendations.rollout, which audits the change."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.routing import RULES, TIERS
from loyalty.api_errors import ERRORS
from loyalty.api_fields import StrictBooleanField, StrictCharField, StrictFloatField
from loyalty.models import Offer
from loyalty.permissions import HasCapability, capability_required
from recommendations.models import FeatureFlag, ModelVersion
from recommendations.rollout import FlagInvalid, flag_save, model_rollout_set, rollout_compare


def _segments_from_form(data: Any) -> dict[str, list[str]]:
    regions = [r.strip() for r in data.get("regions", "").split(",") if r.strip()]
    segments: dict[str, list[str]] = {}
    if data.getlist("tiers"):
        segments["tier"] = data.getlist("tiers")
    if regions:
        segments["region"] = regions
    return segments


def _flags_context(**extra: Any) -> dict[str, Any]:
    return {
        "flags": FeatureFlag.objects.select_related("updated_by"),
        "kinds": FeatureFlag.Kind.choices,
        "tiers": TIERS,
        "targets": {
            "offer": list(Offer.objects.order_by("code").values_list("code", flat=True)),
            "routing_rule": list(RULES),
            "model": [str(pk) for pk in ModelVersion.objects.filter(status="candidate").values_list("pk", flat=True)],
        },
        **extra,
    }


@require_http_methods(["GET", "POST"])
@capability_required("manage_flags")
def flags_page(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return render(request, "recommendations/flags.html", _flags_context())
    values = {
        "kind": request.POST.get("kind", ""),
        "target": request.POST.get("target", ""),
        "enabled": request.POST.get("enabled") == "on",
        "share": request.POST.get("share", ""),
        "segments": _segments_from_form(request.POST),
        "description": request.POST.get("description", ""),
    }
    try:
        flag = flag_save(actor=request.user, name=request.POST.get("name", ""), values=values)
    except FlagInvalid as exc:
        return render(request, "recommendations/flags.html",
                      _flags_context(errors=exc.errors, posted=request.POST), status=400)
    messages.success(request, f"Flag {flag.name} saved: {'on' if flag.enabled else 'off'}, {flag.share:.0%} of members.")
    return HttpResponseRedirect(reverse("rollout-flags"))


@require_POST
@capability_required("manage_models")
def model_rollout_view(request: HttpRequest, pk: int) -> HttpResponse:
    if not ModelVersion.objects.filter(pk=pk).exists():
        raise Http404("No such model version")
    mode = request.POST.get("mode", "")
    try:
        model_rollout_set(actor=request.user, model_version_id=pk, mode=mode,
                          share=request.POST.get("share") or None, segments=_segments_from_form(request.POST))
    except FlagInvalid as exc:
        messages.error(request, f"Rollout of v{pk} not changed: {exc}")
    else:
        messages.success(request, f"Model v{pk} is now {mode or 'off'}.")
    return HttpResponseRedirect(f"{reverse('models')}?model={pk}#rollout")


# ------------------------------------------------------------------------------ API


class FlagSerializer(serializers.ModelSerializer):
    updated_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = FeatureFlag
        fields = ["name", "kind", "target", "description", "enabled", "share", "segments", "updated_at", "updated_by"]
        read_only_fields = ["updated_at", "updated_by"]


class FlagWriteSerializer(serializers.Serializer):
    """Shape only; recommendations.rollout.flag_save checks the values and names bad fields."""

    name = StrictCharField(required=False)
    kind = StrictCharField(required=False)
    target = StrictCharField(required=False)
    description = StrictCharField(required=False, allow_blank=True)
    enabled = StrictBooleanField(required=False)
    share = StrictFloatField(required=False)
    segments = serializers.DictField(child=serializers.ListField(child=StrictCharField()), required=False)


class ModelRolloutSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=["", "off", "shadow", "canary"])
    share = StrictFloatField(required=False, min_value=0.0, max_value=1.0)
    segments = serializers.DictField(child=serializers.ListField(child=StrictCharField()), required=False)


FLAGS = [IsAuthenticated, HasCapability("manage_flags")]


def _save(request: Request, name: str | None) -> FeatureFlag:
    """Create or change a flag; ``name`` None: the body's (POST), else the URL's (PATCH)."""
    body = FlagWriteSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    values = {k: v for k, v in body.validated_data.items() if k != "name"}
    if name is None:
        name = body.validated_data.get("name", "")
    try:
        return flag_save(actor=request.user, name=name, values=values)
    except FlagInvalid as exc:
        raise ValidationError(exc.errors) from exc


class FlagListAPI(APIView):
    permission_classes = FLAGS

    @extend_schema(summary="Feature flags", responses={200: FlagSerializer(many=True), **ERRORS}, tags=["rollout"])
    def get(self, request: Request) -> Response:
        return Response(FlagSerializer(FeatureFlag.objects.all(), many=True).data)

    @extend_schema(summary="Create or change a flag by name (audited)", request=FlagWriteSerializer,
                   responses={200: FlagSerializer, **ERRORS}, tags=["rollout"])
    def post(self, request: Request) -> Response:
        return Response(FlagSerializer(_save(request, None)).data)


class FlagDetailAPI(APIView):
    permission_classes = FLAGS

    def _flag(self, name: str) -> FeatureFlag:
        flag = FeatureFlag.objects.filter(name=name).first()
        if flag is None:
            raise NotFound(f"flag {name!r} does not exist")
        return flag

    @extend_schema(summary="One feature flag", responses={200: FlagSerializer, **ERRORS}, tags=["rollout"])
    def get(self, request: Request, name: str) -> Response:
        return Response(FlagSerializer(self._flag(name)).data)

    @extend_schema(summary="Switch a flag: enabled, share, segments (audited)", request=FlagWriteSerializer,
                   responses={200: FlagSerializer, **ERRORS}, tags=["rollout"])
    def patch(self, request: Request, name: str) -> Response:
        self._flag(name)
        return Response(FlagSerializer(_save(request, name)).data)


class ModelRolloutAPI(APIView):
    permission_classes = [IsAuthenticated, HasCapability("manage_models")]

    @extend_schema(summary="Run a candidate in shadow, as a canary, or off (audited)",
                   request=ModelRolloutSerializer, responses={200: dict, **ERRORS}, tags=["rollout"])
    def post(self, request: Request, pk: int) -> Response:
        body = ModelRolloutSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if not ModelVersion.objects.filter(pk=pk).exists():
            raise NotFound(f"model version {pk} does not exist")
        mode = body.validated_data["mode"].replace("off", "")
        try:
            version = model_rollout_set(actor=request.user, model_version_id=pk, mode=mode,
                                        share=body.validated_data.get("share"),
                                        segments=body.validated_data.get("segments"))
        except FlagInvalid as exc:
            raise ValidationError(exc.errors) from exc
        return Response({"model_version": version.pk, "rollout": version.rollout or "off"})


class ModelComparisonAPI(APIView):
    permission_classes = [IsAuthenticated, HasCapability("view_models")]

    @extend_schema(summary="Champion against a challenger on the same members of a run", responses={200: dict, **ERRORS},
                   parameters=[OpenApiParameter("run", int, description="scoring run id (default: the latest)")],
                   tags=["rollout"])
    def get(self, request: Request, pk: int) -> Response:
        if not ModelVersion.objects.filter(pk=pk).exists():
            raise NotFound(f"model version {pk} does not exist")
        run = request.query_params.get("run", "")
        if run and not run.isdigit():
            raise ValidationError({"run": "a scoring run id"})
        return Response(rollout_compare(challenger_id=pk, run_id=int(run) if run else None))
