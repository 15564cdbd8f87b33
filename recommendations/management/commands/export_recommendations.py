"""Export a scoring run's recommendations as csv (stdout by default) or parquet."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from recommendations.management.commands._export import export_to
from recommendations.runs import ScoringError, run_export
from recommendations.tabular import EXPORT_FORMATS


class Command(BaseCommand):
    help = "Write member_id, offer_code, probability, intervals, expected value and status of a run."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--run", type=int, required=True, help="scoring run id")
        parser.add_argument("--format", choices=list(EXPORT_FORMATS), default="csv")
        parser.add_argument("--out", default=None, help="file to write (csv default: stdout)")

    def handle(self, *args, **options) -> None:
        try:
            export_to(self, fmt=options["format"], path=options["out"],
                      write=lambda out: run_export(run_id=options["run"], fmt=options["format"], out=out))
        except ScoringError as exc:
            raise CommandError(str(exc)) from exc
