"""Plotly figure builders: plain data in, a figure out. No database access here.

Templates embed `figure_json(fig)` in a <script type="application/json"> block and
static/js/desk.js draws it with the locally served plotly.min.js (the CSP allows no
inline scripts).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import plotly.graph_objects as go

FONT = {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12, "color": "#1d2430"}
UP, DOWN, TOTAL = "#067647", "#b42318", "#1f6feb"


def _layout(fig: go.Figure, *, height: int, title: str = "") -> go.Figure:
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 36 if title else 10, "b": 10},
        font=FONT,
        title={"text": title, "x": 0, "font": {"size": 13}} if title else None,
        paper_bgcolor="#fff",
        plot_bgcolor="#fff",
        showlegend=False,
    )
    return fig


def shap_waterfall_figure(
    *, labels: Sequence[str], shap_values: Sequence[float], base_value: float, top: int = 10
) -> go.Figure:
    """How each feature moved the model's output from the average member to this one.

    The largest `top` contributions are shown; the rest are summed into one bar so the
    total still adds up to the model's output.
    """
    pairs = sorted(zip(labels, (float(v) for v in shap_values), strict=True), key=lambda p: -abs(p[1]))
    shown, rest = pairs[:top], pairs[top:]
    names = [name for name, _ in shown]
    values = [value for _, value in shown]
    if rest:
        names.append(f"{len(rest)} other features")
        values.append(sum(v for _, v in rest))
    total = float(base_value) + sum(values)
    fig = go.Figure(
        go.Waterfall(
            orientation="h",
            measure=["absolute", *["relative"] * len(values), "total"],
            y=["Average member", *names, "This member"],
            x=[float(base_value), *values, total],
            text=[f"{base_value:.3f}", *[f"{v:+.3f}" for v in values], f"{total:.3f}"],
            textposition="outside",
            increasing={"marker": {"color": UP}},
            decreasing={"marker": {"color": DOWN}},
            totals={"marker": {"color": TOTAL}},
            connector={"line": {"color": "#dde2e8"}},
        )
    )
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_xaxes(title_text="model output (engagement score)", zeroline=False)
    return _layout(fig, height=90 + 26 * (len(values) + 2), title="Why the model says so (SHAP)")


def alternatives_figure(*, alternatives: Sequence[dict], recommended_code: str | None, currency: str = "") -> go.Figure:
    """Expected value of every offer with its 90% interval; the recommended one highlighted."""
    rows = sorted(alternatives, key=lambda a: float(a.get("ev", 0.0)), reverse=True)
    codes = [str(a.get("code") or "no action") for a in rows]
    ev = [float(a.get("ev", 0.0)) for a in rows]
    plus = [float(a.get("ev_high", a.get("ev", 0.0))) - e for a, e in zip(rows, ev, strict=True)]
    minus = [e - float(a.get("ev_low", a.get("ev", 0.0))) for a, e in zip(rows, ev, strict=True)]
    colors = [TOTAL if (a.get("code") or None) == (recommended_code or None) else "#94a3b8" for a in rows]
    fig = go.Figure(
        go.Bar(
            x=ev,
            y=codes,
            orientation="h",
            marker={"color": colors},
            error_x={"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "color": "#1d2430"},
            hovertemplate="%{y}: %{x:.2f} " + currency + "<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_xaxes(title_text=f"expected value against no action {currency}".strip(), zeroline=True)
    return _layout(fig, height=80 + 30 * max(1, len(rows)), title="Alternatives (90% interval)")


def history_sparkline_figure(*, months: Sequence[str], counts: Sequence[int]) -> go.Figure:
    fig = go.Figure(
        go.Scatter(
            x=list(months),
            y=[int(c) for c in counts],
            mode="lines+markers",
            line={"color": TOTAL, "width": 2},
            marker={"size": 4},
            hovertemplate="%{x}: %{y} purchases<extra></extra>",
        )
    )
    fig.update_xaxes(showgrid=False, tickfont={"size": 10})
    fig.update_yaxes(showgrid=False, rangemode="tozero", tickfont={"size": 10})
    return _layout(fig, height=140, title="Purchases per month")


def figure_json(fig: go.Figure) -> dict:
    """A JSON-safe dict (data + layout) for Django's json_script filter."""
    return json.loads(fig.to_json())
