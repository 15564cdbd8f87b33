"""Proof of the learning loop on a simulated program with a planted label bias.

``loop_simulate`` writes a simulated program (loyalty.simulator, bias in region "north")
into an EMPTY database and then runs the real desk, cycle by cycle:

1. a scoring run with the champion (runs.run_start, tasks executed in-process);
2. the figures of that champion against the ground truth, on members whose labels never
   reached training (not yet reviewed, never in an imported outcome): AUC overall, in the
   biased group and in the others, demographic parity / equalized odds differences by
   region (fairlearn) and the policy value of its offers under the true response
   probabilities (scoring.policy_report); from the second cycle on, also the previous cycle's
   champion's figures on the same members (``previous_model``, a paired comparison);
3. a simulated manager who knows the truth reviews this cycle's slice of the queue through
   decisions.decision_record: approve unless the recommended offer is CLEARLY worse than the
   true best one (its true expected value lower by more than ``CLEAR_REGRET``), else override
   to the true best (reason model_wrong); in both cases they record their judgement of the
   member's engagement (``label_engaged`` = true p_engage >= 0.5). A manager who overrode
   every offer that is not exactly the best would override on noise: the member's unobservable
   taste decides between offers of nearly equal value, no model can learn it, and the
   override rate could never fall;
4. the environment answers: each offer the desk sent (the approved or the manager's) produces an ``offer_sent`` event the
   day after as_of and, with the member's TRUE response probability, an ``offer_redeemed``
   within the response window; these events are imported with the real importer
   (loyalty.importers.import_csv), whose post-import hook joins them to the decisions
   (recommendations.outcomes);
5. learning.model_version_retrain: a challenger on history plus the feedback, gated
   against the champion, promoted if it passes.

Truth reaches the model only through the manager's decisions (step 3) and imported events
(step 4, and at the end the program's true future events): never directly. After the last
cycle the future events of the horizon are imported, outcomes close, and the report adds
model/manager accuracy and the holdout lift of the last run.

Two protocols. By default every cycle scores the same as_of and the managers review a new
slice of members each cycle, so an override can only help other members. With
``step_days`` the desk works as a real one does, month after month: cycle k scores at
as_of + (k - 1) * step_days; before it, the program's events of the step (purchases, visits,
the running campaign's offers) and the members' new points balances are imported, and the
challenger is trained at the new date, so the responses to the offers the desk sent are in
its history. ``revisit`` shows the managers the same members every cycle (cycle 1's slice),
so their next recommendation can learn from their own override. The truth is the simulator's
at each cycle's date (simulate_program's earlier_as_of); members who join after the first
as_of are left out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from loyalty.definitions import EVENT_COLUMNS, RESPONSE_WINDOW_DAYS

BIAS_GROUP = ("region", "north")
# "Clearly worse": the recommended action's true expected value is this much (currency
# units) below the best one's, about a tenth of an offer's value.
CLEAR_REGRET = 5.0
# Figures of the previous cycle's champion reported on the current cycle's members.
PREVIOUS_KEYS = ("n_evaluated", "auc", "biased_group_auc", "other_groups_auc", "dp_difference", "eo_difference",
                 "calibration_difference", "biased_group_calibration_gap", "mean_probability_biased", "true_rate_biased")


class LoopSimulationError(Exception):
    """The simulation cannot run here (e.g. the database is not empty)."""


@contextlib.contextmanager
def _eager_tasks() -> Iterator[None]:
    from loyalty.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = before


def _user(username: str, role: str):
    from django.contrib.auth.models import Group, User

    user, _ = User.objects.get_or_create(username=username)
    group, _ = Group.objects.get_or_create(name=role)
    user.groups.add(group)
    return user


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None


def _fairness(engaged: np.ndarray, p: np.ndarray, groups: np.ndarray) -> dict[str, float | None]:
    """The fairness report's definitions (governance.fairness.group_metrics) by region, without
    bootstrap: parity and equalized odds of the churn flag, and the calibration difference."""
    from governance.fairness import RISK_THRESHOLD, group_metrics

    churned = 1 - np.asarray(engaged, dtype=int)
    with np.errstate(all="ignore"):
        rows, differences = group_metrics(
            y_true=churned, y_pred=(p < RISK_THRESHOLD).astype(int), groups={"region": groups},
            churn_risk=1 - p, n_boot=0,
        )
    gaps = {r["value"]: r["calibration_gap"] for r in rows}
    return {
        "dp_difference": differences["region"]["demographic_parity_difference"],
        "eo_difference": differences["region"]["equalized_odds_difference"],
        "calibration_difference": differences["region"]["calibration_difference"],
        "biased_group_calibration_gap": gaps.get(BIAS_GROUP[1]),
    }


def _import_events(frame: pd.DataFrame, directory: Path, name: str) -> dict[str, Any]:
    from loyalty.importers import import_csv

    out = frame.copy()
    out["occurred_at"] = pd.to_datetime(out["occurred_at"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    out["score"] = out["score"].astype("Int64")
    path = directory / f"{name}.csv"
    out.to_csv(path, columns=EVENT_COLUMNS, index=False, float_format="%.2f", lineterminator="\n")
    result = import_csv(kind="events", source=path)
    if not result.succeeded:
        raise LoopSimulationError(f"importing {name} failed: {result.as_dict()}")
    return result.counts()


def _import_balances(truth: pd.DataFrame, directory: Path, name: str) -> None:
    """The members' points balances on a new date, as a member file of the program would
    bring them (the importer updates only the columns a file has)."""
    from loyalty.importers import import_csv

    path = directory / f"{name}.csv"
    truth[["member_id", "points_balance"]].to_csv(path, index=False, lineterminator="\n")
    result = import_csv(kind="members", source=path)
    if not result.succeeded:
        raise LoopSimulationError(f"importing {name} failed: {result.as_dict()}")


@dataclasses.dataclass(frozen=True)
class _Truth:
    """The ground truth on one date: per member (indexed by member_id) the frame, the true
    response probabilities, the true best action and the true expected value of every action."""

    frame: pd.DataFrame
    response: pd.DataFrame
    best: pd.Series
    ev: pd.DataFrame


def _truth_on(frame: pd.DataFrame, offers: list, codes: np.ndarray) -> _Truth:
    from recommendations.scoring import oracle_choice

    frame = frame.set_index("member_id")
    response = frame[[f"p_response_{o.code}" for o in offers]]
    best = pd.Series(codes[oracle_choice(response.to_numpy(float), offers)], index=frame.index)
    # True expected value of every action per member ("" = no action: 0).
    ev = pd.DataFrame(
        response.to_numpy(float) * np.array([float(o.value) for o in offers]) - np.array([float(o.cost) for o in offers]),
        index=frame.index, columns=codes[:-1],
    ).assign(**{"": 0.0})
    return _Truth(frame=frame, response=response, best=best, ev=ev)


def _model_picks(model_version_id: int, as_of: date, member_pks: np.ndarray, offers: list) -> pd.DataFrame:
    """A model's probability and offer for members on a date, scored in-process as a run
    would (without explanations): the previous champion on this cycle's members and date."""
    from recommendations.features import build_features
    from recommendations.model_store import bundle_load
    from recommendations.models import ModelVersion
    from recommendations.scoring import score_features
    from recommendations.selectors import member_frames_load

    version = ModelVersion.objects.get(pk=model_version_id)
    bundle = bundle_load(version.pk, version.artifact_path, version.sha256)
    members, events = member_frames_load(as_of=as_of, pks=member_pks)
    scored = score_features(bundle, build_features(members, events, pd.Timestamp(as_of)), offers, explain=False)
    codes = np.array([o.code for o in offers] + [""])
    return pd.DataFrame({"member_pk": scored.member_pks, "probability": scored.probability,
                         "offer_code": codes[scored.offer_index]})


