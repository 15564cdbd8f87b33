"""Create the four roles as groups and one demo account per role (for `make demo`)."""

from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand
from django.db import transaction

from loyalty.roles import ADMIN, ALL_ROLES, AUDITOR, MANAGER, SENIOR_MANAGER

DEMO_ACCOUNTS = {
    "manager": (MANAGER, "manager-demo-pass"),
    "senior": (SENIOR_MANAGER, "senior-demo-pass"),
    "admin": (ADMIN, "admin-demo-pass"),
    "auditor": (AUDITOR, "auditor-demo-pass"),
}


class Command(BaseCommand):
    help = "Create role groups and demo accounts (manager, senior, admin, auditor)."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        for role in ALL_ROLES:
            Group.objects.get_or_create(name=role)
        self.stdout.write("Demo accounts (username / password / role):")
        for username, (role, password) in DEMO_ACCOUNTS.items():
            user, _ = User.objects.get_or_create(username=username)
            user.set_password(password)
            user.is_staff = role == ADMIN
            user.is_superuser = role == ADMIN
            user.save()
            user.groups.set([Group.objects.get(name=role)])
            self.stdout.write(f"  {username:8} / {password:18} / {role}")
