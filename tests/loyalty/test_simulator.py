"""The simulator: reproducible, with real signal, honest ground truth and a planted bias."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from sklearn.metrics import roc_auc_score

from loyalty.definitions import (
    EVENT_COLUMNS,
    MEMBER_COLUMNS,
    OFFER_COLUMNS,
    RESPONSE_WINDOW_DAYS,
    event_fingerprints,
)
from loyalty.simulator import (
    EXPOSURES,
    OFFERS,
    SimulatedProgram,
    program_write_db,
    program_write_files,
    simulate_program,
)

FRAMES = ("members", "events", "future_events", "offers", "ground_truth")


@pytest.fixture(scope="module")
def program() -> SimulatedProgram:
    return simulate_program(members=2000, seed=11)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_identical_frames_and_files(tmp_path: Path) -> None:
    first = simulate_program(members=300, seed=5)
    second = simulate_program(members=300, seed=5)
    for name in FRAMES:
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name))
    a = program_write_files(first, tmp_path / "a")
    b = program_write_files(second, tmp_path / "b")
    assert set(a) == set(FRAMES)
    assert {name: _sha(path) for name, path in a.items()} == {name: _sha(path) for name, path in b.items()}


def test_different_seed_gives_different_data() -> None:
    first = simulate_program(members=300, seed=5)
    other = simulate_program(members=300, seed=6)
    assert not first.events.equals(other.events)
    assert not np.allclose(first.ground_truth["p_engage"], other.ground_truth["p_engage"])


def test_frames_have_the_shared_columns_and_types(program: SimulatedProgram) -> None:
    assert list(program.members.columns) == MEMBER_COLUMNS
    assert list(program.events.columns) == EVENT_COLUMNS
    assert list(program.future_events.columns) == EVENT_COLUMNS
    assert list(program.offers.columns) == OFFER_COLUMNS
    assert str(program.events["occurred_at"].dt.tz) == "UTC"
    assert program.members["member_id"].iloc[0] == "M0000001"
    assert program.members["member_id"].is_unique
    assert set(program.members["tier"]) == {"bronze", "silver", "gold", "platinum"}
    assert program.members["region"].nunique() == 5
    # sorted by member, then time
    ordered = program.events.sort_values(["member_id", "occurred_at"], kind="stable")
    assert ordered.index.equals(program.events.index)
    assert set(program.events["kind"]) == {
        "purchase", "redemption", "session", "feedback", "offer_sent", "offer_redeemed",
    }
    # ~70-80 events per member between history and horizon, most of them app sessions
    # (about ten per purchase: the frequent signal of engagement between purchases).
    per_member = (len(program.events) + len(program.future_events)) / len(program.members)
    assert 55 <= per_member <= 95
    both = pd.concat([program.events, program.future_events])
    kinds = both["kind"].value_counts()
    assert 8 <= kinds["session"] / kinds["purchase"] <= 12
    # Every event has its own fingerprint, the database's unique key.
    assert event_fingerprints(both).is_unique
    feedback = program.events[program.events["kind"] == "feedback"]
    # A score of 1-5, or a comment alone (a complaint or praise told in words).
    scored = feedback["score"].notna()
    assert feedback.loc[scored, "score"].between(1, 5).all()
    assert (feedback.loc[~scored, "comment"] != "").all()
    assert (feedback["comment"] != "").mean() > 0.3
    assert (program.events.loc[program.events["kind"] != "feedback", "comment"] == "").all()


def test_history_ends_before_as_of_and_future_stays_in_the_horizon(program: SimulatedProgram) -> None:
    as_of = pd.Timestamp(program.as_of, tz="UTC")
    end = as_of + pd.Timedelta(days=program.horizon_days)
    assert (program.events["occurred_at"] < as_of).all()
    assert program.future_events["occurred_at"].between(as_of, end, inclusive="left").all()
    assert len(program.future_events) > 0
    # the realized outcome is exactly "a purchase in the horizon" of future_events
    buyers = set(program.future_events.loc[program.future_events["kind"] == "purchase", "member_id"])
    engaged = set(program.ground_truth.loc[program.ground_truth["engaged"], "member_id"])
    assert buyers == engaged


def test_consent_share_is_about_93_percent(program: SimulatedProgram) -> None:
    assert 0.90 <= program.members["consent_profiling"].mean() <= 0.96


def test_engagement_signal_is_strong_and_recent_activity_predicts_it(program: SimulatedProgram) -> None:
    truth = program.ground_truth
    auc = roc_auc_score(truth["engaged"], truth["p_engage"])
    assert 0.75 <= auc <= 0.9
    as_of = pd.Timestamp(program.as_of, tz="UTC")
    events = program.events
    recent = events[(events["kind"] == "purchase") & (events["occurred_at"] >= as_of - pd.Timedelta(days=90))]
    counts = recent.groupby("member_id").size().reindex(truth["member_id"], fill_value=0).to_numpy()
    assert np.corrcoef(counts, truth["p_engage"])[0, 1] > 0.35
    assert roc_auc_score(truth["engaged"], counts) > 0.65


def test_p_engage_is_the_probability_given_the_state_at_as_of(program: SimulatedProgram) -> None:
    # E[engaged | p_engage] = p_engage: in every decile of the truth the realized share agrees
    # (binomial noise with ~200 members a bin: a few points). A truth computed from the
    # realized future path would pass too, but it would be far sharper than this: the AUC
    # of the truth against the outcome stays well below 0.9.
    truth = program.ground_truth
    deciles = pd.qcut(truth["p_engage"], 10, labels=False, duplicates="drop")
    grouped = truth.groupby(deciles).agg(p=("p_engage", "mean"), rate=("engaged", "mean"), n=("engaged", "size"))
    se = np.sqrt(grouped["p"] * (1 - grouped["p"]) / grouped["n"]).clip(lower=0.01)
    assert (np.abs(grouped["rate"] - grouped["p"]) < 3.5 * se).all()
    assert abs(truth["engaged"].mean() - truth["p_engage"].mean()) < 0.02


def test_the_truth_at_earlier_dates_is_that_of_the_same_program() -> None:
    # A desk that scores the program month after month needs the truth on each date. Asking
    # for it changes nothing else: the events and the as_of truth are the same draws.
    as_of = date(2026, 8, 29)
    earlier = (date(2026, 6, 30), date(2026, 7, 30))
    plain = simulate_program(members=2000, seed=11, as_of=as_of, history_days=425)
    stepped = simulate_program(members=2000, seed=11, as_of=as_of, history_days=425, earlier_as_of=earlier)
    for name in FRAMES:
        pd.testing.assert_frame_equal(getattr(plain, name), getattr(stepped, name))
    assert set(stepped.earlier_truth) == set(earlier)
    everything = pd.concat([stepped.events, stepped.future_events])
    final_balance = stepped.members.set_index("member_id")["points_balance"]
    for when, truth in stepped.earlier_truth.items():
        truth = truth.set_index("member_id")
        at = pd.Timestamp(when, tz="UTC")
        # The outcome on that date is the purchases of the horizon after it (no planted bias
        # here: every purchase is recorded) ...
        window = everything[(everything["kind"] == "purchase") & (everything["occurred_at"] >= at)
                            & (everything["occurred_at"] < at + pd.Timedelta(days=stepped.horizon_days))]
        bought = pd.Series(truth.index.isin(set(window["member_id"])), index=truth.index)
        assert truth["engaged"].astype(bool).equals(bought)
        # ... its balance is today's minus the points moved since ...
        since = everything[(everything["occurred_at"] >= at) & (everything["occurred_at"] < pd.Timestamp(as_of, tz="UTC"))]
        rewound = final_balance - since.groupby("member_id")["points"].sum().reindex(final_balance.index).fillna(0)
        assert (rewound - truth["points_balance"]).abs().max() <= 1
        # ... and p_engage is the probability of that outcome given the state on that date.
        assert abs(truth["engaged"].mean() - truth["p_engage"].mean()) < 0.03
        assert 0.75 < roc_auc_score(truth["engaged"], truth["p_engage"]) < 0.9
        # The response truth moves with the member's state between the dates.
        assert not np.allclose(truth["p_response_CALL"], stepped.ground_truth["p_response_CALL"])
    with pytest.raises(ValueError, match="earlier_as_of"):
        simulate_program(members=10, seed=1, earlier_as_of=(date(2025, 1, 1),))


def test_trajectory_changes_leave_feedback_in_the_history(program: SimulatedProgram) -> None:
    from recommendations.text import comment_sentiments

    feedback = program.events[program.events["kind"] == "feedback"]
    negative = feedback[comment_sentiments(feedback["comment"]) <= -0.05]
    assert len(negative) > 0.1 * len(program.members)  # complaints at decline onsets
    # Most complaints at an onset come in words only: the text carries what scores miss.
    assert negative["score"].isna().mean() > 0.3
    low = feedback[feedback["score"] <= 2]
    assert (low["comment"] != "").mean() > 0.5


def test_offer_responses_are_heterogeneous_and_best_offer_differs(program: SimulatedProgram) -> None:
    truth = program.ground_truth
    codes = OFFERS["code"].tolist()
    probs = truth[[f"p_response_{code}" for code in codes]].to_numpy()
    assert (probs.std(axis=0) > 0.04).all()
    ev = probs * OFFERS["value"].to_numpy() - OFFERS["cost"].to_numpy()
    best = np.where(ev.max(axis=1) > 0, np.array(codes)[ev.argmax(axis=1)], "none")
    shares = pd.Series(best).value_counts(normalize=True)
    assert set(shares.index) == {*codes, "none"}
    assert shares.max() < 0.6 and shares["none"] > 0.1


def test_exposures_are_randomized_and_responses_follow_the_window(program: SimulatedProgram) -> None:
    events = program.events
    sent = events[events["kind"] == "offer_sent"]
    per_member = sent.groupby("member_id").size().reindex(program.members["member_id"], fill_value=0)
    assert per_member.between(*EXPOSURES).all()
    assert set(sent["offer_code"]) == set(OFFERS["code"])
    redeemed = events[events["kind"] == "offer_redeemed"]
    assert 0.05 < len(redeemed) / len(sent) < 0.3
    pairs = redeemed.merge(sent, on=["member_id", "offer_code"], suffixes=("", "_sent"))
    lag = pairs["occurred_at"] - pairs["occurred_at_sent"]
    in_window = (lag > pd.Timedelta(0)) & (lag <= pd.Timedelta(days=RESPONSE_WINDOW_DAYS))
    assert in_window.groupby([pairs["member_id"], pairs["occurred_at"]]).any().all()
    # The campaign runs up to as_of, as a live one does (the offer features at scoring then
    # look like the training snapshot's); a response to a late send comes in the horizon.
    as_of = pd.Timestamp(program.as_of, tz="UTC")
    assert (sent["occurred_at"] >= as_of - pd.Timedelta(days=RESPONSE_WINDOW_DAYS)).mean() > 0.05
    assert (program.future_events["kind"] == "offer_redeemed").any()
    # The realized response rate tracks the true probability: discounts convert more often
    # for bronze members than for platinum ones.
    tiers = program.members.set_index("member_id")["tier"]
    d10 = sent[sent["offer_code"] == "D10"].assign(tier=lambda f: f["member_id"].map(tiers))
    responded = d10.merge(redeemed[["member_id", "offer_code"]].drop_duplicates(), how="left", indicator=True)
    rate = (responded["_merge"] == "both").groupby(responded["tier"]).mean()
    assert rate["bronze"] > rate["gold"]


def test_planted_bias_drops_recent_purchases_for_the_group_only() -> None:
    clean = simulate_program(members=1500, seed=21)
    biased = simulate_program(members=1500, seed=21, bias_group=("region", "north"), bias_rate=0.5)
    as_of = pd.Timestamp(clean.as_of, tz="UTC")
    label_start = as_of - pd.Timedelta(days=2 * clean.horizon_days)
    north = set(clean.members.loc[clean.members["region"] == "north", "member_id"])

    def purchases(events: pd.DataFrame, *, group: bool, recent: bool) -> int:
        mask = (events["kind"] == "purchase") & (events["member_id"].isin(north) == group)
        mask &= (events["occurred_at"] >= label_start) if recent else (events["occurred_at"] < label_start)
        return int(mask.sum())

    assert purchases(biased.events, group=True, recent=True) < 0.6 * purchases(clean.events, group=True, recent=True)
    assert purchases(biased.events, group=True, recent=True) > 0.4 * purchases(clean.events, group=True, recent=True)
    assert purchases(biased.events, group=True, recent=False) == purchases(clean.events, group=True, recent=False)
    others = clean.events[~clean.events["member_id"].isin(north)].reset_index(drop=True)
    others_biased = biased.events[~biased.events["member_id"].isin(north)].reset_index(drop=True)
    pd.testing.assert_frame_equal(others, others_biased)
    # Ground truth and the future stay true.
    pd.testing.assert_frame_equal(clean.future_events, biased.future_events)
    columns = [c for c in clean.ground_truth.columns if c != "biased"]
    pd.testing.assert_frame_equal(clean.ground_truth[columns], biased.ground_truth[columns])
    assert biased.ground_truth["biased"].sum() == len(north)
    assert not clean.ground_truth["biased"].any()


def test_blocks_are_simulate_program_in_pieces(monkeypatch) -> None:
    """Streamed block by block (three blocks here, planted bias included), the program is
    the one simulate_program builds in one piece: same seed, same data."""
    import loyalty.simulator as simulator

    monkeypatch.setattr(simulator, "CHUNK_MEMBERS", 300)
    arguments = {"members": 800, "seed": 12, "bias_group": ("region", "north"), "bias_rate": 0.3}
    whole = simulate_program(**arguments)
    blocks = list(simulator.simulate_program_blocks(**arguments))
    assert [len(block.members) for block in blocks] == [300, 300, 200]
    assert whole.ground_truth["biased"].any()
    pieces = {
        "members": [block.members for block in blocks],
        "events": [block.events() for block in blocks],
        "future_events": [block.future_events() for block in blocks],
        "ground_truth": [block.ground_truth for block in blocks],
    }
    for name, frames in pieces.items():
        pd.testing.assert_frame_equal(pd.concat(frames, ignore_index=True), getattr(whole, name))


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        simulate_program(members=0, seed=1)
    with pytest.raises(ValueError):
        simulate_program(members=10, seed=1, bias_group=("planet", "mars"), bias_rate=0.2)
    with pytest.raises(ValueError):
        simulate_program(members=10, seed=1, bias_rate=1.5)


@pytest.mark.django_db(transaction=True)
def test_program_write_db_writes_members_events_offers() -> None:
    from loyalty.models import Event, Member, Offer

    program = simulate_program(members=400, seed=3, as_of=date(2026, 3, 31))
    counts = program_write_db(program)
    assert counts == {"members": 400, "events": len(program.events), "offers": len(OFFERS)}
    assert Member.objects.count() == 400
    assert Event.objects.count() == len(program.events)
    assert set(Offer.objects.values_list("code", flat=True)) == set(OFFERS["code"])
    member = Member.objects.get(member_id="M0000001")
    row = program.members.iloc[0]
    assert member.birth_year == row["birth_date"].year
    assert member.tier == row["tier"] and member.points_balance == row["points_balance"]
    assert Member.objects.filter(consent_profiling=True, consent_at__isnull=True).count() == 0
    assert Member.objects.filter(consent_profiling=False, consent_at__isnull=False).count() == 0
    assert Member.objects.values("pseudo_id").distinct().count() == 400
    # Same fingerprints as the importer computes: a later import of events.csv adds nothing.
    stored = set(Event.objects.values_list("fingerprint", flat=True))
    assert stored == set(event_fingerprints(program.events))
    first = program.events.iloc[0]
    event = Event.objects.filter(member=member).order_by("occurred_at", "id").first()
    assert event.occurred_at == first["occurred_at"].to_pydatetime()
    assert event.kind == first["kind"]
    feedback = Event.objects.filter(kind="feedback").exclude(comment="")
    assert feedback.exists() and Event.objects.filter(kind="purchase", score__isnull=False).count() == 0


@pytest.mark.django_db(transaction=True)
def test_command_refuses_a_populated_database_and_replace_replaces() -> None:
    from loyalty.models import Event, Member

    call_command("simulate", "--members", "120", "--seed", "4")
    assert Member.objects.count() == 120
    with pytest.raises(CommandError, match="--replace"):
        call_command("simulate", "--members", "80", "--seed", "4")
    assert Member.objects.count() == 120
    call_command("simulate", "--members", "80", "--seed", "9", "--replace")
    assert Member.objects.count() == 80
    assert Event.objects.exclude(member__in=Member.objects.all()).count() == 0
    assert Event.objects.count() == len(simulate_program(members=80, seed=9).events)


@pytest.mark.django_db(transaction=True)
def test_replace_is_refused_while_decisions_exist() -> None:
    from loyalty.models import Member, Offer
    from recommendations.models import Decision, ModelVersion, Recommendation, ScoringRun

    call_command("simulate", "--members", "50", "--seed", "4")
    version = ModelVersion.objects.create(
        artifact_path="x", sha256="0" * 64, as_of=date(2026, 6, 30), horizon_days=90
    )
    run = ScoringRun.objects.create(model_version=version, as_of=date(2026, 6, 30))
    recommendation = Recommendation.objects.create(
        run=run, member=Member.objects.first(), model_version=version, as_of=date(2026, 6, 30),
        probability=0.5, p_low=0.4, p_high=0.6, offer=Offer.objects.first(), expected_value=1.0,
        ev_low=0.0, ev_high=2.0, shap_values=b"", shap_base=0.0, features=b"",
    )
    Decision.objects.create(
        recommendation=recommendation, sequence=1, action="approve", model_version=version,
        shown_probability=0.5, shown_p_low=0.4, shown_p_high=0.6, shown_expected_value=1.0,
        shown_shap_values=b"",
    )
    with pytest.raises(CommandError, match="decisions"):
        call_command("simulate", "--members", "60", "--seed", "5", "--replace")
    assert Member.objects.count() == 50


@pytest.mark.django_db
def test_command_with_out_writes_the_five_files_and_not_the_database(tmp_path: Path, capsys) -> None:
    from loyalty.models import Member

    call_command(
        "simulate", "--members", "150", "--seed", "2", "--out", str(tmp_path),
        "--bias-group", "gender=female", "--bias-rate", "0.3",
    )
    assert Member.objects.count() == 0
    for name in FRAMES:
        assert (tmp_path / f"{name}.csv").stat().st_size > 0
    members = pd.read_csv(tmp_path / "members.csv")
    assert list(members.columns) == MEMBER_COLUMNS and len(members) == 150
    events = pd.read_csv(tmp_path / "events.csv", keep_default_na=False)
    assert list(events.columns) == EVENT_COLUMNS
    occurred = pd.to_datetime(events["occurred_at"], utc=True, format="ISO8601")
    assert (occurred < pd.Timestamp("2026-06-30", tz="UTC")).all()
    assert list(pd.read_csv(tmp_path / "offers.csv").columns) == OFFER_COLUMNS
    truth = pd.read_csv(tmp_path / "ground_truth.csv")
    assert {"member_id", "p_engage", "engaged", "biased", "p_response_D10"} <= set(truth.columns)
    out = capsys.readouterr().out
    assert "gender=female at rate 0.3" in out and "150 members" in out


def test_fast_fingerprints_equal_the_reference_definition(program: SimulatedProgram) -> None:
    from loyalty.definitions import _event_fingerprints_exact

    sample = program.events.iloc[::7]
    pd.testing.assert_series_equal(event_fingerprints(sample), _event_fingerprints_exact(sample))
    odd = pd.DataFrame(
        {
            "member_id": ["a", "b", "c", "d"],
            "occurred_at": pd.to_datetime(
                ["2026-01-01T10:00:00.7Z", "1969-12-31T23:59:59.5Z", "2026-01-01", "2026-02-01T00:00:01+02:00"],
                utc=True, format="ISO8601",
            ),
            "kind": ["purchase", "redemption", "feedback", "offer_sent"],
            "amount": [-0.5, 0.01, -12.34, 1234567.89],
            "points": [-500, 0, 3, 4],
            "quantity": [0, 1, 2, 3],
            "duration_seconds": [0, 0, 5, 6],
            "score": [np.nan, 5.0, 1.0, np.nan],
            "offer_code": [None, "D10", "", "B500"],
        },
        index=[10, 11, 12, 13],
    )
    pd.testing.assert_series_equal(event_fingerprints(odd), _event_fingerprints_exact(odd))
    # Amounts that are not exact cents take the reference path and still agree.
    unusual = odd.assign(amount=[0.125, -0.0, 1e-9, 2.675])
    pd.testing.assert_series_equal(event_fingerprints(unusual), _event_fingerprints_exact(unusual))
