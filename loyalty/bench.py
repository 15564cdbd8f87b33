"""`manage.py bench`: one self-contained run that measures quality, speed and memory.

The outer command picks the mode and a fresh database, then runs the measurements in a child
process pointed at it (so nothing of the caller's data is touched):

* distributed: DATABASE_URL (Postgres) and CELERY_BROKER_URL set. A new database
  `<name>_bench` on the same server, real celery worker processes started and stopped here.
* embedded: nothing set. A temporary SQLite file and tasks in-process; the output says so.

Every figure is measured in the same run; ratios compare numbers measured side by side.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BenchOptions:
    members: int
    seed: int
    workers: int
    chunk_size: int
    seed_rf_rows: int = 300
    # Pad the recommendations table to this many rows before timing the desk (0: as scored).
    queue_rows: int = 0
    latency_samples: int = 40
    # Train on a sample of this many members (None: the training service's default cap).
    train_members: int | None = None
    # Parts left out of this run (SKIPPABLE); the report times them at 100k members.
    skip: tuple[str, ...] = ()


# Slow at 1M members and not what a 1M run is for: the CSV import of the later events
# (~15M rows) and a retraining (the issue asks for its time at 100k).
SKIPPABLE = ("import", "retrain")


# ---------------------------------------------------------------- outer: mode and database


def bench_mode() -> str:
    url = os.environ.get("DATABASE_URL", "")
    broker = os.environ.get("CELERY_BROKER_URL", "")
    return "distributed" if url.startswith("postgres") and broker else "embedded"


def _admin_connect(url: str):
    import psycopg

    parsed = urlparse(url)
    admin = urlunparse(parsed._replace(path="/postgres"))
    return psycopg.connect(admin, autocommit=True)


def fresh_database_url(url: str, suffix: str = "bench") -> str:
    """Create (or recreate) `<name>_<suffix>` next to the configured database; return its URL."""
    parsed = urlparse(url)
    name = f"{parsed.path.lstrip('/') or 'loyalty'}_{suffix}"
    with _admin_connect(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunparse(parsed._replace(path=f"/{name}"))


def drop_database(url: str) -> None:
    name = urlparse(url).path.lstrip("/")
    with _admin_connect(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_outer(options: BenchOptions, *, keep_db: bool, progress: Callable[[str], None]) -> dict:
    """Run the measurements in a child process on a fresh database and return its results."""
    mode = bench_mode()
    env = dict(os.environ)
    scratch = Path(tempfile.mkdtemp(prefix="loyalty-bench-"))
    env["LOYALTY_DATA_DIR"] = str(scratch)
    env["LOYALTY_ARTIFACT_DIR"] = str(scratch / "artifacts")
    db_url = ""
    if mode == "distributed":
        db_url = fresh_database_url(os.environ["DATABASE_URL"])
        env["DATABASE_URL"] = db_url
    else:
        env.pop("DATABASE_URL", None)
        env.pop("CELERY_BROKER_URL", None)
        env["SQLITE_PATH"] = str(scratch / "bench.sqlite3")
    result_file = scratch / "result.json"
    command = [
        sys.executable, "manage.py", "bench", "--inner", "--result-file", str(result_file),
        "--members", str(options.members), "--seed", str(options.seed),
        "--workers", str(options.workers), "--chunk-size", str(options.chunk_size),
        "--queue-rows", str(options.queue_rows),
        *(["--train-members", str(options.train_members)] if options.train_members else []),
        *(["--skip", *options.skip] if options.skip else []),
    ]
    try:
        child = subprocess.run(command, cwd=ROOT, env=env, stdout=sys.stderr, stderr=sys.stderr)
        if child.returncode != 0 or not result_file.exists():
            raise RuntimeError(f"bench child failed with exit code {child.returncode}")
        results = json.loads(result_file.read_text())
    finally:
        if db_url and not keep_db:
            drop_database(db_url)
    results["mode"] = mode
    return results


# ---------------------------------------------------------------- inner: the measurements


class PeakRss:
    """Samples a callable returning RSS sizes in the background; keeps the per-process peak."""

    def __init__(self, sample: Callable[[], list[int]], interval: float = 0.2) -> None:
        self.sample, self.interval = sample, interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sizes = self.sample()
            if sizes:
                self.peak_bytes = max(self.peak_bytes, max(sizes))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class CpuMeter:
    """Samples {pid: CPU seconds so far} in the background and adds up what each process used
    while the meter ran (a process first seen later counts from zero: it started meanwhile).

    Wall seconds on a shared machine include waiting for a core; CPU seconds do not.
    """

    def __init__(self, sample: Callable[[], dict[int, float]], interval: float = 0.2) -> None:
        self.sample, self.interval = sample, interval
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _take(self, *, baseline: bool) -> None:
        for pid, seconds in self.sample().items():
            self._first.setdefault(pid, seconds if baseline else 0.0)
            self._last[pid] = seconds

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._take(baseline=False)

    @property
    def seconds(self) -> float:
        return sum(last - self._first[pid] for pid, last in self._last.items())

    def __enter__(self) -> CpuMeter:
        self._take(baseline=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take(baseline=False)


class DatabaseBackendsCpu:
    """{pid: CPU seconds} of the Postgres backends connected to the bench database, other than
    this sampler's own (read from /proc: the bench runs next to its server). Call close()."""

    def __init__(self) -> None:
        import psycopg

        self._conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)

    def __call__(self) -> dict[int, float]:
        import psutil

        pids = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        times = {}
        for (pid,) in pids:
            try:
                cpu = psutil.Process(pid).cpu_times()
                times[pid] = cpu.user + cpu.system
            except psutil.Error:
                continue
        return times

    def close(self) -> None:
        self._conn.close()


