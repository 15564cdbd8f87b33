"""Small formatting filters for the review desk templates."""

from __future__ import annotations

from django import template

register = template.Library()

# The tooltip of every expected-value range (queue, item page, what-if): what it says and
# what it does not (README, "Response and EV intervals").
EV_RANGE_NOTE = (
    "How sure the model is about the average of members it scores like this one. This member's "
    "own value can lie outside: one yes/no answer per offer cannot show how members differ."
)


@register.simple_tag
def ev_range_note() -> str:
    return EV_RANGE_NOTE


@register.filter
def pct(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{float(value) * 100:.{int(digits)}f}%"


@register.filter
def svgx(value: float | None) -> str:
    """A probability as an x coordinate on a 0..100 SVG scale, clamped."""
    if value is None:
        return "0"
    return f"{min(100.0, max(0.0, float(value) * 100)):.1f}"


@register.filter
def money(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{float(value):,.2f}"


@register.filter
def signed_money(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{float(value):+,.2f}"


@register.filter
def churn(probability: float | None) -> str:
    if probability is None:
        return "–"
    return f"{(1 - float(probability)) * 100:.0f}%"
