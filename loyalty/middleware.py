"""Response headers (content security policy) and the answer when the database is gone."""

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

# plotly.js needs 'unsafe-eval' for some trace types and inline styles for its SVG.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", CSP)
        response.setdefault("Referrer-Policy", "same-origin")
        return response


class SlidingSessionMiddleware:
    """Idle sessions expire SESSION_COOKIE_AGE after the last request, to within a minute.

    SESSION_SAVE_EVERY_REQUEST would do the same with one UPDATE and one COMMIT of the
    session row per request: under 50 managers that was a quarter of the database's work.
    Here the row is re-saved (pushing its expiry forward) at most once per
    SESSION_REFRESH_SECONDS per session.
    """

    KEY = "_refreshed_at"

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        session = getattr(request, "session", None)
        if session is not None and not session.is_empty():
            now = int(time.time())
            if now - int(session.get(self.KEY, 0)) >= settings.SESSION_REFRESH_SECONDS:
                session[self.KEY] = now  # marks it modified: SessionMiddleware saves it
        return response


DATABASE_UNAVAILABLE = "The database did not answer; nothing was saved. Try again in a moment."


class DatabaseUnavailableMiddleware:
    """A dropped or refused database connection answers 503 with a plain message, not a 500.

    Every write runs in a transaction, so when the connection dies mid-request Postgres rolls
    the whole write back: "nothing was saved" is true. Django discards the broken connection
    at the end of the request and the next request opens a new one.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        from django.db import InterfaceError, OperationalError

        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        # The exception text may quote SQL parameters (member data): log only its class.
        logger.error("database unavailable during %s %s: %s", request.method, request.path,
                     type(exception).__name__)
        if request.path.startswith("/api/"):
            return JsonResponse({"error": DATABASE_UNAVAILABLE, "code": "database_unavailable"}, status=503)
        return HttpResponse(f"<!doctype html><title>Try again</title><p>{DATABASE_UNAVAILABLE}</p>",
                            status=503)