def _timed(results: dict, key: str, log: Callable[[str], None]):
    class _Timer:
        def __enter__(self) -> None:
            log(f"{key} ...")
            self.start = time.perf_counter()

        def __exit__(self, *exc: object) -> None:
            results[key] = round(time.perf_counter() - self.start, 2)
            log(f"{key} = {results[key]}s")

    return _Timer()


def _worker_env() -> dict[str, str]:
    return dict(os.environ)


def _run_scoring(options: BenchOptions, *, as_of, mode: str, results: dict, log) -> int:
    """A scoring run through the real pipeline; returns its id and records speed and memory."""
    from django.conf import settings

    from loyalty.workers import WorkerProcess
    from recommendations.models import ScoringRun
    from recommendations.runs import run_start

    worker = None
    if mode == "distributed":
        worker = WorkerProcess(
            env=_worker_env(), log_path=Path(settings.DATA_DIR) / "bench-worker.log",
            concurrency=options.workers, name="bench",
        )
        worker.wait_ready()
        sampler = worker.rss_bytes
    else:
        # In-process: the peak of this process is the "worker" memory.
        sampler = lambda: [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]  # noqa: E731
    worker_cpu = worker.cpu_seconds if worker is not None else lambda: {os.getpid(): time.process_time()}
    db_cpu = DatabaseBackendsCpu() if mode == "distributed" else dict
    try:
        with PeakRss(sampler) as peak, CpuMeter(worker_cpu) as workers_cpu, CpuMeter(db_cpu) as backends_cpu:
            start = time.perf_counter()
            run = run_start(as_of=as_of, chunk_size=options.chunk_size)
            while True:
                run.refresh_from_db()
                if run.status in (ScoringRun.Status.SUCCEEDED, ScoringRun.Status.FAILED):
                    break
                time.sleep(0.5)
            elapsed = time.perf_counter() - start
        if run.status != ScoringRun.Status.SUCCEEDED:
            raise RuntimeError(f"scoring run {run.pk} failed: {run.error}")
    finally:
        if worker is not None:
            worker.stop()
        if isinstance(db_cpu, DatabaseBackendsCpu):
            db_cpu.close()
    results["score_s"] = round(elapsed, 2)
    results["recs_scored"] = run.members_scored
    results["recs_per_s"] = round(run.members_scored / elapsed, 1)
    results["peak_worker_rss_mb"] = round(peak.peak_bytes / 2**20, 1)
    # What the run cost, whatever else the machine was doing: CPU of the worker processes
    # and of the bench database's Postgres backends (the run's start and polling included;
    # the server's WAL writer and checkpointer are not).
    results["score_worker_cpu_s"] = round(workers_cpu.seconds, 2)
    results["score_db_cpu_s"] = round(backends_cpu.seconds, 2)
    cpu = workers_cpu.seconds + backends_cpu.seconds
    results["recs_per_cpu_s"] = round(run.members_scored / cpu, 1) if cpu else None
    results["workers"] = options.workers if mode == "distributed" else 1
    log(f"scored {run.members_scored} members in {elapsed:.1f}s ({results['recs_per_s']}/s)")
    return run.pk


