"""Plotly figure builders: plain data in, a figure out. No database access here.

Templates embed `figure_json(fig)` in a <script type="application/json"> block and
static/js/desk.js draws it with the locally served plotly.min.js (the CSP allows no
inline scripts).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import plotly.graph_objects as go

FONT = {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12, "color": "#1d2430"}
UP, DOWN, TOTAL = "#067647", "#b42318", "#1f6feb"


def layout(*, height: int, title: str = "", **extra) -> dict:
    """The desk's plotly layout as a plain dict (every figure here and in whatif_charts)."""
    out = {
        "height": height,
        "margin": {"l": 10, "r": 10, "t": 36 if title else 10, "b": 10},
        "font": FONT,
        "paper_bgcolor": "#fff",
        "plot_bgcolor": "#fff",
        "showlegend": False,
    }
    if title:
        out["title"] = {"text": title, "x": 0, "font": {"size": 13}}
    out.update(extra)
    # Tick labels and axis titles get the room they need (fixed margins clip them).
    for axis in ("xaxis", "yaxis"):
        out[axis] = {**out.get(axis, {}), "automargin": True}
    return out


def _layout(fig: go.Figure, *, height: int, title: str = "") -> go.Figure:
    fig.update_layout(layout(height=height, title=title))
    return fig


# The desk's figures (detail page, what-if) are plain dicts, not go.Figure: plotly's
# validating graph objects cost 20-40 ms a figure, more than the rest of the page.
# tests check that each is a figure plotly accepts (go.Figure(fig) validates it).


def shap_waterfall_figure(*, labels: Sequence[str], shap_values: Sequence[float], base_value: float,
                          title: str = "Why the model says so (SHAP)", top: int = 10,
                          order: Sequence[str] | None = None) -> dict:
    """How each feature moved the model's output from the average member to this one.

    The largest `top` contributions are shown (or the features named in `order`, to compare
    two members side by side); the rest are summed into one bar so the total still adds up
    to the model's output.
    """
    pairs = list(zip(labels, (float(v) for v in shap_values), strict=True))
    if order is not None:
        by_name = dict(pairs)
        shown = [(name, by_name[name]) for name in order[:top] if name in by_name]
        names_shown = {name for name, _ in shown}
        rest = [(n, v) for n, v in pairs if n not in names_shown]
    else:
        pairs.sort(key=lambda p: -abs(p[1]))
        shown, rest = pairs[:top], pairs[top:]
    names = [name.replace("_", " ") for name, _ in shown]
    values = [value for _, value in shown]
    if rest:
        names.append(f"{len(rest)} other features")
        values.append(sum(v for _, v in rest))
    total = float(base_value) + sum(values)
    # Room on both sides for the "outside" value labels: without it a bar reaching the edge
    # prints its value over the feature names.
    running = [0.0, *itertools.accumulate([float(base_value), *values])]
    lo, hi = min(running), max(running)
    pad = 0.18 * (hi - lo) or 0.1
    return {
        "data": [{
            "type": "waterfall",
            "orientation": "h",
            "measure": ["absolute", *["relative"] * len(values), "total"],
            "y": ["Average member", *names, "This member"],
            "x": [float(base_value), *values, total],
            "text": [f"{base_value:.3f}", *[f"{v:+.3f}" for v in values], f"{total:.3f}"],
            "textposition": "outside",
            "increasing": {"marker": {"color": UP}},
            "decreasing": {"marker": {"color": DOWN}},
            "totals": {"marker": {"color": TOTAL}},
            "connector": {"line": {"color": "#dde2e8"}},
        }],
        "layout": layout(
            height=90 + 26 * (len(values) + 2), title=title,
            yaxis={"autorange": "reversed"},
            xaxis={"title": {"text": "model output (engagement score)"}, "zeroline": False,
                   "range": [lo - pad, hi + pad]},
        ),
    }


