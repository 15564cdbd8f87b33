"""Audit trail and privacy pages, and their API routes (added under /api/)."""

from django.urls import path

from governance import audit_views, privacy_views

urlpatterns = [
    path("audit/", audit_views.audit_page, name="audit"),
    path("audit/export.csv", audit_views.audit_export, name="audit-export"),
    path("privacy/erasure/", privacy_views.erasure_page, name="privacy-erasure"),
]

api_urlpatterns = [
    path("privacy/erasures/", privacy_views.ErasureAPI.as_view(), name="api-privacy-erasure"),
]