def _chunk_profile(*, run_id: int, results: dict, log) -> None:
    """Seconds per stage of one chunk (load, features, score, build, write), in this process.

    The real `chunk_score` on a scratch copy of the run's first chunk, inside a transaction
    that is rolled back: the rows are really inserted (indexes, constraints) and then undone.
    """
    from django.db import connection, transaction
    from threadpoolctl import threadpool_limits

    from recommendations.models import ScoringChunk, ScoringRun
    from recommendations.runs import chunk_score

    source = ScoringRun.objects.get(pk=run_id)
    first = ScoringChunk.objects.get(run_id=run_id, index=0)
    best = None
    for _ in range(2):  # the first pass also loads the model; keep the faster pass
        # One compute thread, as in each worker pool process (recommendations.tasks).
        with threadpool_limits(limits=1), transaction.atomic():
            if connection.vendor == "postgresql":
                # The foreign keys are checked at commit, which this rolled-back transaction
                # never reaches: check them as each row is written, so "write" includes them.
                with connection.cursor() as cursor:
                    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            scratch = ScoringRun.objects.create(
                model_version_id=source.model_version_id, as_of=source.as_of,
                chunk_size=source.chunk_size, chunks_total=2,  # never "finishes": no supersede step
            )
            chunk = ScoringChunk.objects.create(
                run=scratch, index=0, member_pk_from=first.member_pk_from, member_pk_to=first.member_pk_to
            )
            outcome = chunk_score(chunk_id=chunk.pk)
            transaction.set_rollback(True)
        if best is None or sum(outcome.stage_seconds.values()) < sum(best.stage_seconds.values()):
            best = outcome
    results["chunk_members"] = best.rows_written
    # Wall seconds, CPU seconds of this process and of its Postgres backend, per stage.
    for suffix, stages in (("s", best.stage_seconds), ("cpu_s", best.stage_cpu_seconds),
                           ("db_cpu_s", best.stage_db_cpu_seconds)):
        for stage, seconds in stages.items():
            results[f"chunk_{stage}_{suffix}"] = round(seconds, 3)
    log(f"one chunk of {best.rows_written} members: wall {best.stage_seconds}, "
        f"cpu {best.stage_cpu_seconds}, db cpu {best.stage_db_cpu_seconds}")


