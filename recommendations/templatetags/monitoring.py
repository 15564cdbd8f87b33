"""The open fairness alerts banner, shown on every page to the roles that see the queue."""

from __future__ import annotations

from django import template

from governance.models import FairnessAlert
from loyalty.roles import has_capability

register = template.Library()


@register.inclusion_tag("recommendations/models_banner.html", takes_context=True)
def fairness_alerts_banner(context: template.Context) -> dict:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not has_capability(user, "view_queue"):
        return {"alerts": [], "can_view_models": False}
    alerts = list(FairnessAlert.objects.filter(status=FairnessAlert.Status.OPEN).order_by("-opened_at", "-id")[:10])
    return {"alerts": alerts, "can_view_models": has_capability(user, "view_models")}
