"""The bench streams the simulated program into the database block by block: what it loads
and keeps is exactly what the in-memory path (simulate_program + program_write_db) gives."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from loyalty import simulator
from loyalty.bench import BenchOptions, _program_stream
from loyalty.simulator import program_write_db, program_write_files, simulate_program
from recommendations import quality

MEMBERS, SEED = 700, 7


def _member_rows() -> list[tuple]:
    from loyalty.models import Member

    fields = [f.name for f in Member._meta.concrete_fields if f.name not in {"id", "pseudo_id", "created_at", "updated_at"}]
    return list(Member.objects.order_by("member_id").values_list(*fields))


def _event_rows() -> list[tuple]:
    from loyalty.models import Event

    fields = [f.name for f in Event._meta.concrete_fields if f.name not in {"id", "member"}]
    return list(Event.objects.order_by("fingerprint").values_list("member__member_id", *fields))


def _offer_rows() -> list[tuple]:
    from loyalty.models import Offer

    return list(Offer.objects.order_by("code").values_list("code", "name", "kind", "cost", "value", "high_stakes"))


def _empty_database() -> None:
    from loyalty.models import Event, Member, Offer

    Event.objects.all().delete()
    Member.objects.all().delete()
    Offer.objects.all().delete()


@pytest.mark.django_db(transaction=True)
def test_streamed_program_equals_the_in_memory_path(monkeypatch, settings, tmp_path: Path) -> None:
    # Three blocks (250, 250, 200 members) and a text sample smaller than the program, so
    # the per-block paths and text_signal_auc's sampling are both exercised.
    monkeypatch.setattr(simulator, "CHUNK_MEMBERS", 250)
    monkeypatch.setattr(quality, "TEXT_MAX_MEMBERS", 400)
    settings.DATA_DIR = tmp_path / "data"

    program = simulate_program(members=MEMBERS, seed=SEED)
    program_write_db(program)
    in_memory = (_member_rows(), _event_rows(), _offer_rows())
    assert len(in_memory[0]) == MEMBERS and len(in_memory[1]) == len(program.events)
    _empty_database()

    results: dict = {}
    options = BenchOptions(members=MEMBERS, seed=SEED, workers=1, chunk_size=100)
    streamed = _program_stream(options, results, log=lambda message: None)

    assert (_member_rows(), _event_rows(), _offer_rows()) == in_memory
    assert results["simulate_s"] >= 0 and results["db_load_s"] >= 0
    assert (streamed.as_of, streamed.horizon_days) == (program.as_of, program.horizon_days)
    pd.testing.assert_frame_equal(streamed.ground_truth, program.ground_truth)
    pd.testing.assert_frame_equal(streamed.offers, program.offers)
    # The later events, appended block by block, are the file program_write_files writes.
    expected = program_write_files(program, tmp_path / "csv", only=("future_events",))["future_events"]
    assert streamed.future_events_csv.read_bytes() == expected.read_bytes()
    # Only the text comparison's sample is kept, and it compares exactly as on the whole program.
    assert len(streamed.members) == 400 and set(streamed.events["member_id"]) <= set(streamed.members["member_id"])
    assert quality.text_signal_auc(streamed, seed=SEED) == quality.text_signal_auc(program, seed=SEED)
