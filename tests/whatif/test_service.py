"""whatif_evaluate and segment scenarios against a real model trained on a simulated program."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from governance.models import AuditEvent
from loyalty.models import Member
from recommendations.features import build_features
from recommendations.models import Scenario
from recommendations.scoring import score_features
from recommendations.selectors import member_frames_load, offer_terms_list
from recommendations.whatif import (
    SegmentSpec,
    WhatIfError,
    bundle_for,
    member_as_of,
    member_base_features,
    member_scenario_save,
    member_whatif_evaluate,
    segment_scenario_start,
    segment_spec_validate,
    whatif_evaluate,
    whatif_latency,
)


def test_no_change_scores_exactly_like_the_worker(world):
    member, version = world.member, world.model
    as_of = member_as_of(member=member, model_version=version)
    result = member_whatif_evaluate(member=member, model_version=version, changes={})
    # The worker's path: frames -> build_features -> score_features.
    members, events = member_frames_load(as_of=as_of, pk_from=member.pk, pk_to=member.pk)
    features = build_features(members, events, pd.Timestamp(as_of, tz="UTC"))
    batch = score_features(bundle_for(version), features, offer_terms_list())
    for side in ("base", "scenario"):
        assert result[side]["probability"] == pytest.approx(batch.probability[0])
        assert result[side]["p_low"] == pytest.approx(batch.p_low[0])
        assert result[side]["expected_value"] == pytest.approx(batch.expected_value[0])
        assert np.allclose(result[side]["shap"], batch.shap_values[0], atol=1e-5)
    assert not result["recommendation_changed"]
    assert result["delta"] == {"probability": 0.0, "expected_value": 0.0}
    assert len(result["base"]["alternatives"]) == len(offer_terms_list())


def test_changes_move_the_prediction_and_propagate(world):
    # Simulated members visit the app about ten times per purchase: 30 visits a month is
    # markedly more than usual (12 no longer is).
    result = member_whatif_evaluate(
        member=world.member, model_version=world.model, changes={"purchases_30d": 6, "sessions_30d": 30}
    )
    feats = {f["name"]: f for f in result["features"]}
    assert feats["purchases_30d"]["changed"] and feats["purchases_30d"]["value"] == 6
    assert feats["purchases_90d"]["adjusted"] and feats["purchases_90d"]["value"] >= 6
    assert feats["avg_basket_365d"]["locked"]
    assert result["scenario"]["probability"] != result["base"]["probability"]
    side = result["scenario"]
    assert side["p_low"] <= side["probability"] <= side["p_high"]
    for alt in side["alternatives"]:
        assert alt["ev_low"] <= alt["ev"] <= alt["ev_high"]
    assert {d["effect"] for d in side["drivers"]} <= {"raises engagement", "lowers engagement"}


def test_values_outside_the_training_range_warn(world):
    schema = {f["name"]: f for f in world.model.feature_schema["features"]}
    too_many = schema["sessions_30d"]["max"] + 40
    result = member_whatif_evaluate(member=world.member, model_version=world.model,
                                    changes={"sessions_30d": too_many})
    warned = {w["feature"] for w in result["warnings"]}
    assert "sessions_30d" in warned
    assert "outside the range the model was trained on" in result["warnings"][0]["text"]


def test_recourse_hint_really_flips_the_recommendation(world):
    """For members whose hint was found, applying it changes the recommended offer."""
    version = world.model
    found = 0
    for member in Member.objects.filter(consent_profiling=True, erased_at__isnull=True).order_by("pk")[:25]:
        result = member_whatif_evaluate(member=member, model_version=version, changes={})
        hint = result["recourse"]
        assert hint["searched"] > 0
        if not hint["found"]:
            continue
        found += 1
        applied = member_whatif_evaluate(member=member, model_version=version, changes={hint["feature"]: hint["to"]},
                                         recourse=False)
        assert applied["scenario"]["offer"] == hint["offer"] != result["scenario"]["offer"]
        assert hint["feature"] in {"purchases_30d", "purchases_90d", "spend_30d", "spend_90d", "sessions_30d",
                                   "sessions_90d", "session_minutes_90d", "redemptions_90d", "points_balance",
                                   "tier_rank"}
    assert found > 0


def test_hypothetical_member_and_invalid_input(world):
    base = member_base_features(member=world.member, model_version=world.model,
                                as_of=member_as_of(member=world.member, model_version=world.model))
    result = whatif_evaluate(model_version=world.model, base_features=base, changes={"points_balance": 9000})
    assert result["changes"] == {"points_balance": 9000.0}
    with pytest.raises(WhatIfError) as err:
        whatif_evaluate(model_version=world.model, base_features=base, changes={"age": 20})
    assert err.value.field == "age"


def test_server_time_per_recompute_is_under_50_ms(world):
    timings = whatif_latency(model_version=world.model, samples=30)
    print(f"\nwhat-if recompute: p50 {timings['whatif_p50_ms']} ms, p95 {timings['whatif_p95_ms']} ms")
    assert timings["whatif_p50_ms"] < 50


def test_saving_a_member_scenario_records_inputs_and_an_audit_row_without_pii(world, role_users):
    manager = role_users["manager"]
    scenario = member_scenario_save(actor=manager, name="more visits", member=world.member,
                                    model_version=world.model, changes={"sessions_30d": 9})
    assert scenario.inputs == {"changes": {"sessions_30d": 9.0}}
    assert scenario.model_version_id == world.model.pk and scenario.status == "succeeded"
    assert set(scenario.result) >= {"base", "scenario", "delta"}
    audit = AuditEvent.objects.get(action="whatif.save", object_id=str(scenario.pk))
    assert audit.actor_label == "manager" and audit.member_pseudo_id == world.member.pseudo_id
    blob = str(audit.new)
    member = Member.objects.get(pk=world.member.pk)
    for pii in (member.name, member.email, str(member.birth_date)):
        if pii:
            assert pii not in blob
    with pytest.raises(WhatIfError):
        member_scenario_save(actor=manager, name=" ", member=world.member, model_version=world.model, changes={})


def test_segment_spec_validation(world):
    names = bundle_for(world.model).feature_names
    for data, field in [
        ({"tier": "diamond", "feature": "points_balance"}, "tier"),
        ({"risk": "extreme", "feature": "points_balance"}, "risk"),
        ({"feature": "age", "amount": 1.1}, "feature"),
        ({"feature": "points_balance", "op": "pow"}, "op"),
        ({"feature": "points_balance", "amount": "lots"}, "amount"),
        ({"offer_costs": {"NOPE": 3}}, "offer_costs"),
        ({}, "feature"),
    ]:
        with pytest.raises(WhatIfError) as err:
            segment_spec_validate(data, feature_names=names)
        assert err.value.field == field, data


def test_segment_scenario_runs_eagerly_with_progress_and_intervals(
    world, role_users, eager_celery, django_capture_on_commit_callbacks
):
    tier = Member.objects.filter(consent_profiling=True).values_list("tier", flat=True).first()
    spec = SegmentSpec(tier=tier, feature="points_balance", op="scale", amount=1.2)
    with django_capture_on_commit_callbacks(execute=True):
        scenario = segment_scenario_start(actor=role_users["manager"], name="", spec=spec, model_version=world.model)
    scenario.refresh_from_db()
    assert scenario.status == Scenario.Status.SUCCEEDED, scenario.error
    assert scenario.progress == 1.0
    members = Member.objects.filter(consent_profiling=True, erased_at__isnull=True, tier=tier).count()
    assert scenario.members_total == members and scenario.result["members"] == members
    r = scenario.result
    for side in ("before", "after"):
        assert r[side]["engaged_low"] <= r[side]["engaged"] <= r[side]["engaged_high"]
        assert r[side]["ev_low"] <= r[side]["ev"] <= r[side]["ev_high"]
        assert sum(r[side]["mix"].values()) == members
    assert sum(r["delta_histogram"]["counts"]) == members
    assert tier in scenario.name and "points_balance" in scenario.name
    assert AuditEvent.objects.filter(action="whatif.save", object_id=str(scenario.pk)).exists()


def test_segment_offer_cost_change_shifts_the_mix(
    world, role_users, eager_celery, django_capture_on_commit_callbacks
):
    offers = offer_terms_list()
    spec = SegmentSpec(offer_costs=tuple((o.code, 1000.0) for o in offers))
    with django_capture_on_commit_callbacks(execute=True):
        scenario = segment_scenario_start(actor=role_users["manager"], name="everything expensive", spec=spec,
                                          model_version=world.model)
    scenario.refresh_from_db()
    r = scenario.result
    assert scenario.status == "succeeded"
    # Nobody is worth an offer that costs 1000: everyone gets no action, at no cost.
    assert r["after"]["mix"]["none"] == r["members"]
    assert r["after"]["cost"] == 0.0 and r["after"]["ev"] == 0.0
    # Segment filtered on the recommended offer before the change.
    busiest = max((c for c in r["before"]["mix"] if c != "none"), key=lambda c: r["before"]["mix"][c])
    with django_capture_on_commit_callbacks(execute=True):
        filtered = segment_scenario_start(
            actor=role_users["manager"], name="", model_version=world.model,
            spec=SegmentSpec(offer=busiest, feature="sessions_30d", op="add", amount=2),
        )
    filtered.refresh_from_db()
    assert filtered.result["members"] == r["before"]["mix"][busiest]
    assert filtered.result["before"]["mix"][busiest] == filtered.result["members"]
