"""python manage.py seed_demo: an idempotent demo organisation.

Two projects, one person per role holding that role in both, and a CI service account with an API
token. Passwords and the token are generated, printed once, and kept in a logins file that only the
owner can read (``var/demo-logins.txt`` by default). Running it again creates only what is missing;
a demo user whose login is not in the file gets a new password, so the file is always complete. A role
the person already holds is not granted again: every ``make up`` used to append the same
``project.role_granted`` entries to the ledger. A run that changes nothing appends nothing; every
password it sets is ledgered (``user.password_set``, through ``governance.services.passwords``).

``seed_demo --story`` (the ``demo`` app's command of the same name, which extends this one) also
plays one complete lifecycle through the services: see ``demo/story.py``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from governance.models import Project, ServiceAccount
from governance.permissions import SYSTEM_USERNAME, has_project_role
from governance.roles import Role
from governance.services import api_token_create, project_create, project_role_grant, service_account_create
from governance.services.passwords import user_password_set

User = get_user_model()

DEMO_PROJECTS = [
    ("support-assistant", "Support assistant", "An LLM that drafts answers to customer support tickets."),
    ("claims-triage", "Claims triage", "An LLM that summarises insurance claims for human handlers."),
]
CI_ACCOUNT = "demo-ci"


def _demo_username(role: Role) -> str:
    return f"demo-{role.value.replace('_', '-')}"


def _read_logins(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    logins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#") and "\t" in line:
            name, secret = line.split("\t", 1)
            logins[name] = secret
    return logins


def _write_logins(path: Path, logins: dict[str, str], url: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f"# Demo logins for {url} (username<TAB>password; {CI_ACCOUNT}: API token)\n")
        handle.writelines(f"{name}\t{secret}\n" for name, secret in sorted(logins.items()))
    os.replace(tmp, path)


def _grant_once(system: Any, project: Project, user: Any, role: Role) -> None:
    """Grant ``role`` unless ``user`` already holds it in ``project``: a second run ledgers nothing."""
    if not has_project_role(user, project, role):
        project_role_grant(actor=system, project=project, user=user, role=role, reason="demo organisation")


class Command(BaseCommand):
    help = "Create the demo organisation (idempotent) and write its logins to a file only you can read."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--logins-file", type=Path, default=settings.VAR_DIR / "demo-logins.txt")
        parser.add_argument("--url", default="http://127.0.0.1:8000/admin/")

    def handle(self, *args: Any, logins_file: Path, url: str, **options: Any) -> None:
        system = User.objects.get(username=SYSTEM_USERNAME)
        logins = _read_logins(logins_file)
        created: dict[str, str] = {}
        with transaction.atomic():
            projects = []
            for slug, name, description in DEMO_PROJECTS:
                project = Project.objects.filter(slug=slug).first()
                if project is None:
                    project = project_create(actor=system, slug=slug, name=name, description=description)
                projects.append(project)
            for role in Role:
                username = _demo_username(role)
                user, new = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.org"})
                if username not in logins:
                    password = secrets.token_urlsafe(15)
                    why = "demo login created" if new else f"demo login renewed: it was missing from {logins_file}"
                    user_password_set(actor=system, user=user, password=password, reason=why)
                    created[username] = password
                for project in projects:
                    _grant_once(system, project, user, role)
            account = ServiceAccount.objects.filter(user__username=CI_ACCOUNT).first()
            if account is None:
                account = service_account_create(
                    actor=system, username=CI_ACCOUNT, description="Demo CI pipeline: submits requests, never approves."
                )
            _grant_once(system, projects[0], account.user, Role.ML_ENGINEER)
            if CI_ACCOUNT not in logins:
                _, token = api_token_create(actor=system, user=account.user, name="demo CI token")
                created[CI_ACCOUNT] = token
        if created:
            logins.update(created)
            _write_logins(logins_file, logins, url)
            self.stdout.write("Demo logins created (shown once; also in the file below):")
            for name, secret in sorted(created.items()):
                self.stdout.write(f"  {name:28} {secret}")
        else:
            self.stdout.write("Demo organisation already present; nothing created.")
        self.stdout.write(f"Logins file (mode 600): {logins_file}")
        self.stdout.write(
            "Admin sign-in: the password, then a code from an authenticator app (TOTP). A demo user's first "
            f"sign-in at {url} shows a QR code and the secret to add to the app (or `oathtool --totp -b SECRET`)."
        )
