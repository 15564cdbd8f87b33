from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from loyalty.permissions import capability_required
from loyalty.selectors import program_summary


@capability_required("view_queue")
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "loyalty/home.html", {"summary": program_summary()})


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers: answers without login and reveals nothing but ok."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})