def _offer_events(sent: pd.DataFrame, truth: pd.DataFrame, as_of, rng: np.random.Generator) -> pd.DataFrame:
    """offer_sent the day after as_of, and offer_redeemed with the TRUE response probability."""
    start = pd.Timestamp(as_of, tz="UTC") + pd.Timedelta(days=1)
    p = np.array([truth.at[m, f"p_response_{c}"] for m, c in zip(sent["member_id"], sent["offer_code"], strict=True)])
    sent_at = start + pd.to_timedelta(rng.integers(8 * 3600, 20 * 3600, len(sent)), unit="s")
    responded = rng.random(len(sent)) < p
    redeemed_at = sent_at + pd.to_timedelta(rng.integers(3600, (RESPONSE_WINDOW_DAYS - 1) * 86_400, len(sent)), unit="s")
    base = {"amount": 0.0, "points": 0, "quantity": 0, "duration_seconds": 0, "score": np.nan, "comment": ""}
    sends = pd.DataFrame({"member_id": sent["member_id"].to_numpy(), "occurred_at": sent_at,
                          "kind": "offer_sent", "offer_code": sent["offer_code"].to_numpy(), **base})
    redeems = pd.DataFrame({"member_id": sent["member_id"].to_numpy()[responded],
                            "occurred_at": redeemed_at[responded], "kind": "offer_redeemed",
                            "offer_code": sent["offer_code"].to_numpy()[responded], **base})
    return pd.concat([sends, redeems], ignore_index=True)[EVENT_COLUMNS]


