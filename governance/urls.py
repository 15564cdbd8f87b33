"""Governance pages and API routes (the API ones are added to loyalty.urls.api_patterns)."""

from django.urls import path

from governance import api, views

urlpatterns = [
    path("policy/", views.policy, name="governance-policy"),
    path("policy/preview/", views.policy_preview_partial, name="governance-policy-preview"),
]

api_urlpatterns = [
    path("governance/policy/", api.PolicyAPI.as_view(), name="api-policy"),
    path("governance/policy/versions/", api.PolicyVersionsAPI.as_view(), name="api-policy-versions"),
    path("governance/policy/preview/", api.PolicyPreviewAPI.as_view(), name="api-policy-preview"),
]
