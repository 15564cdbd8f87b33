"""Feature flags: deterministic membership by share and segment, audited switches, the page
and API behind the admin role, and routing rules that hold only for a flag's members."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from django.test import Client

from governance.models import AuditEvent
from governance.routing import PolicyConfig, RouteInputs, route_items
from governance.selectors import routable_items_load
from loyalty.models import Member
from recommendations.models import FeatureFlag, ModelVersion
from recommendations.rollout import (
    FlagInvalid,
    flag_members,
    flag_save,
    member_in_flag,
    member_keys,
    model_flag_name,
    model_rollout_set,
)
from tests.desk.factories import make_model, make_offer

pytestmark = pytest.mark.django_db

TIERS = ("bronze", "silver", "gold", "platinum")
REGIONS = ("north", "south", "east", "west", "central")


def _members(n: int) -> list[int]:
    Member.objects.bulk_create(
        [Member(member_id=f"F{i:05d}", tier=TIERS[i % 4], region=REGIONS[i % 5], consent_profiling=True)
         for i in range(n)],
        batch_size=2000,
    )
    return list(Member.objects.order_by("pk").values_list("pk", flat=True))


def _in(flag: FeatureFlag, pks: list[int]) -> set[int]:
    mask = flag_members(flag, member_keys(pks))
    return {pk for pk, inside in zip(pks, mask, strict=True) if inside}


def _login(role_users, role: str, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(role_users[role])
    return client


def test_membership_is_deterministic_per_member_and_matches_the_share(role_users) -> None:
    pks = _members(4000)
    make_offer("NEW1")
    flag = flag_save(actor=role_users["admin"], name="new-offer", values={
        "kind": "offer", "target": "NEW1", "enabled": True, "share": 0.25})

    first = _in(flag, pks)
    # Another order, a fresh load of the flag: the same members, whatever the call.
    again = _in(FeatureFlag.objects.get(name="new-offer"), list(reversed(pks)))
    assert first == again
    assert abs(len(first) / len(pks) - 0.25) < 0.03
    one = Member.objects.get(pk=sorted(first)[0])
    out = Member.objects.get(pk=sorted(set(pks) - first)[0])
    assert member_in_flag(flag_name="new-offer", member=one) and not member_in_flag(flag_name="new-offer", member=out)

    # A larger share only adds members; nobody flips out.
    wider = flag_save(actor=role_users["admin"], name="new-offer", values={"share": 0.5})
    assert first < _in(wider, pks)
    assert abs(len(_in(wider, pks)) / len(pks) - 0.5) < 0.03
    # Another flag at the same share picks other members (the name salts the hash).
    make_offer("NEW2")
    other = flag_save(actor=role_users["admin"], name="other-offer", values={
        "kind": "offer", "target": "NEW2", "enabled": True, "share": 0.25})
    overlap = len(first & _in(other, pks)) / len(pks)
    assert 0.03 < overlap < 0.10  # independent: about 0.25 x 0.25

    # Switched off: nobody.
    off = flag_save(actor=role_users["admin"], name="new-offer", values={"enabled": False})
    assert _in(off, pks) == set()


def test_segment_flags_pick_only_members_of_the_segments(role_users) -> None:
    pks = _members(2000)
    flag = flag_save(actor=role_users["admin"], name="gold-north-rule", values={
        "kind": "routing_rule", "target": "expected_value", "enabled": True, "share": 1.0,
        "segments": {"tier": ["gold"], "region": ["north"]}})
    expected = set(Member.objects.filter(tier="gold", region="north").values_list("pk", flat=True))
    assert expected and _in(flag, pks) == expected

    half = flag_save(actor=role_users["admin"], name="gold-north-rule", values={"share": 0.5})
    inside = _in(half, pks)
    assert inside < expected and 0.3 < len(inside) / len(expected) < 0.7

    tiers = flag_save(actor=role_users["admin"], name="gold-north-rule", values={
        "share": 1.0, "segments": {"tier": ["gold", "platinum"]}})
    assert _in(tiers, pks) == set(Member.objects.filter(tier__in=["gold", "platinum"]).values_list("pk", flat=True))


def test_every_switch_is_audited_with_old_and_new_values(role_users) -> None:
    admin = role_users["admin"]
    make_offer("NEW1")
    flag_save(actor=admin, name="new-offer", values={"kind": "offer", "target": "NEW1", "share": 0.1})
    flag_save(actor=admin, name="new-offer", values={"enabled": True, "share": 0.3})
    flag_save(actor=admin, name="new-offer", values={"enabled": True, "share": 0.3})  # no change: no row

    rows = list(AuditEvent.objects.filter(object_type="feature_flag", object_id="new-offer").order_by("pk"))
    assert [r.action for r in rows] == ["flag.create", "flag.update"]
    assert all(r.actor_id == admin.pk for r in rows)
    assert rows[0].old is None and rows[0].new["share"] == 0.1 and rows[0].new["enabled"] is False
    assert (rows[1].old["share"], rows[1].new["share"], rows[1].new["enabled"]) == (0.1, 0.3, True)


@pytest.mark.parametrize(
    ("name", "values", "field"),
    [
        ("bad name!", {"kind": "offer", "target": "NEW1"}, "name"),
        ("f", {"kind": "colour", "target": "NEW1"}, "kind"),
        ("f", {"kind": "offer", "target": "NOPE"}, "target"),
        ("f", {"kind": "routing_rule", "target": "moon_phase"}, "target"),
        ("f", {"kind": "model", "target": "999999"}, "target"),
        ("f", {"kind": "offer", "target": "NEW1", "share": 1.5}, "share"),
        ("f", {"kind": "offer", "target": "NEW1", "share": "half"}, "share"),
        ("f", {"kind": "offer", "target": "NEW1", "segments": {"tier": ["diamond"]}}, "segments.tier"),
        ("f", {"kind": "offer", "target": "NEW1", "segments": {"age": ["30"]}}, "segments.age"),
    ],
)
def test_bad_input_names_the_field(role_users, name, values, field) -> None:
    make_offer("NEW1")
    with pytest.raises(FlagInvalid) as caught:
        flag_save(actor=role_users["admin"], name=name, values=values)
    assert field in caught.value.errors
    assert not FeatureFlag.objects.exists() and not AuditEvent.objects.filter(object_type="feature_flag").exists()


def test_flags_page_is_for_admins_with_csrf_and_audit(role_users) -> None:
    make_offer("NEW1")
    form = {"name": "new-offer", "kind": "offer", "target": "NEW1", "enabled": "on", "share": "0.2",
            "tiers": ["gold"], "regions": "north, south"}
    for role in ("manager", "senior_manager", "auditor"):
        client = _login(role_users, role)
        assert client.get("/rollout/flags/").status_code == 403
        assert client.post("/rollout/flags/", form).status_code == 403
    assert Client().get("/rollout/flags/").status_code == 302  # to the login page
    assert not FeatureFlag.objects.exists()

    # CSRF is enforced on the form.
    strict = _login(role_users, "admin", enforce_csrf_checks=True)
    assert strict.post("/rollout/flags/", form).status_code == 403
    assert not FeatureFlag.objects.exists()

    admin = _login(role_users, "admin")
    assert admin.post("/rollout/flags/", form).status_code == 302
    flag = FeatureFlag.objects.get(name="new-offer")
    assert (flag.enabled, flag.share, flag.segments) == (True, 0.2, {"tier": ["gold"], "region": ["north", "south"]})
    assert AuditEvent.objects.filter(action="flag.create", actor=role_users["admin"], object_id="new-offer").exists()
    page = admin.get("/rollout/flags/").content.decode()
    assert 'id="flag-new-offer"' in page and "region: north, south" in page

    bad = admin.post("/rollout/flags/", {**form, "share": "2"})
    assert bad.status_code == 400 and "share" in bad.content.decode()
    assert FeatureFlag.objects.get(name="new-offer").share == 0.2


def test_flags_api_switches_and_refuses_other_roles(role_users) -> None:
    make_offer("NEW1")
    body = {"name": "new-offer", "kind": "offer", "target": "NEW1", "enabled": True, "share": 0.1}
    manager = _login(role_users, "manager")
    assert manager.post("/api/flags/", body, content_type="application/json").status_code == 403
    assert manager.get("/api/flags/").status_code == 403

    admin = _login(role_users, "admin")
    created = admin.post("/api/flags/", body, content_type="application/json")
    assert created.status_code == 200 and created.json()["share"] == 0.1
    changed = admin.patch("/api/flags/new-offer/", {"share": 0.4, "segments": {"region": ["north"]}},
                          content_type="application/json")
    assert changed.status_code == 200 and changed.json()["segments"] == {"region": ["north"]}
    assert AuditEvent.objects.filter(action="flag.update", new__share=0.4).exists()
    bad = admin.patch("/api/flags/new-offer/", {"segments": {"tier": ["diamond"]}}, content_type="application/json")
    assert bad.status_code == 400 and "segments.tier" in bad.json()["fields"]
    assert admin.patch("/api/flags/nope/", {"share": 0.1}, content_type="application/json").status_code == 404
    assert [f["name"] for f in admin.get("/api/flags/").json()] == ["new-offer"]


def test_a_routing_rule_behind_a_flag_holds_only_for_flagged_members() -> None:
    policy = replace(PolicyConfig(), phase="expanded", sample_rate=0.0).with_rule(
        "expected_value", enabled=True, threshold=100.0, route="senior")
    n = 4
    items = dict(
        key=[f"1:{i}" for i in range(n)], offer_code=["B500"] * n, offer_cost=[1.0] * n, high_stakes=[False] * n,
        expected_value=[500.0] * n, probability=[0.6] * n, p_low=[0.5] * n, p_high=[0.7] * n,
        tier=["silver"] * n, region=["north"] * n, gender=["f"] * n, age_band=["35-49"] * n, model_psi=[np.nan] * n, model_drift=[False] * n,
    )
    everyone = route_items(RouteInputs(**items), policy=policy)
    assert list(everyone.routes) == ["senior"] * n
    flagged = route_items(RouteInputs(**items, flagged_rules={"expected_value": [True, False, True, False]}),
                          policy=policy)
    assert list(flagged.routes) == ["senior", "auto", "senior", "auto"]
    assert all(r["code"] != "expected_value" for r in flagged.reasons[1])


def test_open_items_carry_the_rule_flags_of_their_members(world, role_users) -> None:
    flag_save(actor=role_users["admin"], name="north-cost-rule", values={
        "kind": "routing_rule", "target": "offer_cost", "enabled": True, "share": 1.0,
        "segments": {"region": ["north"]}})
    items = routable_items_load()
    assert len(items.ids)
    mask = items.inputs.flagged_rules["offer_cost"]
    assert list(mask) == [region == "north" for region in items.inputs.region]


def test_model_rollout_switch_is_admin_only_audited_and_one_canary_at_a_time(world, role_users) -> None:
    first, second = make_model(), make_model()
    manager = _login(role_users, "manager")
    assert manager.post(f"/models/{first.pk}/rollout/", {"mode": "canary", "share": "0.2"}).status_code == 403
    assert manager.post(f"/api/models/{first.pk}/rollout/", {"mode": "shadow"},
                        content_type="application/json").status_code == 403
    first.refresh_from_db()
    assert first.rollout == ""

    admin = _login(role_users, "admin")
    assert admin.post(f"/models/{first.pk}/rollout/", {"mode": "canary", "share": "0.2",
                                                       "tiers": ["gold"]}).status_code == 302
    first.refresh_from_db()
    flag = FeatureFlag.objects.get(name=model_flag_name(first.pk))
    assert (first.rollout, flag.kind, flag.target, flag.share, flag.segments, flag.enabled) == (
        "canary", "model", str(first.pk), 0.2, {"tier": ["gold"]}, True)
    audit = AuditEvent.objects.get(action="model.rollout", object_id=str(first.pk))
    assert (audit.old["rollout"], audit.new["rollout"], audit.actor_id) == ("", "canary", role_users["admin"].pk)

    refused = admin.post(f"/api/models/{second.pk}/rollout/", {"mode": "canary", "share": 0.1},
                         content_type="application/json")
    assert refused.status_code == 400 and f"v{first.pk} is the canary" in refused.json()["fields"]["mode"]
    champion = ModelVersion.objects.get(status="champion")
    with pytest.raises(FlagInvalid, match="only a candidate"):
        model_rollout_set(actor=role_users["admin"], model_version_id=champion.pk, mode="shadow")

    # Off: the canary's flag stops picking members, audited.
    assert admin.post(f"/api/models/{first.pk}/rollout/", {"mode": "off"},
                      content_type="application/json").json() == {"model_version": first.pk, "rollout": "off"}
    assert not FeatureFlag.objects.get(name=model_flag_name(first.pk)).enabled
    assert AuditEvent.objects.filter(action="flag.update", object_id=model_flag_name(first.pk)).exists()

    # Promoting a shadow makes it the champion and ends its rollout.
    model_rollout_set(actor=role_users["admin"], model_version_id=second.pk, mode="shadow")
    promoted = admin.post(f"/api/models/{second.pk}/promote/", {"reason": "shadow looked good"},
                          content_type="application/json")
    assert promoted.status_code == 200 and promoted.json()["rollout"] == ""
    second.refresh_from_db()
    assert (second.status, second.rollout) == ("champion", "")

    # A promoted canary's flag can still be switched off on the flags page.
    model_rollout_set(actor=role_users["admin"], model_version_id=first.pk, mode="canary", share=0.3)
    assert admin.post(f"/api/models/{first.pk}/promote/", {"reason": "canary won"},
                      content_type="application/json").status_code == 200
    switched = admin.patch(f"/api/flags/{model_flag_name(first.pk)}/", {"enabled": False},
                           content_type="application/json")
    assert switched.status_code == 200 and switched.json()["enabled"] is False


def test_schema_documents_the_rollout_endpoints(role_users) -> None:
    paths = _login(role_users, "admin").get("/api/schema/", {"format": "json"}).json()["paths"]
    for path in ("/api/flags/", "/api/flags/{name}/", "/api/models/{id}/rollout/", "/api/models/{id}/comparison/"):
        assert path in paths
    assert "requestBody" in paths["/api/flags/{name}/"]["patch"]
