"""python manage.py restore DIR [--checkpoints FILE] [--trust-keys FILE] [--force] [--accept-loss-after-backup]

Restores a backup made by ``manage.py backup`` onto this machine's configured stores (stop the
service first) and verifies the restored ledger against ``FILE``: the checkpoint log kept
off-site, the trust anchor (default: the backup's own copy, which proves less; a warning says so).
Checkpoints count only under the keys this machine trusts (``LEDGER_TRUSTED_KEYS_FILE`` and the
signing key's public half) or those named by ``--trust-keys``. The erasure journal
(``LEDGER_ERASURE_JOURNAL``) is re-applied before the database lands.
Exit status 0 when everything was restored and verified, 1 otherwise (the message names the
file or step). Details: ``audits/ledger/backup/``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from audits.ledger.backup import BackupError, service_restore


class Command(BaseCommand):
    help = "Restore a backup onto a clean machine and verify its ledger against off-site checkpoints."
    # The signing key is restored from its own storage, possibly after this; a missing key is a warning.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path, help="a directory written by `manage.py backup`")
        parser.add_argument(
            "--checkpoints", type=Path, default=None,
            help="the checkpoint log kept off-site (JSON lines as LEDGER_CHECKPOINT_LOG); default: the backup's copy",
        )  # fmt: skip
        parser.add_argument(
            "--trust-keys", type=Path, default=None,
            help="verifier keys (one a line) to trust besides this machine's: for a backup signed by keys this "
            "machine was not told about; added to LEDGER_TRUSTED_KEYS_FILE once the restore succeeds",
        )  # fmt: skip
        parser.add_argument("--force", action="store_true", help="replace a database and stores that hold data")
        parser.add_argument(
            "--accept-loss-after-backup", action="store_true",
            help="restore even though the off-site checkpoints cover entries signed after this backup (they are lost)",
        )  # fmt: skip

    def handle(self, *args: Any, directory: Path, checkpoints: Path | None, force: bool, **options: Any) -> None:
        try:
            result = service_restore(
                directory, checkpoints=checkpoints, force=force, accept_loss=options["accept_loss_after_backup"],
                say=self.stdout.write, trust_keys=options["trust_keys"],
            )  # fmt: skip
        except BackupError as exc:
            self.stderr.write(f"restore FAILED: {exc}")
            sys.exit(1)
        if result.erasures_reapplied:
            self.stdout.write(
                f"erasures re-applied from the journal: {len(result.erasures_reapplied)} data subject key(s) "
                "that the backup brought back were destroyed again"
            )
        for warning in result.warnings:
            self.stderr.write(f"warning: {warning}")
        self.stdout.write(
            f"OK restored and verified: {result.tree_size} ledger entries, {result.checkpoints_checked} checkpoint "
            f"signatures and every consistency step; the off-site checkpoints vouch for entries "
            f"0..{result.anchored_up_to - 1}."
        )
