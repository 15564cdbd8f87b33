"""Export the labeled feedback the next retraining learns from, as csv (stdout) or parquet."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from recommendations.exports import feedback_export
from recommendations.management.commands._export import export_to
from recommendations.tabular import EXPORT_FORMATS


class Command(BaseCommand):
    help = ("Write one row per training label (decisions and realized outcomes) with its weight, source, "
            "split (train / evaluation) and the feature snapshot the manager saw.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=list(EXPORT_FORMATS), default="csv")
        parser.add_argument("--out", default=None, help="file to write (csv default: stdout)")

    def handle(self, *args, **options) -> None:
        export_to(self, fmt=options["format"], path=options["out"],
                  write=lambda out: feedback_export(fmt=options["format"], out=out))
