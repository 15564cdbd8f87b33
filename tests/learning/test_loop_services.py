"""Outcomes, holdout, feedback examples, gate, promotion, rollback and the learning API."""

import io
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from django.test import Client

from governance.models import AuditEvent
from governance.services import policy_save
from loyalty.definitions import EVENT_COLUMNS
from loyalty.importers import import_csv
from loyalty.models import Member, Offer
from loyalty.simulator import program_write_db, simulate_program
from recommendations.decisions import DecisionConflict, decision_record, decision_undo
from recommendations.learning import (
    fairness_difference_se,
    gate_check,
    holdout_member_pks,
    labeled_examples_load,
    learning_settings_get,
    learning_settings_update,
    model_version_retrain,
    override_response_targets,
)
from recommendations.models import (
    Decision,
    ModelVersion,
    Outcome,
    Recommendation,
    RecommendationStatus,
)
from recommendations.outcomes import decision_accuracy, holdout_lift, override_payoff
from recommendations.queue import member_earlier_items
from recommendations.runs import run_export, run_start
from recommendations.services import model_version_train

pytestmark = pytest.mark.django_db(transaction=True)


def _import(frame: pd.DataFrame, path) -> None:
    out = frame.copy()
    out["occurred_at"] = pd.to_datetime(out["occurred_at"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    out["score"] = out["score"].astype("Int64")
    out.to_csv(path, columns=EVENT_COLUMNS, index=False, float_format="%.2f")
    assert import_csv(kind="events", source=path).succeeded


def test_outcomes_join_decisions_holdout_and_lift(artifacts, eager_celery, role_users, tmp_path):
    admin, manager = role_users["admin"], role_users["senior_manager"]
    learning_settings_update(actor=admin, values={"holdout_share": 0.2})
    assert AuditEvent.objects.filter(action="learning.settings_update", new__holdout_share=0.2).exists()
    program = simulate_program(members=600, seed=5)
    program_write_db(program)
    model_version_train(as_of=program.as_of, horizon_days=program.horizon_days)
    run = run_start(as_of=program.as_of)
    assert run.status == "succeeded"

    # The holdout is recorded, never routed, never decidable; assignment is by pseudo_id hash.
    recs = Recommendation.objects.filter(run=run)
    held = set(recs.filter(holdout=True).values_list("member_id", flat=True))
    assert held == holdout_member_pks(member_pks=recs.values_list("member_id", flat=True))
    assert 0.1 < len(held) / recs.count() < 0.3
    assert set(recs.filter(holdout=True).values_list("status", flat=True)) == {RecommendationStatus.HOLDOUT}
    a_held = recs.filter(holdout=True).first()
    with pytest.raises(DecisionConflict):
        decision_record(recommendation_id=a_held.pk, actor=manager, action="approve")

    open_recs = list(recs.filter(status__in=["pending", "escalated"], offer__isnull=False).order_by("pk")[:3])
    approved, overridden, undone = open_recs
    decision_record(recommendation_id=approved.pk, actor=manager, action="approve", label_engaged=True)
    other = "D10" if overridden.offer.code != "D10" else "B500"
    decision_record(recommendation_id=overridden.pk, actor=manager, action="override", chosen_offer_code=other,
                    reason_code="model_wrong", reason_text="member buys in store", label_engaged=False)
    wrong = decision_record(recommendation_id=undone.pk, actor=manager, action="approve", label_engaged=True)
    decision_undo(decision_id=wrong.pk, actor=manager)

    # The campaign system sends the decided offers; the approved one is redeemed.
    ids = dict(Member.objects.filter(pk__in=[approved.member_id, overridden.member_id]).values_list("pk", "member_id"))
    sent_at = pd.Timestamp(program.as_of, tz="UTC") + pd.Timedelta(days=1, hours=9)
    base = {"amount": 0.0, "points": 0, "quantity": 0, "duration_seconds": 0, "score": np.nan, "comment": ""}
    offers = pd.DataFrame([
        {"member_id": ids[approved.member_id], "occurred_at": sent_at, "kind": "offer_sent",
         "offer_code": approved.offer.code, **base},
        {"member_id": ids[approved.member_id], "occurred_at": sent_at + pd.Timedelta(days=3),
         "kind": "offer_redeemed", "offer_code": approved.offer.code, **base},
        {"member_id": ids[overridden.member_id], "occurred_at": sent_at, "kind": "offer_sent",
         "offer_code": other, **base},
    ])
    _import(pd.concat([program.future_events, offers], ignore_index=True), tmp_path / "later.csv")

    # The import's hook joined the outcomes (the task ran in-process on commit).
    assert Outcome.objects.filter(run=run).count() == recs.count()
    assert not Outcome.objects.filter(run=run, engaged__isnull=True).exists()
    truth = program.ground_truth.set_index("member_id")["engaged"]
    joined = Outcome.objects.filter(run=run).values_list("member__member_id", "engaged")
    assert all(bool(truth[mid]) == engaged for mid, engaged in joined)
    o = {r: Outcome.objects.get(recommendation_id=r.pk) for r in open_recs}
    assert (o[approved].decision_action, o[approved].decided_offer_code, o[approved].responded) == (
        "approve", approved.offer.code, True)
    assert (o[overridden].decision_action, o[overridden].decided_offer_code, o[overridden].responded) == (
        "override", other, False)
    assert o[undone].decision_id is None and o[undone].responded is None

    report = decision_accuracy(run_id=run.pk)
    assert report["per_manager"]["senior_manager"]["decisions"] == 2
    assert report["per_manager"]["senior_manager"]["overrides"] == 1
    assert report["per_model"][str(run.model_version_id)]["auc"] > 0.6
    # What the decided items realized against what the model expected for its own pick.
    payoff = override_payoff(run_id=run.pk)
    prices = {o.code: (float(o.cost), float(o.value)) for o in Offer.objects.all()}
    cost, value = prices[approved.offer.code]
    assert payoff["groups"]["as_recommended"]["items"] == 1  # the undone approval decided nothing
    assert payoff["groups"]["as_recommended"]["realized"]["mean"] == pytest.approx(value - cost)
    assert payoff["groups"]["as_recommended"]["difference"]["mean"] == pytest.approx(
        value - cost - approved.expected_value)
    overrides = payoff["per_manager"]["senior_manager"]
    assert overrides == payoff["groups"]["overridden"]
    assert (overrides["items"], overrides["realized"]["mean"], overrides["model_expected"]) == (
        1, pytest.approx(-prices[other][0]), pytest.approx(overridden.expected_value))
    assert overrides["realized"]["low"] is None  # one item: no interval
    client = Client()
    client.force_login(role_users["admin"])
    page = client.get("/models/").content.decode()
    row = page[page.index('id="payoff-overridden"'):]
    assert f"{-prices[other][0]:+,.2f}" in row[:row.index("</tr>")]
    assert client.get(f"/api/runs/{run.pk}/outcomes/").json()["override_payoff"]["groups"]["overridden"]["items"] == 1
    lift = holdout_lift(run_id=run.pk)
    assert (lift["n_treated"], lift["n_holdout"] > 20) == (2, True)
    assert lift["low"] <= lift["lift"] <= lift["high"]

    # Feedback examples: realized outcomes label everyone; the undone decision labels nothing.
    examples = labeled_examples_load()
    rows = pd.concat([examples.train, examples.evaluation])
    assert set(rows.loc[rows["engaged"].notna(), "source"]) == {"outcome"}
    assert rows.loc[rows["recommendation_id"] == undone.pk, "label_offer_code"].isna().all()
    cfg = learning_settings_get()
    response = rows[rows["responded"].notna() & (rows["source"] == "outcome")].set_index("recommendation_id")
    assert response.loc[approved.pk, "responded"] == 1
    assert response.loc[overridden.pk, "weight"] == cfg.override_weight
    # The override is also an offer-response lesson, at the admin-set choice weight: response
    # rates that reverse the two offers' expected values as shown. An approval teaches no preference.
    choice = rows[rows["source"] == "manager_choice"]
    assert set(choice["recommendation_id"]) == {overridden.pk}
    assert set(choice["offer_code"]) == {other, overridden.offer.code}
    terms = {o.code: o for o in Offer.objects.all()}
    targets = override_response_targets(
        chosen=other, rejected=overridden.offer.code, shown=overridden.alternatives, terms=terms
    )
    for code in (other, overridden.offer.code):
        lesson = choice[choice["offer_code"] == code]
        assert lesson["weight"].sum() == pytest.approx(cfg.choice_weight)
        rate = lesson.loc[lesson["responded"] == 1, "weight"].sum() / cfg.choice_weight
        assert rate == pytest.approx(targets[code], abs=1e-9)

    # The next run's items show the managers what was decided for each member last time and
    # what came of it, on the item page and in the API.
    second = run_start(as_of=program.as_of)
    later = {r.member_id: r for r in Recommendation.objects.filter(run=second, member_id__in=[
        approved.member_id, overridden.member_id, undone.member_id, a_held.member_id])}
    (was_approved,) = member_earlier_items(rec=later[approved.member_id])
    assert (was_approved.rec, was_approved.decision.action, was_approved.sent_offer, was_approved.responded,
            was_approved.engaged) == (approved, "approve", approved.offer, True, bool(truth[ids[approved.member_id]]))
    (was_overridden,) = member_earlier_items(rec=later[overridden.member_id])
    assert (was_overridden.decision.action, was_overridden.sent_offer.code, was_overridden.responded) == (
        "override", other, False)
    (was_undone,) = member_earlier_items(rec=later[undone.member_id])
    assert (was_undone.decision, was_undone.sent_offer, was_undone.responded) == (None, None, None)
    (was_held,) = member_earlier_items(rec=later[a_held.member_id])
    assert (was_held.rec.holdout, was_held.sent_offer) == (True, None)
    assert member_earlier_items(rec=overridden) == []  # nothing before the first run
    # The model picks the turned-down offer again (same as_of, same model): the desk recommends
    # the manager's choice instead, at the model's figures for it, and routes it to a person
    # with the reason; the approved member's repeat is the model's pick and is not held back.
    repeat = later[overridden.member_id]
    override = Decision.objects.get(recommendation=overridden, action="override")
    assert (repeat.offer.code, repeat.recalled_decision_id) == (other, override.pk)
    shown = {a["code"]: a for a in repeat.alternatives}
    assert (repeat.expected_value, repeat.ev_low, repeat.ev_high) == (
        shown[other]["ev"], shown[other]["ev_low"], shown[other]["ev_high"])
    assert shown[overridden.offer.code]["ev"] > shown[other]["ev"]  # the model still prefers its pick
    assert [r["text"] for r in repeat.route_reasons if r["code"] == "rejected_before"] == [
        f"The model picked {overridden.offer.code} again, which a manager turned down for this member on an earlier "
        "run of the same as-of date; this is their choice instead: manager review."]
    assert later[approved.member_id].offer_id == approved.offer_id and later[approved.member_id].recalled_decision_id is None
    assert not any(r["code"] == "rejected_before" for r in later[approved.member_id].route_reasons)
    # Re-routing (a policy change) reads the model's pick from the recalled override: still held back.
    policy_save(actor=admin, phase="expanded", sample_rate=0.0, limited_max_offer_cost=10.0, sla_review_hours=48,
                stale_after_hours=240, note="re-route")
    repeat.refresh_from_db()
    assert any(r["code"] == "rejected_before" for r in repeat.route_reasons) and repeat.status != "auto_approved"

    client.force_login(manager)
    page = client.get(f"/queue/{repeat.pk}/").content.decode()
    earlier = page[page.index('id="earlier"'):page.index("</ol>", page.index('id="earlier"'))]
    chosen_name = Offer.objects.get(code=other).name
    assert "overridden</strong> by senior_manager" in earlier and chosen_name in earlier
    assert "member buys in store" in earlier and "not redeemed in 14 days" in earlier
    assert f'href="/queue/{overridden.pk}/"' in earlier
    note = page[page.index('id="recalled-note"'):page.index("</p>", page.index('id="recalled-note"'))]
    assert f"senior_manager chose {chosen_name} over {overridden.offer.name}" in note
    assert "(model_wrong: member buys in store)" in note and f'href="/queue/{overridden.pk}/"' in note
    assert " selected>" not in page[page.index('class="act-override'):].split("</form>")[0]
    # ... and the queue row says so, one query for the page's recalled choices.
    queue = client.get("/", {"member": ids[overridden.member_id], "status": ""}).content.decode()
    row = queue[queue.index(f'id="rec-{repeat.pk}"'):]
    row = row[:row.index("</tr>")]
    assert f"senior_manager's choice of {program.as_of.isoformat()}" in row and chosen_name in row
    page = client.get(f"/queue/{later[approved.member_id].pk}/").content.decode()
    assert "approved by senior_manager" in page and ">redeemed<" in page
    assert 'id="recalled-note"' not in page
    body = client.get(f"/api/recommendations/{later[overridden.member_id].pk}/").json()
    assert (body["offer_code"], body["model_offer_code"]) == (other, overridden.offer.code)
    assert body["recalled"] == {
        "decision": override.pk, "decided_by": "senior_manager", "recommendation": overridden.pk,
        "as_of": program.as_of.isoformat(), "chosen_offer_code": other,
        "reason_code": "model_wrong", "reason_text": "member buys in store",
    }
    plain = client.get(f"/api/recommendations/{later[approved.member_id].pk}/").json()
    assert plain["recalled"] is None and plain["model_offer_code"] == approved.offer.code
    # The exports name the model's own pick beside the recalled choice, for the data people.
    out = io.StringIO()
    run_export(run_id=second.pk, fmt="csv", out=out)
    exported = pd.read_csv(io.StringIO(out.getvalue()), dtype={"member_id": str}, keep_default_na=False)
    exported = exported.set_index("member_id")
    assert tuple(exported.loc[ids[overridden.member_id], ["offer_code", "model_offer_code", "recalled"]]) == (
        other, overridden.offer.code, True)
    assert tuple(exported.loc[ids[approved.member_id], ["offer_code", "model_offer_code", "recalled"]]) == (
        approved.offer.code, approved.offer.code, False)
    assert exported["recalled"].sum() == Recommendation.objects.filter(run=second, recalled_decision__isnull=False).count()
    client.force_login(admin)
    queue_file = client.get("/api/recommendations/export/", {"member": ids[overridden.member_id],
                                                             "file_format": "parquet"})
    queued = pd.read_parquet(io.BytesIO(b"".join(queue_file.streaming_content))).set_index("recommendation_id")
    assert tuple(queued.loc[repeat.pk, ["offer_code", "model_offer_code", "recalled"]]) == (
        other, overridden.offer.code, True)
    assert list(queued.index) == [repeat.pk]
    client.force_login(manager)
    assert body["earlier"] == [{
        "id": overridden.pk, "run": run.pk, "as_of": program.as_of.isoformat(), "status": "overridden",
        "offer_code": overridden.offer.code, "probability": overridden.probability,
        "decision_action": "override", "decided_by": "senior_manager", "reason_code": "model_wrong",
        "reason_text": "member buys in store", "sent_offer_code": other, "responded": False,
        "engaged": bool(truth[ids[overridden.member_id]]),
    }]
    (undecided,) = client.get(f"/api/recommendations/{later[undone.member_id].pk}/").json()["earlier"]
    assert (undecided["decision_action"], undecided["decided_by"], undecided["sent_offer_code"],
            undecided["responded"]) == (None, None, None, None)

    # The latest word of a person stands. The recalled choice approved: recalled again next run.
    # Overridden in turn: the new choice is recalled. Older than the rule's window, or with the
    # rule off: the model's pick stands again.
    decision_record(recommendation_id=repeat.pk, actor=manager, action="approve")
    third = Recommendation.objects.get(run=run_start(as_of=program.as_of), member_id=overridden.member_id)
    assert (third.offer.code, third.recalled_decision_id, third.model_offer_id) == (
        other, override.pk, overridden.offer_id)
    final = "TIERUP" if other != "TIERUP" and overridden.offer.code != "TIERUP" else "CALL"
    second_override = decision_record(recommendation_id=third.pk, actor=manager, action="override",
                                      chosen_offer_code=final, reason_code="model_wrong", reason_text="near gold")
    fourth = Recommendation.objects.get(run=run_start(as_of=program.as_of), member_id=overridden.member_id)
    assert (fourth.offer.code, fourth.recalled_decision_id) == (final, second_override.pk)
    policy_save(actor=admin, phase="expanded", sample_rate=0.0, limited_max_offer_cost=10.0, sla_review_hours=48,
                stale_after_hours=240, rules={"rejected_before": {"enabled": False}}, note="no memory")
    fifth = Recommendation.objects.get(run=run_start(as_of=program.as_of), member_id=overridden.member_id)
    assert (fifth.offer_id, fifth.recalled_decision_id) == (overridden.offer_id, None)


def test_override_lesson_moves_response_rates_in_proportion_to_offer_value() -> None:
    from types import SimpleNamespace as Terms

    terms = {"TIERUP": Terms(cost=25.0, value=120.0), "B500": Terms(cost=5.0, value=40.0),
             "D10": Terms(cost=8.0, value=45.0)}
    # Shown: both at a 0.2 response rate, EV -1 (upgrade) and 3 (bonus): a gap of 4 to turn
    # into -4, i.e. 8 EV, moved by rates in proportion to value: 8 * 120 / (120^2 + 40^2) =
    # 0.06 up for the upgrade, 8 * 40 / 16000 = 0.02 down for the bonus.
    shown = [{"code": "TIERUP", "ev": -1.0}, {"code": "B500", "ev": 3.0}, {"code": "D10", "ev": -2.0}]
    targets = override_response_targets(chosen="TIERUP", rejected="B500", shown=shown, terms=terms)
    assert targets == pytest.approx({"TIERUP": 0.26, "B500": 0.18})
    learned = {c: targets[c] * terms[c].value - terms[c].cost for c in targets}
    assert learned["TIERUP"] - learned["B500"] == pytest.approx(4.0)
    # Against "no action" (EV 0, nothing to move) the offer carries the whole turn: EV -2 -> 2.
    targets = override_response_targets(chosen="D10", rejected="", shown=shown, terms=terms)
    assert targets["D10"] * 45.0 - 8.0 == pytest.approx(2.0)
    assert targets.keys() == {"D10"}
    targets = override_response_targets(chosen="", rejected="B500", shown=shown, terms=terms)
    assert targets["B500"] * 40.0 - 5.0 == pytest.approx(-3.0)
    # Rates stay rates; an override of an offer the model itself ranked lower teaches nothing.
    assert override_response_targets(chosen="B500", rejected="TIERUP", shown=shown, terms=terms) == {}
    low = [{"code": "TIERUP", "ev": -25.0}, {"code": "B500", "ev": -3.0}]
    assert override_response_targets(chosen="TIERUP", rejected="B500", shown=low, terms=terms) == {
        "TIERUP": pytest.approx(0.33), "B500": 0.0}
    high = [{"code": "TIERUP", "ev": 60.0}, {"code": "B500", "ev": 30.0}]
    assert override_response_targets(chosen="B500", rejected="TIERUP", shown=high, terms=terms) == {
        "B500": 1.0, "TIERUP": pytest.approx(85.0 / 120.0 - 0.45)}


def test_gate_rejects_a_worse_challenger_and_passes_within_tolerance(db):
    cfg = learning_settings_get()
    champion = {"auc": 0.80, "brier": 0.18, "coverage": 0.88, "policy_agreement": 0.6,
                "fairness": {"region": {"dp_excess": 0.02, "eo_difference": 0.05}}}
    close = {"auc": 0.795, "brier": 0.185, "coverage": 0.86, "policy_agreement": 0.59,
             "fairness": {"region": {"dp_excess": 0.03, "eo_difference": 0.07}}}
    assert gate_check({"champion": champion, "challenger": close}, cfg) == (True, [])
    worse = {"auc": 0.75, "brier": 0.25, "coverage": 0.6, "policy_agreement": 0.4,
             "fairness": {"region": {"dp_excess": 0.02, "eo_difference": 0.20}}}
    passed, reasons = gate_check({"champion": champion, "challenger": worse}, cfg)
    assert not passed
    assert [r.split(":")[0] for r in reasons] == [
        "auc", "brier", "coverage", "policy_agreement", "eo_difference by region"]
    # The same fairness step is not "worse" when the evaluation set's paired noise is larger.
    noisy = {"champion": champion, "challenger": {**close, "fairness": worse["fairness"]},
             "fairness_difference_se": {"region": {"dp_excess": 0.01, "eo_difference": 0.08}}}
    assert gate_check(noisy, cfg) == (True, [])
    noisy["fairness_difference_se"]["region"]["eo_difference"] = 0.05
    passed, reasons = gate_check(noisy, cfg)
    assert not passed and "paired noise 1.96 SE 0.0980" in reasons[0]


def test_agreement_with_managers_counts_overrides_not_approvals():
    """An approval says the shown offer was not clearly worse, not that another would be
    wrong: only overrides (a rejected offer and a named better one) measure agreement."""
    from recommendations.features import FEATURE_NAMES, build_features, frames_from_program
    from recommendations.learning import bundle_evaluate
    from recommendations.quality import offer_terms
    from recommendations.scoring import score_features
    from recommendations.training import train_bundle

    program = simulate_program(members=400, seed=4)
    members, events = frames_from_program(program.members, program.events)
    offers = offer_terms(program.offers)
    as_of = pd.Timestamp(program.as_of, tz="UTC")
    bundle, _ = train_bundle(members=members, events=events, offers=offers, as_of=as_of,
                             horizon_days=program.horizon_days)
    features = build_features(members, events, as_of)[FEATURE_NAMES].head(40).reset_index(drop=True)
    codes = np.array([o.code for o in offers] + [""])
    picked = codes[score_features(bundle, features, offers).offer_index]
    other = np.array([codes[(list(codes).index(c) + 1) % len(codes)] for c in picked])
    # 20 approvals of offers the bundle would not pick; 20 overrides, the bundle picks the
    # manager's offer in the first 15 of them.
    action = np.array(["approve"] * 20 + ["override"] * 20)
    label = np.where(np.arange(40) < 35, picked, other)
    label[:20] = other[:20]
    examples = features.assign(engaged=np.nan, recommendation_id=np.arange(40), label_offer_code=label,
                               decision_action=action)
    result = bundle_evaluate(bundle, examples, pd.DataFrame(index=examples.index), offers)
    assert result["policy_n"] == 20
    assert result["policy_agreement"] == pytest.approx(15 / 20)
    assert bundle_evaluate(bundle, examples[examples["decision_action"] == "approve"],
                           pd.DataFrame(index=range(20)), offers).get("policy_n") is None


def _decisions_and_groups(n: int, seed: int):
    rng = np.random.default_rng(seed)
    groups = pd.DataFrame({"region": rng.choice(["north", "south", "east"], size=n)})
    y = (rng.random(n) < 0.4).astype(int)
    a = np.where(rng.random(n) < 0.8, y, 1 - y)
    b = np.where(rng.random(n) < 0.1, 1 - a, a)  # the challenger changes one decision in ten
    return y, a, b, groups


def test_fairness_noise_is_paired_and_shrinks_with_the_evaluation_set():
    y, a, b, groups = _decisions_and_groups(600, seed=1)
    assert fairness_difference_se(y, a, a, groups) == {"region": {"dp_excess": 0.0, "eo_difference": 0.0}}
    small = fairness_difference_se(y, a, b, groups)["region"]["eo_difference"]
    y, a, b, groups = _decisions_and_groups(6000, seed=1)
    large = fairness_difference_se(y, a, b, groups)["region"]["eo_difference"]
    assert 0.01 < small < 0.1
    assert 0.2 < large / small < 0.5  # about 1 / sqrt(10)
    # Groups below FAIRNESS_MIN_GROUP rows are not compared, as in fairness_differences.
    tiny = pd.DataFrame({"region": ["a"] * 590 + ["b"] * 10})
    y, a, b, _ = _decisions_and_groups(600, seed=2)
    assert fairness_difference_se(y, a, b, tiny) == {}


def test_retrain_promote_rollback_and_settings_api(artifacts, eager_celery, role_users, client):
    program = simulate_program(members=400, seed=9)
    program_write_db(program)
    v1 = model_version_train(as_of=program.as_of, horizon_days=program.horizon_days)

    # Retraining without feedback: the gate falls back to the models' own holdouts; with
    # auto-promotion off the challenger stays a candidate with the reason.
    learning_settings_update(actor=role_users["admin"], values={"auto_promote": False})
    result = model_version_retrain(actor=role_users["admin"], as_of=program.as_of)
    v2 = ModelVersion.objects.get(pk=result["model_version"])
    assert v2.status == "candidate" and not result["promoted"]
    assert "own holdouts" in v2.metrics["gate"]["basis"]
    assert "promotion left to an admin" in v2.status_history[-1]["reason"]

    client.force_login(role_users["manager"])
    assert client.post(f"/api/models/{v2.pk}/promote/").status_code == 403
    assert client.post("/api/models/retrain/").status_code == 403
    assert client.patch("/api/models/learning-settings/", {"override_weight": 5},
                        content_type="application/json").status_code == 403

    client.force_login(role_users["admin"])
    response = client.post(f"/api/models/{v2.pk}/promote/", {"reason": "checked by hand"},
                           content_type="application/json")
    assert response.status_code == 200 and response.json()["status"] == "champion"
    assert client.post(f"/api/models/{v2.pk}/promote/").status_code == 409
    response = client.post(f"/api/models/{v1.pk}/rollback/", {"reason": "v2 misbehaves"},
                           content_type="application/json")
    assert response.status_code == 200 and response.json()["status"] == "champion"
    v2.refresh_from_db()
    assert v2.status == "retired"
    assert AuditEvent.objects.filter(action="model.rollback", object_id=str(v1.pk),
                                     new__reason="v2 misbehaves").exists()
    assert client.post(f"/api/models/{v2.pk}/rollback/").status_code == 409  # newer: promote instead
    assert client.post("/api/models/999/rollback/").status_code == 404

    response = client.patch("/api/models/learning-settings/", {"override_weight": 5, "auto_promote": True},
                            content_type="application/json")
    assert response.status_code == 200 and response.json()["override_weight"] == 5
    assert AuditEvent.objects.filter(action="learning.settings_update", old__override_weight=3.0).exists()

    before = ModelVersion.objects.count()
    assert client.post("/api/models/retrain/").status_code == 202
    assert ModelVersion.objects.count() == before + 1  # the task ran in-process on commit
    assert AuditEvent.objects.filter(action="model.retrain_requested").exists()
    assert program.as_of + timedelta(days=1) > ModelVersion.objects.first().as_of
