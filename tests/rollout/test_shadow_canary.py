"""Shadow and canary models in real scoring runs (tasks in-process on commit, real Postgres):
shadow predictions never reach managers; canary members are sticky and served by the canary;
offers behind a flag go only to the flag's members; champion and challenger are compared on
the same members against realized outcomes."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from django.test import Client

from governance.models import AuditEvent
from loyalty.definitions import EVENT_COLUMNS
from loyalty.importers import import_csv
from loyalty.models import Member
from recommendations.decisions import decision_record
from recommendations.learning import learning_settings_update
from recommendations.models import Decision, FeatureFlag, Recommendation, ShadowPrediction
from recommendations.rollout import (
    flag_members,
    flag_save,
    member_keys,
    model_flag_name,
    model_rollout_set,
    rollout_compare,
)
from recommendations.runs import run_export, run_start
from tests.rollout.support import CHUNK, program_with_challenger


@pytest.fixture
def setup(transactional_db, eager_celery, role_users):
    program, champion, challenger = program_with_challenger()
    return program, champion, challenger, role_users


def _run(program):
    run = run_start(as_of=program.as_of, chunk_size=CHUNK)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    return run


def _login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _members(qs) -> set[int]:
    return set(qs.values_list("member_id", flat=True))


def test_shadow_is_scored_beside_the_champion_and_never_reaches_managers(setup) -> None:
    program, champion, challenger, users = setup
    model_rollout_set(actor=users["admin"], model_version_id=challenger.pk, mode="shadow")
    assert AuditEvent.objects.filter(action="model.rollout", object_id=str(challenger.pk), new__rollout="shadow").exists()

    run = _run(program)
    recs = Recommendation.objects.filter(run=run)
    shadow = ShadowPrediction.objects.filter(run=run)
    # Same run, same members: every member has the champion's recommendation and a shadow row.
    assert set(recs.values_list("model_version_id", flat=True)) == {champion.pk}
    assert set(shadow.values_list("model_version_id", flat=True)) == {challenger.pk}
    assert _members(shadow) == _members(recs) and shadow.count() == recs.count() > 500
    # The challenger really is another model: it disagrees somewhere.
    by_member = dict(recs.values_list("member_id", "probability"))
    assert any(abs(p - by_member[m]) > 1e-6 for m, p in shadow.values_list("member_id", "probability"))
    assert run.members_scored == recs.count()

    manager = _login(users["manager"])
    # Queue page: its rows are champion recommendations; filtered to the shadow model, nothing.
    page = manager.get("/").content.decode()
    ids = {int(x.split('"')[0]) for x in page.split('data-id="')[1:]}
    assert ids and ids <= set(recs.values_list("pk", flat=True))
    assert 'class="qrow' not in manager.get(f"/?model={challenger.pk}").content.decode()
    # API: queue and detail show champion items only.
    api = manager.get("/api/recommendations/?limit=200").json()
    assert api["results"] and {item["model_version"] for item in api["results"]} == {champion.pk}
    assert manager.get(f"/api/recommendations/?model={challenger.pk}").json()["results"] == []
    detail = manager.get(f"/api/recommendations/{api['results'][0]['id']}/").json()
    assert detail["model_version"] == champion.pk
    # Exports of the run: champion rows only, one per member.
    out = io.StringIO()
    assert run_export(run_id=run.pk, fmt="csv", out=out) == recs.count()
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == recs.count() and {r["model_version"] for r in rows} == {str(champion.pk)}
    binary = io.BytesIO()
    run_export(run_id=run.pk, fmt="parquet", out=binary)
    table = pq.read_table(io.BytesIO(binary.getvalue()))
    assert table.num_rows == recs.count() and set(table.column("model_version").to_pylist()) == {champion.pk}
    # ... while the shadow rows are still there.
    assert ShadowPrediction.objects.filter(run=run).count() == recs.count()


def test_canary_serves_its_share_with_sticky_assignment_across_runs(setup) -> None:
    program, champion, challenger, users = setup
    model_rollout_set(actor=users["admin"], model_version_id=challenger.pk, mode="canary", share=0.3)

    first, second = _run(program), _run(program)
    served = [_members(Recommendation.objects.filter(run=r, model_version=challenger)) for r in (first, second)]
    everyone = _members(Recommendation.objects.filter(run=first))
    assert served[0] == served[1]  # sticky: the same members on every run
    flag = FeatureFlag.objects.get(name=model_flag_name(challenger.pk))
    pks = sorted(everyone)
    assert served[0] == {pk for pk, inside in zip(pks, flag_members(flag, member_keys(pks)), strict=True) if inside}
    assert 0.22 < len(served[0]) / len(everyone) < 0.38
    # The other model's prediction is kept for every member: the champion's for canary members.
    shadow = ShadowPrediction.objects.filter(run=first)
    assert _members(shadow.filter(model_version=champion)) == served[0]
    assert _members(shadow.filter(model_version=challenger)) == everyone - served[0]

    # Managers see the canary's recommendation, and their decision records the model it came from.
    manager = _login(users["senior_manager"])
    items = manager.get(f"/api/recommendations/?model={challenger.pk}&limit=5").json()["results"]
    assert items and {i["model_version"] for i in items} == {challenger.pk}
    decision = decision_record(recommendation_id=items[0]["id"], actor=users["senior_manager"], action="approve")
    assert Decision.objects.get(pk=decision.pk).model_version_id == challenger.pk

    # A larger share keeps everyone who was in and adds members.
    model_rollout_set(actor=users["admin"], model_version_id=challenger.pk, mode="canary", share=0.6)
    third = _members(Recommendation.objects.filter(run=_run(program), model_version=challenger))
    assert served[0] < third


def _most_recommended_offer(run) -> tuple[str, pd.Index]:
    """The offer code recommended most often in `run`, and the members it went to."""
    codes = pd.Series(dict(Recommendation.objects.filter(run=run, offer__isnull=False)
                           .values_list("member_id", "offer__code")))
    code = codes.value_counts().index[0]
    return code, codes[codes == code].index


def test_an_offer_behind_a_flag_is_recommended_only_to_its_members(setup) -> None:
    program, champion, challenger, users = setup
    before = _run(program)
    code, holders = _most_recommended_offer(before)
    had_it = set(holders)
    assert len(had_it) > 50

    flag = flag_save(actor=users["admin"], name="new-offer", values={
        "kind": "offer", "target": code, "enabled": True, "share": 0.3})
    after = _run(program)
    now = dict(Recommendation.objects.filter(run=after).values_list("member_id", "offer__code"))
    pks = sorted(now)
    flagged = {pk for pk, inside in zip(pks, flag_members(flag, member_keys(pks)), strict=True) if inside}
    assert {m for m, c in now.items() if c == code} <= flagged
    # Same members, same model: flagged members keep the offer; the others get their next best.
    assert all(now[m] == code for m in had_it & flagged) and had_it & flagged
    assert all(now[m] != code for m in had_it - flagged) and had_it - flagged


def _import_future(program, tmp_path) -> None:
    frame = program.future_events.copy()
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    frame["score"] = frame["score"].astype("Int64")
    path = tmp_path / "future.csv"
    frame.to_csv(path, columns=EVENT_COLUMNS, index=False, float_format="%.2f")
    assert import_csv(kind="events", source=path).succeeded


def test_comparison_uses_the_same_members_and_realized_outcomes(setup, tmp_path) -> None:
    program, champion, challenger, users = setup
    learning_settings_update(actor=users["admin"], values={"holdout_share": 0.2})
    model_rollout_set(actor=users["admin"], model_version_id=challenger.pk, mode="canary", share=0.4)
    run = _run(program)
    senior = users["senior_manager"]
    canary_open = list(Recommendation.objects.filter(
        run=run, model_version=challenger, status__in=["pending", "escalated"], offer__isnull=False).order_by("pk")[:5])
    assert len(canary_open) == 5
    for rec in canary_open[:3]:
        decision_record(recommendation_id=rec.pk, actor=senior, action="approve")
    for rec in canary_open[3:]:
        other = "D10" if rec.offer.code != "D10" else "B500"
        decision_record(recommendation_id=rec.pk, actor=senior, action="override", chosen_offer_code=other,
                        reason_code="model_wrong", reason_text="knows the member")
    _import_future(program, tmp_path)  # outcomes join on commit (the import's hook, in-process)

    result = rollout_compare(challenger_id=challenger.pk)
    recs = Recommendation.objects.filter(run=run)
    assert (result["run"], result["champion"], result["members"]) == (run.pk, champion.pk, recs.count())
    # Agreement on the same members, recomputed here from the stored rows.
    offers = {}
    for model in (champion.pk, challenger.pk):
        served = recs.filter(model_version_id=model).values_list("member_id", "offer_id")
        shadow = ShadowPrediction.objects.filter(run=run, model_version_id=model).values_list("member_id", "offer_id")
        offers[model] = dict([*served, *shadow])
    assert set(offers[champion.pk]) == set(offers[challenger.pk])
    same = np.mean([offers[champion.pk][m] == offers[challenger.pk][m] for m in offers[champion.pk]])
    assert result["agreement"] == pytest.approx(same)
    assert 0 < result["agreement"] < 1

    assert result["members_with_outcome"] == recs.count()
    for name in ("champion", "challenger"):
        m = result["metrics"][name]
        assert m["auc"] > 0.6 and m["auc_low"] <= m["auc"] <= m["auc_high"]
        assert m["brier_low"] <= m["brier"] <= m["brier_high"]
    assert result["overrides"]["challenger"] == {"reviewed": 5, "overridden": 2, "rate": 0.4}
    assert result["overrides"]["champion"]["reviewed"] == 0
    lift = result["lift"]["challenger"]
    assert lift["n_treated"] == 5 and lift["n_holdout"] > 5
    assert lift["low"] <= lift["lift"] <= lift["high"]

    # The models page and the API show the same comparison.
    admin = _login(users["admin"])
    page = admin.get("/models/").content.decode()
    assert f'id="rollout-{challenger.pk}"' in page and f"{result['agreement'] * 100:.1f}%" in page
    assert "40.0%" in page  # the canary's override rate
    api = admin.get(f"/api/models/{challenger.pk}/comparison/").json()
    assert api["agreement"] == pytest.approx(result["agreement"]) and api["members"] == recs.count()
    assert _login(users["manager"]).get(f"/api/models/{challenger.pk}/comparison/").status_code == 403


def test_whatif_offers_a_flagged_offer_only_to_the_flags_members(setup) -> None:
    from recommendations.whatif import member_whatif_evaluate

    program, champion, challenger, users = setup
    code, holders = _most_recommended_offer(_run(program))
    had_it = sorted(holders)[:40]
    flag = flag_save(actor=users["admin"], name="new-offer", values={
        "kind": "offer", "target": code, "enabled": True, "share": 0.5})
    inside = dict(zip(had_it, flag_members(flag, member_keys(had_it)), strict=True))
    assert any(inside.values()) and not all(inside.values())
    for pk, flagged in inside.items():
        result = member_whatif_evaluate(member=Member.objects.get(pk=pk), model_version=champion, changes={},
                                        as_of=program.as_of, recourse=False)
        # The page shows what scoring would: the flagged offer for its members, never for others.
        assert (result["base"]["offer"] == code) is bool(flagged), (pk, flagged, result["base"]["offer"])