def alternatives_figure(*, alternatives: Sequence[dict], recommended_code: str | None, currency: str = "") -> dict:
    """Expected value of every offer with its range for members like this (the Venn-ABERS range,
    docs/response-intervals.md); the recommended one highlighted."""
    rows = sorted(alternatives, key=lambda a: float(a.get("ev", 0.0)), reverse=True)
    ev = [float(a.get("ev", 0.0)) for a in rows]
    return {
        "data": [{
            "type": "bar",
            "orientation": "h",
            "x": ev,
            "y": [str(a.get("code") or "no action") for a in rows],
            "marker": {"color": [TOTAL if (a.get("code") or None) == (recommended_code or None) else "#94a3b8"
                                 for a in rows]},
            "error_x": {
                "type": "data", "symmetric": False, "color": "#1d2430",
                "array": [float(a.get("ev_high", a.get("ev", 0.0))) - e for a, e in zip(rows, ev, strict=True)],
                "arrayminus": [e - float(a.get("ev_low", a.get("ev", 0.0))) for a, e in zip(rows, ev, strict=True)],
            },
            "hovertemplate": "%{y}: %{x:.2f} " + currency + "<extra></extra>",
        }],
        "layout": layout(
            height=80 + 30 * max(1, len(rows)), title="Alternatives (range: members like this)",
            yaxis={"autorange": "reversed"},
            xaxis={"title": {"text": f"expected value against no action {currency}".strip()}, "zeroline": True},
        ),
    }


def history_sparkline_figure(*, months: Sequence[str], counts: Sequence[int]) -> dict:
    return {
        "data": [{
            "type": "scatter",
            "x": list(months),
            "y": [int(c) for c in counts],
            "mode": "lines+markers",
            "line": {"color": TOTAL, "width": 2},
            "marker": {"size": 4},
            "hovertemplate": "%{x}: %{y} purchases<extra></extra>",
        }],
        "layout": layout(
            height=140, title="Purchases per month",
            xaxis={"showgrid": False, "tickfont": {"size": 10}},
            yaxis={"showgrid": False, "rangemode": "tozero", "tickfont": {"size": 10}},
        ),
    }


def figure_json(fig: go.Figure | dict) -> dict:
    """A JSON-safe dict (data + layout) for Django's json_script filter."""
    return fig if isinstance(fig, dict) else json.loads(fig.to_json())


# -------------------------------------------------------------------------------- models page

PALETTE = ["#1f6feb", "#b42318", "#067647", "#9a6700", "#8250df", "#0e7490", "#c2410c", "#475569"]


def _legend(fig: go.Figure) -> go.Figure:
    fig.update_layout(showlegend=True, legend={"orientation": "h", "y": -0.2, "x": 0})
    return fig


def _level_line(fig: go.Figure, y: float, text: str) -> None:
    fig.add_hline(y=y, line={"color": "#9a6700", "dash": "dot", "width": 1},
                  annotation_text=text, annotation_position="top left")


def _empty_note(fig: go.Figure, text: str) -> None:
    """Say why a chart is empty instead of showing bare axes."""
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font={"color": "#64748b", "size": 14})


def model_metrics_figure(*, versions: Sequence[dict]) -> go.Figure:
    """AUC, Brier score and held-out interval coverage per model version."""
    labels = [f"{v['label']} ({v['status']})" for v in versions]
    fig = go.Figure()
    for i, (key, name) in enumerate((("auc", "AUC"), ("brier", "Brier"), ("coverage", "Interval coverage"))):
        fig.add_trace(go.Bar(
            x=labels, y=[v.get(key) for v in versions], name=name, marker={"color": PALETTE[i]},
            hovertemplate="%{x}: " + name + " %{y:.3f}<extra></extra>",
        ))
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1], title_text="holdout metric")
    return _legend(_layout(fig, height=300, title="Metrics per model version"))


def calibration_figure(*, curves: Sequence[dict]) -> go.Figure:
    """Mean predicted probability against the observed rate per bin, one line per version."""
    fig = go.Figure(go.Scatter(
        x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"color": "#94a3b8", "dash": "dash"}, hoverinfo="skip",
    ))
    for i, c in enumerate(curves):
        fig.add_trace(go.Scatter(
            x=list(c["mean_predicted"]), y=list(c["fraction_positive"]), mode="lines+markers", name=c["label"],
            line={"color": PALETTE[i % len(PALETTE)]},
            hovertemplate="predicted %{x:.2f}, observed %{y:.2f}<extra>" + c["label"] + "</extra>",
        ))
    fig.update_xaxes(title_text="mean predicted engagement", range=[0, 1])
    fig.update_yaxes(title_text="observed engagement rate", range=[0, 1])
    return _legend(_layout(fig, height=320, title="Calibration (holdout)"))


