"""Benchmark: quality against the simulator's truth, throughput, memory (see loyalty/bench.py)."""

import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from loyalty.bench import SKIPPABLE, BenchOptions, bench_inner, bench_outer, bench_table


class Command(BaseCommand):
    help = "Measure model quality, scoring throughput and memory on a fresh simulated program."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--members", type=int, default=20_000)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--workers", type=int, default=2, help="worker pool processes")
        parser.add_argument("--chunk-size", type=int, default=10_000)
        parser.add_argument("--queue-rows", type=int, default=0,
                            help="pad the recommendations table to this many rows before timing the desk")
        parser.add_argument("--train-members", type=int, default=None,
                            help="train on a random sample of this many members (default: the "
                                 "training service's own cap); a 1M-member throughput run need not "
                                 "wait for a full-size training")
        parser.add_argument("--skip", nargs="+", choices=SKIPPABLE, default=[],
                            help="leave these measurements out (slow at 1M members)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--keep-db", action="store_true", help="keep the bench database")
        parser.add_argument("--inner", action="store_true", help="internal: run in the prepared env")
        parser.add_argument("--result-file", type=Path, help="internal: where --inner writes")

    def handle(self, *args, **options) -> None:
        if options["members"] < 1000:
            raise CommandError("--members must be at least 1000 for meaningful figures")
        if options["train_members"] is not None and options["train_members"] < 1000:
            raise CommandError("--train-members must be at least 1000")
        bench = BenchOptions(
            members=options["members"], seed=options["seed"], workers=options["workers"],
            chunk_size=options["chunk_size"], queue_rows=options["queue_rows"],
            train_members=options["train_members"], skip=tuple(options["skip"]),
        )

        def log(message: str) -> None:
            print(f"[bench] {message}", file=sys.stderr, flush=True)

        if options["inner"]:
            results = bench_inner(bench, log=log)
            options["result_file"].write_text(json.dumps(results))
            return
        try:
            results = bench_outer(bench, keep_db=options["keep_db"], progress=log)
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(results, sort_keys=True))
        else:
            if results["mode"] == "embedded":
                self.stdout.write("Embedded mode: SQLite and tasks in-process (set DATABASE_URL and "
                                  "CELERY_BROKER_URL for Postgres and real workers).")
            self.stdout.write(bench_table(results))
