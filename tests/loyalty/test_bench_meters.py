"""The bench's CPU meter: what processes really used while it ran, from /proc via psutil."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from loyalty.bench import CpuMeter

BURN = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\ntime.sleep(60)"


def _cpu(pids: list[int]) -> dict[int, float]:
    times = {}
    for pid in pids:
        try:
            cpu = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        times[pid] = cpu.user + cpu.system
    return times


def test_cpu_meter_counts_what_processes_used_while_it_ran() -> None:
    """An idle process started before the meter adds nothing (its start-up CPU came before);
    a process started while the meter runs counts from zero."""
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    pids = [idle.pid]
    busy = None
    try:
        time.sleep(1.0)
        with CpuMeter(lambda: _cpu(pids), interval=0.05) as meter:
            busy = subprocess.Popen([sys.executable, "-c", BURN])
            pids.append(busy.pid)
            deadline = time.monotonic() + 30
            while _cpu([busy.pid]).get(busy.pid, 0.0) < 0.5 and time.monotonic() < deadline:
                time.sleep(0.05)
        busy_total = _cpu([busy.pid])[busy.pid]
        assert busy_total >= 0.5
        assert 0.5 <= meter.seconds <= busy_total + 0.05
    finally:
        for process in (idle, busy):
            if process is not None:
                process.kill()
                process.wait()
