"""Compliance reports from the command line, for a scheduled job or an auditor's script.

``python manage.py report generate KIND --as USER [--project SLUG] [--model-version ID] [--ai-system ID]
[--from DATE] [--to DATE] --out FILE``: request a report as USER (the same permission checks and
ledger entries as the admin and the API), generate and sign it here, and write the PDF. A worker
that claims it first generates it instead; the command then waits for it.

``python manage.py report verify FILE.pdf``: check a report against its signature, the ledger's
checkpoint, the cited entries and the claims they support.

Exit status 0 on success, 1 with the reason otherwise.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

WAIT_FOR_WORKER_S = 600


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a date (YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = "Compliance reports: generate one as a signed PDF, or verify a report PDF."

    def add_arguments(self, parser: CommandParser) -> None:
        from audits.reports.models import ReportKind

        sub = parser.add_subparsers(dest="command", required=True)
        verify = sub.add_parser("verify", help="check a report's signature, checkpoint, cited entries and claims")
        verify.add_argument("file", type=Path)
        generate = sub.add_parser("generate", help="generate and sign a report, write the PDF")
        generate.add_argument("kind", choices=ReportKind.values)
        generate.add_argument("--as", dest="username", required=True, help="the user who asks for it (permissions)")
        generate.add_argument("--project", help="the project's slug (default: the whole organisation)")
        generate.add_argument("--model-version", type=int, help="the model version (annex_iv and dpia)")
        generate.add_argument("--ai-system", type=int, help="the AI system's id (ai_system_annex_iv)")
        generate.add_argument("--from", dest="start", help="first day of the period (default: 30 days ago)")
        generate.add_argument("--to", dest="end", help="last day of the period (default: today)")
        generate.add_argument("--out", type=Path, required=True, help="where to write the signed PDF")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["command"] == "generate":
            self._generate(options)
        else:
            self._verify(options["file"])

    def _verify(self, path: Path) -> None:
        from audits.reports.services import report_verify
        from common.errors import DomainError

        try:
            pdf = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            check = report_verify(pdf, progress=lambda line: self.stdout.write(f"ok  {line}"))
        except DomainError as exc:  # a report-signing setting that cannot be read (the trust anchors)
            raise CommandError(f"{path}: cannot check: {exc.message}") from None
        if not check.ok:
            raise CommandError(f"{path}: FAILED: {check.reason}")
        if check.draft_notice:
            self.stdout.write(self.style.WARNING(f"DRAFT - incomplete: {check.draft_notice}"))
        self.stdout.write(
            self.style.SUCCESS(
                f"{path}: verified: report {check.report_id} ({check.kind}), checkpoint {check.checkpoint_size}, "
                f"{check.cited} cited entries included, {check.claims} claims borne out"
            )
        )

    def _generate(self, options: dict[str, Any]) -> None:
        from django.contrib.auth import get_user_model
        from django.utils import timezone

        from audits.reports.models import ReportRun, ReportState
        from audits.reports.services import report_generate, report_pdf, report_request
        from common.errors import DomainError
        from governance.models import Project
        from registry.models import ModelVersion

        user = get_user_model().objects.filter(username=options["username"], is_active=True).first()
        if user is None:
            raise CommandError(f"--as: no active user {options['username']!r}")
        project = None
        if options["project"]:
            project = Project.objects.filter(slug=options["project"]).first()
            if project is None:
                raise CommandError(f"--project: no project {options['project']!r}")
        model_version = None
        if options["model_version"] is not None:
            model_version = (
                ModelVersion.objects.select_related("model__project").filter(pk=options["model_version"]).first()
            )
            if model_version is None:
                raise CommandError(f"--model-version: no model version {options['model_version']}")
        ai_system = None
        if options.get("ai_system") is not None:
            from systems.models import AISystem

            ai_system = AISystem.objects.select_related("project").filter(pk=options["ai_system"]).first()
            if ai_system is None:
                raise CommandError(f"--ai-system: no AI system {options['ai_system']}")
        end = _date(options["end"]) if options["end"] else timezone.localdate()
        start = _date(options["start"]) if options["start"] else end - dt.timedelta(days=30)
        out: Path = options["out"]
        if not out.parent.is_dir():
            raise CommandError(f"--out: the folder {out.parent} does not exist")
        try:
            run = report_request(
                actor=user, kind=options["kind"], period_start=start, period_end=end, project=project,
                model_version=model_version, ai_system=ai_system,
            )  # fmt: skip
        except DomainError as exc:
            raise CommandError(f"refused: {exc.message}") from None
        self.stdout.write(f"requested report {run.report_id} ({run.kind}) as {user.username}")
        done = report_generate(report_pk=run.pk)
        deadline = time.monotonic() + WAIT_FOR_WORKER_S
        while done is None or done.state in (ReportState.QUEUED, ReportState.RUNNING):
            # A worker claimed it first: it generates it; wait for its outcome.
            if time.monotonic() > deadline:
                raise CommandError(f"report {run.report_id} is still {run.state} after {WAIT_FOR_WORKER_S} s")
            time.sleep(0.5)
            done = ReportRun.objects.get(pk=run.pk)
        if done.state != ReportState.DONE:
            raise CommandError(f"report {run.report_id} failed: {done.error}")
        try:
            out.write_bytes(report_pdf(done))
        except OSError as exc:
            raise CommandError(f"--out: cannot write {out}: {exc.strerror or exc}") from None
        self.stdout.write(
            self.style.SUCCESS(
                f"{out}: report {done.report_id} ({done.kind}), {done.pdf_size} bytes, SHA-256 {done.pdf_sha256}, "
                f"recorded in ledger entry {done.ledger_index}"
            )
        )
