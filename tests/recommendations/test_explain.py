import numpy as np
import pandas as pd

from recommendations.explain import describe_drivers, shap_explain
from recommendations.features import FEATURE_NAMES, build_features
from recommendations.scoring import engagement_margin
from tests.recommendations.conftest import AS_OF


def test_shap_additivity_on_log_odds(trained, frames):
    bundle, _ = trained
    members, events = frames
    X = build_features(members.head(300), events, AS_OF).to_numpy(float)
    values, base = shap_explain(bundle, X)
    margin = engagement_margin(bundle.engagement_model, X)
    assert np.abs(base + values.astype(float).sum(axis=1) - margin).max() < 1e-4
    assert np.abs(values).sum() > 0


def test_describe_drivers_text():
    values = np.zeros(len(FEATURE_NAMES))
    shap_row = np.zeros(len(FEATURE_NAMES))
    i = FEATURE_NAMES.index("sessions_30d")
    j = FEATURE_NAMES.index("days_since_purchase")
    k = FEATURE_NAMES.index("spend_90d")
    values[[i, j, k]] = [9, 45, 120]
    shap_row[[i, j, k]] = [0.8, -1.2, 0.1]
    drivers = describe_drivers(FEATURE_NAMES, values, shap_row, top=2)
    assert [d["feature"] for d in drivers] == ["days_since_purchase", "sessions_30d"]
    assert drivers[0]["text"] == "last purchase 45 days ago"
    assert drivers[0]["effect"] == "lowers engagement"
    assert drivers[1]["text"] == "visited 9 times in 30 days"
    assert drivers[1]["effect"] == "raises engagement" and drivers[1]["shap"] == 0.8
    assert isinstance(pd.Series(values).iloc[0], float)
