"""A small run of the learning loop through the real services: the direction of the effects."""

import json
from datetime import date

import pytest
from django.core.management import call_command

from governance.models import AuditEvent
from loyalty.models import ImportBatch, Member
from loyalty.simulator import simulate_program
from recommendations.learning import learning_settings_get
from recommendations.loop_simulation import BIAS_GROUP
from recommendations.models import (
    Decision,
    ModelVersion,
    Outcome,
    Recommendation,
    RecommendationStatus,
    ScoringRun,
)


@pytest.mark.django_db(transaction=True)
def test_simulate_loop_feedback_repairs_the_planted_bias(artifacts, eager_celery, capsys):
    call_command("simulate_loop", cycles=2, members=2000, bias_rate=0.3, seed=0, json=True, details=True)
    report = json.loads(capsys.readouterr().out)
    first, second = report["cycles"]
    for cycle in (first, second):
        assert {"cycle", "override_rate", "auc", "biased_group_auc", "other_groups_auc",
                "dp_difference", "eo_difference", "calibration_difference", "biased_group_calibration_gap",
                "policy_value"} <= set(cycle)

    # The planted bias is visible at first: the biased group is under-predicted, but ranked
    # within 0.02 AUC of the others (lost scans thin its history evenly).
    under = lambda c: c["true_rate_biased"] - c["mean_probability_biased"]  # noqa: E731
    assert under(first) > 0.03
    # ... which the fairness report's calibration gap sees against the realized outcomes:
    # the north's churn risk is overstated.
    assert first["biased_group_calibration_gap"] > 0.02 and first["calibration_difference"] > 0
    assert first["biased_group_auc"] > first["other_groups_auc"] - 0.02
    # Managers override only clearly worse offers: the rate is the share of their decisions.
    overrides = Decision.objects.filter(action="override", reason_code="model_wrong").count()
    assert overrides == round(first["override_rate"] * first["reviewed"] + second["override_rate"] * second["reviewed"])
    assert 0.02 < first["override_rate"] < 0.3
    # Where they fall: the overall rate is a mix of the biased group's and the others'.
    for cycle in (first, second):
        rates = sorted([cycle["biased_group_override_rate"], cycle["other_groups_override_rate"]])
        assert rates[0] <= cycle["override_rate"] <= rates[1]
    # Their feedback reaches training: engagement labels, realized responses, and each
    # override as offer-response lessons for the chosen and the rejected offer.
    feedback = first["retrain"]["feedback"]
    assert feedback["engagement_from_managers"] > 100
    assert feedback["response"] > 50
    assert 0 < feedback["response_from_overrides"] <= 4 * round(first["override_rate"] * first["reviewed"])
    assert second["model_version"] == (
        first["retrain"]["model_version"] if first["retrain"]["promoted"] else first["model_version"]
    )
    previous = second["previous_model"]
    assert previous["model_version"] == first["model_version"]
    if first["retrain"]["promoted"]:
        # A promoted challenger under-predicts the biased group less, ranks it no worse
        # than 0.02 AUC below the others, and is no less fair by region than the champion it
        # replaced, both measured against the truth on the SAME members (the second cycle's
        # unreviewed ones). Across cycles the members change: at 2000 members (~250-350 a
        # region) a region's EO difference has a bootstrap sd of ~0.04 and dropping the
        # reviewed members alone moved the champion's from 0.093 to 0.126, so comparing
        # first["eo_difference"] with second["eo_difference"] would test the sample, not the model.
        assert under(second) < under(first)
        assert second["biased_group_auc"] > second["other_groups_auc"] - 0.02
        assert previous["n_evaluated"] == second["n_evaluated"]
        tolerance = learning_settings_get().fairness_tolerance
        assert second["eo_difference"] <= previous["eo_difference"] + tolerance
        assert second["dp_difference"] <= previous["dp_difference"] + tolerance
    else:
        # The gate kept the champion, saying why; the next cycle still serves it.
        assert first["retrain"]["gate_reasons"]
        assert second["model_version"] == first["model_version"]

    # Everything went through the desk: decisions, audit rows, holdout, outcomes, promotion.
    assert Decision.objects.filter(action="override", reason_code="model_wrong", label_engaged__isnull=False).exists()
    assert not Decision.objects.filter(recommendation__holdout=True).exists()
    assert Recommendation.objects.filter(holdout=True, status=RecommendationStatus.HOLDOUT).exists()
    assert Outcome.objects.filter(engaged__isnull=False).count() == Recommendation.objects.count()
    assert Outcome.objects.filter(responded__isnull=False).exists()
    assert AuditEvent.objects.filter(action="model.retrain").count() == 2
    assert ModelVersion.objects.get(status="champion").pk == report["final"]["champion"]
    lift = report["final"]["holdout_lift"]
    assert lift["n_holdout"] > 0 and lift["low"] <= lift["lift"] <= lift["high"]
    # What the decided items realized against the model's expectation: its own picks realize
    # what it expected (its expected values are honest), and the overrides realized about what
    # the truth says the managers' choices are worth.
    payoff = report["final"]["override_payoff"]["groups"]
    truth = report["final"]["override_true_ev"]
    assert payoff["overridden"]["items"] == overrides
    assert payoff["as_recommended"]["difference"]["low"] < 0 < payoff["as_recommended"]["difference"]["high"]
    assert payoff["overridden"]["realized"]["low"] < truth["manager_choice"] < payoff["overridden"]["realized"]["high"]
    # The managers' choices are worth more than the picks they turned down (by CLEAR_REGRET at least).
    assert truth["manager_choice"] > truth["model_pick"] + 5


