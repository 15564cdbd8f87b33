"""View decorator and DRF permission built on loyalty.roles, so both check the same rule."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from rest_framework.permissions import BasePermission

from loyalty.roles import has_capability


def capability_required(capability: str) -> Callable:
    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @login_required
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not has_capability(request.user, capability):
                raise PermissionDenied(f"Your role may not {capability.replace('_', ' ')}.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def HasCapability(capability: str) -> type[BasePermission]:  # noqa: N802 - reads like a class
    class _Permission(BasePermission):
        message = f"Your role may not {capability.replace('_', ' ')}."

        def has_permission(self, request: HttpRequest, view: Any) -> bool:
            return bool(request.user and has_capability(request.user, capability))

    _Permission.__name__ = f"Has_{capability}"
    return _Permission