def _quality(run_id: int, program: StreamedProgram, results: dict) -> None:
    """AUC against the Bayes AUC, interval coverage of the true probability, policy capture."""
    from sklearn.metrics import roc_auc_score

    from recommendations.models import Recommendation
    from recommendations.scoring import OfferTerms, policy_report

    rows = pd.DataFrame.from_records(
        Recommendation.objects.filter(run_id=run_id).values_list(
            "member__member_id", "probability", "p_low", "p_high", "offer__code", "alternatives"
        ),
        columns=["member_id", "probability", "p_low", "p_high", "offer_code", "alternatives"],
    )
    truth = program.ground_truth.merge(rows, on="member_id", how="inner")
    offers_frame = program.offers.reset_index(drop=True)
    offers = [
        OfferTerms(code=o.code, kind=o.kind, cost=float(o.cost), value=float(o.value),
                   high_stakes=bool(o.high_stakes))
        for o in offers_frame.itertuples()
    ]
    true_p = truth[[f"p_response_{o.code}" for o in offers]].to_numpy(float)
    index_of = {o.code: i for i, o in enumerate(offers)}
    chosen = truth["offer_code"].map(lambda c: index_of.get(c, -1) if isinstance(c, str) else -1)
    policy = policy_report(chosen.to_numpy(int), true_p, offers)
    covered = (truth["p_engage"] >= truth["p_low"]) & (truth["p_engage"] <= truth["p_high"])
    # Response intervals: every (member, offer) pair scored, against the true p_response.
    response_covered = [
        alt["p_low"] <= true_p[i, index_of[alt["code"]]] <= alt["p_high"]
        for i, alts in enumerate(truth["alternatives"]) for alt in alts if alt["code"] in index_of
    ]
    results.update({
        "auc": round(float(roc_auc_score(truth["engaged"], truth["probability"])), 4),
        "bayes_auc": round(float(roc_auc_score(truth["engaged"], truth["p_engage"])), 4),
        "coverage_90": round(float(covered.mean()), 4),
        "interval_width_mean": round(float((truth["p_high"] - truth["p_low"]).mean()), 4),
        "response_coverage_90": round(float(np.mean(response_covered)), 4) if response_covered else None,
        "policy_capture": round(float(policy["capture"]), 4),
        "policy_same_offer_capture": round(float(policy["same_offer_capture"]), 4),
        "policy_random_capture": round(float(policy["random_capture"]), 4),
        "quality_members": len(truth),
    })


def _text_signal(program: StreamedProgram, results: dict, *, seed: int) -> None:
    """Engagement AUC with and without the comment features, on the same split and members
    (text_signal_auc's sample of at most 50k members, kept while streaming)."""
    from recommendations.quality import text_signal_auc

    text = text_signal_auc(program, seed=seed)
    results.update({
        "auc_with_text": round(text["auc_with_text"], 4),
        "auc_without_text": round(text["auc_without_text"], 4),
        "text_auc_members": text["text_auc_members"],
        "members_with_comments": round(text["members_with_comments"], 4),
    })


def _bare_rate(model_version, as_of, results: dict, sample_members: int = 20_000) -> pd.DataFrame:
    """predict + interval + SHAP + every offer on in-memory arrays: the ceiling for workers."""
    from loyalty.models import Member
    from recommendations.features import build_features
    from recommendations.model_store import bundle_load
    from recommendations.scoring import bare_score_rate
    from recommendations.selectors import member_frames_load, offer_terms_list

    pks = list(Member.objects.filter(consent_profiling=True).order_by("pk")
               .values_list("pk", flat=True)[:sample_members])
    members, events = member_frames_load(as_of=as_of, pk_from=pks[0], pk_to=pks[-1])
    features = build_features(members, events, pd.Timestamp(as_of, tz="UTC"))
    bundle = bundle_load(model_version.pk, model_version.artifact_path, model_version.sha256)
    offers = offer_terms_list()
    from threadpoolctl import threadpool_limits

    # The best this process can do: library threads as they come, and one thread (what each
    # worker pool process uses; on a busy 2-core machine often the faster of the two).
    rates = {}
    cpu_rates = []
    for threads in (None, 1):
        with threadpool_limits(limits=threads):
            for _ in range(2):
                cpu_start = time.process_time()
                rates[threads or "default"] = max(rates.get(threads or "default", 0.0),
                                                  bare_score_rate(bundle, features, offers))
                if threads == 1:
                    cpu_rates.append(len(features) / max(time.process_time() - cpu_start, 1e-9))
    best = max(rates, key=rates.get)
    results["bare_recs_per_s"] = round(rates[best], 1)
    results["bare_threads"] = best
    # One thread's CPU rate: what the bare compute costs, whatever else the machine is doing.
    results["bare_recs_per_cpu_s"] = round(max(cpu_rates), 1)
    return features