def coverage_over_time_figure(*, rows: Sequence[dict], level: float, minimum: float) -> go.Figure:
    """Realized interval coverage per scoring run against the nominal level and the alert level;
    the held-out coverage from training for the same runs' models."""
    x = [f"{r['as_of']} #{r['run_id']}" for r in rows]
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=x, y=[r["holdout_coverage"] for r in rows], mode="lines+markers", name="held-out (training)",
        line={"color": "#94a3b8", "dash": "dash"},
    ))
    fig.add_trace(go.Scatter(
        x=x, y=[r["coverage"] for r in rows], mode="lines+markers", name="realized",
        line={"color": TOTAL, "width": 2}, text=[f"n={r['n']}" for r in rows],
        hovertemplate="%{x}: %{y:.1%} (%{text})<extra>realized</extra>",
    ))
    fig.add_trace(go.Scatter(
        x=x, y=[r["realized_rate"] for r in rows], mode="markers", name="realized engagement rate",
        marker={"color": UP, "symbol": "diamond"},
    ))
    fig.add_trace(go.Scatter(
        x=x, y=[r["mean_probability"] for r in rows], mode="markers", name="mean predicted probability",
        marker={"color": DOWN, "symbol": "x"},
    ))
    _level_line(fig, level, f"nominal {level:.0%}")
    _level_line(fig, minimum, f"alert below {minimum:.0%}")
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%")
    fig.update_xaxes(title_text="scoring run (as of)", type="category")
    return _legend(_layout(fig, height=320, title="Interval coverage over time vs realized outcomes"))


def decision_rates_figure(*, rows: Sequence[dict], title: str, empty_text: str = "") -> go.Figure:
    """Approval (solid) and override (dashed) rate per day, one colour per key."""
    keys = sorted({r["key"] for r in rows})
    fig = go.Figure()
    for i, key in enumerate(keys):
        mine = [r for r in rows if r["key"] == key]
        color = PALETTE[i % len(PALETTE)]
        for metric, dash in (("approval_rate", "solid"), ("override_rate", "dash")):
            fig.add_trace(go.Scatter(
                x=[str(r["day"]) for r in mine], y=[r[metric] for r in mine], mode="lines+markers",
                name=f"{key} {metric.split('_')[0]}", line={"color": color, "dash": dash},
                text=[f"n={r['n']}" for r in mine],
                hovertemplate="%{x}: %{y:.0%} (%{text})<extra>" + f"{key} {metric}" + "</extra>",
            ))
    if not rows and empty_text:
        _empty_note(fig, empty_text)
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%", title_text="share of people's decisions")
    fig.update_xaxes(type="category")
    return _legend(_layout(fig, height=300, title=title))


def approval_speed_figure(*, rows: Sequence[dict], fast_seconds: float, empty_text: str = "") -> go.Figure:
    """Seconds spent per decision against the item's interval width, one colour per manager:
    fast approvals of wide intervals (bottom right) look like rubber-stamping."""
    managers = sorted({r["manager"] for r in rows})
    symbols = {"approve": "circle", "override": "square", "escalate": "triangle-up"}
    fig = go.Figure()
    for i, manager in enumerate(managers):
        mine = [r for r in rows if r["manager"] == manager]
        fig.add_trace(go.Scatter(
            x=[r["width"] for r in mine], y=[max(r["seconds"], 0.5) for r in mine], mode="markers", name=manager,
            marker={"color": PALETTE[i % len(PALETTE)], "symbol": [symbols.get(r["action"], "circle") for r in mine],
                    "size": 8, "opacity": 0.8},
            text=[f"{r['action']} #{r['recommendation_id']}, p={r['probability']:.2f}" for r in mine],
            hovertemplate="%{text}<br>width %{x:.2f}, %{y:.0f} s<extra>" + manager + "</extra>",
        ))
    if not rows and empty_text:
        _empty_note(fig, empty_text)
    _level_line(fig, fast_seconds, f"{fast_seconds:.0f} s")
    fig.update_yaxes(type="log", title_text="seconds on the item (log)")
    fig.update_xaxes(title_text="90% interval width shown", range=[0, 1])
    return _legend(_layout(fig, height=340, title="Approval speed vs confidence"))


