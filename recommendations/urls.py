"""Review desk pages (the home page is the queue) and its API routes (added under /api/)."""

from django.urls import path

from recommendations import api, views

urlpatterns = [
    path("", views.queue, name="home"),
    path("queue/<int:pk>/", views.detail, name="desk-detail"),
    path("queue/<int:pk>/decide/", views.decide, name="desk-decide"),
    path("queue/bulk-approve/", views.bulk_approve, name="desk-bulk-approve"),
    path("decisions/<int:decision_id>/undo/", views.undo, name="desk-undo"),
]

api_urlpatterns = [
    path("recommendations/", api.QueueListAPI.as_view(), name="api-recommendations"),
    path("recommendations/bulk-decide/", api.BulkDecideAPI.as_view(), name="api-recommendations-bulk"),
    path("recommendations/<int:pk>/", api.QueueDetailAPI.as_view(), name="api-recommendation"),
    path("recommendations/<int:pk>/decide/", api.DecideAPI.as_view(), name="api-recommendation-decide"),
    path("decisions/<int:pk>/undo/", api.UndoAPI.as_view(), name="api-decision-undo"),
    path("runs/", api.RunListAPI.as_view(), name="api-runs"),
    path("runs/<int:pk>/", api.RunDetailAPI.as_view(), name="api-run"),
    path("runs/<int:pk>/outcomes/", api.RunOutcomesAPI.as_view(), name="api-run-outcomes"),
    path("models/", api.ModelListAPI.as_view(), name="api-models"),
    path("models/retrain/", api.ModelRetrainAPI.as_view(), name="api-models-retrain"),
    path("models/learning-settings/", api.LearningSettingsAPI.as_view(), name="api-learning-settings"),
    path("models/<int:pk>/promote/", api.ModelPromoteAPI.as_view(), name="api-model-promote"),
    path("models/<int:pk>/rollback/", api.ModelRollbackAPI.as_view(), name="api-model-rollback"),
    path("models/<int:pk>/", api.ModelDetailAPI.as_view(), name="api-model"),
]
