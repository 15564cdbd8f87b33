"""The SHAP waterfall of the item and what-if pages: it adds up and its labels have room."""

import plotly.graph_objects as go
import pytest

from recommendations.charts import shap_waterfall_figure


def test_waterfall_adds_up_and_leaves_room_for_the_value_labels() -> None:
    labels = [f"feature_{i}" for i in range(14)]
    values = [0.5, -0.9, 0.3, -0.2, 0.1, 0.05, -0.04, 0.03, -0.02, 0.01, 0.02, -0.01, 0.005, -0.005]
    fig = shap_waterfall_figure(labels=labels, shap_values=values, base_value=0.4, top=5)
    go.Figure(fig)  # plotly accepts it
    bar = fig["data"][0]
    assert bar["y"][0] == "Average member" and bar["y"][-1] == "This member" and "9 other features" in bar["y"]
    assert bar["x"][-1] == pytest.approx(0.4 + sum(values))
    # The axis reaches past both ends of the running total (from 0 through every bar) by 18%
    # of its span, so labels printed outside the bars do not overwrite the feature names.
    running, total = [0.0], 0.0
    for x in bar["x"][:-1]:
        total += x
        running.append(total)
    lo, hi = min(running), max(running)
    low_end, high_end = fig["layout"]["xaxis"]["range"]
    assert low_end == pytest.approx(lo - 0.18 * (hi - lo)) and high_end == pytest.approx(hi + 0.18 * (hi - lo))
