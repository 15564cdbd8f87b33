"""JSON errors for every API failure, with the field that was wrong when there is one."""

from typing import Any

from rest_framework.response import Response
from rest_framework.views import exception_handler


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
