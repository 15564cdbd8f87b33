"""python manage.py retrain [--as-of DATE] [--horizon-days N] [--no-promote] [--json]"""

from __future__ import annotations

import json
from datetime import date

from django.core.management.base import BaseCommand, CommandError

from recommendations.learning import LearningError, model_version_retrain
from recommendations.services import TrainingDataError


class Command(BaseCommand):
    help = (
        "Train a challenger on history plus decision feedback and realized outcomes, evaluate it "
        "against the champion on the same examples, and promote it only if the gate passes."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--as-of", help="YYYY-MM-DD (default: the day after the latest purchase)")
        parser.add_argument("--horizon-days", type=int, help="default: the champion's")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--no-promote", action="store_true", help="gate only; leave promotion to an admin")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, **options) -> None:
        as_of = None
        if options["as_of"]:
            try:
                as_of = date.fromisoformat(options["as_of"])
            except ValueError as exc:
                raise CommandError(f"--as-of must be a date YYYY-MM-DD, got {options['as_of']!r}") from exc
        try:
            result = model_version_retrain(
                as_of=as_of, horizon_days=options["horizon_days"], seed=options["seed"],
                promote=False if options["no_promote"] else None,
            )
        except (LearningError, TrainingDataError) as exc:
            raise CommandError(str(exc)) from exc
        except ValueError as exc:
            raise CommandError(f"training failed: {exc}") from exc
        if options["json"]:
            self.stdout.write(json.dumps(result, default=str))
            return
        gate = result["gate"]
        verdict = "promoted to champion" if result["promoted"] else "kept as a candidate"
        lines = [f"Model v{result['model_version']}: {verdict} ({gate.get('basis', 'first model')})"]
        lines += [f"  - {reason}" for reason in gate.get("reasons", [])]
        fb = result["feedback"]
        lines.append(f"  feedback: {fb.get('engagement', 0)} engagement labels, {fb.get('response', 0)} responses")
        self.stdout.write("\n".join(lines))
