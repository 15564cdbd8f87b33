"""The benchmark report: `manage.py bench` result dicts in, JSON + markdown + charts out.

Kept apart from loyalty/bench.py (which measures) so the report only depends on the result
keys. A key a run did not measure shows as "not measured", never as a made-up number.
"""

from __future__ import annotations

import json
import os
import platform
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

# (key, label, unit, target): a target is (comparison, bound, applies to member counts >= this).
MEASURES: list[tuple[str, str, str, tuple[str, float, int] | None]] = [
    ("mode", "mode", "", None),
    ("workers", "worker processes", "", None),
    ("pg_shared_buffers", "Postgres shared_buffers", "", None),
    ("pg_max_wal_size", "Postgres max_wal_size", "", None),
    ("recs_per_s", "end-to-end scoring (Celery workers -> Postgres)", "recs/s", (">=", 1667, 1_000_000)),
    ("score_s", "scoring run", "s", ("<=", 600, 1_000_000)),
    ("bare_recs_per_s", "bare compute (predict + interval + SHAP + offers)", "recs/s", None),
    # The model's size (early stopping picks it, sample by sample) sets the bare rate.
    ("engagement_trees", "engagement model trees", "", None),
    ("response_trees", "response models' trees, all offers", "", None),
    ("bare_ratio", "end-to-end / bare", "", (">=", 0.5, 0)),
    ("cpu_bare_ratio", "end-to-end / bare, in CPU seconds (workers + their Postgres backends)", "", None),
    ("seed_rf_recs_per_s", "seed setup (RF 100 trees + TreeSHAP)", "recs/s", None),
    ("peak_worker_rss_mb", "peak worker process RSS", "MiB", ("<", 1024, 0)),
    ("bench_peak_rss_mb", "peak RSS of the bench process (streams the simulated program)", "MiB", None),
    ("queue_rows", "recommendations in the table (desk timings)", "", None),
    ("queue_page_p50_ms", "queue page p50", "ms", None),
    ("queue_page_p95_ms", "queue page p95", "ms", ("<", 100, 0)),
    ("decision_p50_ms", "decision p50", "ms", None),
    ("decision_p95_ms", "decision p95", "ms", None),
    ("whatif_p50_ms", "what-if recompute p50", "ms", None),
    ("whatif_p95_ms", "what-if recompute p95", "ms", ("<", 50, 0)),
    ("retrain_s", "retraining (challenger + gate)", "s", None),
    ("import_rows_per_s", "CSV event import", "rows/s", None),
    ("auc", "engagement AUC", "", None),
    ("bayes_auc", "Bayes-optimal AUC", "", None),
    ("auc_with_text", "engagement AUC with comment features (same split)", "", None),
    ("auc_without_text", "engagement AUC without comment features (same split)", "", None),
    ("coverage_90", "90% interval coverage of the true probability (target 0.88-0.93)", "", None),
    ("response_coverage_90", "true response probability inside the 'members like this' range (no 90% claim)", "", None),
    ("policy_capture", "policy value / oracle", "", (">=", 0.8, 0)),
]
REPORT_KEYS = [key for key, *_ in MEASURES]

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


def machine_info() -> dict[str, Any]:
    """What the figures were measured on, read off this machine (Linux /proc when present)."""
    cpu = platform.processor() or platform.machine()
    ram_gib = None
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        cpu = found.group(1).strip() if found else cpu
        meminfo = Path("/proc/meminfo").read_text()
        found = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.MULTILINE)
        ram_gib = round(int(found.group(1)) / 2**20, 1) if found else None
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "load_average": load,
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def machine_line(machine: dict[str, Any]) -> str:
    load = machine.get("load_average")
    return (
        f"Measured on {machine['date']}: {machine['cores']} cores ({machine['cpu_model']}), "
        f"{machine['ram_gib']} GiB RAM, Python {machine['python']}"
        + (f", load average at the end {load[0]} / {load[1]} / {load[2]}" if load else "")
        + "."
    )


