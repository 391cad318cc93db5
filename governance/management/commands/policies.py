"""python manage.py policies check: validate every policy file; print the policy-set hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from governance.evidence import known_checks
from governance.policy import PolicyError, load_policy_set
from governance.subjects import subject_actions


class Command(BaseCommand):
    help = "Validate the approval policies (policies check)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", required=True)
        check = sub.add_parser("check", help="validate every policy file and print the policy-set hash")
        check.add_argument("--dir", type=Path, default=None, help="the policy folder (default POLICY_DIR)")

    def handle(self, *args: Any, subcommand: str, dir: Path | None, **options: Any) -> None:
        folder = dir or Path(settings.POLICY_DIR)
        try:
            policies = load_policy_set(folder, known_checks(), set(subject_actions()))
        except PolicyError as exc:
            raise CommandError(str(exc)) from None
        for action, policy in sorted(policies.policies.items()):
            self.stdout.write(f"{policy.file}: {action}, {len(policy.rules)} rule(s)")
        self.stdout.write(f"OK {len(policies.policies)} policies; policy-set hash {policies.hash}")