@pytest.mark.django_db(transaction=True)
def test_simulate_loop_month_after_month_with_the_same_members(artifacts, eager_celery, capsys):
    # The desk as it runs in a program: the same members scored again a month later, after
    # the month's events and balances arrived, the managers seeing the same members again.
    call_command("simulate_loop", cycles=2, members=2000, seed=1, step_days=30, revisit=True, json=True,
                 details=True)
    first, second = json.loads(capsys.readouterr().out)["cycles"]
    assert (first["as_of"], second["as_of"]) == ("2026-06-30", "2026-07-30")
    runs = list(ScoringRun.objects.order_by("pk").values_list("as_of", flat=True))
    assert [d.isoformat() for d in runs] == [first["as_of"], second["as_of"]]
    # The challenger of cycle 1 was trained a month on, when its offers' responses had arrived.
    assert ModelVersion.objects.get(pk=first["retrain"]["model_version"]).as_of.isoformat() == second["as_of"]
    assert first["retrain"]["feedback"]["response"] > 50

    # The managers saw the same members both times.
    decided = {run: set(Decision.objects.filter(recommendation__run__as_of=run).values_list(
        "recommendation__member__member_id", flat=True)) for run in runs}
    assert decided[runs[0]] == decided[runs[1]] and first["reviewed"] == second["reviewed"] == len(decided[runs[0]])

    # The month's events and the balances on the new date came in through the importers:
    # the stored balance is the simulator's on the last date.
    assert ImportBatch.objects.filter(kind="members", status="succeeded").count() == 1
    program = simulate_program(members=2000, seed=1, bias_group=BIAS_GROUP, bias_rate=0.3,
                               as_of=date(2026, 7, 30), history_days=395, earlier_as_of=(date(2026, 6, 30),))
    stored = dict(Member.objects.values_list("member_id", "points_balance"))
    truth = program.members.set_index("member_id")["points_balance"]
    # (members who joined after the first date are left out)
    assert set(stored) == set(program.members.loc[program.members["joined_at"] < "2026-06-30", "member_id"])
    assert all(stored[m] == truth[m] for m in stored)

    # A month on, the model picks again some offers the managers turned down for these
    # members: the desk recommends the managers' choices instead, and the managers, who know
    # the truth, approve most of them (a month moves a member's best offer little).
    recalled = Recommendation.objects.filter(run__as_of=runs[1], recalled_decision__isnull=False).select_related(
        "recalled_decision__recommendation")
    assert recalled.exists()
    assert all(r.offer_id == r.recalled_decision.chosen_offer_id for r in recalled)
    assert all(r.recalled_decision.recommendation.member_id == r.member_id for r in recalled)
    on_recalled = Decision.objects.filter(recommendation__in=recalled)
    assert on_recalled.filter(action="approve").count() > 2 * on_recalled.filter(action="override").count()

    # The previous model is compared on the same members and the same date.
    assert second["previous_model"]["model_version"] == first["model_version"]
    assert second["previous_model"]["n_evaluated"] == second["n_evaluated"]
    assert Outcome.objects.filter(engaged__isnull=False).count() == Recommendation.objects.count()


@pytest.mark.django_db
def test_simulate_loop_refuses_a_step_shorter_than_the_response_window():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--step-days must be 0 .* or at least 16"):
        call_command("simulate_loop", cycles=2, members=2000, step_days=5, json=True)
    with pytest.raises(CommandError, match="review share"):
        call_command("simulate_loop", cycles=2, members=2000, review_share=0.9, revisit=True, json=True)
    assert not Member.objects.exists()  # nothing written
