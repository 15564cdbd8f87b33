"""Evaluate a scoring run against observed outcomes (e.g. the simulator's ground truth)."""

from __future__ import annotations

import json

import pandas as pd
from django.core.management.base import BaseCommand, CommandError, CommandParser

from recommendations.runs import ScoringError, run_evaluate


class Command(BaseCommand):
    help = "AUC, Brier score and 90%-interval coverage of a run against a member_id,engaged CSV."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--run", type=int, required=True, help="scoring run id")
        parser.add_argument("--truth", required=True, help="CSV with member_id, engaged (0/1), optionally p_engage")
        parser.add_argument("--json", action="store_true", help="print the figures as JSON")

    def handle(self, *args, **options) -> None:
        try:
            truth = pd.read_csv(options["truth"], dtype={"member_id": str})
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read truth file {options['truth']}: {exc}") from exc
        try:
            result = run_evaluate(run_id=options["run"], truth=truth)
        except ScoringError as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2))
            return
        auc = "n/a (one class)" if result["auc"] is None else f"{result['auc']:.4f}"
        self.stdout.write(
            f"run {result['run']} (model v{result['model_version']}): "
            f"{result['n_matched']} matched of {result['n_truth']} "
            f"({result['n_unscored']} not scored)\n"
            f"AUC                {auc}\n"
            f"Brier              {result['brier']:.4f}\n"
            f"interval coverage  {result['interval_coverage']:.3f} "
            f"(mean width {result['interval_mean_width']:.3f}; {result['interval_coverage_method']})\n"
            f"base rate          {result['base_rate']:.3f}"
        )