def loop_simulate(
    *,
    cycles: int = 3,
    members: int = 4000,
    bias_rate: float = 0.3,
    seed: int = 0,
    review_share: float = 0.2,
    log: Callable[[str], None] = lambda _m: None,
    choice_weight: float | None = None,
    step_days: int = 0,
    revisit: bool = False,
) -> dict[str, Any]:
    """Run the loop (see the module docstring); returns {"cycles": [...], "final": {...}}."""
    from loyalty.models import Member
    from loyalty.roles import ADMIN, SENIOR_MANAGER
    from loyalty.simulator import (
        DEFAULT_AS_OF,
        DEFAULT_HISTORY_DAYS,
        program_write_db,
        simulate_program,
    )
    from recommendations.decisions import decision_record
    from recommendations.learning import evaluation_member_pks, model_version_retrain
    from recommendations.models import OPEN_STATUSES, ModelVersion, Recommendation
    from recommendations.outcomes import (
        decision_accuracy,
        holdout_lift,
        outcomes_refresh,
        override_payoff,
    )
    from recommendations.runs import run_start
    from recommendations.scoring import policy_report
    from recommendations.selectors import model_version_champion, offer_terms_list
    from recommendations.services import model_version_train

    if cycles < 1:
        raise LoopSimulationError("--cycles must be at least 1")
    if not 0 < review_share * (1 if revisit else cycles) <= 0.8:
        raise LoopSimulationError(
            "review share (x cycles, without revisit) must lie in (0, 0.8]: some members stay unreviewed")
    if step_days < 0 or (step_days and step_days < RESPONSE_WINDOW_DAYS + 2):
        raise LoopSimulationError(
            f"--step-days must be 0 (every cycle on one date) or at least {RESPONSE_WINDOW_DAYS + 2}: "
            "the responses to a cycle's offers arrive before the next one")
    if Member.objects.exists():
        raise LoopSimulationError(
            "simulate_loop writes a simulated program and needs an empty database "
            "(point DATABASE_URL at a scratch database)"
        )
    rng = np.random.default_rng(seed)
    log(f"simulating {members} members, bias {bias_rate} in {BIAS_GROUP[0]}={BIAS_GROUP[1]}")
    dates = [DEFAULT_AS_OF + timedelta(days=step_days * k) for k in range(cycles)]
    program = simulate_program(
        members=members, seed=seed, bias_group=BIAS_GROUP, bias_rate=bias_rate, as_of=dates[-1],
        history_days=DEFAULT_HISTORY_DAYS + (dates[-1] - dates[0]).days, earlier_as_of=tuple(sorted(set(dates) - {dates[-1]})),
    )
    truth_frames = {**program.earlier_truth,
                    dates[-1]: program.ground_truth.assign(points_balance=program.members["points_balance"].to_numpy())}
    later_events = program.events.iloc[:0]
    if len(set(dates)) > 1:
        # The desk starts at the first date: members who had joined by then, their events
        # before it and their balance on it. The rest of the history arrives cycle by cycle.
        joined = program.members["joined_at"] < pd.Timestamp(dates[0])
        kept = set(program.members.loc[joined, "member_id"])
        truth_frames = {when: frame[frame["member_id"].isin(kept)] for when, frame in truth_frames.items()}
        start = pd.Timestamp(dates[0], tz="UTC")
        program = dataclasses.replace(
            program,
            members=program.members[joined].assign(
                points_balance=truth_frames[dates[0]]["points_balance"].to_numpy()),
            events=program.events[program.events["member_id"].isin(kept)],
            future_events=program.future_events[program.future_events["member_id"].isin(kept)],
        )
        later_events = program.events[program.events["occurred_at"] >= start]
        program = dataclasses.replace(program, events=program.events[program.events["occurred_at"] < start])
    program_write_db(program)
    # Pseudonymous ids fixed by the seed (the writer draws random ones): the holdout and the
    # evaluation partition hash them, so the same arguments give the same loop.
    Member.objects.bulk_update(
        [Member(pk=pk, pseudo_id=uuid.uuid5(uuid.NAMESPACE_OID, f"simulate-loop:{seed}:{member_id}"))
         for pk, member_id in Member.objects.values_list("pk", "member_id")],
        ["pseudo_id"], batch_size=5000,
    )
    horizon = program.horizon_days
    manager = _user("sim-manager", SENIOR_MANAGER)
    admin = _user("sim-admin", ADMIN)
    # A 5% randomized holdout (audited setting) to measure the lift of the offers sent.
    from recommendations.learning import learning_settings_get, learning_settings_update

    if learning_settings_get().holdout_share == 0:
        learning_settings_update(actor=admin, values={"holdout_share": 0.05})
    if choice_weight is not None:
        learning_settings_update(actor=admin, values={"choice_weight": choice_weight})

    member_rows = pd.DataFrame.from_records(
        Member.objects.order_by("pk").values_list("pk", "member_id", "region", "joined_at"),
        columns=["pk", "member_id", "region", "joined_at"],
    ).set_index("pk")
    offers = offer_terms_list(active_only=True)
    codes = np.array([o.code for o in offers] + [""])

    order = rng.permutation(member_rows.index.to_numpy())
    per_cycle = int(round(review_share * len(order)))
    evaluation = evaluation_member_pks()
    reviewed: set[int] = set()
    override_truth: list[tuple[float, float]] = []  # true EV of (the model's pick, the manager's) per override
    previous_version = None
    report: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="simulate-loop-"))

    with _eager_tasks():
        if model_version_champion() is None:
            model_version_train(as_of=dates[0], horizon_days=horizon, actor=admin, seed=seed)
        for cycle in range(1, cycles + 1):
            as_of = dates[cycle - 1]
            truth = _truth_on(truth_frames[as_of], offers, codes)
            champion = model_version_champion()
            run = run_start(as_of=as_of, actor=admin)
            recs = pd.DataFrame.from_records(
                Recommendation.objects.filter(run=run).order_by("pk").values_list("pk", "member_id", "probability", "offer__code",
                                                                    "status", "holdout"),
                columns=["pk", "member_pk", "probability", "offer_code", "status", "holdout"],
            )
            recs["offer_code"] = recs["offer_code"].fillna("")
            recs["member_id"] = member_rows.loc[recs["member_pk"], "member_id"].to_numpy()
            recs["region"] = member_rows.loc[recs["member_pk"], "region"].to_numpy()
            figures = _champion_figures(recs, truth, offers, reviewed, policy_report)
            # The previous cycle's champion on the SAME members and date: a paired comparison.
            # Across cycles the evaluated members change (the reviewed ones drop out), which
            # alone moves a difference by region by several points.
            previous = None
            if previous_version is not None:
                fresh = recs[~recs["member_pk"].isin(reviewed)]
                prev = _model_picks(previous_version, as_of, fresh["member_pk"].to_numpy(), offers).merge(
                    fresh[["member_pk", "member_id", "region"]], on="member_pk")
                previous = {"model_version": previous_version, **{
                    k: v for k, v in _champion_figures(prev, truth, offers, reviewed, policy_report).items()
                    if k in PREVIOUS_KEYS
                }}
            previous_version = champion.pk

            # The manager reviews this cycle's slice of the queue.
            first_member = 0 if revisit else (cycle - 1) * per_cycle
            batch = set(order[first_member : first_member + per_cycle].tolist())
            todo = recs[recs["member_pk"].isin(batch) & recs["status"].isin([str(s) for s in OPEN_STATUSES])]
            overrides = 0
            overridden_biased = 0
            sent = []
            biased_todo = truth.frame.loc[todo["member_id"], "biased"].to_numpy(bool)
            for rec in todo.itertuples(index=False):
                best = truth.best[rec.member_id]
                engaged = bool(truth.frame.at[rec.member_id, "p_engage"] >= 0.5)
                regret = truth.ev.at[rec.member_id, best] - truth.ev.at[rec.member_id, rec.offer_code]
                if regret <= CLEAR_REGRET:
                    decision_record(recommendation_id=rec.pk, actor=manager, action="approve", label_engaged=engaged)
                    sent_code = rec.offer_code
                else:
                    overrides += 1
                    overridden_biased += bool(truth.frame.at[rec.member_id, "biased"])
                    override_truth.append((truth.ev.at[rec.member_id, rec.offer_code], truth.ev.at[rec.member_id, best]))
                    decision_record(
                        recommendation_id=rec.pk, actor=manager, action="override", chosen_offer_code=best,
                        reason_code="model_wrong",
                        reason_text=f"better: {best or 'no action'}; member {'engaged' if engaged else 'at risk'}",
                        label_engaged=engaged,
                    )
                    sent_code = best
                if sent_code:
                    sent.append((rec.member_id, sent_code))
            reviewed |= batch
            responses = _offer_events(pd.DataFrame(sent, columns=["member_id", "offer_code"]), truth.response, as_of, rng)
            _import_events(responses, workdir, f"responses-cycle-{cycle}")
            # Response windows of the day-after sends are closed RESPONSE_WINDOW_DAYS + 2 days on.
            outcomes_refresh(until=as_of + timedelta(days=RESPONSE_WINDOW_DAYS + 2))

            # Time moves on to the next cycle's date (if it is later): the program's events of
            # the step and the new balances arrive, and the challenger is trained on that date.
            retrain_as_of = dates[cycle] if cycle < cycles else as_of
            if retrain_as_of > as_of:
                step = later_events["occurred_at"] < pd.Timestamp(retrain_as_of, tz="UTC")
                _import_events(later_events[step], workdir, f"events-to-{retrain_as_of}")
                later_events = later_events[~step]
                _import_balances(truth_frames[retrain_as_of], workdir, f"balances-{retrain_as_of}")
            retrain = model_version_retrain(actor=admin, as_of=retrain_as_of, horizon_days=horizon, seed=seed)
            entry = {
                "cycle": cycle,
                "as_of": as_of.isoformat(),
                "model_version": champion.pk,
                "reviewed": int(len(todo)),
                "override_rate": overrides / len(todo) if len(todo) else None,
                # Where the overrides fall: a bias that drives them shows as a higher rate in its group.
                "biased_group_override_rate": overridden_biased / biased_todo.sum() if biased_todo.any() else None,
                "other_groups_override_rate": (overrides - overridden_biased) / (~biased_todo).sum()
                if (~biased_todo).any() else None,
                **figures,
                "previous_model": previous,
                "retrain": {"model_version": retrain["model_version"], "promoted": retrain["promoted"],
                            "gate_reasons": retrain["gate"].get("reasons", []),
                            "feedback": retrain["feedback"]},
            }
            report.append(entry)
            log(
                f"cycle {cycle}: model v{champion.pk}, override rate {entry['override_rate']:.3f}, "
                f"AUC {figures['auc']:.3f} (biased {figures['biased_group_auc']:.3f}, "
                f"others {figures['other_groups_auc']:.3f}), DP {figures['dp_difference']}, "
                f"EO {figures['eo_difference']}, policy value {figures['policy_value']:.2f}; "
                f"challenger v{retrain['model_version']} {'promoted' if retrain['promoted'] else 'kept candidate'}"
            )

        # The horizon passes: the program's true future events arrive and close the outcomes.
        _import_events(program.future_events, workdir, "future-events")
        outcomes_refresh()
        last_run = run.pk
        final = {
            "champion": ModelVersion.objects.filter(status=ModelVersion.Status.CHAMPION).values_list(
                "pk", flat=True).first(),
            "holdout_lift": holdout_lift(run_id=last_run),
            "accuracy": decision_accuracy(),
            # The simulated managers know the truth: their overrides should realize more than
            # the model expected of the picks they turned down.
            "override_payoff": override_payoff(),
            # ... against the truth, which the payoff can only estimate from realized responses.
            "override_true_ev": {
                "model_pick": float(np.mean([m for m, _ in override_truth])) if override_truth else None,
                "manager_choice": float(np.mean([c for _, c in override_truth])) if override_truth else None,
            },
            "evaluation_members": len(evaluation),
        }
    return {"cycles": report, "final": final}


