"""The benchmark report writer: files written, every measure present, README section replaced.

The input is the real output of `manage.py bench --members 2000 --json` (embedded mode), kept
in tests/proof/data: a bench run takes over a minute even at that size, too long for
`make test`. The figures are not asserted, only that the report carries every key.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management import call_command

from loyalty.bench_report import README_END, README_START, REPORT_KEYS, machine_info, machine_line

SAMPLE = Path(__file__).parent / "data" / "bench_members2000_embedded.json"


def test_the_sample_is_a_bench_output_with_every_reported_key() -> None:
    sample = json.loads(SAMPLE.read_text())
    assert set(REPORT_KEYS) <= set(sample), set(REPORT_KEYS) - set(sample)


def test_report_writes_json_markdown_chart_and_the_readme_table(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{README_START}\nold table\n{README_END}\n\n## after\n")
    second = json.loads(SAMPLE.read_text()) | {"members": 4000}
    del second["retrain_s"]  # a run that did not measure something says so
    other = tmp_path / "second.json"
    other.write_text(json.dumps(second))

    call_command("bench_report", "--from-json", str(SAMPLE), str(other), "--out", str(tmp_path / "bench"),
                 "--readme", str(readme))

    report = json.loads((tmp_path / "bench" / "latest.json").read_text())
    assert set(report["machine"]) >= {"cpu_model", "cores", "ram_gib", "date"}
    assert [run["members"] for run in report["runs"]] == [2000, 4000]
    for run in report["runs"]:
        assert set(REPORT_KEYS) <= set(run)
    markdown = (tmp_path / "bench" / "latest.md").read_text()
    assert markdown.startswith("Measured on ")
    assert "| measure | 2,000 members | 4,000 members | target |" in markdown
    assert "not measured" in markdown
    html = (tmp_path / "bench" / "latest.html").read_text()
    assert "Plotly.newPlot" in html and "<script src=" not in html  # plotly.js inlined: opens offline
    text = readme.read_text()
    assert "old table" not in text and markdown in text and text.endswith("## after\n")


def test_machine_line_names_cores_ram_cpu_and_date() -> None:
    machine = machine_info()
    line = machine_line(machine)
    assert f"{machine['cores']} cores" in line and machine["cpu_model"] in line and "GiB RAM" in line
    assert machine["date"] in line
