"""The escalation policy form: parses the settings page into the raw values policy_save takes.

Forms only parse; governance.routing.PolicyConfig.from_values validates the policy itself.
"""

from __future__ import annotations

from typing import Any

from django import forms

from governance.models import RolloutPhase
from governance.routing import (
    BUDGET_DIMENSIONS,
    BUDGET_PERIODS,
    ROUTE_REVIEW,
    ROUTE_SENIOR,
    RULES,
    TIERS,
    PolicyConfig,
)

ROUTE_CHOICES = [(ROUTE_REVIEW, "Manager review"), (ROUTE_SENIOR, "Senior review")]


class PolicyForm(forms.Form):
    phase = forms.ChoiceField(choices=RolloutPhase.choices)
    sample_rate = forms.FloatField(
        min_value=0, max_value=1, label="Spot-check sample rate",
        help_text="Share of would-be auto-approved items a manager still reviews (0 to 1).",
    )
    limited_max_offer_cost = forms.FloatField(
        min_value=0, label="Limited phase: highest offer cost automated",
    )
    sla_review_hours = forms.FloatField(
        min_value=0.01, label="Review SLA (hours)", help_text="Pending longer than this: escalated to a senior manager.",
    )
    stale_after_hours = forms.FloatField(
        min_value=0.01, label="Offers go stale after (hours)", help_text="Open longer than this: expired.",
    )
    note = forms.CharField(max_length=300, required=False, label="What changed and why")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for kind, spec in RULES.items():
            self.fields[f"rule_{kind}_enabled"] = forms.BooleanField(required=False, label=spec.label)
            if spec.threshold_type == "number":
                self.fields[f"rule_{kind}_threshold"] = forms.FloatField(required=False, label="Threshold")
            elif spec.threshold_type == "tier":
                self.fields[f"rule_{kind}_threshold"] = forms.ChoiceField(
                    choices=[(t, t) for t in TIERS], required=False, label="Tier"
                )
            self.fields[f"rule_{kind}_route"] = forms.ChoiceField(choices=ROUTE_CHOICES, label="Send to")

    def rule_rows(self) -> list[dict[str, Any]]:
        """Bound fields per rule, for the template's table."""
        return [
            {
                "kind": kind,
                "spec": spec,
                "enabled": self[f"rule_{kind}_enabled"],
                "threshold": self[f"rule_{kind}_threshold"] if f"rule_{kind}_threshold" in self.fields else None,
                "route": self[f"rule_{kind}_route"],
            }
            for kind, spec in RULES.items()
        ]

    def rules_value(self) -> dict[str, dict[str, Any]]:
        data = self.cleaned_data
        return {
            kind: {
                "enabled": bool(data.get(f"rule_{kind}_enabled")),
                "threshold": data.get(f"rule_{kind}_threshold"),
                "route": data.get(f"rule_{kind}_route"),
            }
            for kind in RULES
        }

    @staticmethod
    def initial_for(config: PolicyConfig) -> dict[str, Any]:
        initial: dict[str, Any] = {
            "phase": config.phase,
            "sample_rate": config.sample_rate,
            "limited_max_offer_cost": config.limited_max_offer_cost,
            "sla_review_hours": config.sla_review_hours,
            "stale_after_hours": config.stale_after_hours,
        }
        for rule in config.rules:
            initial[f"rule_{rule.kind}_enabled"] = rule.enabled
            initial[f"rule_{rule.kind}_threshold"] = rule.threshold
            initial[f"rule_{rule.kind}_route"] = rule.route
        return initial


class BudgetForm(forms.Form):
    dimension = forms.ChoiceField(choices=[(d, d) for d in BUDGET_DIMENSIONS])
    value = forms.CharField(max_length=64, label="Segment", help_text="e.g. gold, north")
    period = forms.ChoiceField(choices=[(p, p) for p in BUDGET_PERIODS])
    amount = forms.FloatField(min_value=0, label="Offer-cost budget")


BudgetFormSet = forms.formset_factory(BudgetForm, extra=2, can_delete=True)


def budgets_value(formset: Any) -> list[dict[str, Any]]:
    return [
        {k: form.cleaned_data[k] for k in ("dimension", "value", "period", "amount")}
        for form in formset.forms
        if form.cleaned_data and not form.cleaned_data.get("DELETE")
    ]


def policy_forms(data: Any | None, config: PolicyConfig) -> tuple[PolicyForm, Any]:
    if data is not None:
        return PolicyForm(data), BudgetFormSet(data, prefix="budget")
    return (
        PolicyForm(initial=PolicyForm.initial_for(config)),
        BudgetFormSet(initial=[b.to_dict() for b in config.budgets], prefix="budget"),
    )


def policy_values(form: PolicyForm, formset: Any) -> dict[str, Any] | None:
    """Raw values for PolicyConfig.from_values / policy_save, or None when the forms are invalid."""
    if not (form.is_valid() and formset.is_valid()):
        return None
    data = form.cleaned_data
    return {
        "phase": data["phase"],
        "sample_rate": data["sample_rate"],
        "limited_max_offer_cost": data["limited_max_offer_cost"],
        "sla_review_hours": data["sla_review_hours"],
        "stale_after_hours": data["stale_after_hours"],
        "rules": form.rules_value(),
        "budgets": budgets_value(formset),
    }