def _champion_figures(recs, truth: _Truth, offers, reviewed, policy_report) -> dict[str, Any]:
    """The champion's figures on members whose truth never reached training."""
    fresh = recs[~recs["member_pk"].isin(reviewed)]
    frame = truth.frame.loc[fresh["member_id"]]
    y = frame["engaged"].to_numpy(int)
    biased = frame["biased"].to_numpy(bool)
    p = fresh["probability"].to_numpy(float)
    index = {o.code: j for j, o in enumerate(offers)}
    chosen = np.array([index.get(c, -1) for c in fresh["offer_code"]])
    policy = policy_report(chosen, truth.response.loc[fresh["member_id"]].to_numpy(float), offers)
    return {
        "n_evaluated": int(len(fresh)),
        "auc": _auc(y, p),
        # The true probabilities' AUC on the same members and outcomes: what any model could
        # reach. It moves with the date (the season), so compare a cycle's AUC with its own.
        "bayes_auc": _auc(y, frame["p_engage"].to_numpy(float)),
        "biased_group_auc": _auc(y[biased], p[biased]),
        "other_groups_auc": _auc(y[~biased], p[~biased]),
        **_fairness(y, p, fresh["region"].to_numpy(str)),
        "policy_value": policy["model"] / max(len(fresh), 1),
        "policy_capture": policy["capture"],
        "mean_probability_biased": float(p[biased].mean()) if biased.any() else None,
        "true_rate_biased": float(frame["p_engage"].to_numpy(float)[biased].mean()) if biased.any() else None,
    }


__all__ = ["LoopSimulationError", "loop_simulate"]
