"""Plotly figures of the what-if pages as plain dicts: data in, figure out, no database.

Built like the desk's figures in recommendations.charts (whose SHAP waterfall and layout
they share) without plotly's validating graph_objects: a what-if recompute draws two
figures per keystroke. tests/whatif checks that every figure here is one plotly accepts
(go.Figure(fig) validates it).
"""

from __future__ import annotations

from collections.abc import Sequence

from recommendations.charts import TOTAL
from recommendations.charts import layout as _layout

BEFORE, AFTER = "#94a3b8", TOTAL


def shap_order(*, labels: Sequence[str], shap_values: Sequence[float], top: int = 10) -> list[str]:
    pairs = sorted(zip(labels, (float(v) for v in shap_values), strict=True), key=lambda p: -abs(p[1]))
    return [name for name, _ in pairs[:top]]


def offers_compare(*, before: Sequence[dict], after: Sequence[dict], currency: str = "") -> dict:
    """Expected value of every offer with its range for members like this: as the member is, and edited."""
    codes = [a["code"] for a in before]

    def trace(rows: Sequence[dict], name: str, color: str) -> dict:
        by_code = {r["code"]: r for r in rows}
        ev = [float(by_code[c]["ev"]) for c in codes]
        return {
            "type": "bar", "orientation": "h", "name": name, "y": codes, "x": ev,
            "marker": {"color": color},
            "error_x": {
                "type": "data", "symmetric": False, "color": "#1d2430",
                "array": [float(by_code[c]["ev_high"]) - e for c, e in zip(codes, ev, strict=True)],
                "arrayminus": [e - float(by_code[c]["ev_low"]) for c, e in zip(codes, ev, strict=True)],
            },
            "hovertemplate": "%{y}: %{x:.2f} " + currency + "<extra>" + name + "</extra>",
        }

    return {
        "data": [trace(before, "as is", BEFORE), trace(after, "what if", AFTER)],
        "layout": _layout(
            height=100 + 44 * max(1, len(codes)), title="Expected value per offer (range: members like this)",
            barmode="group", showlegend=True, legend={"orientation": "h", "y": -0.2},
            yaxis={"autorange": "reversed", "automargin": True},
            xaxis={"title": {"text": f"expected value against no action {currency}".strip()}, "zeroline": True},
        ),
    }


def segment_totals(*, before: dict, after: dict, key: str, title: str, unit: str = "") -> dict:
    """One total before and after the change, with its interval."""
    values = [float(before.get(key, 0.0)), float(after.get(key, 0.0))]
    lows = [float(before.get(f"{key}_low", values[0])), float(after.get(f"{key}_low", values[1]))]
    highs = [float(before.get(f"{key}_high", values[0])), float(after.get(f"{key}_high", values[1]))]
    return {
        "data": [{
            "type": "bar", "x": ["as is", "with the change"], "y": values,
            "marker": {"color": [BEFORE, AFTER]},
            "error_y": {
                "type": "data", "symmetric": False, "color": "#1d2430",
                "array": [h - v for h, v in zip(highs, values, strict=True)],
                "arrayminus": [v - lo for v, lo in zip(values, lows, strict=True)],
            },
            "hovertemplate": "%{x}: %{y:.1f} " + unit + "<extra></extra>",
        }],
        "layout": _layout(height=280, title=title, yaxis={"title": {"text": unit}, "zeroline": True}),
    }


def segment_mix(*, before: dict, after: dict, codes: Sequence[str]) -> dict:
    """How many members each offer is recommended to, before and after."""
    labels = [*codes, "none"]
    return {
        "data": [
            {"type": "bar", "name": "as is", "x": [c if c != "none" else "no action" for c in labels],
             "y": [int(before.get("mix", {}).get(c, 0)) for c in labels], "marker": {"color": BEFORE}},
            {"type": "bar", "name": "with the change", "x": [c if c != "none" else "no action" for c in labels],
             "y": [int(after.get("mix", {}).get(c, 0)) for c in labels], "marker": {"color": AFTER}},
        ],
        "layout": _layout(height=280, title="Recommended offer mix", barmode="group", showlegend=True,
                          legend={"orientation": "h", "y": -0.25}, yaxis={"title": {"text": "members"}}),
    }


def delta_histogram(*, edges: Sequence[float], counts: Sequence[int]) -> dict:
    centers = [(a + b) / 2 * 100 for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return {
        "data": [{"type": "bar", "x": centers, "y": list(counts), "marker": {"color": AFTER},
                  "hovertemplate": "%{x:+.1f} points: %{y} members<extra></extra>"}],
        "layout": _layout(height=280, title="Change in engagement probability per member",
                          xaxis={"title": {"text": "percentage points"}}, yaxis={"title": {"text": "members"}},
                          bargap=0.05),
    }
