"""The shared body of import_members, import_events and import_offers: parse, call import_csv."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from loyalty.importers import format_errors, import_csv


class CsvImportCommand(BaseCommand):
    kind = ""  # set by each command

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="UTF-8 CSV file with a header row")
        parser.add_argument(
            "--skip-invalid", action="store_true",
            help="write the good rows and put the bad ones in a rejects CSV (default: write nothing)",
        )
        parser.add_argument(
            "--rejects", type=Path, default=None,
            help="where --skip-invalid writes rejected rows (default: NAME.rejects.csv next to the file)",
        )
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        parser.add_argument("--max-errors", type=int, default=20, help="how many errors to print")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        if options["rejects"] is not None and not options["skip_invalid"]:
            raise CommandError("--rejects only makes sense with --skip-invalid")
        result = import_csv(
            kind=self.kind, source=path, skip_invalid=options["skip_invalid"],
            rejects_path=options["rejects"], actor=None,
            progress=not options["quiet"] and sys.stderr.isatty(),
        )
        for warning in result.warnings:
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))
        if not result.succeeded and result.errors and result.errors[0].row is None:
            raise CommandError(f"import of {path.name} failed (batch {result.batch_id}): {result.errors[0]}")
        if not result.succeeded:
            raise CommandError(
                f"import of {path.name} failed: {result.error_count} error(s) in "
                f"{result.rows_rejected} of {result.rows_read} rows; nothing was written "
                f"(batch {result.batch_id}). Rows are data rows, the header not counted.\n{format_errors(result, limit=options['max_errors'])}"
            )
        summary = (
            f"Imported {self.kind} from {path.name} (batch {result.batch_id}): {result.rows_read} rows read, "
            f"{result.rows_written} written ({result.created} new, {result.updated} updated"
        )
        if self.kind == "events":
            summary += f", {result.duplicates} already stored"
        summary += f"), {result.rows_rejected} rejected."
        self.stdout.write(self.style.SUCCESS(summary))
        if result.rows_rejected:
            self.stderr.write(format_errors(result, limit=options["max_errors"]))
            self.stdout.write(f"Rejected rows written to {result.rejects_path}")
