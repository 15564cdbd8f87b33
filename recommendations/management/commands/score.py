"""Start (or resume) a scoring run: one Celery task per chunk of members."""

from __future__ import annotations

import time
from datetime import date, timedelta

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from recommendations.models import ScoringRun
from recommendations.runs import DEFAULT_STALE_AFTER, ScoringError, run_resume, run_start

FINAL = {ScoringRun.Status.SUCCEEDED, ScoringRun.Status.FAILED}


class Command(BaseCommand):
    help = "Score members with the champion model (or --model) as of a date, in Celery chunks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--as-of", type=date.fromisoformat, help="YYYY-MM-DD; features use events before it")
        parser.add_argument("--model", type=int, default=None, help="model version id (default: champion)")
        parser.add_argument("--chunk-size", type=int, default=10_000)
        parser.add_argument("--wait", action="store_true", help="show progress and return when the run ends")
        parser.add_argument("--resume", type=int, default=None, metavar="RUN_ID",
                            help="re-enqueue pending, failed and stale chunks of a run")
        parser.add_argument("--stale-after", type=float, default=DEFAULT_STALE_AFTER.total_seconds(), metavar="SECONDS",
                            help="with --resume: a chunk running this long has lost its worker")
        parser.add_argument("--poll", type=float, default=1.0, help="seconds between progress checks")

    def handle(self, *args, **options) -> None:
        try:
            if options["resume"] is not None:
                run_id = options["resume"]
                chunk_ids = run_resume(run_id=run_id, stale_after=timedelta(seconds=options["stale_after"]))
                self.stdout.write(f"run {run_id}: re-enqueued {len(chunk_ids)} chunk(s)")
            else:
                if options["as_of"] is None:
                    raise CommandError("--as-of is required (or --resume RUN_ID)")
                run = run_start(
                    as_of=options["as_of"], model_version_id=options["model"], chunk_size=options["chunk_size"]
                )
                run_id = run.pk
                self.stdout.write(
                    f"run {run_id}: {run.members_total} members in {run.chunks_total} chunk(s), "
                    f"model v{run.model_version_id}"
                )
        except ScoringError as exc:
            raise CommandError(str(exc)) from exc
        if not options["wait"]:
            self.stdout.write(str(run_id))
            return
        run = self._wait(run_id, poll=options["poll"])
        if run.status == ScoringRun.Status.FAILED:
            raise CommandError(f"run {run.pk} failed: {run.error}")
        self.stdout.write(
            f"run {run.pk} succeeded: {run.members_scored} scored, "
            f"{run.members_skipped_no_consent} skipped (no consent)"
        )

    def _wait(self, run_id: int, *, poll: float) -> ScoringRun:
        run = ScoringRun.objects.get(pk=run_id)
        with tqdm(total=run.chunks_total, unit="chunk", file=self.stderr._out, desc=f"run {run_id}") as bar:
            while True:
                run.refresh_from_db()
                bar.update(run.chunks_done - bar.n)
                bar.set_postfix(members=run.members_scored, status=run.status)
                if run.status in FINAL:
                    return run
                time.sleep(poll)
