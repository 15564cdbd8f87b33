"""API of the loyalty domain: CSV uploads and the offer catalog. Views parse, call one service."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from loyalty.api_errors import ERRORS, ErrorSerializer
from loyalty.importers import KINDS, import_csv
from loyalty.models import Offer
from loyalty.permissions import HasCapability
from loyalty.selectors import offer_get, offer_list
from loyalty.services import offer_upsert


class ImportUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="UTF-8 CSV with a header row")
    skip_invalid = serializers.BooleanField(
        default=False, help_text="Write the good rows and reject the bad ones (default: all or nothing)"
    )


class RowErrorSerializer(serializers.Serializer):
    row = serializers.IntegerField(allow_null=True, help_text="1-based data row (header not counted); null for a file error")
    column = serializers.CharField()
    message = serializers.CharField()
    value = serializers.CharField(allow_null=True, help_text="The bad cell; never shown for personal data")
    text = serializers.CharField()


class ImportResultSerializer(serializers.Serializer):
    kind = serializers.CharField()
    batch_id = serializers.IntegerField()
    filename = serializers.CharField()
    status = serializers.CharField()
    rows_read = serializers.IntegerField()
    rows_written = serializers.IntegerField()
    rows_rejected = serializers.IntegerField()
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    error_count = serializers.IntegerField()
    errors = RowErrorSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField())
    rejects_path = serializers.CharField(allow_null=True)


class ImportUploadView(APIView):
    permission_classes = [IsAuthenticated, HasCapability("import_data")]
    parser_classes = [MultiPartParser]

    @extend_schema(
        summary="Import a CSV file of members, events or offers",
        description=(
            "All or nothing by default: one bad row and nothing is written (400 with the row/column "
            "errors). With skip_invalid the good rows are written and the bad ones reported."
        ),
        parameters=[OpenApiParameter("kind", OpenApiTypes.STR, OpenApiParameter.PATH, enum=list(KINDS))],
        request={"multipart/form-data": ImportUploadSerializer},
        responses={
            201: ImportResultSerializer,
            # A request without a usable upload answers {error, code}; a refused file answers
            # the same two fields plus the ImportResult counts and row errors (code import_failed).
            400: OpenApiResponse(ErrorSerializer, description="invalid request, or a refused file: then "
                                 "also batch_id, status, counts and `errors` (row, column, message)"),
            403: ERRORS[403],
            404: ERRORS[404],
            413: OpenApiResponse(ErrorSerializer, description="file over LOYALTY_IMPORT_MAX_UPLOAD_MB"),
        },
    )
    def post(self, request: Request, kind: str) -> Response:
        if kind not in KINDS:
            raise NotFound(f"unknown import kind {kind!r} (expected one of {', '.join(KINDS)})")
        upload = ImportUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        file = upload.validated_data["file"]
        limit_mb = settings.LOYALTY_IMPORT_MAX_UPLOAD_MB
        if file.size > limit_mb * 2**20:
            # A web request is the wrong road for a file this size: checked before a row is read.
            return Response({
                "error": f"{file.name} is {file.size / 2**20:.1f} MB; uploads are limited to {limit_mb} MB. "
                         f"Import it on the server with `manage.py import_{kind} FILE` (streamed, same checks).",
                "code": "file_too_large",
            }, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        result = import_csv(
            kind=kind, source=file.file, filename=file.name,
            skip_invalid=upload.validated_data["skip_invalid"], rejects_path=None,
            actor=request.user, progress=False,
        )
        data = result.as_dict()
        if not result.succeeded:
            summary = (
                str(result.errors[0]) if result.errors and result.errors[0].row is None
                else f"{result.error_count} error(s) in {result.rows_rejected} rows; nothing was written"
            )
            return Response({"error": summary, "code": "import_failed", **data}, status=status.HTTP_400_BAD_REQUEST)
        return Response(data, status=status.HTTP_201_CREATED)


class OfferSerializer(serializers.ModelSerializer):
    class Meta:
        model = Offer
        fields = ["code", "name", "kind", "cost", "value", "active", "high_stakes", "updated_at"]
        read_only_fields = ["code", "updated_at"]
        extra_kwargs = {"cost": {"min_value": 0}}


@extend_schema_view(get=extend_schema(responses={200: OfferSerializer(many=True), 400: ERRORS[400],
                                                403: ERRORS[403]}))
class OfferListView(ListAPIView):
    permission_classes = [IsAuthenticated, HasCapability("view_queue")]
    serializer_class = OfferSerializer

    def get_queryset(self):  # noqa: ANN201 - DRF hook
        return offer_list()


class OfferDetailView(APIView):
    """Read one offer (any desk role); create or change it (admins), audited with old/new values."""

    serializer_class = OfferSerializer

    def get_permissions(self) -> list[BasePermission]:
        capability = "view_queue" if self.request.method in ("GET", "HEAD", "OPTIONS") else "manage_offers"
        return [IsAuthenticated(), HasCapability(capability)()]

    @extend_schema(responses={200: OfferSerializer, 403: ERRORS[403], 404: ERRORS[404]})
    def get(self, request: Request, code: str) -> Response:
        offer = offer_get(code=code)
        if offer is None:
            raise NotFound(f"no offer with code {code!r}")
        return Response(OfferSerializer(offer).data)

    @extend_schema(request=OfferSerializer, responses={200: OfferSerializer, 201: OfferSerializer, **ERRORS})
    def put(self, request: Request, code: str) -> Response:
        return self._save(request, code, partial=False)

    @extend_schema(request=OfferSerializer, responses={200: OfferSerializer, **ERRORS})
    def patch(self, request: Request, code: str) -> Response:
        if offer_get(code=code) is None:
            raise NotFound(f"no offer with code {code!r}")
        return self._save(request, code, partial=True)

    def _save(self, request: Request, code: str, *, partial: bool) -> Response:
        if len(code) > Offer._meta.get_field("code").max_length:
            raise ValidationError({"code": ["longer than 32 characters"]})
        serializer = OfferSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        try:
            offer, created = offer_upsert(code=code, fields=dict(serializer.validated_data), actor=request.user)
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages) from exc
        return Response(OfferSerializer(offer).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


__all__ = ["ImportUploadView", "OfferDetailView", "OfferListView"]
