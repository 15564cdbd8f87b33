"""Erasure requests (right to be forgotten): an admin page and an API endpoint, one service."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.models import AuditEvent
from governance.privacy import ErasureError, member_erase, member_find
from loyalty.api_errors import ERRORS
from loyalty.permissions import HasCapability, capability_required


class ErasureForm(forms.Form):
    member = forms.CharField(max_length=64, label="Member id or pseudo id")
    confirm = forms.BooleanField(
        label="I understand this deletes the member's personal data and events for good", required=True
    )


@capability_required("manage_privacy")
def erasure_page(request: HttpRequest) -> HttpResponse:
    form = ErasureForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            member = member_find(reference=form.cleaned_data["member"])
        except ErasureError as exc:
            form.add_error("member", str(exc))
        else:
            result = member_erase(member_pk=member.pk, actor=request.user, ip=request.META.get("REMOTE_ADDR"))
            if result.already_erased:
                messages.info(request, f"Member {result.member_pseudo_id} was already erased.")
            else:
                messages.success(
                    request,
                    f"Erased member {result.member_pseudo_id}: {result.events_deleted} events deleted, "
                    f"{result.recommendations_withdrawn} open recommendations withdrawn.",
                )
            return redirect("privacy-erasure")
    recent = AuditEvent.objects.filter(action="privacy.erasure").order_by("-at", "-id")[:20]
    status = 400 if request.method == "POST" else 200
    return render(request, "governance/erasure.html", {"form": form, "recent": recent}, status=status)


class ErasureRequestSerializer(serializers.Serializer):
    member = serializers.CharField(max_length=64, help_text="External member id or pseudo id")


class ErasureResultSerializer(serializers.Serializer):
    member_pseudo_id = serializers.UUIDField()
    already_erased = serializers.BooleanField()
    events_deleted = serializers.IntegerField()
    recommendations_withdrawn = serializers.IntegerField()
    import_reports_scrubbed = serializers.IntegerField()


class ErasureAPI(APIView):
    permission_classes = [IsAuthenticated, HasCapability("manage_privacy")]

    @extend_schema(
        operation_id="privacy_erase_member",
        summary="Erase a member's personal data and events (right to be forgotten)",
        description="Keeps decisions and recommendations under the pseudonymous id. Idempotent; audited.",
        request=ErasureRequestSerializer,
        responses={200: ErasureResultSerializer, **ERRORS},
        tags=["privacy"],
    )
    def post(self, request: Request) -> Response:
        body = ErasureRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            member = member_find(reference=body.validated_data["member"])
        except ErasureError as exc:
            raise NotFound(str(exc)) from exc
        result = member_erase(member_pk=member.pk, actor=request.user, ip=request.META.get("REMOTE_ADDR"))
        return Response(ErasureResultSerializer(result.as_dict()).data)