def _seed_rf_rate(features: pd.DataFrame, results: dict, rows: int, seed: int) -> None:
    """The seed research's setup: RandomForest of 100 trees explained by shap TreeExplainer."""
    import shap
    from sklearn.ensemble import RandomForestClassifier

    X = features.to_numpy(float)
    rng = np.random.default_rng(seed)
    # A proxy label is enough to grow trees of the same shape; only the speed is measured.
    y = (X[:, 0] > np.median(X[:, 0])) ^ (rng.random(len(X)) < 0.2)
    model = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1).fit(X[:5000], y[:5000])
    sample = X[:rows]
    start = time.perf_counter()
    model.predict_proba(sample)
    shap.TreeExplainer(model).shap_values(sample, check_additivity=False)
    results["seed_rf_recs_per_s"] = round(rows / (time.perf_counter() - start), 1)


@dataclass
class StreamedProgram:
    """What the bench keeps of the program it streamed into the database (_program_stream).

    The ground truth of every member (a few numbers each); for text_signal_auc only its
    members (``members``, with their 1-based position in the program as ``pk``) and their
    recorded ``events``; the later events were appended to ``future_events_csv`` as they
    were simulated, for _import_rate. Memory stays bounded whatever the program's size.
    """

    as_of: date
    horizon_days: int
    offers: pd.DataFrame
    ground_truth: pd.DataFrame
    members: pd.DataFrame
    events: pd.DataFrame
    future_events_csv: Path


def _program_stream(options: BenchOptions, results: dict, log: Callable[[str], None]) -> StreamedProgram:
    """Simulate the program block by block and load each block as it comes, in one
    transaction: the whole program (1M members: ~74M events) would not fit in memory.

    The data are those of simulate_program with the same seed. ``simulate_s`` is the time
    spent simulating and building each block's frames, ``db_load_s`` the rest of the load
    (rows, encryption, COPY, indexes), as when the two ran one after the other.
    """
    from django.conf import settings

    from loyalty.simulator import (
        DEFAULT_AS_OF,
        DEFAULT_HORIZON_DAYS,
        OFFERS,
        events_write_csv,
        program_blocks_write_db,
        simulate_program_blocks,
    )
    from recommendations.quality import text_sample_positions

    in_text_sample = np.zeros(options.members, dtype=bool)
    in_text_sample[text_sample_positions(options.members, seed=options.seed)] = True
    future_csv = Path(settings.DATA_DIR) / "bench-csv" / "future_events.csv"
    future_csv.parent.mkdir(parents=True, exist_ok=True)
    truth: list[pd.DataFrame] = []
    sample_members: list[pd.DataFrame] = []
    sample_events: list[pd.DataFrame] = []
    simulate_seconds = 0.0

    def blocks():
        nonlocal simulate_seconds
        stream = simulate_program_blocks(
            members=options.members, seed=options.seed, as_of=DEFAULT_AS_OF, horizon_days=DEFAULT_HORIZON_DAYS
        )
        while True:
            start = time.perf_counter()
            block = next(stream, None)
            if block is None:
                return
            events = block.events()
            events_write_csv(block.future_events(), future_csv, append=block.first > 0)
            truth.append(block.ground_truth)
            keep = in_text_sample[block.first : block.first + len(block.members)]
            members = block.members[keep].assign(pk=block.first + 1 + np.flatnonzero(keep))
            sample_members.append(members)
            sample_events.append(events[events["member_id"].isin(members["member_id"])])
            simulate_seconds += time.perf_counter() - start
            log(f"block of members {block.first + 1}-{block.first + len(block.members)}: {len(events)} events")
            yield block.members, events
            del block, events, members  # not held while the next block is simulated

    log("simulate and load ...")
    start = time.perf_counter()
    program_blocks_write_db(blocks(), offers=OFFERS, replace=False)
    elapsed = time.perf_counter() - start
    results["simulate_s"] = round(simulate_seconds, 2)
    results["db_load_s"] = round(elapsed - simulate_seconds, 2)
    log(f"simulate_s = {results['simulate_s']}s, db_load_s = {results['db_load_s']}s")
    return StreamedProgram(
        as_of=DEFAULT_AS_OF,
        horizon_days=DEFAULT_HORIZON_DAYS,
        offers=OFFERS.copy(),
        ground_truth=pd.concat(truth, ignore_index=True),
        members=pd.concat(sample_members, ignore_index=True),
        events=pd.concat(sample_events, ignore_index=True),
        future_events_csv=future_csv,
    )


