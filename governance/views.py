"""Governance pages. Each view parses input, calls one selector or service, renders."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from governance.forms import policy_forms, policy_values
from governance.routing import RULES, PolicyConfig, PolicyInvalid
from governance.selectors import policy_active, policy_config, policy_versions
from governance.services import policy_preview, policy_save
from loyalty.permissions import capability_required


def _preview_context(config: PolicyConfig | None, errors: dict[str, str] | None = None) -> dict:
    return {
        "preview": policy_preview(config) if config is not None else None,
        "errors": errors or {},
        "currency": settings.LOYALTY_CURRENCY,
    }


@require_http_methods(["GET", "POST"])
@capability_required("manage_policy")
def policy(request: HttpRequest) -> HttpResponse:
    """The escalation policy settings page: edit, preview (htmx), save a new version, history."""
    active = policy_active()
    current = policy_config(active)
    form, budgets = policy_forms(request.POST if request.method == "POST" else None, current)
    errors: dict[str, str] = {}
    preview_config: PolicyConfig | None = current
    if request.method == "POST":
        values = policy_values(form, budgets)
        if values is not None:
            try:
                saved = policy_save(actor=request.user, note=form.cleaned_data.get("note", ""), **values)
            except PolicyInvalid as exc:
                errors = exc.errors
            else:
                messages.success(
                    request, f"Policy v{saved.version} is in force; open items are being routed again."
                )
                return redirect("governance-policy")
        preview_config = None
    return render(
        request,
        "governance/policy.html",
        {
            "active": active,
            "form": form,
            "budgets": budgets,
            "rules": RULES,
            "versions": policy_versions(),
            **_preview_context(preview_config, errors),
        },
        status=400 if request.method == "POST" else 200,
    )


@require_POST
@capability_required("manage_policy")
def policy_preview_partial(request: HttpRequest) -> HttpResponse:
    """htmx: what the edited (unsaved) policy would do to the current queue."""
    form, budgets = policy_forms(request.POST, policy_config(policy_active()))
    values = policy_values(form, budgets)
    if values is None:
        errors = {name: " ".join(errs) for name, errs in form.errors.items()}
        for i, budget_errors in enumerate(budgets.errors):
            errors.update({f"budgets.{i}.{k}": " ".join(v) for k, v in budget_errors.items()})
        return render(request, "governance/policy_preview.html", _preview_context(None, errors))
    try:
        config = PolicyConfig.from_values(**values)
    except PolicyInvalid as exc:
        return render(request, "governance/policy_preview.html", _preview_context(None, exc.errors))
    return render(request, "governance/policy_preview.html", _preview_context(config))
