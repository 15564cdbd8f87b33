"""Simulate a loyalty program: into the database, or as CSV files with --out."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from loyalty.definitions import DEFAULT_HORIZON_DAYS, MEMBER_COLUMNS
from loyalty.simulator import (
    DEFAULT_AS_OF,
    DEFAULT_HISTORY_DAYS,
    SimulatorTargetError,
    program_write_db,
    program_write_files,
    simulate_program,
)


def _bias_group(text: str) -> tuple[str, str]:
    column, sep, value = text.partition("=")
    if not sep or not value or column not in MEMBER_COLUMNS:
        raise CommandError(f"--bias-group must look like COLUMN=VALUE with COLUMN in {MEMBER_COLUMNS}")
    return column, value


class Command(BaseCommand):
    help = "Simulate members, events, offers and ground truth (database, or CSV files with --out)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--members", type=int, default=5000)
        parser.add_argument("--seed", type=int, required=True)
        parser.add_argument("--out", type=Path, help="write CSV files into this directory, not the database")
        parser.add_argument("--as-of", type=date.fromisoformat, default=DEFAULT_AS_OF)
        parser.add_argument("--history-days", type=int, default=DEFAULT_HISTORY_DAYS)
        parser.add_argument("--horizon-days", type=int, default=DEFAULT_HORIZON_DAYS)
        parser.add_argument("--bias-group", type=str, help="e.g. region=north")
        parser.add_argument("--bias-rate", type=float, default=0.0)
        parser.add_argument(
            "--replace", action="store_true",
            help="delete existing members, events and offers first (refused while decisions exist)",
        )

    def handle(self, *args, **options) -> None:
        bias_group = _bias_group(options["bias_group"]) if options["bias_group"] else None
        if bias_group is not None and options["bias_rate"] <= 0:
            raise CommandError("--bias-group needs --bias-rate > 0")
        started = time.perf_counter()
        try:
            program = simulate_program(
                members=options["members"], seed=options["seed"], as_of=options["as_of"],
                history_days=options["history_days"], horizon_days=options["horizon_days"],
                bias_group=bias_group, bias_rate=options["bias_rate"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        simulated = time.perf_counter() - started
        bias = (
            f"{program.bias_group[0]}={program.bias_group[1]} at rate {program.bias_rate}"
            if program.bias_group else "none"
        )
        self.stdout.write(
            f"Simulated {len(program.members)} members, {len(program.events)} events, "
            f"{len(program.future_events)} future events, {len(program.offers)} offers "
            f"as of {program.as_of} (horizon {program.horizon_days} days, seed {options['seed']}, "
            f"bias: {bias}) in {simulated:.1f}s"
        )
        started = time.perf_counter()
        if options["out"] is not None:
            paths = program_write_files(program, options["out"])
            for path in paths.values():
                self.stdout.write(f"  wrote {path}")
            self.stdout.write(f"Files written in {time.perf_counter() - started:.1f}s")
            return
        try:
            counts = program_write_db(program, replace=options["replace"])
        except SimulatorTargetError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"Database: {counts['members']} members, {counts['events']} events, "
            f"{counts['offers']} offers written in {time.perf_counter() - started:.1f}s"
        )