def bench_inner(options: BenchOptions, *, log: Callable[[str], None]) -> dict:
    from django.core.management import call_command

    from recommendations.services import model_version_train

    mode = bench_mode()
    results: dict[str, Any] = {"members": options.members, "seed": options.seed, "mode": mode}
    call_command("migrate", verbosity=0)
    results.update(_postgres_settings())
    program = _program_stream(options, results, log)
    with _timed(results, "train_s", log):
        sample = {"max_members": options.train_members} if options.train_members else {}
        model = model_version_train(as_of=program.as_of, horizon_days=program.horizon_days, **sample)
    results["train_members"] = model.params.get("train_members")
    # The model's size sets the bare compute rate: early stopping picks it, sample by sample.
    results["engagement_trees"] = model.metrics.get("n_iter")
    results["response_trees"] = sum(((model.metrics.get("response") or {}).get("n_iter") or {}).values()) or None
    run_id = _run_scoring(options, as_of=program.as_of, mode=mode, results=results, log=log)
    _chunk_profile(run_id=run_id, results=results, log=log)
    _quality(run_id, program, results)
    with _timed(results, "text_auc_s", log):
        _text_signal(program, results, seed=options.seed)
    features = _bare_rate(model, program.as_of, results)
    # End to end (database in and out, queue, workers) against one process scoring in-memory arrays.
    results["bare_ratio"] = round(results["recs_per_s"] / results["bare_recs_per_s"], 3)
    # The same ratio from CPU seconds, independent of the machine's load: what the workers and
    # their backends would do on this many otherwise idle cores, against one bare thread.
    if results.get("recs_per_cpu_s"):
        cores = min(os.cpu_count() or 1, results["workers"])
        results["cpu_bare_ratio"] = round(cores * results["recs_per_cpu_s"] / results["bare_recs_per_cpu_s"], 3)
    _seed_rf_rate(features, results, options.seed_rf_rows, options.seed)
    if options.queue_rows:
        with _timed(results, "queue_pad_s", log):
            _pad_recommendations(run_id, options.queue_rows)
    _desk_latency(results, samples=options.latency_samples)
    from recommendations.whatif import whatif_latency

    results.update(whatif_latency(model_version=model, samples=options.latency_samples, seed=options.seed))
    if "import" not in options.skip:
        _import_rate(program, results, log)
    if "retrain" not in options.skip:
        _retrain_time(results, log)
    results["skipped"] = list(options.skip)
    # The program was streamed (one block, the ground truth and the text sample in memory,
    # whatever its size); the peak is now the training and retraining, which load up to
    # TRAIN_MAX_MEMBERS members' history.
    results["bench_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return results


# The server settings that most move the database side of the figures (the index and
# event pages a chunk touches, checkpoints during the bulk writes): printed with them.
POSTGRES_SETTINGS = ("shared_buffers", "max_wal_size")


def _postgres_settings() -> dict[str, str]:
    from django.db import connection

    if connection.vendor != "postgresql":
        return {f"pg_{name}": f"no Postgres ({connection.vendor})" for name in POSTGRES_SETTINGS}
    with connection.cursor() as cursor:
        return {f"pg_{name}": _show(cursor, name) for name in POSTGRES_SETTINGS}


def _show(cursor, name: str) -> str:
    cursor.execute(f"SHOW {name}")
    return cursor.fetchone()[0]


def _import_rate(program: StreamedProgram, results: dict, log) -> None:
    """The CSV import path (validation, fingerprints, writes) on the program's later events:
    rows that are not in the database yet, as `import_events` would bring them."""
    from loyalty.importers import import_csv

    # Only the later events (written while streaming): the full history would be gigabytes.
    start = time.perf_counter()
    outcome = import_csv(kind="events", source=program.future_events_csv)
    elapsed = time.perf_counter() - start
    if not outcome.succeeded:
        raise RuntimeError(f"bench import failed: {[str(e) for e in outcome.errors[:3]]}")
    results["import_rows"] = outcome.rows_read
    results["import_s"] = round(elapsed, 2)
    results["import_rows_per_s"] = round(outcome.rows_read / elapsed, 1)
    log(f"imported {outcome.rows_read} events in {elapsed:.1f}s")


def _retrain_time(results: dict, log) -> None:
    """One retraining (history plus the decisions made above) gated against the champion."""
    from recommendations.learning import model_version_retrain

    with _timed(results, "retrain_s", log):
        model_version_retrain(promote=False)


def _pad_recommendations(run_id: int, target_rows: int) -> None:
    """Copy the scored rows into extra runs (one SQL statement each) until the table holds
    `target_rows`: the desk is then timed against a table of that size."""
    from django.db import connection

    from recommendations.models import Recommendation, ScoringRun

    source = ScoringRun.objects.get(pk=run_id)
    per_run = Recommendation.objects.filter(run_id=run_id).count()
    table = Recommendation._meta.db_table
    columns = [f.column for f in Recommendation._meta.concrete_fields if f.column not in {"id", "run_id"}]
    names = ", ".join(columns)
    while Recommendation.objects.count() + per_run <= target_rows or Recommendation.objects.count() < target_rows:
        remaining = target_rows - Recommendation.objects.count()
        if remaining <= 0:
            break
        pad = ScoringRun.objects.create(
            model_version_id=source.model_version_id, as_of=source.as_of, status=ScoringRun.Status.SUCCEEDED,
            members_total=per_run, members_scored=per_run,
        )
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (run_id, {names}) SELECT %s, {names} FROM {table} "
                f"WHERE run_id = %s ORDER BY id LIMIT %s",
                [pad.pk, run_id, remaining],
            )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"ANALYZE {table}")


