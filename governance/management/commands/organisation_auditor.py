"""python manage.py organisation_auditor grant|revoke USERNAME --reason "...": make someone an
organisation-wide auditor (they read every ledger entry) or end it. Acts as the system account;
the change is written to the ledger (``organisation.auditor_granted`` or ``_revoked``) with the
reason. ``list`` names the organisation-wide auditors."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from common.errors import DomainError
from governance.permissions import SYSTEM_USERNAME
from governance.roles import ORGANISATION_AUDITOR
from governance.services.auditors import organisation_auditor_grant, organisation_auditor_revoke


class Command(BaseCommand):
    help = "Grant or revoke the organisation-wide auditor (reads every ledger entry), or list who holds it."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("what", choices=["grant", "revoke", "list"])
        parser.add_argument("username", nargs="?")
        parser.add_argument("--reason", default="", help="why (kept in the ledger)")

    def handle(self, *args: Any, what: str, username: str | None, reason: str, **options: Any) -> None:
        User = get_user_model()
        if what == "list":
            for name in User.objects.filter(groups__name=ORGANISATION_AUDITOR).order_by("username"):
                self.stdout.write(name.get_username())
            return
        if not username:
            raise CommandError(f"{what} needs a username")
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        service = organisation_auditor_grant if what == "grant" else organisation_auditor_revoke
        try:
            service(actor=User.objects.get(username=SYSTEM_USERNAME), user=user, reason=reason)
        except DomainError as exc:
            raise CommandError(exc.message) from None
        done = "now reads every ledger entry" if what == "grant" else "no longer reads every ledger entry"
        self.stdout.write(f"{username} {done}.")
