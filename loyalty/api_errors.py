"""JSON errors for every API failure, with the field that was wrong when there is one."""

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import exception_handler


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField()
    code = serializers.CharField()


# The error answers every API view documents (one definition, shared by all apps).
ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="invalid input"),
    403: OpenApiResponse(ErrorSerializer, description="not logged in, or the role may not do this"),
    404: OpenApiResponse(ErrorSerializer, description="not found"),
}


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: an API client asking for a path no route matches (/api/recommendations/abc/)
    gets the same JSON error shape as every other API error, not Django's HTML page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"error": f"no API endpoint at {request.path}", "code": "not_found"}, status=404)
    return page_not_found(request, exception)


def json_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(data, dict) and "detail" in data and len(data) == 1:
        response.data = {"error": str(data["detail"]), "code": getattr(data["detail"], "code", "error")}
    else:
        response.data = {"error": "invalid input", "code": "invalid", "fields": data}
    return response
