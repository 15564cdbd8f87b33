"""A load generator on loopback: managers working the queue through a real HTTP server.

Each simulated manager logs in (CSRF + session, as a browser does), then loops until the
time is up: open the queue page, pick one of its pending rows at random that no one else
has open (recommendations.claims marks those; any pending row when all are taken), open its
detail page (which claims it), step back when that page says someone opened it first, else
approve it (or, one time in five, override it to the first alternative its row offers) through the decision
API with the CSRF token. Between clicks a manager pauses `think` seconds, like locust's
`wait_time = between(...)`. As the open queue page does in a browser, each manager also asks
what changed on the rows it showed (GET /api/recommendations/presence/) every
PRESENCE_SECONDS.

A 409 is not an error: two managers picked the same row and the second was told someone
decided first, which is the product doing its job; claims make it rarer, and the managers
who stepped back are counted. Anything else that is not 2xx/3xx, and
any connection failure, is an error. `load_verify` then checks the database: every 201
decision is stored exactly once, with its audit row, and no recommendation got two.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests

PENDING_ROW = re.compile(r'id="rec-(\d+)" class="qrow st-pending')
UNCLAIMED_ROW = re.compile(r'id="rec-(\d+)" class="qrow st-pending"')
CLAIMED_NOTE = 'id="claim-note"'

# The desk's default poll interval (settings.QUEUE_PRESENCE_SECONDS).
PRESENCE_SECONDS = 15.0
ANY_ROW = re.compile(r'id="rec-(\d+)" class="qrow')

# The first alternative the row's override form offers (never the recommended offer itself).
OVERRIDE_CHOICE = re.compile(r'name="chosen_offer_code">\s*<option value="([^"]*)"')


@dataclass
class LoadResult:
    users: int
    seconds: float
    timings_ms: dict[str, list[float]] = field(default_factory=dict)
    statuses: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    conflicts: int = 0
    stepped_back: int = 0  # detail pages that said another manager had the item open
    login_p50_ms: float | None = None
    decisions: list[tuple[int, int]] = field(default_factory=list)  # (recommendation, decision) per 201
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, ms: float, status: int | str, error: str | None = None) -> None:
        with self.lock:
            self.timings_ms.setdefault(kind, []).append(ms)
            self.statuses[f"{kind} {status}"] += 1
            if error is not None:
                self.errors.append(error)

    def figures(self) -> dict[str, Any]:
        every = [ms for values in self.timings_ms.values() for ms in values]
        out: dict[str, Any] = {
            "users": self.users, "seconds": round(self.seconds, 1), "requests": len(every),
            "requests_per_s": round(len(every) / self.seconds, 1) if self.seconds else 0.0,
            "errors": len(self.errors), "conflicts_409": self.conflicts,
            "stepped_back_claimed": self.stepped_back, "decisions_201": len(self.decisions),
            "login_p50_ms (before the clock)": self.login_p50_ms,
        }
        for kind, values in [("all", every), *sorted(self.timings_ms.items())]:
            if values:
                out[f"{kind}_p50_ms"] = round(float(np.percentile(values, 50)), 1)
                out[f"{kind}_p95_ms"] = round(float(np.percentile(values, 95)), 1)
        return out


class _Manager:
    def __init__(self, base_url: str, username: str, password: str, result: LoadResult,
                 think: tuple[float, float], rng: random.Random) -> None:
        self.base, self.username, self.password = base_url.rstrip("/"), username, password
        self.result, self.think, self.rng = result, think, rng
        self.http = requests.Session()
        self.shown: list[str] = []  # the rows of the last queue page, as the browser has them
        self.next_presence = 0.0

    def _call(self, kind: str, method: str, path: str, **kwargs: Any) -> requests.Response | None:
        start = time.perf_counter()
        try:
            response = self.http.request(method, self.base + path, timeout=30, allow_redirects=False, **kwargs)
        except requests.RequestException as exc:
            self.result.record(kind, (time.perf_counter() - start) * 1000, "exception",
                               f"{method} {path}: {type(exc).__name__}: {str(exc)[:160]}")
            return None
        ms = (time.perf_counter() - start) * 1000
        ok = response.status_code < 400 or response.status_code == 409
        self.result.record(kind, ms, response.status_code,
                           None if ok else f"{method} {path}: HTTP {response.status_code}")
        return response

    def _csrf_headers(self) -> dict[str, str]:
        return {"X-CSRFToken": self.http.cookies.get("csrftoken", ""), "Referer": self.base + "/"}

    def login(self) -> bool:
        self._call("login", "GET", "/login/")
        response = self._call("login", "POST", "/login/", data={
            "username": self.username, "password": self.password,
            "csrfmiddlewaretoken": self.http.cookies.get("csrftoken", ""),
        }, headers={"Referer": self.base + "/login/"})
        return response is not None and response.status_code == 302

    def pause(self) -> None:
        time.sleep(self.rng.uniform(*self.think))
        if self.shown and time.monotonic() >= self.next_presence:
            self.next_presence = time.monotonic() + PRESENCE_SECONDS
            self._call("presence", "GET", "/api/recommendations/presence/", params={"ids": ",".join(self.shown)})

    def work(self, deadline: float) -> None:
        # Staggered like browsers that opened the queue at different moments.
        self.next_presence = time.monotonic() + self.rng.uniform(0, PRESENCE_SECONDS)
        while time.monotonic() < deadline:
            page = self._call("queue", "GET", "/")
            html = page.text if page is not None and page.status_code == 200 else ""
            self.shown = ANY_ROW.findall(html)[:200] or self.shown
            rows = UNCLAIMED_ROW.findall(html) or PENDING_ROW.findall(html)
            if not rows:
                self.pause()
                continue
            pk = int(self.rng.choice(rows))
            row_html = page.text.split(f'id="rec-{pk}"', 1)[1].split("</tr>", 1)[0]
            choice = OVERRIDE_CHOICE.search(row_html)
            self.pause()
            detail = self._call("detail", "GET", f"/queue/{pk}/")
            if detail is not None and CLAIMED_NOTE in detail.text:
                with self.result.lock:
                    self.result.stepped_back += 1
                self.pause()  # reads the note, goes back to the queue
                continue
            self.pause()
            body: dict[str, Any] = {"action": "approve"}
            if choice is not None and self.rng.random() < 0.2:
                body = {"action": "override", "chosen_offer_code": choice.group(1), "reason_code": "offer_fatigue",
                        "reason_text": "load test: member had enough offers"}
            response = self._call("decide", "POST", f"/api/recommendations/{pk}/decide/", json=body,
                                  headers=self._csrf_headers())
            if response is not None and response.status_code == 201:
                with self.result.lock:
                    self.result.decisions.append((pk, int(response.json()["id"])))
            elif response is not None and response.status_code == 409:
                with self.result.lock:
                    self.result.conflicts += 1
            self.pause()


def load_run(*, base_url: str, credentials: list[tuple[str, str]], seconds: float,
             think: tuple[float, float] = (0.5, 1.5), seed: int = 0) -> LoadResult:
    """`len(credentials)` managers, one thread each, for `seconds`. Everyone logs in first, one
    after the other (password hashing is deliberately slow); the clock starts after that."""
    result = LoadResult(users=len(credentials), seconds=0.0)
    managers = [_Manager(base_url, user, password, result, think, random.Random(seed * 1000 + i))
                for i, (user, password) in enumerate(credentials)]
    for manager in managers:
        if not manager.login():
            result.errors.append(f"login of {manager.username} failed")
    logins = result.timings_ms.pop("login", [])
    result.login_p50_ms = round(float(np.percentile(logins, 50)), 1) if logins else None
    start = time.monotonic()
    deadline = start + seconds
    threads = [threading.Thread(target=m.work, args=(deadline,), daemon=True) for m in managers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    result.seconds = time.monotonic() - start
    return result


def load_verify(result: LoadResult, *, usernames: list[str]) -> list[str]:
    """What the database says after the run; an empty list means every check passed."""
    from django.db.models import Count

    from governance.models import AuditEvent
    from recommendations.models import Decision

    problems = []
    stored = Decision.objects.filter(actor__username__in=usernames)
    answered = {decision for _, decision in result.decisions}
    stored_ids = set(stored.values_list("pk", flat=True))
    if stored.count() != len(result.decisions):
        problems.append(f"{stored.count()} decisions stored, {len(result.decisions)} answered 201")
    if stored_ids != answered:
        problems.append(f"decisions answered but not stored: {sorted(answered - stored_ids)[:10]}; "
                        f"stored but never answered: {sorted(stored_ids - answered)[:10]}")
    twice = list(stored.values("recommendation_id").annotate(n=Count("id")).filter(n__gt=1)
                 .values_list("recommendation_id", flat=True)[:10])
    if twice:
        problems.append(f"recommendations decided more than once: {twice}")
    for rec_id, decision_id in result.decisions:
        decision = stored.filter(pk=decision_id).values_list("recommendation_id", "recommendation__status").first()
        if decision is None:
            continue
        if decision[0] != rec_id or decision[1] not in ("approved", "overridden"):
            problems.append(f"decision {decision_id}: recommendation {decision[0]} is {decision[1]}")
    # The audit row names the recommendation (decisions.py writes both in one transaction).
    decided = {str(rec) for rec in stored.values_list("recommendation_id", flat=True)}
    audited = Counter(AuditEvent.objects.filter(
        object_type="recommendation", object_id__in=decided, action__startswith="decision.",
    ).values_list("object_id", flat=True))
    unaudited = sorted(int(rec) for rec in decided if audited[rec] != 1)
    if unaudited:
        problems.append(f"recommendations without exactly one decision audit row: {unaudited[:10]}")
    return problems


class ServerProcess:
    """gunicorn serving loyalty.wsgi on 127.0.0.1:`port`, in its own process group, logging to
    `log_path`. Processes for the CPU (page rendering holds the GIL: 2 processes x 8 threads
    queued requests behind each other), a few threads each for the waits on the database."""

    def __init__(self, *, env: dict[str, str], port: int, log_path, workers: int = 4, threads: int = 4) -> None:
        import subprocess
        import sys
        from pathlib import Path

        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "loyalty.wsgi", "--bind", f"127.0.0.1:{port}",
             "--workers", str(workers), "--threads", str(threads), "--timeout", "60",
             # Longer than a manager's pause: gunicorn's default 2 s closes idle connections
             # just as the client reuses them (a reset the browser would silently retry).
             "--keep-alive", "75"],
            cwd=Path(__file__).resolve().parent.parent, env=env, stdout=self._log, stderr=self._log,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(self.base_url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"gunicorn not ready after {timeout:.0f}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        import os
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except Exception:  # noqa: BLE001 - a stuck server is killed rather than left running
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._log.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
