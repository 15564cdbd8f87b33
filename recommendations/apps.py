from django.apps import AppConfig


class RecommendationsConfig(AppConfig):
    name = "recommendations"
    verbose_name = "Recommendations"

    def ready(self) -> None:
        from loyalty.signals import events_imported
        from recommendations.outcomes import on_events_imported

        events_imported.connect(on_events_imported, dispatch_uid="recommendations.outcomes_refresh")
