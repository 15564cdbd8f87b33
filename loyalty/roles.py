"""Roles are Django groups. One place says who may do what; views and API both ask here."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

MANAGER = "manager"
SENIOR_MANAGER = "senior_manager"
ADMIN = "admin"
AUDITOR = "auditor"
ALL_ROLES = (MANAGER, SENIOR_MANAGER, ADMIN, AUDITOR)

# What each capability needs. Seniors can do what managers can; admins configure.
CAPABILITIES: dict[str, frozenset[str]] = {
    "view_queue": frozenset({MANAGER, SENIOR_MANAGER, ADMIN, AUDITOR}),
    "decide": frozenset({MANAGER, SENIOR_MANAGER}),
    "decide_escalated": frozenset({SENIOR_MANAGER}),
    "import_data": frozenset({ADMIN}),
    "manage_offers": frozenset({ADMIN}),
    "manage_models": frozenset({ADMIN}),
    "view_models": frozenset({ADMIN, AUDITOR}),
    "manage_policy": frozenset({ADMIN}),
    "view_audit": frozenset({AUDITOR, ADMIN}),
    "export_data": frozenset({ADMIN, AUDITOR}),
    "run_whatif": frozenset({MANAGER, SENIOR_MANAGER, ADMIN}),
    "manage_privacy": frozenset({ADMIN}),
    # Feature flags: who gets a new offer, routing rule or canary model.
    "manage_flags": frozenset({ADMIN}),
}


def user_roles(user: AbstractBaseUser | AnonymousUser) -> set[str]:
    if not user.is_authenticated:
        return set()
    cached = getattr(user, "_loyalty_roles", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        if user.is_superuser:
            cached |= {ADMIN}
        user._loyalty_roles = cached
    return cached


def has_capability(user: AbstractBaseUser | AnonymousUser, capability: str) -> bool:
    return bool(user_roles(user) & CAPABILITIES[capability])
