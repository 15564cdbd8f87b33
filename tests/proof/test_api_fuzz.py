"""Schemathesis against the OpenAPI schema (drf-spectacular, /api/schema/) on the WSGI app.

Every operation gets generated valid and invalid requests (positive and negative modes) from
a user holding every role; schemathesis' checks run: no 5xx, status codes, content types,
headers and bodies as documented, invalid input refused, credentials enforced (the request
is replayed without them and with invalid ones). One check is left out:
positive_data_acceptance, which expects every schema-valid request to succeed; rules JSON
Schema cannot state (an opaque page cursor, "member_id or features", a policy's hours above
zero) answer a documented 400 with the field named. A second pass sends each operation with
no credentials: it must be refused. The stateful test follows the schema's links.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.contrib.auth.models import Group, User
from django.urls import Resolver404, resolve
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.specs.openapi.checks import positive_data_acceptance

from loyalty.roles import ALL_ROLES

MAX_EXAMPLES = 5
# The fuzzing user's token: fixed, so schemathesis' auth provider below can cache it.
TOKEN = "f" * 40


@pytest.fixture
def api_token(db) -> str:
    user = User.objects.create_user(username="fuzzer", password="x" * 20)
    user.groups.set([Group.objects.get_or_create(name=role)[0] for role in ALL_ROLES])
    return Token.objects.create(user=user, key=TOKEN).key


@pytest.fixture
def in_test_transaction():
    """The WSGI app runs inside the test's transaction: keep Django from closing the
    connection at each request's start and end, as django.test.Client does."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _load_schema():
    """The schema the API serves at /api/schema/, generated the same way (no request needed)."""
    from drf_spectacular.generators import SchemaGenerator

    from loyalty.wsgi import application

    loaded = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
    loaded.app = application  # requests go through the WSGI app in-process
    # Credentials are the test's (a token, or none): generated ones would only be noise.
    # Deterministic: the same examples every run, so a failure is a finding, never a flake.
    loaded.config.generation.update(modes=["positive", "negative"], max_examples=MAX_EXAMPLES,
                                     with_security_parameters=False, deterministic=True)
    return loaded


schema = _load_schema()
anonymous_schema = _load_schema()  # no auth provider: requests carry no credentials


@schema.auth()
class FuzzerToken:
    """Credentials schemathesis knows are explicit: its auth check replays each request
    without them and with invalid ones, and expects 401/403."""

    def get(self, case, context) -> str:  # noqa: ANN001 - schemathesis' auth provider protocol
        return TOKEN

    def set(self, case, data: str, context) -> None:  # noqa: ANN001
        case.headers = {**(case.headers or {}), "Authorization": f"Token {data}"}


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_api_conforms_to_its_schema_and_refuses_bad_input(case, api_token, world, in_test_transaction) -> None:
    case.call_and_validate(excluded_checks=[positive_data_acceptance])


@anonymous_schema.parametrize()
@settings(max_examples=2, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_every_operation_refuses_anonymous_callers(case, db, in_test_transaction) -> None:
    response = case.call()
    url = case.formatted_path
    try:
        resolve(url)
    except Resolver404:
        # A generated path parameter no route accepts (/api/runs/abc/): no view, nothing to guard.
        assert response.status_code == 404, (case.method, url, response.status_code)
        return
    assert response.status_code in (401, 403), (case.method, url, response.status_code)


def test_stateful_sequences_keep_every_answer_documented(world, api_token, in_test_transaction) -> None:
    """Chains of calls along the links schemathesis infers (a listed id fed to its detail,
    decide and undo operations ...), every response checked as above."""

    class Machine(schema.as_state_machine()):
        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:  # noqa: ANN001
            case.validate_response(response, additional_checks=additional_checks,
                                   excluded_checks=[positive_data_acceptance], transport_kwargs=kwargs or None)

    Machine.run(settings=settings(max_examples=10, stateful_step_count=6, deadline=None, derandomize=True,
                                  suppress_health_check=list(HealthCheck)))
