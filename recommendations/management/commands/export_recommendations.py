"""Export a scoring run's recommendations as csv (stdout by default) or parquet."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser

from recommendations.runs import ScoringError, run_export


class Command(BaseCommand):
    help = "Write member_id, offer_code, probability, intervals, expected value and status of a run."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--run", type=int, required=True, help="scoring run id")
        parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
        parser.add_argument("--out", default=None, help="file to write (csv default: stdout)")

    def handle(self, *args, **options) -> None:
        fmt, path = options["format"], options["out"]
        if fmt == "parquet" and not path:
            raise CommandError("--format parquet needs --out FILE")
        try:
            if path:
                mode = {"csv": {"mode": "w", "newline": "", "encoding": "utf-8"}, "parquet": {"mode": "wb"}}[fmt]
                with open(path, **mode) as out:
                    count = run_export(run_id=options["run"], fmt=fmt, out=out)
                self.stderr.write(f"wrote {count} rows to {path}")
            else:
                # The underlying stream: the command's OutputWrapper would style and re-end lines.
                run_export(run_id=options["run"], fmt=fmt, out=getattr(self.stdout, "_out", sys.stdout))
        except ScoringError as exc:
            raise CommandError(str(exc)) from exc
