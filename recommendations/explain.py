"""SHAP explanations of the engagement model and their plain-language drivers. No Django.

shap.TreeExplainer explains the engagement model's raw output: the log-odds margin of the
HistGradientBoosting model (so base + sum(shap) == decision_function(x)), or P(engaged) for
a RandomForest. The probability shown to managers is that output after the monotone
calibration map (recommendations.training.IntervalCalibrator), so the direction and ranking
of every driver carry over. No categorical_features are used (shap issue #3436): tier is an
ordinal number, and every other feature is numeric.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

_EXPLAINERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tree_explainer(bundle: Any):
    """The TreeExplainer of a bundle, built once per bundle object (lazily, not at import)."""
    explainer = _EXPLAINERS.get(bundle)
    if explainer is None:
        import shap

        explainer = shap.TreeExplainer(bundle.engagement_model)
        _EXPLAINERS[bundle] = explainer
    return explainer


def shap_explain(bundle: Any, X: np.ndarray) -> tuple[np.ndarray, float]:
    """(shap_values (n, n_features) float32, base value) of the engagement model's raw output."""
    explainer = tree_explainer(bundle)
    values = explainer.shap_values(X, check_additivity=False)
    base = explainer.expected_value
    values = np.asarray(values)
    if values.ndim == 3:  # classifiers explained per class (RandomForest): keep "engaged"
        values = values[:, :, 1]
        base = np.asarray(base).reshape(-1)[1]
    base = float(np.asarray(base).reshape(-1)[0])
    return values.astype(np.float32), base


def describe_drivers(
    feature_names: list[str], feature_values, shap_row, top: int = 3
) -> list[dict]:
    """The ``top`` features that moved this member's engagement most, in plain language.

    Returns [{"feature", "text", "effect": "raises engagement" | "lowers engagement",
    "shap", "value"}], largest |shap| first; zero contributions are left out.
    """
    from recommendations.features import FEATURE_BY_NAME

    values = np.asarray(feature_values, dtype=float)
    shap_row = np.asarray(shap_row, dtype=float)
    by_name = dict(zip(feature_names, values.tolist(), strict=False))
    order = np.argsort(-np.abs(shap_row), kind="stable")
    drivers = []
    for i in order[:top]:
        if shap_row[i] == 0:
            continue
        name = feature_names[i]
        spec = FEATURE_BY_NAME.get(name)
        text = _comment_words(name, values[i], comments=by_name.get("comments_365d", 1.0))
        if text is None:
            text = spec.text.format(value=values[i]) if spec else f"{name} = {values[i]:g}"
        drivers.append({
            "feature": name,
            "text": text,
            "effect": "raises engagement" if shap_row[i] > 0 else "lowers engagement",
            "shap": float(shap_row[i]),
            "value": float(values[i]),
        })
    return drivers


def _comment_words(name: str, value: float, *, comments: float) -> str | None:
    """Plain words for a text feature (recommendations.features.TEXT_FEATURES), else None.

    The numbers behind them (a mean VADER score, a difference of means) mean little to a
    manager; the direction does. ``comments``: the member's comment count in the year, so
    "no comments" is not mistaken for "neutral comments".
    """
    from recommendations.features import NO_HISTORY_DAYS
    from recommendations.text import sentiment_label

    if name == "comment_sentiment_90d":
        if comments <= 0 and value == 0:
            return "no feedback comments recently"
        return f"recent feedback has been {sentiment_label(value)}"
    if name == "comment_sentiment_trend":
        words = {"negative": "more negative comments than usual", "positive": "more positive comments than usual"}
        return words.get(sentiment_label(value), "comments as positive or negative as usual")
    if name == "negative_comment_share_365d":
        if comments <= 0:
            return "no feedback comments in a year"
        return "no negative comments in a year" if value == 0 else f"{value:.0%} of the year's comments were negative"
    if name == "days_since_negative_comment":
        return "no negative comment on record" if value >= NO_HISTORY_DAYS else f"last negative comment {value:.0f} days ago"
    if name == "comments_365d" and value <= 0:
        return "no feedback comments in a year"
    return None
