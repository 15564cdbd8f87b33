"""Review desk API: the queue, decisions, runs and models. Same selectors and services as the pages."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from typing import IO

from django.conf import settings
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from governance.audit import audit_log
from loyalty.api_errors import ERRORS
from loyalty.permissions import HasCapability
from recommendations.claims import claim_release
from recommendations.decisions import (
    DecisionError,
    DecisionForbidden,
    DecisionNotFound,
    decision_bulk_approve,
    decision_record,
    decision_undo,
    review_claim,
)
from recommendations.exports import (
    ExportError,
    feedback_export,
    model_artifact,
    queue_export,
)
from recommendations.learning import (
    LearningError,
    learning_settings_get,
    learning_settings_update,
    model_version_promote_manual,
    model_version_rollback,
)
from recommendations.model_store import ArtifactIntegrityError
from recommendations.models import ModelVersion, Recommendation, ScoringRun
from recommendations.queue import (
    PRESENCE_MAX_IDS,
    InvalidCursor,
    QueueFilters,
    queue_page,
    queue_presence,
    recommendation_detail_row,
)
from recommendations.runs import run_export
from recommendations.serializers import (
    BulkDecideRequestSerializer,
    BulkResultSerializer,
    DecideRequestSerializer,
    DecisionSerializer,
    ErrorSerializer,
    ExportQuerySerializer,
    LearningSettingsSerializer,
    ModelActionRequestSerializer,
    ModelVersionSerializer,
    QueueItemDetailSerializer,
    QueuePageSerializer,
    QueuePresenceSerializer,
    QueueQuerySerializer,
    ReviewClaimSerializer,
    ScoringRunSerializer,
)
from recommendations.tabular import CONTENT_TYPES

CONFLICT = {409: OpenApiResponse(ErrorSerializer, description="already decided by someone else, or too late")}


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "Conflict."
    default_code = "conflict"


class Invalid(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "Invalid input."
    default_code = "invalid"


def as_api_error(exc: DecisionError) -> APIException:
    """Service errors to HTTP: conflict and a closed undo window are 409."""
    if isinstance(exc, DecisionForbidden):
        return PermissionDenied(exc.message)
    if isinstance(exc, DecisionNotFound):
        return NotFound(exc.message)
    if exc.code in {"conflict", "undo_window_closed"}:
        return Conflict(exc.message, code=exc.code)
    return Invalid(exc.message)


def can(capability: str) -> list:
    return [IsAuthenticated, HasCapability(capability)]


class QueueListAPI(APIView):
    permission_classes = can("view_queue")

    @extend_schema(
        operation_id="queue_list",
        summary="The review queue",
        description="Open recommendations the caller may decide (read-only roles see all open ones), "
        "filtered and sorted; keyset-paginated: pass next_cursor back as cursor.",
        parameters=[QueueQuerySerializer],
        responses={200: QueuePageSerializer, **ERRORS},
        tags=["queue"],
    )
    def get(self, request: Request) -> Response:
        query = QueueQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = QueueFilters.from_params(request.query_params)
        try:
            page = queue_page(
                user=request.user,
                filters=filters,
                cursor=request.query_params.get("cursor") or None,
                limit=query.validated_data["limit"],
            )
        except InvalidCursor as exc:
            raise Invalid(str(exc), code="invalid_cursor") from exc
        return Response(
            QueuePageSerializer({"results": page.rows, "next_cursor": page.next_cursor, "limit": page.limit}).data
        )


class QueueDetailAPI(APIView):
    permission_classes = can("view_queue")

    @extend_schema(
        operation_id="queue_item",
        summary="One recommendation with its explanation, alternatives, decisions and the member's earlier items",
        description="Writes a member.view audit row.",
        responses={200: QueueItemDetailSerializer, **ERRORS},
        tags=["queue"],
    )
    def get(self, request: Request, pk: int) -> Response:
        try:
            row = recommendation_detail_row(user=request.user, recommendation_id=pk)
        except Recommendation.DoesNotExist as exc:
            raise NotFound(f"Recommendation {pk} does not exist.") from exc
        audit_log(
            actor=request.user,
            action="member.view",
            object_type="recommendation",
            object_id=pk,
            member_pseudo_id=row.rec.member.pseudo_id,
            ip=request.META.get("REMOTE_ADDR"),
        )
        return Response(QueueItemDetailSerializer(row).data)


class DecideAPI(APIView):
    permission_classes = can("decide")

    @extend_schema(
        summary="Approve, override or escalate",
        description="override needs reason_code and reason_text (chosen_offer_code \"\" = no action); "
        "escalate needs a note. 409 when someone decided the item first.",
        request=DecideRequestSerializer,
        responses={201: DecisionSerializer, **ERRORS, **CONFLICT},
        tags=["decisions"],
    )
    def post(self, request: Request, pk: int) -> Response:
        body = DecideRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            decision = decision_record(recommendation_id=pk, actor=request.user, **body.validated_data)
        except DecisionError as exc:
            raise as_api_error(exc) from exc
        return Response(DecisionSerializer(decision).data, status=status.HTTP_201_CREATED)


class ClaimAPI(APIView):
    permission_classes = can("decide")

    @extend_schema(
        operation_id="queue_item_claim",
        summary="Tell other managers you have this item open",
        description="A soft claim for REVIEW_CLAIM_SECONDS, refreshed by posting again: other managers "
        "see claimed_by on the item. Advice only, it never blocks a decision. When someone else "
        "already has the item, their claim stands and is returned (claimed false). 409 when the "
        "item is no longer open.",
        request=None,
        responses={200: ReviewClaimSerializer, **ERRORS, **CONFLICT},
        tags=["queue"],
    )
    def post(self, request: Request, pk: int) -> Response:
        try:
            other = review_claim(recommendation_id=pk, actor=request.user)
        except DecisionError as exc:
            raise as_api_error(exc) from exc
        return Response(ReviewClaimSerializer({
            "claimed": other is None, "claimed_by": other.name if other else None,
            "seconds": settings.REVIEW_CLAIM_SECONDS,
        }).data)

    @extend_schema(
        operation_id="queue_item_release",
        summary="Let go of your claim (moving on without deciding)",
        description="Someone else's claim is left alone. Always 204.",
        request=None,
        responses={204: None, **ERRORS},
        tags=["queue"],
    )
    def delete(self, request: Request, pk: int) -> Response:
        claim_release(recommendation_id=pk, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


def presence_ids(raw: str | None) -> list[int]:
    """The ``ids`` parameter: comma-separated recommendation ids, 1 to PRESENCE_MAX_IDS."""
    parts = [part.strip() for part in (raw or "").split(",") if part.strip()]
    if not parts or len(parts) > PRESENCE_MAX_IDS or not all(part.isdigit() and len(part) < 19 for part in parts):
        raise Invalid(f"ids: give 1 to {PRESENCE_MAX_IDS} recommendation ids separated by commas, e.g. ids=12,15.",
                      code="invalid_ids")
    return list(dict.fromkeys(int(part) for part in parts))


class QueuePresenceAPI(APIView):
    permission_classes = can("view_queue")

    @extend_schema(
        operation_id="queue_presence",
        summary="What changed on the rows you have on screen",
        description="Each item's status now and who else has it open (review claims), so a desk page "
        "can mark items decided or opened by others without reloading. Unknown ids are left out.",
        parameters=[OpenApiParameter("ids", str, OpenApiParameter.QUERY, required=True,
                                     description=f"1 to {PRESENCE_MAX_IDS} recommendation ids, comma-separated")],
        responses={200: QueuePresenceSerializer, **ERRORS},
        tags=["queue"],
    )
    def get(self, request: Request) -> Response:
        ids = presence_ids(request.query_params.get("ids"))
        return Response(QueuePresenceSerializer({"items": queue_presence(user=request.user, recommendation_ids=ids)}).data)


class BulkDecideAPI(APIView):
    permission_classes = can("decide")

    @extend_schema(
        summary="Bulk approve low-risk items",
        description="Each id is approved on its own; escalated items, high-stakes offers and items "
        "already decided are refused with a reason.",
        request=BulkDecideRequestSerializer,
        responses={200: BulkResultSerializer, **ERRORS},
        tags=["decisions"],
    )
    def post(self, request: Request) -> Response:
        body = BulkDecideRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            result = decision_bulk_approve(recommendation_ids=body.validated_data["ids"], actor=request.user)
        except DecisionError as exc:
            raise as_api_error(exc) from exc
        return Response(BulkResultSerializer(result).data)


class UndoAPI(APIView):
    permission_classes = can("decide")

    @extend_schema(
        summary="Undo your own decision within the undo window",
        description="Writes a compensating decision (action undo) and restores the previous status. "
        "409 after the window or when the item moved on.",
        request=None,
        responses={201: DecisionSerializer, **ERRORS, **CONFLICT},
        tags=["decisions"],
    )
    def post(self, request: Request, pk: int) -> Response:
        try:
            decision = decision_undo(decision_id=pk, actor=request.user)
        except DecisionError as exc:
            raise as_api_error(exc) from exc
        return Response(DecisionSerializer(decision).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["runs"], responses={200: ScoringRunSerializer(many=True), **ERRORS})
class RunListAPI(generics.ListAPIView):
    permission_classes = can("view_queue")
    serializer_class = ScoringRunSerializer
    queryset = ScoringRun.objects.order_by("-id")


@extend_schema(tags=["runs"], responses={200: ScoringRunSerializer, **ERRORS})
class RunDetailAPI(generics.RetrieveAPIView):
    permission_classes = can("view_queue")
    serializer_class = ScoringRunSerializer
    queryset = ScoringRun.objects.all()


@extend_schema(tags=["models"], responses={200: ModelVersionSerializer(many=True), **ERRORS})
class ModelListAPI(generics.ListAPIView):
    permission_classes = can("view_queue")
    serializer_class = ModelVersionSerializer
    queryset = ModelVersion.objects.order_by("-id")


@extend_schema(tags=["models"], responses={200: ModelVersionSerializer, **ERRORS})
class ModelDetailAPI(generics.RetrieveAPIView):
    permission_classes = can("view_queue")
    serializer_class = ModelVersionSerializer
    queryset = ModelVersion.objects.all()


# ---------------------------------------------------------------------------- exports

EXPORT_RESPONSES = {
    (200, CONTENT_TYPES["csv"]): OpenApiTypes.STR,
    (200, CONTENT_TYPES["parquet"]): OpenApiTypes.BINARY,
    **ERRORS,
}


def file_download(*, fmt: str, filename: str, write: Callable[[IO], int]) -> FileResponse:
    """Write an export to a temporary file (a run can hold a million rows: nothing is held in
    memory) and stream it as an attachment."""
    handle = tempfile.TemporaryFile()
    try:
        if fmt == "csv":
            text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
            write(text)
            text.flush()
            text.detach()
        else:
            write(handle)
    except BaseException:
        handle.close()
        raise
    handle.seek(0)
    return FileResponse(handle, as_attachment=True, filename=filename, content_type=CONTENT_TYPES[fmt])


def export_format(request: Request) -> str:
    query = ExportQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query.validated_data["file_format"]


class RunExportAPI(APIView):
    permission_classes = can("export_data")

    @extend_schema(
        operation_id="run_export",
        summary="Download a run's recommendations",
        description="member_id (as imported), offer_code, probability, interval, expected value and its "
        "interval, status and model version, one row per member; model_offer_code (the model's own pick) "
        "and recalled (true where the desk recommends a manager's earlier choice instead). Audited (counts only).",
        parameters=[ExportQuerySerializer], responses=EXPORT_RESPONSES, tags=["exports"],
    )
    def get(self, request: Request, pk: int) -> FileResponse:
        fmt = export_format(request)
        if not ScoringRun.objects.filter(pk=pk).exists():
            raise NotFound(f"Scoring run {pk} does not exist.")
        return file_download(fmt=fmt, filename=f"run-{pk}-recommendations.{fmt}",
                             write=lambda out: run_export(run_id=pk, fmt=fmt, out=out, actor=request.user))


class QueueExportAPI(APIView):
    permission_classes = can("export_data")

    @extend_schema(
        operation_id="queue_export",
        summary="Download the filtered queue, every page",
        description="The items GET /api/recommendations/ lists for the same filters and sort, all of them "
        "(cursor and limit are ignored), in the queue's order, with model_offer_code and recalled as in a "
        "run's download. Audited with the filters and the count.",
        parameters=[QueueQuerySerializer, ExportQuerySerializer], responses=EXPORT_RESPONSES, tags=["exports"],
    )
    def get(self, request: Request) -> FileResponse:
        fmt = export_format(request)
        QueueQuerySerializer(data=request.query_params).is_valid(raise_exception=True)
        filters = QueueFilters.from_params(request.query_params)
        return file_download(fmt=fmt, filename=f"queue.{fmt}", write=lambda out: queue_export(
            user=request.user, filters=filters, fmt=fmt, out=out))


class FeedbackExportAPI(APIView):
    permission_classes = can("export_data")

    @extend_schema(
        operation_id="feedback_export",
        summary="Download the feedback the next model learns from",
        description="One row per training label (managers' decisions and realized outcomes) with its "
        "weight, source, split (train / evaluation) and the feature snapshot the manager saw. Erased "
        "members are left out; no free text. Audited (counts only).",
        parameters=[ExportQuerySerializer], responses=EXPORT_RESPONSES, tags=["exports"],
    )
    def get(self, request: Request) -> FileResponse:
        fmt = export_format(request)
        return file_download(fmt=fmt, filename=f"feedback.{fmt}",
                             write=lambda out: feedback_export(fmt=fmt, out=out, actor=request.user))


class ModelArtifactAPI(APIView):
    permission_classes = can("export_data")

    @extend_schema(
        operation_id="model_artifact",
        summary="Download a model version's artifact",
        description="The joblib file the version scores with, after checking its sha256 (sent back in "
        "X-Artifact-SHA256). Its metrics are in GET /api/models/{id}/. Audited.",
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, **ERRORS, **CONFLICT},
        tags=["exports"],
    )
    def get(self, request: Request, pk: int) -> FileResponse:
        try:
            path, filename, sha256 = model_artifact(model_version_id=pk, actor=request.user)
        except ExportError as exc:
            raise NotFound(str(exc)) from exc
        except ArtifactIntegrityError as exc:
            raise Conflict(str(exc), code="artifact_mismatch") from exc
        response = FileResponse(open(path, "rb"), as_attachment=True, filename=filename,  # noqa: SIM115 - FileResponse closes it
                                content_type="application/octet-stream")
        response["X-Artifact-SHA256"] = sha256
        return response


# ---------------------------------------------------------------------------- learning loop


class ModelRetrainAPI(APIView):
    permission_classes = can("manage_models")

    @extend_schema(
        summary="Retrain: a challenger on history plus decision feedback, gated against the champion",
        description="Queues the retrain task (202). The challenger is promoted only if the gate passes; "
        "otherwise it stays a candidate with the reasons in status_history and notes.",
        request=None,
        responses={202: None, **ERRORS},
        tags=["models"],
    )
    def post(self, request: Request) -> Response:
        from django.db import transaction

        from recommendations.tasks import retrain_model

        user_id = request.user.pk
        with transaction.atomic():
            audit_log(actor=request.user, action="model.retrain_requested", object_type="model_version")
            transaction.on_commit(lambda: retrain_model.delay(user_id))
        return Response({"status": "queued"}, status=status.HTTP_202_ACCEPTED)


def _champion_change(request: Request, pk: int, change) -> Response:  # noqa: ANN001 - a learning service
    """Promote or roll back (`change`, an audited learning service) with the reason given."""
    body = ModelActionRequestSerializer(data=request.data)
    body.is_valid(raise_exception=True)
    if not ModelVersion.objects.filter(pk=pk).exists():
        raise NotFound(f"model version {pk} does not exist")
    try:
        version = change(model_version_id=pk, actor=request.user, reason=body.validated_data["reason"])
    except (LearningError, ValueError) as exc:
        raise Conflict(str(exc)) from exc
    return Response(ModelVersionSerializer(version).data)


class ModelPromoteAPI(APIView):
    permission_classes = can("manage_models")

    @extend_schema(
        summary="Promote a model version to champion (audited)",
        request=ModelActionRequestSerializer,
        responses={200: ModelVersionSerializer, **ERRORS, **CONFLICT},
        tags=["models"],
    )
    def post(self, request: Request, pk: int) -> Response:
        return _champion_change(request, pk, model_version_promote_manual)


class ModelRollbackAPI(APIView):
    permission_classes = can("manage_models")

    @extend_schema(
        summary="Roll back: make an earlier model version the champion again (audited)",
        request=ModelActionRequestSerializer,
        responses={200: ModelVersionSerializer, **ERRORS, **CONFLICT},
        tags=["models"],
    )
    def post(self, request: Request, pk: int) -> Response:
        return _champion_change(request, pk, model_version_rollback)


class LearningSettingsAPI(APIView):
    permission_classes = can("manage_models")

    @extend_schema(summary="Feedback weights, holdout share and gate tolerances",
                   responses={200: LearningSettingsSerializer, **ERRORS}, tags=["models"])
    def get(self, request: Request) -> Response:
        row = learning_settings_get()
        return Response(LearningSettingsSerializer(row).data)

    @extend_schema(summary="Change learning settings (audited)", request=LearningSettingsSerializer,
                   responses={200: LearningSettingsSerializer, **ERRORS}, tags=["models"])
    def patch(self, request: Request) -> Response:
        body = LearningSettingsSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        try:
            row = learning_settings_update(actor=request.user, values=dict(body.validated_data))
        except LearningError as exc:
            raise Invalid(str(exc)) from exc
        return Response(LearningSettingsSerializer(row).data)


class RunOutcomesAPI(APIView):
    permission_classes = can("view_queue")

    @extend_schema(summary="A run's realized outcomes: model and manager accuracy, holdout lift, "
                           "what overrides realized against the model's expectation",
                   responses={200: None, **ERRORS}, tags=["runs"])
    def get(self, request: Request, pk: int) -> Response:
        from recommendations.outcomes import decision_accuracy, holdout_lift, override_payoff

        if not ScoringRun.objects.filter(pk=pk).exists():
            raise NotFound(f"scoring run {pk} does not exist")
        return Response({"accuracy": decision_accuracy(run_id=pk), "holdout_lift": holdout_lift(run_id=pk),
                         "override_payoff": override_payoff(run_id=pk)})
