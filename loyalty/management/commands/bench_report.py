"""Run `bench` at several program sizes and write the report (see loyalty/bench_report.py)."""

import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from loyalty.bench import SKIPPABLE, BenchOptions, bench_outer
from loyalty.bench_report import report_write


class Command(BaseCommand):
    help = "Benchmark each --sizes program (fresh database, real workers when configured) and write the report."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="members per run")
        parser.add_argument("--queue-rows", type=int, default=1_000_000,
                            help="recommendations in the table when the desk is timed")
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--chunk-size", type=int, default=10_000)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--out", type=Path, default=Path("docs/bench"))
        parser.add_argument("--readme", type=Path, help="also put the table into this README's bench section")
        parser.add_argument("--from-json", type=Path, nargs="+",
                            help="skip the runs: report these `bench --json` outputs")

    def handle(self, *args, **options) -> None:
        if options["from_json"]:
            runs = [json.loads(path.read_text()) for path in options["from_json"]]
        else:
            runs = []
            for members in options["sizes"]:
                if members < 1000:
                    raise CommandError(f"--sizes: {members} is below 1000 members; figures would mean nothing")
                # Retraining and import are timed on the 100k program (what the issue asks for);
                # above that they would add most of an hour and measure nothing new.
                bench = BenchOptions(members=members, seed=options["seed"], workers=options["workers"],
                                     chunk_size=options["chunk_size"], queue_rows=options["queue_rows"],
                                     skip=SKIPPABLE if members > 100_000 else ())
                print(f"[bench_report] {members} members ...", file=sys.stderr, flush=True)
                try:
                    runs.append(bench_outer(bench, keep_db=False, progress=lambda m: None))
                except RuntimeError as exc:
                    raise CommandError(f"bench at {members} members: {exc}") from exc
        files = report_write(runs, options["out"], readme=options["readme"])
        self.stdout.write(files["md"].read_text())
        self.stdout.write("wrote " + ", ".join(str(path) for path in files.values()))