def psi_figure(*, features: Sequence[str], psi: Sequence[float], level: float, title: str) -> go.Figure:
    pairs = sorted(zip(features, psi, strict=True), key=lambda p: -p[1])
    colors = [DOWN if v > level else TOTAL for _, v in pairs]
    fig = go.Figure(go.Bar(
        x=[v for _, v in pairs], y=[n for n, _ in pairs], orientation="h", marker={"color": colors},
        hovertemplate="%{y}: PSI %{x:.3f}<extra></extra>",
    ))
    fig.add_vline(x=level, line={"color": "#9a6700", "dash": "dot"})
    fig.update_yaxes(autorange="reversed", automargin=True)
    fig.update_xaxes(title_text="population stability index")
    return _layout(fig, height=80 + 20 * max(1, len(pairs)), title=title)


GROUP_METRIC_NAMES = (("selection_rate", "selection rate"), ("tpr", "TPR"), ("fpr", "FPR"),
                      ("calibration_gap", "calibration gap"), ("interval_coverage", "interval coverage"))


def fairness_groups_figure(*, rows: Sequence[dict], column: str) -> go.Figure:
    """Selection rate, TPR, FPR and (in reports that have them) the calibration gap and the
    interval coverage per group of one column, with their bootstrap intervals."""
    mine = [r for r in rows if r["column"] == column]
    labels = [f"{r['value']} (n={r['n']})" for r in mine]
    fig = go.Figure()
    shown = [(key, name) for key, name in GROUP_METRIC_NAMES if any(key in r for r in mine)]
    for i, (key, name) in enumerate(shown):
        y = [r.get(key) for r in mine]
        fig.add_trace(go.Bar(
            x=labels, y=y, name=name, marker={"color": PALETTE[i]},
            error_y={
                "type": "data", "symmetric": False, "color": "#1d2430",
                "array": [(r.get(f"{key}_high") - v) if v is not None and r.get(f"{key}_high") is not None else 0
                          for r, v in zip(mine, y, strict=True)],
                "arrayminus": [(v - r.get(f"{key}_low")) if v is not None and r.get(f"{key}_low") is not None else 0
                               for r, v in zip(mine, y, strict=True)],
            },
        ))
    fig.update_layout(barmode="group")
    # A calibration gap can be negative (churn understated for the group).
    lowest = min([0.0, *(r["calibration_gap_low"] for r in mine if r.get("calibration_gap_low") is not None)])
    fig.update_yaxes(range=[lowest - 0.05 if lowest < 0 else 0, 1.05], tickformat=".0%")
    return _legend(_layout(fig, height=300, title=f"By {column.replace('_', ' ')} (90% bootstrap intervals)"))


def fairness_differences_figure(*, differences: dict, parity_max: float, odds_max: float) -> go.Figure:
    columns = list(differences)
    fig = go.Figure()
    for i, (key, name) in enumerate((
        ("demographic_parity_difference", "demographic parity difference"),
        ("equalized_odds_difference", "equalized odds difference"),
        ("calibration_difference", "calibration difference"),
        ("coverage_difference", "interval coverage difference"),
    )):
        if not any(key in differences[c] for c in columns):
            continue  # reports from before calibration was measured
        fig.add_trace(go.Bar(
            x=columns, y=[differences[c].get(key) for c in columns], name=name, marker={"color": PALETTE[i]},
        ))
    _level_line(fig, parity_max, f"parity level {parity_max:.2f}")
    if odds_max != parity_max:
        _level_line(fig, odds_max, f"odds level {odds_max:.2f}")
    fig.update_layout(barmode="group")
    fig.update_yaxes(rangemode="tozero")
    return _legend(_layout(fig, height=280, title="Differences between groups"))


def fairness_tradeoff_figure(*, tradeoff: dict) -> go.Figure:
    """Accuracy and fairness of the same data trained without and with reweighing."""
    keys = (("auc", "AUC"), ("brier", "Brier"), ("demographic_parity_difference", "parity diff."),
            ("equalized_odds_difference", "equalized odds diff."))
    fig = go.Figure()
    for i, variant in enumerate(("unweighted", "reweighted")):
        values = tradeoff.get(variant) or {}
        fig.add_trace(go.Bar(x=[name for _, name in keys], y=[values.get(k) for k, _ in keys], name=variant,
                             marker={"color": PALETTE[i]}))
    fig.update_layout(barmode="group")
    return _legend(_layout(fig, height=280, title=f"Reweighing on {tradeoff.get('column', '')}: accuracy vs fairness"))
