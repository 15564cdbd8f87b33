"""Every URL the project serves × every role (and anonymous): allowed or forbidden, as ruled here.

The endpoints are read from the URL resolver, so a new endpoint without a rule in RULES fails
`test_every_endpoint_has_a_rule`, and its rule is then walked like all the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from governance.models import AuditEvent
from loyalty.roles import ADMIN, ALL_ROLES, AUDITOR, CAPABILITIES, MANAGER, SENIOR_MANAGER
from recommendations.decisions import decision_record
from tests.desk.factories import World

ANON = "anonymous"
EVERYONE = frozenset({*ALL_ROLES, ANON})
SIGNED_IN = frozenset(ALL_ROLES)
NOBODY: frozenset[str] = frozenset()


def cap(name: str) -> frozenset[str]:
    return CAPABILITIES[name]


@dataclass(frozen=True)
class Call:
    method: str
    allowed: frozenset[str]
    kwargs: Callable[[dict], dict] = lambda objs: {}
    data: dict = field(default_factory=dict)
    json: bool = False


REC = lambda o: {"pk": o["rec"]}  # noqa: E731 - table entries read better inline
OFFER = lambda o: {"code": o["offer"]}  # noqa: E731
NOBODY_MEMBER = lambda o: {"member_id": "NOBODY"}  # noqa: E731
NO_SCENARIO = lambda o: {"pk": 0}  # noqa: E731

RULES: dict[str, list[Call]] = {
    "home": [Call("get", cap("view_queue"))],
    "desk-detail": [Call("get", cap("view_queue"), REC)],
    "desk-decide": [Call("post", cap("decide"), REC)],
    "desk-bulk-approve": [Call("post", cap("decide"))],
    "desk-undo": [Call("post", cap("decide"), lambda o: {"decision_id": o["decision"]})],
    "login": [Call("get", EVERYONE)],
    "logout": [Call("post", EVERYONE)],
    "healthz": [Call("get", EVERYONE)],
    "offers": [Call("get", cap("manage_offers"))],
    "offer-new": [Call("get", cap("manage_offers"))],
    "offer-edit": [Call("get", cap("manage_offers"), OFFER)],
    "audit": [Call("get", cap("view_audit"))],
    "audit-export": [Call("get", cap("view_audit"))],
    "privacy-erasure": [Call("get", cap("manage_privacy")), Call("post", cap("manage_privacy"))],
    "api-import": [Call("post", cap("import_data"), lambda o: {"kind": "members"})],
    "api-offers": [Call("get", cap("view_queue"))],
    "api-offer": [
        Call("get", cap("view_queue"), OFFER),
        Call("patch", cap("manage_offers"), OFFER, {"active": True}, json=True),
    ],
    "api-recommendations": [Call("get", cap("view_queue"))],
    "api-recommendations-bulk": [Call("post", cap("decide"), data={"ids": []}, json=True)],
    "api-recommendation": [Call("get", cap("view_queue"), REC)],
    "api-recommendation-decide": [Call("post", cap("decide"), REC, {"action": "bogus"}, json=True)],
    "api-recommendation-claim": [Call("post", cap("decide"), REC), Call("delete", cap("decide"), REC)],
    "api-recommendations-presence": [Call("get", cap("view_queue"))],
    "api-recommendations-export": [Call("get", cap("export_data"))],
    "api-decision-undo": [Call("post", cap("decide"), lambda o: {"pk": o["decision"]})],
    "api-runs": [Call("get", cap("view_queue"))],
    "api-run": [Call("get", cap("view_queue"), lambda o: {"pk": o["run"]})],
    "api-models": [Call("get", cap("view_queue"))],
    "api-model": [Call("get", cap("view_queue"), lambda o: {"pk": o["model"]})],
    "api-models-retrain": [Call("post", cap("manage_models"))],
    "api-model-promote": [Call("post", cap("manage_models"), lambda o: {"pk": o["model"]})],
    "api-model-rollback": [Call("post", cap("manage_models"), lambda o: {"pk": o["model"]})],
    "api-learning-settings": [Call("get", cap("manage_models")), Call("patch", cap("manage_models"))],
    "api-run-outcomes": [Call("get", cap("view_queue"), lambda o: {"pk": o["run"]})],
    "api-run-export": [Call("get", cap("export_data"), lambda o: {"pk": o["run"]})],
    "api-feedback-export": [Call("get", cap("export_data"))],
    "api-model-artifact": [Call("get", cap("export_data"), lambda o: {"pk": o["model"]})],
    "api-privacy-erasure": [Call("post", cap("manage_privacy"), data={}, json=True)],
    # Escalation policy: admins only. Empty bodies are invalid, so nothing is saved here.
    "governance-policy": [Call("get", cap("manage_policy")), Call("post", cap("manage_policy"))],
    "governance-policy-preview": [Call("post", cap("manage_policy"))],
    "api-policy": [
        Call("get", cap("manage_policy")),
        Call("post", cap("manage_policy"), data={}, json=True),
    ],
    "api-policy-versions": [Call("get", cap("manage_policy"))],
    "api-policy-preview": [Call("post", cap("manage_policy"), data={}, json=True)],
    # Models page: admins and auditors read it; only admins act. Model/alert 0 does not exist,
    # so allowed calls answer 404 or a redirect and enqueue nothing.
    "models": [Call("get", cap("view_models"))],
    "models-thresholds": [Call("post", cap("manage_models"))],
    "models-fairness": [Call("post", cap("manage_models"), lambda o: {"pk": 0})],
    "models-tradeoff": [Call("post", cap("manage_models"), lambda o: {"pk": 0})],
    "models-drift": [Call("post", cap("manage_models"), lambda o: {"pk": 0})],
    "models-alert-close": [Call("post", cap("manage_models"), lambda o: {"pk": 0})],
    # Controlled rollout: flags and the shadow/canary switch are admins'; the comparison is
    # read by whoever reads the models page. Flag "nope" and model 0 do not exist (404).
    "rollout-flags": [Call("get", cap("manage_flags")), Call("post", cap("manage_flags"))],
    "models-rollout": [Call("post", cap("manage_models"), lambda o: {"pk": 0})],
    "api-flags": [Call("get", cap("manage_flags")), Call("post", cap("manage_flags"), data={}, json=True)],
    "api-flag": [
        Call("get", cap("manage_flags"), lambda o: {"name": "nope"}),
        Call("patch", cap("manage_flags"), lambda o: {"name": "nope"}, {"share": 0.5}, json=True),
    ],
    "api-model-rollout": [Call("post", cap("manage_models"), lambda o: {"pk": 0}, {"mode": "off"}, json=True)],
    "api-model-comparison": [Call("get", cap("view_models"), lambda o: {"pk": o["model"]})],
    # What-if: managers, seniors and admins. Unknown members and scenarios, and empty bodies,
    # answer 404/400 (or a redirect with a message) to those allowed: nothing is scored or saved.
    "whatif-home": [Call("get", cap("run_whatif"))],
    "whatif-member": [Call("get", cap("run_whatif"), NOBODY_MEMBER)],
    "whatif-evaluate": [Call("post", cap("run_whatif"), NOBODY_MEMBER, {"changes": {}}, json=True)],
    "whatif-save": [Call("post", cap("run_whatif"), NOBODY_MEMBER)],
    "whatif-segment-start": [Call("post", cap("run_whatif"))],
    "whatif-scenario": [Call("get", cap("run_whatif"), NO_SCENARIO)],
    "whatif-scenario-status": [Call("get", cap("run_whatif"), NO_SCENARIO)],
    "whatif-compare": [Call("get", cap("run_whatif"))],
    "api-whatif": [Call("post", cap("run_whatif"), data={}, json=True)],
    "api-whatif-segments": [Call("post", cap("run_whatif"), data={}, json=True)],
    "api-whatif-scenario": [Call("get", cap("run_whatif"), NO_SCENARIO)],
    "api-schema": [Call("get", SIGNED_IN)],
    "api-docs": [Call("get", SIGNED_IN)],
    # Django's admin site is one unit, gated by is_staff (no role grants it): its index stands
    # for all of its pages.
    "admin:*": [Call("get", NOBODY, lambda o: {}, data={"_name": "admin:index"})],
}


def _patterns(resolver: URLResolver, namespace: str = "") -> Iterator[tuple[str, str]]:
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            ns = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from _patterns(entry, ns)
        elif isinstance(entry, URLPattern):
            yield f"{namespace}{entry.name or ''}", str(entry.pattern)


def _rule_key(name: str) -> str:
    return "admin:*" if name.startswith("admin:") else name


def test_every_endpoint_has_a_rule() -> None:
    served = list(_patterns(get_resolver()))
    unnamed = [route for name, route in served if _rule_key(name) != "admin:*" and not name]
    assert not unnamed, f"name these URL patterns so the matrix can rule on them: {unnamed}"
    keys = {_rule_key(name) for name, _ in served}
    missing = sorted(keys - set(RULES))
    assert not missing, f"endpoints without a role rule in RULES: {missing}"
    stale = sorted(set(RULES) - keys)
    assert not stale, f"rules for endpoints that no longer exist: {stale}"


@pytest.fixture
def objects(world: World, role_users: dict) -> dict[str, Any]:
    # Only the decider may undo a decision (a business rule answered with 403 too), so each
    # deciding role gets a decision of its own to undo.
    own = {
        MANAGER: decision_record(recommendation_id=world.recs["mid"].pk, actor=role_users[MANAGER], action="approve"),
        SENIOR_MANAGER: decision_record(
            recommendation_id=world.recs["low"].pk, actor=role_users[SENIOR_MANAGER], action="approve"
        ),
    }
    return {
        "own_decision": {who: d.pk for who, d in own.items()},
        "rec": world.recs["top"].pk,
        "offer": world.bonus.code,
        "run": world.run.pk,
        "model": world.model.pk,
        "decision": own[MANAGER].pk,
    }


def _is_login_redirect(response) -> bool:
    return response.status_code == 302 and response["Location"].startswith(
        (reverse("login"), reverse("admin:login"))
    )


def _denied(who: str, response) -> bool:
    if who == ANON:
        return response.status_code in (401, 403) or _is_login_redirect(response)
    return response.status_code == 403 or (_is_login_redirect(response) and "admin" in response["Location"])


CASES = [(key, i, who) for key, calls in RULES.items() for i in range(len(calls)) for who in sorted(EVERYONE)]


@pytest.mark.parametrize(("key", "index", "who"), CASES, ids=[f"{k}-{i}-{w}" for k, i, w in CASES])
def test_role_matrix(key: str, index: int, who: str, objects: dict, role_users: dict) -> None:
    call = RULES[key][index]
    data = dict(call.data)
    url_name = data.pop("_name", key)
    client = Client()
    if who != ANON:
        client.force_login(role_users[who])
    objs = {**objects, "decision": objects["own_decision"].get(who, objects["decision"])}
    url = reverse(url_name, kwargs=call.kwargs(objs))
    send = getattr(client, call.method)
    response = send(url, data=data, content_type="application/json") if call.json else send(url, data=data)
    if hasattr(response, "streaming_content"):
        b"".join(response.streaming_content)
    assert response.status_code < 500, response
    if call.allowed == EVERYONE:
        # Public pages answer everyone (logout's answer is a redirect to the login page).
        assert response.status_code < 400, f"{call.method.upper()} {url}: {response.status_code}"
    elif who in call.allowed:
        assert not _denied(who, response), f"{who} should reach {call.method.upper()} {url}: {response.status_code}"
    else:
        assert _denied(who, response), f"{who} must not reach {call.method.upper()} {url}: {response.status_code}"


def test_every_role_is_somewhere_allowed_and_somewhere_denied() -> None:
    """The matrix is not trivially all-open or all-closed for any role."""
    for role in (MANAGER, SENIOR_MANAGER, ADMIN, AUDITOR):
        allowed = [k for k, calls in RULES.items() for c in calls if role in c.allowed]
        denied = [k for k, calls in RULES.items() for c in calls if role not in c.allowed]
        assert allowed and denied, role


def _login(client: Client, username: str, password: str):
    return client.post(reverse("login"), {"username": username, "password": password})


def test_login_form_locks_out_after_failure_limit(role_users: dict) -> None:
    limit = settings.AXES_FAILURE_LIMIT
    client = Client()
    for _ in range(limit):
        response = _login(client, MANAGER, "wrong-password")
        assert "_auth_user_id" not in client.session
    # Now even the right password is refused, through the same form.
    response = _login(client, MANAGER, f"pw-{MANAGER}")
    assert response.status_code in (403, 429)
    assert "_auth_user_id" not in client.session
    assert client.get(reverse("home")).status_code == 302
    failed = AuditEvent.objects.filter(action="auth.login_failed", new__username=MANAGER)
    assert failed.count() >= limit
    assert not AuditEvent.objects.filter(action="auth.login").exists()


def test_login_below_failure_limit_still_works_and_is_audited(role_users: dict) -> None:
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, AUDITOR, "wrong-password")
    response = _login(client, AUDITOR, f"pw-{AUDITOR}")
    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert client.get(reverse("home")).status_code == 200
    login = AuditEvent.objects.get(action="auth.login")
    assert login.actor == role_users[AUDITOR] and login.ip == "127.0.0.1"


def test_session_expiry_slides_without_a_write_per_request(role_users: dict, settings) -> None:
    client = Client()
    _login(client, MANAGER, f"pw-{MANAGER}")
    client.get(reverse("home"))
    key = client.session.session_key
    old_expiry = timezone.now() + timedelta(hours=1)  # as if saved long ago
    Session.objects.filter(pk=key).update(expire_date=old_expiry)
    client.get(reverse("home"))  # within SESSION_REFRESH_SECONDS of the last save: no write
    assert Session.objects.get(pk=key).expire_date == old_expiry
    settings.SESSION_REFRESH_SECONDS = 0  # the refresh interval has passed: the next request saves
    client.get(reverse("home"))
    expected = timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE)
    assert abs((Session.objects.get(pk=key).expire_date - expected).total_seconds()) < 60


def test_expired_session_is_sent_to_login(role_users: dict) -> None:
    client = Client()
    _login(client, MANAGER, f"pw-{MANAGER}")
    assert client.get(reverse("home")).status_code == 200
    session = Session.objects.get(session_key=client.session.session_key)
    expected = timezone.now() + timedelta(seconds=settings.SESSION_COOKIE_AGE)
    assert abs((session.expire_date - expected).total_seconds()) < 60
    # The session outlives SESSION_COOKIE_AGE: move its expiry into the past.
    Session.objects.filter(pk=session.pk).update(expire_date=timezone.now() - timedelta(seconds=1))
    response = client.get(reverse("home"))
    assert _is_login_redirect(response)
    assert client.get(reverse("api-recommendations")).status_code in (401, 403)
