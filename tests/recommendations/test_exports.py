"""Exporting a run (csv, parquet) and evaluating it against the simulator's ground truth."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from sklearn.metrics import brier_score_loss, roc_auc_score

from governance.models import AuditEvent
from recommendations.models import Recommendation, RecommendationStatus, ScoringRun
from recommendations.runs import EXPORT_COLUMNS, run_export, run_start
from recommendations.training import interval_coverage_binned
from tests.recommendations.scoring_support import champion_model, consenting_pks, program_in_db

MEMBERS, SEED = 900, 11


@pytest.fixture
def scored_run(transactional_db, eager_celery):
    program = program_in_db(members=MEMBERS, seed=SEED)
    champion_model(program, members=MEMBERS, seed=SEED)
    run = run_start(as_of=program.as_of, chunk_size=300)
    assert run.status == ScoringRun.Status.SUCCEEDED, run.error
    # One decided item, so the export shows statuses as they are.
    approved = Recommendation.objects.filter(run=run).order_by("id").first()
    Recommendation.objects.filter(pk=approved.pk).update(status=RecommendationStatus.APPROVED)
    return program, run


def _expected(run: ScoringRun) -> dict[str, dict]:
    rows = {}
    for rec in Recommendation.objects.filter(run=run).select_related("member", "offer"):
        rows[rec.member.member_id] = {
            "offer_code": rec.offer.code if rec.offer else "",
            "probability": rec.probability, "interval_low": rec.p_low, "interval_high": rec.p_high,
            "expected_value": rec.expected_value, "ev_low": rec.ev_low, "ev_high": rec.ev_high,
            "status": rec.status, "model_version": rec.model_version_id,
        }
    return rows


def _assert_rows_match(frame: pd.DataFrame, expected: dict[str, dict]) -> None:
    assert list(frame.columns) == EXPORT_COLUMNS
    assert len(frame) == len(expected) == len(consenting_pks())
    assert set(frame["member_id"]) == set(expected)
    for row in frame.to_dict("records"):
        want = expected[row["member_id"]]
        assert (row["offer_code"] or "") == want["offer_code"]
        assert row["status"] == want["status"]
        assert int(row["model_version"]) == want["model_version"]
        for column in ("probability", "interval_low", "interval_high", "expected_value", "ev_low", "ev_high"):
            assert float(row[column]) == pytest.approx(want[column], rel=1e-12, abs=1e-12)


def test_csv_export_to_stdout_and_file(scored_run, tmp_path, capsys) -> None:
    program, run = scored_run
    expected = _expected(run)
    # member_id exactly as imported: the simulator's external ids.
    assert set(expected) <= set(program.members["member_id"].astype(str))

    call_command("export_recommendations", "--run", str(run.pk))
    stdout = capsys.readouterr().out
    from_stdout = pd.read_csv(io.StringIO(stdout), dtype={"member_id": str, "offer_code": str}, keep_default_na=False)
    _assert_rows_match(from_stdout, expected)
    assert stdout.splitlines()[0] == ",".join(EXPORT_COLUMNS)
    assert "approved" in set(from_stdout["status"]) and "pending" in set(from_stdout["status"])

    out = tmp_path / "recs.csv"
    call_command("export_recommendations", "--run", str(run.pk), "--format", "csv", "--out", str(out))
    with open(out, newline="") as handle:
        assert next(csv.reader(handle)) == EXPORT_COLUMNS
    _assert_rows_match(pd.read_csv(out, dtype={"member_id": str, "offer_code": str}, keep_default_na=False), expected)

    audits = AuditEvent.objects.filter(action="export.recommendations", object_id=str(run.pk))
    assert audits.count() == 2
    for audit in audits:
        assert audit.new["rows"] == len(expected) and audit.new["format"] == "csv"
        # No member data in the audit trail.
        assert set(audit.new) == {"format", "rows"} and audit.member_pseudo_id is None


def test_parquet_export_in_batches(scored_run, tmp_path) -> None:
    _, run = scored_run
    expected = _expected(run)
    out = tmp_path / "recs.parquet"
    with open(out, "wb") as handle:
        count = run_export(run_id=run.pk, fmt="parquet", out=handle, batch_rows=100)
    assert count == len(expected)
    parquet = pq.ParquetFile(out)
    assert parquet.metadata.num_row_groups >= len(expected) // 100
    _assert_rows_match(parquet.read().to_pandas(), expected)

    via_command = tmp_path / "cmd.parquet"
    call_command("export_recommendations", "--run", str(run.pk), "--format", "parquet", "--out", str(via_command))
    _assert_rows_match(pd.read_parquet(via_command), expected)
    assert AuditEvent.objects.filter(action="export.recommendations", new__format="parquet").count() == 2


def test_export_errors(transactional_db, tmp_path) -> None:
    with pytest.raises(CommandError, match="scoring run 999999 does not exist"):
        call_command("export_recommendations", "--run", "999999")
    with pytest.raises(CommandError, match="needs --out"):
        call_command("export_recommendations", "--run", "1", "--format", "parquet")
    assert not AuditEvent.objects.filter(action="export.recommendations").exists()


def test_evaluate_against_ground_truth(scored_run, tmp_path, capsys) -> None:
    program, run = scored_run
    truth = program.ground_truth[["member_id", "engaged", "p_engage"]]
    with_true_p = tmp_path / "truth.csv"
    truth.to_csv(with_true_p, index=False)
    labels_only = tmp_path / "labels.csv"
    truth[["member_id", "engaged"]].to_csv(labels_only, index=False)

    call_command("evaluate", "--run", str(run.pk), "--truth", str(with_true_p), "--json")
    result = json.loads(capsys.readouterr().out)

    scored = pd.DataFrame.from_records(
        Recommendation.objects.filter(run=run).values("member__member_id", "probability", "p_low", "p_high")
    ).rename(columns={"member__member_id": "member_id"})
    joined = truth.astype({"member_id": str}).merge(scored, on="member_id")
    y = joined["engaged"].astype(int).to_numpy()
    p, low, high = (joined[c].to_numpy() for c in ("probability", "p_low", "p_high"))
    assert result["n_matched"] == len(joined) == len(consenting_pks())
    assert result["n_truth"] == MEMBERS and result["n_unscored"] == MEMBERS - len(joined)
    assert result["auc"] == pytest.approx(roc_auc_score(y, p))
    assert result["brier"] == pytest.approx(brier_score_loss(y, p))
    true_p = joined["p_engage"].to_numpy()
    assert result["interval_coverage"] == pytest.approx(np.mean((low <= true_p) & (true_p <= high)))
    assert "true p_engage" in result["interval_coverage_method"]
    assert result["interval_mean_width"] == pytest.approx(np.mean(high - low))
    # A trained model beats chance on the simulated program.
    assert result["auc"] > 0.65 and result["brier"] < 0.25

    call_command("evaluate", "--run", str(run.pk), "--truth", str(labels_only), "--json")
    labels = json.loads(capsys.readouterr().out)
    assert labels["interval_coverage"] == pytest.approx(interval_coverage_binned(y, p, low, high))
    assert labels["interval_coverage_method"].startswith("binned")
    assert (labels["auc"], labels["brier"], labels["n_matched"]) == (result["auc"], result["brier"], result["n_matched"])

    call_command("evaluate", "--run", str(run.pk), "--truth", str(with_true_p))
    text = capsys.readouterr().out
    assert f"{result['n_matched']} matched of {MEMBERS}" in text
    assert f"AUC                {result['auc']:.4f}" in text
    assert f"interval coverage  {result['interval_coverage']:.3f}" in text and "Brier" in text


def test_evaluate_errors(scored_run, tmp_path) -> None:
    program, run = scored_run
    no_engaged = tmp_path / "no_engaged.csv"
    program.ground_truth[["member_id", "p_engage"]].to_csv(no_engaged, index=False)
    with pytest.raises(CommandError, match="missing column\\(s\\) engaged"):
        call_command("evaluate", "--run", str(run.pk), "--truth", str(no_engaged))

    unknown = tmp_path / "unknown.csv"
    frame = program.ground_truth[["member_id", "engaged"]].head(10).copy()
    frame.loc[len(frame)] = ["NOT-A-MEMBER-42", 1]
    frame.to_csv(unknown, index=False)
    with pytest.raises(CommandError, match="1 member id\\(s\\) in the truth file are not in the program, e.g. \\['NOT-A-MEMBER-42'\\]"):
        call_command("evaluate", "--run", str(run.pk), "--truth", str(unknown))

    with pytest.raises(CommandError, match="cannot read truth file"):
        call_command("evaluate", "--run", str(run.pk), "--truth", str(tmp_path / "absent.csv"))
    with pytest.raises(CommandError, match="scoring run 999999 does not exist"):
        call_command("evaluate", "--run", "999999", "--truth", str(no_engaged))
