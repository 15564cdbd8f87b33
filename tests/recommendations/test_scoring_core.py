import numpy as np
import pandas as pd
import pytest

from recommendations.features import build_features
from recommendations.scoring import (
    OfferTerms,
    bare_score_rate,
    oracle_choice,
    policy_report,
    policy_value,
    score_features,
)
from recommendations.training import train_bundle
from tests.recommendations.conftest import AS_OF
from tests.recommendations.synth import OFFERS


@pytest.fixture(scope="module")
def features(frames):
    members, events = frames
    return build_features(members, events, AS_OF)


def test_batch_shapes_and_intervals(trained, features):
    bundle, _ = trained
    batch = score_features(bundle, features, OFFERS)
    n = len(features)
    assert batch.shap_values.shape == (n, len(bundle.feature_names)) and batch.shap_values.dtype == np.float32
    assert batch.alternatives.shape == (n, len(OFFERS), 6)
    assert (batch.p_low <= batch.probability).all() and (batch.probability <= batch.p_high).all()
    alt = batch.alternatives
    assert (alt[:, :, 1] <= alt[:, :, 0]).all() and (alt[:, :, 0] <= alt[:, :, 2]).all()
    assert (alt[:, :, 4] <= alt[:, :, 3]).all() and (alt[:, :, 3] <= alt[:, :, 5]).all()
    assert batch.offer_sources == ["learned"] * len(OFFERS)
    assert bare_score_rate(bundle, features, OFFERS) > 500


def test_nbo_is_argmax_ev_and_no_action_when_nothing_pays(trained, features):
    bundle, _ = trained
    batch = score_features(bundle, features, OFFERS)
    ev = batch.alternatives[:, :, 3]
    act = batch.offer_index >= 0
    assert (batch.offer_index[act] == ev[act].argmax(axis=1)).all()
    assert (ev[~act] <= 0).all() and (ev[act].max(axis=1) > 0).all()
    assert np.allclose(batch.expected_value[act], ev[act].max(axis=1))
    assert (batch.expected_value[~act] == 0).all()
    costly = [OfferTerms(o.code, o.kind, cost=o.value + 1, value=o.value, high_stakes=o.high_stakes) for o in OFFERS]
    none = score_features(bundle, features, costly)
    assert (none.offer_index == -1).all() and (none.expected_value == 0).all()


def test_unseen_offer_scored_by_default_policy(trained, features):
    bundle, _ = trained
    offers = [*OFFERS, OfferTerms("NEWTIER", "tier_upgrade", cost=10.0, value=80.0, high_stakes=True)]
    batch = score_features(bundle, features.head(50), offers)
    assert batch.offer_sources == ["learned", "learned", "learned", "default_policy"]
    assert batch.offer_policy == "learned"


def test_no_exposures_bundle_states_default_policy(frames, features):
    members, events = frames
    quiet = events[~events["kind"].isin(["offer_sent", "offer_redeemed"])]
    bundle, _ = train_bundle(members=members, events=quiet, offers=OFFERS, as_of=AS_OF, horizon_days=60)
    batch = score_features(bundle, features.head(100), OFFERS)
    assert batch.offer_policy == "default_policy"
    assert batch.offer_sources == ["default_policy"] * len(OFFERS)
    # retention call is ranked up for members at risk by the rule
    p_call = batch.alternatives[:, 2, 0]
    risk = 1 - batch.probability
    assert np.corrcoef(p_call, risk)[0, 1] > 0


def test_policy_helpers():
    offers = [OfferTerms("A", "discount", 1.0, 10.0), OfferTerms("B", "bonus_points", 2.0, 20.0)]
    true_p = np.array([[0.5, 0.05], [0.0, 0.5], [0.01, 0.01]])
    oracle = oracle_choice(true_p, offers)
    assert list(oracle) == [0, 1, -1]
    assert policy_value(oracle, true_p, offers) == pytest.approx(4.0 + 8.0)
    report = policy_report(np.array([0, 0, -1]), true_p, offers)
    assert report["capture"] == pytest.approx(3.0 / 12.0)
    assert report["same_offer"] == pytest.approx(max(4 - 1 - 0.9, -1 + 8 - 1.8))


def test_scoring_one_member_matches_batch(trained, features):
    bundle, _ = trained
    full = score_features(bundle, features, OFFERS)
    one = score_features(bundle, features.iloc[[5]], OFFERS)
    assert one.probability[0] == pytest.approx(full.probability[5])
    assert np.allclose(one.alternatives[0], full.alternatives[5])
    assert isinstance(features.index, pd.Index) and one.member_pks[0] == features.index[5]


def test_explaining_leading_rows_only_leaves_the_rest_of_the_batch_unchanged(trained, features):
    """What-if explains the base and the edited member, not its recourse candidates."""
    bundle, _ = trained
    full = score_features(bundle, features.head(50), OFFERS)
    partial = score_features(bundle, features.head(50), OFFERS, explain=2)
    assert np.array_equal(partial.shap_values[:2], full.shap_values[:2]) and partial.shap_base == full.shap_base
    assert not partial.shap_values[2:].any() and full.shap_values[2:].any()
    assert np.array_equal(partial.offer_index, full.offer_index)
    assert np.array_equal(partial.alternatives, full.alternatives) and np.array_equal(partial.p_high, full.p_high)
    assert not score_features(bundle, features.head(50), OFFERS, explain=False).shap_values.any()
    # numpy's bool is a bool too: every row, not one.
    assert np.array_equal(score_features(bundle, features.head(50), OFFERS, explain=np.True_).shap_values,
                          full.shap_values)
