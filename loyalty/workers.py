"""Start and stop real `celery -A loyalty worker` processes (benchmarks and integration tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """A celery worker in its own process group, logging to `log_path`."""

    def __init__(
        self, *, env: dict[str, str], log_path: Path, concurrency: int = 2, name: str = "worker"
    ) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "loyalty", "worker", "--loglevel=INFO",
                f"--concurrency={concurrency}", f"--hostname={name}-{os.getpid()}-{time.monotonic_ns()}@%h",
                "--without-gossip", "--without-mingle",
            ],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout: float = 90) -> None:
        from loyalty.celery import ping

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited early:\n{self.log_tail()}")
            try:
                if ping.apply_async(args=["ready"], expires=5).get(timeout=2) == "pong:ready":
                    return
            except Exception:  # noqa: BLE001 - not up yet; keep polling until the deadline
                time.sleep(0.5)
        raise RuntimeError(f"celery worker not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def children(self) -> list[int]:
        try:
            return [child.pid for child in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss_bytes(self) -> list[int]:
        """Resident memory of the main process and each pool child."""
        sizes = []
        try:
            main = psutil.Process(self.proc.pid)
            for process in [main, *main.children(recursive=True)]:
                try:
                    sizes.append(process.memory_info().rss)
                except psutil.NoSuchProcess:
                    continue
        except psutil.NoSuchProcess:
            pass
        return sizes

    def cpu_seconds(self) -> dict[int, float]:
        """CPU seconds (user + system) used so far by the main process and each pool child."""
        times = {}
        try:
            main = psutil.Process(self.proc.pid)
            for process in [main, *main.children(recursive=True)]:
                try:
                    cpu = process.cpu_times()
                    times[process.pid] = cpu.user + cpu.system
                except psutil.NoSuchProcess:
                    continue
        except psutil.NoSuchProcess:
            pass
        return times

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children) at once."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """Warm shutdown: SIGTERM to the main process only, which lets the pool finish the
        tasks in hand (a run's last chunk is still refreshing statistics for a second after
        the run shows as finished); a worker that does not exit in 30 s is killed."""
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except Exception:  # noqa: BLE001 - a stuck worker is killed rather than left running
                self.kill()
        self._log.close()