def _verdict(value: Any, target: tuple[str, float, int] | None, members: int) -> str:
    if target is None or not isinstance(value, int | float):
        return ""
    op, bound, from_members = target
    if members < from_members:
        return ""
    met = {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op]
    return f"{op} {bound:g}: {'met' if met else '**missed**'}"


def report_markdown(runs: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    header = "| measure | " + " | ".join(f"{run['members']:,} members" for run in runs) + " | target |"
    lines = [machine_line(machine), "", header, "|---|" + "---|" * len(runs) + "---|"]
    for key, label, unit, target in MEASURES:
        cells, verdicts = [], []
        for run in runs:
            value = run.get(key)
            cells.append("not measured" if value is None else f"{value}{' ' + unit if unit else ''}")
            verdict = _verdict(value, target, run["members"])
            if verdict:
                verdicts.append(f"{run['members']:,}: {verdict}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'; '.join(verdicts)} |")
    return "\n".join(lines) + "\n"


def report_figure(runs: list[dict[str, Any]]) -> go.Figure:
    """Throughput, memory, and desk latencies per program size (missing figures left out)."""
    names = [f"{run['members']:,}" for run in runs]
    figure = make_subplots(
        rows=1, cols=3,
        subplot_titles=("scoring rate (recs/s)", "peak worker RSS (MiB)", "latency with the table's rows (ms)"),
    )
    for key, label in (("recs_per_s", "end to end"), ("bare_recs_per_s", "bare compute"),
                       ("seed_rf_recs_per_s", "seed setup")):
        figure.add_bar(x=names, y=[run.get(key) for run in runs], name=label, row=1, col=1)
    figure.add_bar(x=names, y=[run.get("peak_worker_rss_mb") for run in runs], name="peak RSS", row=1, col=2)
    for key, label in (("queue_page", "queue page"), ("decision", "decision"), ("whatif", "what-if")):
        for pct in ("p50", "p95"):
            figure.add_bar(x=names, y=[run.get(f"{key}_{pct}_ms") for run in runs], name=f"{label} {pct}",
                           row=1, col=3)
    figure.update_xaxes(title_text="members")
    figure.update_layout(barmode="group", height=480, width=1400, title="loyalty decision desk: bench")
    return figure


def report_write(runs: list[dict[str, Any]], out_dir: Path, *, machine: dict[str, Any] | None = None,
                 readme: Path | None = None) -> dict[str, Path]:
    """Write latest.json, latest.md and latest.html (plotly.js inlined: opens offline), and
    latest.png when a static image engine (kaleido) is installed. Returns name -> path."""
    machine = machine or machine_info()
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [{key: run.get(key) for key in REPORT_KEYS} | run for run in runs]
    markdown = report_markdown(rows, machine)
    figure = report_figure(rows)
    files = {name: out_dir / f"latest.{name}" for name in ("json", "md", "html")}
    _atomic_write(files["json"], json.dumps({"machine": machine, "runs": rows}, indent=2, sort_keys=True))
    _atomic_write(files["md"], markdown)
    _atomic_write(files["html"], figure.to_html(include_plotlyjs=True, full_html=True))
    try:
        png = out_dir / "latest.png"
        figure.write_image(png)
        files["png"] = png
    except Exception:  # noqa: BLE001 - no kaleido/browser offline: the HTML chart is the chart
        pass
    if readme is not None:
        readme_update(readme, markdown)
    return files


def readme_update(readme: Path, markdown: str) -> None:
    """Replace what stands between the bench markers in the README with the new table."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} section")
    before, rest = text.split(README_START, 1)
    after = rest.split(README_END, 1)[1]
    _atomic_write(readme, f"{before}{README_START}\n{markdown}{README_END}{after}")


def _atomic_write(path: Path, text: str) -> None:
    # A report interrupted half-way must not leave a truncated table behind.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
