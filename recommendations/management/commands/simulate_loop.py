"""python manage.py simulate_loop --cycles K [--members N] [--bias-rate R] [--seed S] [--step-days D] [--revisit] [--json]"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from recommendations.learning import LearningError
from recommendations.loop_simulation import LoopSimulationError, loop_simulate

CYCLE_KEYS = (
    "cycle", "as_of", "override_rate", "biased_group_override_rate", "other_groups_override_rate", "auc", "bayes_auc", "biased_group_auc", "other_groups_auc",
    "dp_difference", "eo_difference", "calibration_difference", "biased_group_calibration_gap", "policy_value",
)


class Command(BaseCommand):
    help = (
        "Prove the learning loop on a simulated program with a planted label bias (region north): "
        "managers who know the truth review the queue each cycle, their feedback retrains the model. "
        "Needs an empty database."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--cycles", type=int, default=3)
        parser.add_argument("--members", type=int, default=4000)
        parser.add_argument("--bias-rate", type=float, default=0.3)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--review-share", type=float, default=0.2,
                            help="share of members the managers review per cycle")
        parser.add_argument("--choice-weight", type=float, default=None,
                            help="set LearningSettings.choice_weight (audited) before the loop, e.g. 0 to "
                                 "compare without the overrides' offer-response lessons")
        parser.add_argument("--step-days", type=int, default=0,
                            help="score cycle k at as_of + (k-1) x D days, importing the step's events and "
                                 "balances in between, as a desk works month after month (0: every cycle on "
                                 "one date)")
        parser.add_argument("--revisit", action="store_true",
                            help="the managers review the same members every cycle (default: new ones)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--details", action="store_true",
                            help="with --json: include per-cycle retrain details and final outcomes")

    def handle(self, *args, **options) -> None:
        if options["members"] < 500:
            raise CommandError("--members must be at least 500")
        if not 0.0 <= options["bias_rate"] <= 1.0:
            raise CommandError("--bias-rate must lie within [0, 1]")
        log = (lambda _m: None) if options["json"] else (lambda m: self.stdout.write(m))
        try:
            report = loop_simulate(
                cycles=options["cycles"], members=options["members"], bias_rate=options["bias_rate"],
                seed=options["seed"], review_share=options["review_share"], log=log,
                choice_weight=options["choice_weight"], step_days=options["step_days"], revisit=options["revisit"],
            )
        except (LoopSimulationError, LearningError) as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            out: dict = {"cycles": [
                {key: cycle[key] for key in CYCLE_KEYS} | (
                    {k: v for k, v in cycle.items() if k not in CYCLE_KEYS} if options["details"] else {}
                )
                for cycle in report["cycles"]
            ]}
            if options["details"]:
                out["final"] = report["final"]
            self.stdout.write(json.dumps(out, default=str))
            return
        lift = report["final"]["holdout_lift"]
        self.stdout.write(
            f"after the horizon: champion v{report['final']['champion']}; holdout lift of the last run "
            f"{lift['lift']} [{lift['low']}, {lift['high']}] ({lift['n_treated']} treated, {lift['n_holdout']} holdout)"
        )
