"""Sign-ins, failed sign-ins and sign-outs go to the audit trail (connected in apps.ready)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.http import HttpRequest

from governance.audit import audit_log


def _ip(request: HttpRequest | None) -> str | None:
    return request.META.get("REMOTE_ADDR") if request is not None else None


def on_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    with transaction.atomic():
        audit_log(actor=user, action="auth.login", object_type="user", object_id=user.pk, ip=_ip(request))


def on_logout(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is None:
        return
    with transaction.atomic():
        audit_log(actor=user, action="auth.logout", object_type="user", object_id=user.pk, ip=_ip(request))


def on_login_failed(sender: Any, credentials: dict, request: HttpRequest | None = None, **kwargs: Any) -> None:
    # Django already masks the password in `credentials`; only the username is kept.
    username = str(credentials.get("username", ""))[:150]
    with transaction.atomic():
        audit_log(actor=None, action="auth.login_failed", object_type="user", new={"username": username},
                  ip=_ip(request))


def connect() -> None:
    user_logged_in.connect(on_login, dispatch_uid="governance.audit.login")
    user_logged_out.connect(on_logout, dispatch_uid="governance.audit.logout")
    user_login_failed.connect(on_login_failed, dispatch_uid="governance.audit.login_failed")
