"""python manage.py mfa_reset USERNAME --reason "...": remove a user's second-factor devices (a lost
phone). Their next admin sign-in enrols a new authenticator. Acts as the system account; the
reset is written to the ledger (``mfa.reset``) with the reason."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from common.errors import DomainError
from governance.mfa import staff_mfa_reset
from governance.permissions import SYSTEM_USERNAME


class Command(BaseCommand):
    help = "Remove a user's second-factor devices; their next admin sign-in enrols a new authenticator."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument("--reason", required=True, help="why (kept in the ledger)")

    def handle(self, *args: Any, username: str, reason: str, **options: Any) -> None:
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        try:
            removed = staff_mfa_reset(actor=User.objects.get(username=SYSTEM_USERNAME), user=user, reason=reason)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"{username}: {removed} device(s) removed; the next sign-in enrols a new authenticator.")
