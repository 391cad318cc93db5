"""``python manage.py report verify FILE.pdf``: check a report against the signature and the ledger.

Exit status 0 when every check passes, 1 with the reason otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Compliance reports: verify a report PDF."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="command", required=True)
        verify = sub.add_parser("verify", help="check a report's signature, checkpoint and cited entries")
        verify.add_argument("file", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        from audits.reports.services import report_verify

        path: Path = options["file"]
        try:
            pdf = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
        check = report_verify(pdf, progress=lambda line: self.stdout.write(f"ok  {line}"))
        if not check.ok:
            raise CommandError(f"{path}: FAILED: {check.reason}")
        self.stdout.write(
            self.style.SUCCESS(
                f"{path}: verified: report {check.report_id} ({check.kind}), checkpoint {check.checkpoint_size}, "
                f"{check.cited} cited entries included"
            )
        )
