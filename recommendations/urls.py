"""Review desk pages (the home page is the queue) and its API routes (added under /api/)."""

from django.urls import path

from recommendations import api, monitoring_views, rollout_views, views, whatif_api, whatif_views

urlpatterns = [
    path("", views.queue, name="home"),
    path("queue/<int:pk>/", views.detail, name="desk-detail"),
    path("queue/<int:pk>/decide/", views.decide, name="desk-decide"),
    path("queue/bulk-approve/", views.bulk_approve, name="desk-bulk-approve"),
    path("decisions/<int:decision_id>/undo/", views.undo, name="desk-undo"),
    path("models/", monitoring_views.models_page, name="models"),
    path("models/thresholds/", monitoring_views.thresholds_save, name="models-thresholds"),
    path("models/<int:pk>/fairness/", monitoring_views.fairness_report_request, name="models-fairness"),
    path("models/<int:pk>/tradeoff/", monitoring_views.fairness_tradeoff_request, name="models-tradeoff"),
    path("models/<int:pk>/drift/", monitoring_views.drift_check_request, name="models-drift"),
    path("models/alerts/<int:pk>/close/", monitoring_views.fairness_alert_close_view, name="models-alert-close"),
    # Controlled rollout (recommendations.rollout_views)
    path("models/<int:pk>/rollout/", rollout_views.model_rollout_view, name="models-rollout"),
    path("rollout/flags/", rollout_views.flags_page, name="rollout-flags"),
    # What-if (recommendations.whatif_views)
    path("whatif/", whatif_views.home, name="whatif-home"),
    path("whatif/member/<str:member_id>/", whatif_views.member_page, name="whatif-member"),
    path("whatif/member/<str:member_id>/evaluate/", whatif_views.member_evaluate, name="whatif-evaluate"),
    path("whatif/member/<str:member_id>/save/", whatif_views.member_save, name="whatif-save"),
    path("whatif/segments/", whatif_views.segment_start, name="whatif-segment-start"),
    path("whatif/scenarios/<int:pk>/", whatif_views.scenario_page, name="whatif-scenario"),
    path("whatif/scenarios/<int:pk>/status/", whatif_views.scenario_status, name="whatif-scenario-status"),
    path("whatif/compare/", whatif_views.compare, name="whatif-compare"),
]

api_urlpatterns = [
    path("recommendations/", api.QueueListAPI.as_view(), name="api-recommendations"),
    path("recommendations/bulk-decide/", api.BulkDecideAPI.as_view(), name="api-recommendations-bulk"),
    path("recommendations/presence/", api.QueuePresenceAPI.as_view(), name="api-recommendations-presence"),
    path("recommendations/export/", api.QueueExportAPI.as_view(), name="api-recommendations-export"),
    path("recommendations/<int:pk>/", api.QueueDetailAPI.as_view(), name="api-recommendation"),
    path("recommendations/<int:pk>/decide/", api.DecideAPI.as_view(), name="api-recommendation-decide"),
    path("recommendations/<int:pk>/claim/", api.ClaimAPI.as_view(), name="api-recommendation-claim"),
    path("decisions/<int:pk>/undo/", api.UndoAPI.as_view(), name="api-decision-undo"),
    path("runs/", api.RunListAPI.as_view(), name="api-runs"),
    path("runs/<int:pk>/", api.RunDetailAPI.as_view(), name="api-run"),
    path("runs/<int:pk>/outcomes/", api.RunOutcomesAPI.as_view(), name="api-run-outcomes"),
    path("runs/<int:pk>/export/", api.RunExportAPI.as_view(), name="api-run-export"),
    path("feedback/export/", api.FeedbackExportAPI.as_view(), name="api-feedback-export"),
    path("models/", api.ModelListAPI.as_view(), name="api-models"),
    path("models/retrain/", api.ModelRetrainAPI.as_view(), name="api-models-retrain"),
    path("models/learning-settings/", api.LearningSettingsAPI.as_view(), name="api-learning-settings"),
    path("models/<int:pk>/promote/", api.ModelPromoteAPI.as_view(), name="api-model-promote"),
    path("models/<int:pk>/rollback/", api.ModelRollbackAPI.as_view(), name="api-model-rollback"),
    path("models/<int:pk>/", api.ModelDetailAPI.as_view(), name="api-model"),
    path("models/<int:pk>/artifact/", api.ModelArtifactAPI.as_view(), name="api-model-artifact"),
    path("models/<int:pk>/rollout/", rollout_views.ModelRolloutAPI.as_view(), name="api-model-rollout"),
    path("models/<int:pk>/comparison/", rollout_views.ModelComparisonAPI.as_view(), name="api-model-comparison"),
    path("flags/", rollout_views.FlagListAPI.as_view(), name="api-flags"),
    path("flags/<slug:name>/", rollout_views.FlagDetailAPI.as_view(), name="api-flag"),
    path("whatif/", whatif_api.WhatIfAPI.as_view(), name="api-whatif"),
    path("whatif/segments/", whatif_api.SegmentScenarioAPI.as_view(), name="api-whatif-segments"),
    path("whatif/scenarios/<int:pk>/", whatif_api.ScenarioAPI.as_view(), name="api-whatif-scenario"),
]