def _percentiles(samples_ms: list[float]) -> tuple[float, float]:
    return round(float(np.percentile(samples_ms, 50)), 1), round(float(np.percentile(samples_ms, 95)), 1)


def _desk_latency(results: dict, *, samples: int) -> None:
    """Server time of the queue page and of a decision, through Django's full request stack."""
    from django.contrib.auth.models import Group, User
    from django.test import Client
    from django.urls import reverse

    from loyalty.roles import MANAGER
    from recommendations.models import Recommendation, RecommendationStatus

    manager, _ = User.objects.get_or_create(username="bench-manager")
    manager.groups.add(Group.objects.get_or_create(name=MANAGER)[0])
    client = Client()
    client.force_login(manager)
    # TIERUP: the simulator routes its costly upgrades to senior managers, so a manager's
    # view of it is (nearly) empty, the case that once walked the whole sort index.
    views = ["", "?sort=expected_value", "?risk=high", "?tier=gold", "?sort=uncertainty", "?sort=churn_risk",
             "?offer=CALL", "?offer=TIERUP&sort=expected_value"]
    timings = []
    for i in range(samples):
        start = time.perf_counter()
        response = client.get(reverse("home") + views[i % len(views)])
        timings.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"queue page answered {response.status_code}")
    results["queue_page_p50_ms"], results["queue_page_p95_ms"] = _percentiles(timings[1:])
    pending = list(
        Recommendation.objects.filter(status=RecommendationStatus.PENDING)
        .order_by("-priority", "id").values_list("pk", flat=True)[:samples]
    )
    timings = []
    for pk in pending:
        start = time.perf_counter()
        response = client.post(reverse("desk-decide", args=[pk]), {"action": "approve"})
        timings.append((time.perf_counter() - start) * 1000)
        if response.status_code not in (200, 302):
            raise RuntimeError(f"decision answered {response.status_code}")
    results["decision_p50_ms"], results["decision_p95_ms"] = _percentiles(timings)
    results["queue_rows"] = Recommendation.objects.count()


