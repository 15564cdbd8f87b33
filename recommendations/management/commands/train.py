"""python manage.py train --as-of DATE --horizon-days N [--algorithm hgb|rf] [--seed S] [--json]"""

from __future__ import annotations

import json
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from recommendations.services import TrainingDataError, model_version_train
from recommendations.training import ALGORITHMS


class Command(BaseCommand):
    help = "Train a model version on the data before --as-of and print its metrics."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--as-of", required=True, help="YYYY-MM-DD; features use events before it")
        parser.add_argument("--horizon-days", type=int, required=True)
        parser.add_argument("--algorithm", default="hgb", help=f"one of {', '.join(ALGORITHMS)}")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, **options) -> None:
        try:
            as_of = date.fromisoformat(options["as_of"])
        except ValueError as exc:
            raise CommandError(f"--as-of must be a date YYYY-MM-DD, got {options['as_of']!r}") from exc
        if options["algorithm"] not in ALGORITHMS:
            raise CommandError(f"unknown --algorithm {options['algorithm']!r}; use one of {', '.join(ALGORITHMS)}")
        if options["horizon_days"] <= 0:
            raise CommandError("--horizon-days must be a positive number of days")
        try:
            version = model_version_train(
                as_of=as_of, horizon_days=options["horizon_days"],
                algorithm=options["algorithm"], seed=options["seed"],
            )
        except TrainingDataError as exc:
            raise CommandError(str(exc)) from exc
        except ValueError as exc:
            raise CommandError(f"training failed: {exc}") from exc
        m = version.metrics
        if options["json"]:
            self.stdout.write(json.dumps({
                "model_version": version.pk, "status": version.status, "algorithm": version.algorithm,
                "as_of": version.as_of.isoformat(), "horizon_days": version.horizon_days,
                "offer_policy": version.offer_policy, "sha256": version.sha256, "metrics": m,
            }))
            return
        resp = m.get("response", {})
        lines = [
            f"Model v{version.pk} ({version.get_algorithm_display()}) trained as of {version.as_of}, "
            f"horizon {version.horizon_days} days: {version.status}",
            f"  engagement: AUC {_f(m.get('auc'))}, Brier {_f(m.get('brier'))}, "
            f"90% interval coverage {_f(m.get('interval_coverage'))} on {m.get('n_holdout')} held-out members "
            f"(trained on {m.get('n_train')})",
            f"  offers: {version.offer_policy}"
            + (f", response AUC {_f(resp.get('auc'))} on {resp.get('n_holdout')} held-out exposures"
               if version.offer_policy == "learned" else " (no offer exposures before as_of)"),
            f"  speed: {_f(m.get('score_rows_per_s'), 0)} members/s scored, "
            f"{_f(m.get('shap_rows_per_s'), 0)} rows/s SHAP",
            f"  artifact: {version.artifact_path} (sha256 {version.sha256[:12]}...)",
        ]
        self.stdout.write("\n".join(lines))


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
