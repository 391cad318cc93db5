"""``python manage.py tiny_model --project SLUG``: build a tiny GPT-2 (2 layers, a byte-level BPE
tokenizer trained here, nothing downloaded) and register it as a base model version of the project,
through the registry's services, for demos and trials of fine-tune runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from common.errors import DomainError
from governance.models import Project
from governance.permissions import SYSTEM_USERNAME


class Command(BaseCommand):
    help = "Build a tiny GPT-2 locally and register it as a model version of a project."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--project", required=True, help="the project's slug")
        parser.add_argument("--slug", default="tiny-gpt2", help="the model's slug (default tiny-gpt2)")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: Any, project: str, slug: str, seed: int, **options: Any) -> None:
        from registry.models import Model
        from registry.services import model_create, model_version_register_folder
        from registry.tiny_model import build_tiny_gpt2

        found = Project.objects.filter(slug=project).first()
        if found is None:
            raise CommandError(f"no project {project!r}")
        system = get_user_model().objects.get(username=SYSTEM_USERNAME)
        root = Path(settings.TRAINING_WORK_ROOT).resolve()
        folder = build_tiny_gpt2(root / f"tiny-{found.slug}-{slug}-{seed}", seed=seed)
        try:
            model = Model.objects.filter(project=found, slug=slug).first() or model_create(
                actor=system, project=found, slug=slug, name="Tiny GPT-2 (built locally)"
            )
            version, created = model_version_register_folder(
                actor=system, model=model, folder=str(folder), allowed_roots=[root]
            )
        except DomainError as exc:
            raise CommandError(exc.message) from None
        state = "registered" if created else "already registered"
        self.stdout.write(f"{model} v{version.number} {state}: {version.weights_digest}")
