"""python manage.py backup DIR: a consistent backup of the whole service into a new or empty DIR.

What it holds and how it is taken: ``audits/ledger/backup/``. The ledger's signing key is NOT in
it: keep that key in its own secure storage. Restore with ``python manage.py restore DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audits.ledger.backup import SIGNING_KEY_NOTE, BackupError, service_backup


class Command(BaseCommand):
    help = "Back up the database, artifacts, MLflow store, policies and public keys into a new or empty DIR."
    # A scale deployment's signing key lives in a KMS, not in a file the system check reads.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path, help="a new or empty directory")

    def handle(self, *args: Any, directory: Path, **options: Any) -> None:
        try:
            manifest = service_backup(directory, say=self.stdout.write)
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        ledger = manifest["ledger"]
        latest = ledger["latest_checkpoint"]
        self.stdout.write(
            f"Backed up {len(manifest['files'])} file(s) to {directory} (manifest.json lists each SHA-256); "
            f"ledger tree size {ledger['tree_size']}, latest checkpoint at size "
            f"{latest['tree_size'] if latest else 'none'}."
        )
        for note in manifest["notes"][1:]:
            self.stdout.write(f"note: {note}")
        self.stdout.write(self.style.WARNING(SIGNING_KEY_NOTE))
        self.stdout.write(
            "Keep a copy of the checkpoint log (LEDGER_CHECKPOINT_LOG) off-site, apart from this backup: "
            "`restore --checkpoints` verifies the restored ledger against it."
        )
