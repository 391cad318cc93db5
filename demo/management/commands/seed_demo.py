"""``python manage.py seed_demo [--story]``: governance's demo organisation, and with ``--story`` one
complete lifecycle played in it (``demo/story.py``).

This command replaces governance's ``seed_demo`` (the ``demo`` app comes first in ``INSTALLED_APPS``):
governance sits on a lower floor and may not import the apps the story drives.
"""

from __future__ import annotations

from typing import Any

from governance.management.commands import seed_demo


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
        if story:
            from common.errors import DomainError
            from demo.story import StoryError, story_play

            try:
                story_play(out=self.stdout.write)
            except (StoryError, DomainError) as exc:
                # The service is still worth starting: make up goes on, and the next run resumes here.
                reason = getattr(exc, "message", exc)
                self.stderr.write(f"The demo story stopped: {reason}. `manage.py seed_demo --story` resumes it.")
