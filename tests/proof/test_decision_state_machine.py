"""The decision state machine, as a hypothesis rule-based test: random sequences of approve,
override, escalate and undo by managers, senior managers and an auditor on one item.

A small reference model says what each step must do (succeed, or be refused with a
DecisionError) and where the item must be; invariants after every step: the stored status
is the model's, every decision row has exactly one audit row, and at most one final decision
(approve/override) stands uncompensated, exactly when the item is approved or overridden.

Truly simultaneous decisions (threads, separate connections) are tested in
tests/desk/test_decisions.py::test_parallel_decisions_produce_exactly_one.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from governance.models import AuditEvent
from recommendations.decisions import DecisionError, decision_record, decision_undo
from recommendations.models import Decision, Recommendation
from tests.desk.factories import make_rec

ACTORS = ["manager", "senior_manager", "auditor"]
FINAL = {"approve": "approved", "override": "overridden"}


@dataclass
class Row:
    pk: int
    action: str
    actor: str
    old: str
    new: str
    compensated: bool = False


def allowed_statuses(actor: str, action: str) -> set[str]:
    """The rule as the desk states it (README, Working the queue)."""
    if actor == "auditor":
        return set()
    allowed = {"pending"}
    if actor == "senior_manager" and action != "escalate":
        allowed.add("escalated")
    if action == "override":
        allowed.add("auto_approved")
    return allowed


@pytest.mark.parametrize("start", ["pending", "auto_approved"])
def test_decision_sequences_keep_one_effective_decision_and_an_audit_row_each(world, role_users, start) -> None:
    users = role_users

    class Decisions(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.rec = make_rec(run=world.run, offer=world.bonus, status=start)
            self.status = start
            self.rows: list[Row] = []

        @rule(actor=st.sampled_from(ACTORS), action=st.sampled_from(["approve", "override", "escalate"]))
        def decide(self, actor: str, action: str) -> None:
            extra = {"approve": {}, "escalate": {"note": "needs a senior look"},
                     "override": {"chosen_offer_code": "", "reason_code": "too_costly", "reason_text": "budget"}}
            expected_ok = self.status in allowed_statuses(actor, action)
            try:
                decision = decision_record(recommendation_id=self.rec.pk, actor=users[actor], action=action,
                                           **extra[action])
            except DecisionError:
                assert not expected_ok, f"{actor} {action} on {self.status} was refused"
                return
            assert expected_ok, f"{actor} {action} on {self.status} was accepted"
            new = {"escalate": "escalated", **FINAL}[action]
            self.rows.append(Row(decision.pk, action, actor, self.status, new))
            self.status = new

        @rule(actor=st.sampled_from(ACTORS), back=st.integers(min_value=0, max_value=3))
        def undo(self, actor: str, back: int) -> None:
            if not self.rows:
                return
            target = self.rows[max(0, len(self.rows) - 1 - back)]
            latest = self.rows[-1]
            # Only your own latest decision, while nothing came after it.
            expected_ok = (target is latest and latest.action != "undo" and latest.actor == actor
                           and self.status == latest.new)
            try:
                decision = decision_undo(decision_id=target.pk, actor=users[actor])
            except DecisionError:
                assert not expected_ok, f"{actor} could not undo their latest decision {target}"
                return
            assert expected_ok, f"{actor} undid {target} (latest {latest})"
            target.compensated = True
            self.rows.append(Row(decision.pk, "undo", actor, self.status, target.old))
            self.status = target.old

        @invariant()
        def stored_state_matches(self) -> None:
            rec = Recommendation.objects.get(pk=self.rec.pk)
            assert rec.status == self.status
            decisions = Decision.objects.filter(recommendation=rec)
            assert decisions.count() == len(self.rows)
            audit = AuditEvent.objects.filter(object_type="recommendation", object_id=str(rec.pk),
                                              action__startswith="decision.")
            assert audit.count() == len(self.rows)
            standing = [r for r in self.rows if r.action in FINAL and not r.compensated]
            assert len(standing) <= 1
            assert (len(standing) == 1) == (self.status in FINAL.values())

    run_state_machine_as_test(Decisions, settings=settings(
        max_examples=25, stateful_step_count=10, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    ))
