"""`manage.py load`: managers working the queue over HTTP against gunicorn on Postgres.

Creates a fresh `<db>_load` database next to DATABASE_URL, puts a simulated program, a model
and a scored queue in it, starts gunicorn on loopback, runs loyalty.loadtest for --seconds
with --users managers, checks the database and prints the figures. Exits non-zero when
there was any error, the p95 is over --p95-ms, or a decision was lost or stored twice.
"""

import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from loyalty.bench import drop_database, fresh_database_url
from loyalty.loadtest import ServerProcess, free_port, load_run, load_verify


class Command(BaseCommand):
    help = "Load test: --users managers approve and override queue items for --seconds through gunicorn."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=50)
        parser.add_argument("--seconds", type=float, default=60)
        parser.add_argument("--members", type=int, default=5000, help="size of the simulated program")
        parser.add_argument("--p95-ms", type=float, default=200)
        parser.add_argument("--think", type=float, nargs=2, default=[0.5, 1.5], metavar=("MIN", "MAX"),
                            help="seconds a manager pauses between clicks")
        parser.add_argument("--server-workers", type=int, default=4)
        parser.add_argument("--server-threads", type=int, default=4)
        parser.add_argument("--keep-db", action="store_true")
        parser.add_argument("--cache-url", default=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/2",
                            help="the Redis the gunicorn processes share (claims, counts); keys get a per-run prefix")

    def handle(self, *args, **options) -> None:
        url = os.environ.get("DATABASE_URL", "")
        if not url.startswith("postgres"):
            raise CommandError("load needs DATABASE_URL=postgres://... (it creates <name>_load next to it)")
        db_url = fresh_database_url(url, suffix="load")
        # Point this process at the new database too: setup and the final check use the ORM.
        connections.close_all()
        settings.DATABASES["default"]["NAME"] = urlparse(db_url).path.lstrip("/")
        server = None
        try:
            credentials = self._prepare(members=options["members"], users=options["users"])
            # As in production: the web processes share a cache, here under a prefix of this run's own.
            env = dict(os.environ, DATABASE_URL=db_url, REDIS_URL=options["cache_url"],
                       CACHE_KEY_PREFIX=f"load-{os.getpid()}-{time.time_ns()}")
            env.pop("CELERY_BROKER_URL", None)  # nothing here enqueues work for a worker
            server = ServerProcess(env=env, port=free_port(), log_path=Path(settings.DATA_DIR) / "load-gunicorn.log",
                                   workers=options["server_workers"], threads=options["server_threads"])
            server.wait_ready()
            self.stderr.write(f"{options['users']} managers for {options['seconds']:.0f}s against {server.base_url}")
            result = load_run(base_url=server.base_url, credentials=credentials, seconds=options["seconds"],
                              think=tuple(options["think"]))
            server.stop()
            server = None
            problems = load_verify(result, usernames=[user for user, _ in credentials])
        finally:
            if server is not None:
                server.stop()
            connections.close_all()
            if not options["keep_db"]:
                drop_database(db_url)
        figures = result.figures()
        self.stdout.write(json.dumps(figures, indent=2))
        if result.errors:
            problems.append(f"{len(result.errors)} errors, first: {result.errors[:5]}")
        if figures.get("all_p95_ms", 0) > options["p95_ms"]:
            problems.append(f"p95 {figures['all_p95_ms']} ms is over {options['p95_ms']} ms")
        if not result.decisions:
            problems.append("no decision succeeded")
        if problems:
            raise CommandError("load test failed:\n- " + "\n- ".join(problems))
        self.stdout.write(self.style.SUCCESS(
            f"ok: {figures['requests']} requests, 0 errors, p95 {figures['all_p95_ms']} ms, "
            f"{figures['decisions_201']} decisions each stored once ({figures['conflicts_409']} answered 409)"
        ))

    def _prepare(self, *, members: int, users: int) -> list[tuple[str, str]]:
        from django.contrib.auth.models import Group, User
        from django.core.management import call_command

        from loyalty.celery import app
        from loyalty.roles import MANAGER
        from loyalty.simulator import program_write_db, simulate_program
        from recommendations.runs import run_start
        from recommendations.services import model_version_train

        call_command("migrate", verbosity=0)
        self.stderr.write(f"simulating {members} members, training and scoring in-process ...")
        program = simulate_program(members=members, seed=11)
        program_write_db(program)
        model_version_train(as_of=program.as_of, horizon_days=program.horizon_days)
        app.conf.task_always_eager = True
        run_start(as_of=program.as_of)
        group, _ = Group.objects.get_or_create(name=MANAGER)
        credentials = []
        for i in range(users):
            password = f"load-{i}-manager-password"
            user = User.objects.create_user(username=f"load-manager-{i:02d}", password=password)
            user.groups.add(group)
            credentials.append((user.username, password))
        return credentials
