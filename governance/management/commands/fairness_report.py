"""Fairness report of a model version from the command line: the same service as the page."""

import json

from django.core.management.base import BaseCommand, CommandError

from governance.fairness import fairness_report_build
from recommendations.models import ModelVersion, ScoringRun


class Command(BaseCommand):
    help = (
        "Measure a model version's fairness per group (age band, gender, region, tier), store a "
        "FairnessReport and open alerts above the admin-set levels."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--model", type=int, required=True, help="model version id")
        parser.add_argument("--run", type=int, default=None, help="scoring run id (default: the latest)")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def handle(self, *args, **options) -> None:
        try:
            report = fairness_report_build(model_version_id=options["model"], run_id=options["run"])
        except (ModelVersion.DoesNotExist, ScoringRun.DoesNotExist) as exc:
            raise CommandError(f"no such model version or run: {exc}") from exc
        if options["json"]:
            self.stdout.write(json.dumps({
                "id": report.pk,
                "model_version": report.model_version_id,
                "run": report.run_id,
                "source": report.source,
                "n": report.n,
                "definition": report.definition,
                "differences": report.differences,
                "max_parity_difference": report.max_parity_difference,
                "max_odds_difference": report.max_odds_difference,
                "groups": report.groups,
                "alerts": report.alerts,
            }, indent=2, default=str))
            return
        self.stdout.write(
            f"fairness report #{report.pk} of model v{report.model_version_id} ({report.source}, "
            f"n={report.n}): max parity difference {_fmt(report.max_parity_difference)}, "
            f"max equalized odds difference {_fmt(report.max_odds_difference)}"
        )
        for column, diff in report.differences.items():
            self.stdout.write(
                f"  {column}: parity {_fmt(diff.get('demographic_parity_difference'))}, "
                f"equalized odds {_fmt(diff.get('equalized_odds_difference'))} "
                f"over {diff.get('groups_compared')} groups"
            )
        for alert in report.alerts:
            self.stdout.write(f"  alert #{alert['id']} opened: {alert['column']} = {alert['value']} ({alert['metric']})")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"
