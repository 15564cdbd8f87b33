"""Content security policy: every page each role can open carries it, and no page relies on
inline script or inline event handlers (which the policy would block in the browser).

The pages come from the role matrix (tests/governance/test_roles_matrix.py): every GET rule,
walked as every role it allows, plus the login page anonymously.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from loyalty.roles import ALL_ROLES
from tests.governance.test_roles_matrix import RULES, objects  # noqa: F401 - `objects` is a fixture

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"<[a-z][^>]*\s(on[a-z]+|hx-on[:\w-]*)\s*=", re.IGNORECASE)
JS_URL = re.compile(r"""(href|src|action)\s*=\s*["']\s*javascript:""", re.IGNORECASE)

PAGES = sorted(
    key for key, calls in RULES.items()
    if not key.startswith(("api-", "admin")) and any(call.method == "get" for call in calls)
)


def _directives(header: str) -> dict[str, list[str]]:
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


@pytest.mark.parametrize("role", [*ALL_ROLES, "anonymous"])
def test_every_page_has_the_policy_and_no_inline_script(role: str, objects: dict, role_users: dict) -> None:  # noqa: F811
    client = Client()
    if role != "anonymous":
        client.force_login(role_users[role])
    checked = []
    for key in PAGES:
        call = next(call for call in RULES[key] if call.method == "get")
        if role not in call.allowed and not (role == "anonymous" and key == "login"):
            continue
        objs = {**objects, "decision": objects["own_decision"].get(role, objects["decision"])}
        url = reverse(key, kwargs=call.kwargs(objs))
        response = client.get(url)
        policy = _directives(response.get("Content-Security-Policy", ""))
        assert policy.get("script-src") and "'self'" in policy["script-src"], (url, policy)
        assert "'unsafe-inline'" not in policy["script-src"], url
        assert policy.get("default-src") == ["'self'"] and policy.get("frame-ancestors") == ["'none'"], url
        if response.status_code == 200 and response["Content-Type"].startswith("text/html"):
            html = response.content.decode()
            assert not INLINE_SCRIPT.findall(html), (url, INLINE_SCRIPT.findall(html)[:3])
            assert not INLINE_HANDLER.findall(html), (url, INLINE_HANDLER.findall(html)[:3])
            assert not JS_URL.findall(html), url
            checked.append(key)
    # The walk really rendered pages for this role (a broken fixture would check nothing).
    assert checked, role
    if role != "anonymous":
        assert "home" in checked or role not in RULES["home"][0].allowed