# ---------------------------------------------------------------- output

LABELS = [
    ("mode", "mode", ""),
    ("members", "members", ""),
    ("auc", "engagement AUC (model)", ""),
    ("bayes_auc", "Bayes-optimal AUC (simulator truth)", ""),
    ("auc_with_text", "engagement AUC, same split, with comment features", ""),
    ("auc_without_text", "engagement AUC, same split, without comment features", ""),
    ("members_with_comments", "share of members with a comment in the year", ""),
    ("coverage_90", "90% interval coverage of true probability", ""),
    ("interval_width_mean", "mean interval width", ""),
    ("response_coverage_90", "true response probability inside the 'members like this' range", ""),
    ("policy_capture", "policy value / oracle", ""),
    ("policy_same_offer_capture", "same offer for all / oracle", ""),
    ("policy_random_capture", "random offer / oracle", ""),
    ("recs_per_s", "end-to-end scoring", "recs/s"),
    ("bare_recs_per_s", "bare compute, one core", "recs/s"),
    ("engagement_trees", "engagement model trees (early stopping)", ""),
    ("response_trees", "response models' trees, all offers", ""),
    ("bare_ratio", "end-to-end / bare", ""),
    ("seed_rf_recs_per_s", "seed setup (RF 100 trees + TreeSHAP)", "recs/s"),
    ("recs_per_cpu_s", "end-to-end per CPU second (workers + their Postgres backends)", "recs"),
    ("bare_recs_per_cpu_s", "bare compute per CPU second", "recs"),
    ("cpu_bare_ratio", "end-to-end / bare from CPU seconds (idle-machine projection)", ""),
    ("score_worker_cpu_s", "scoring run: worker CPU", "s"),
    ("score_db_cpu_s", "scoring run: Postgres backend CPU", "s"),
    ("peak_worker_rss_mb", "peak worker process RSS", "MiB"),
    ("queue_rows", "recommendations in the table (desk timings)", ""),
    ("queue_page_p50_ms", "queue page p50", "ms"),
    ("queue_page_p95_ms", "queue page p95", "ms"),
    ("decision_p50_ms", "decision p50", "ms"),
    ("decision_p95_ms", "decision p95", "ms"),
    ("whatif_p50_ms", "what-if recompute p50 (score + SHAP + recourse)", "ms"),
    ("whatif_p95_ms", "what-if recompute p95 (score + SHAP + recourse)", "ms"),
    ("retrain_s", "retraining (train challenger + gate)", "s"),
    ("import_rows_per_s", "CSV event import", "rows/s"),
    ("workers", "worker processes", ""),
    ("simulate_s", "simulate", "s"),
    ("db_load_s", "load into database", "s"),
    ("train_s", "train", "s"),
    ("score_s", "scoring run", "s"),
    ("chunk_members", "profiled chunk", "members"),
    ("chunk_load_s", "chunk: load members and events", "s"),
    ("chunk_features_s", "chunk: build features", "s"),
    ("chunk_score_s", "chunk: predict, interval, SHAP, offers", "s"),
    ("chunk_build_s", "chunk: build rows", "s"),
    ("chunk_write_s", "chunk: write rows, mark done", "s"),
    *[(f"chunk_{stage}_{suffix}", f"chunk: {stage}, {what}", "s")
      for suffix, what in (("cpu_s", "worker CPU"), ("db_cpu_s", "Postgres backend CPU"))
      for stage in ("load", "features", "score", "build", "write")],
]


def bench_table(results: dict) -> str:
    lines = ["| measure | value |", "|---|---|"]
    for key, label, unit in LABELS:
        if key in results:
            lines.append(f"| {label} | {results[key]}{' ' + unit if unit else ''} |")
    extra = sorted(set(results) - {key for key, _, _ in LABELS})
    lines += [f"| {key} | {results[key]} |" for key in extra]
    return "\n".join(lines)
