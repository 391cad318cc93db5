"""``python manage.py seed_demo [--story]``: governance's demo organisation with its organisation
profile (the facts the reports print, made once through ``organisation_profile_update``), and with
``--story`` one complete lifecycle played in it (``demo/story.py``).

This command replaces governance's ``seed_demo`` (the ``demo`` app comes first in ``INSTALLED_APPS``):
governance sits on a lower floor and may not import the apps the story drives.
"""

from __future__ import annotations

from typing import Any

from governance.management.commands import seed_demo

# A fictitious organisation: every name, address and number is made up (example.org, 555 numbers).
DEMO_PROFILE = {
    "controller_name": "Example Support Services SAS (demo)",
    "controller_address": "1 rue de l'Exemple, 75001 Paris, France",
    "controller_email": "privacy@example.org",
    "controller_phone": "+33 1 55 55 01 00",
    "representative_not_required_reason": "The controller is established in the Union (Art. 27(1) does not apply).",
    "dpo_name": "Data Protection Office",
    "dpo_contact": "dpo@example.org",
    "supervisory_authority_name": "Commission nationale de l'informatique et des libertés (CNIL)",
    "supervisory_authority_address": "3 place de Fontenoy, TSA 80715, 75334 Paris Cedex 07, France",
    "supervisory_authority_website": "https://www.cnil.fr/",
    "security_measures": "Role-based access per project; approvals under separation of duties; an append-only "
    "signed ledger; personal data in the ledger sealed per data subject; content-addressed artifact storage; "
    "second factor for every admin sign-in.",
    "ccpa_request_email": "privacy@example.org",
    "ccpa_request_phone": "+1 800 555 0100",
}


class Command(seed_demo.Command):
    help = seed_demo.Command.help + " With --story, play one complete lifecycle in it (idempotent)."

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--story",
            action="store_true",
            help="also play the demo story: a dataset with planted PII reviewed and approved, a fine-tune, a "
            "scan, a bias evaluation, a deployment, a data-subject request and a report",
        )

    def handle(self, *args: Any, story: bool = False, **options: Any) -> None:
        super().handle(*args, **options)
        self._profile()
        if story:
            from common.errors import DomainError
            from demo.story import StoryError, story_play

            try:
                story_play(out=self.stdout.write)
            except (StoryError, DomainError) as exc:
                # The service is still worth starting: make up goes on, and the next run resumes here.
                reason = getattr(exc, "message", exc)
                self.stderr.write(f"The demo story stopped: {reason}. `manage.py seed_demo --story` resumes it.")

    def _profile(self) -> None:
        """Fill in the demo organisation's profile once; a profile already there (the demo's, or one an
        admin edited) is left as it is, so a second run appends nothing."""
        from django.contrib.auth import get_user_model

        from governance.models import OrganisationProfile
        from governance.permissions import SYSTEM_USERNAME
        from governance.services import organisation_profile_update

        if OrganisationProfile.objects.exists():
            return
        system = get_user_model().objects.get(username=SYSTEM_USERNAME)
        profile = organisation_profile_update(actor=system, **DEMO_PROFILE)
        self.stdout.write(f"Organisation profile of {profile} filled in (ledger #{profile.ledger_index}).")
