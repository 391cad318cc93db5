"""A report through the real worker and the compliance officer's admin pages: generate from the
admin form, follow the progress in the list, download the PDF; an auditor fetches it through the
API; ``report verify`` passes on what was downloaded."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from audits.reports.models import ReportRun, ReportState
from common.testing import admin_login

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_generate_in_the_admin_on_the_worker_and_download(
    people: dict[str, Any], celery_worker_process: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    officer = Client()
    admin_login(officer, people["compliance_officer"])
    form = officer.get("/admin/reports/reportrun/generate/")
    assert form.status_code == 200 and b"Generate a report" in form.content
    today = timezone.now().date()
    bad = officer.post("/admin/reports/reportrun/generate/", {
        "kind": "governance_audit", "project": people["project"].pk, "period_start": today.isoformat(),
        "period_end": today.replace(year=today.year - 1).isoformat(),
    })  # fmt: skip
    assert bad.status_code == 200 and b"before it starts" in bad.content and not ReportRun.objects.exists()
    sent = officer.post("/admin/reports/reportrun/generate/", {
        "kind": "governance_audit", "project": people["project"].pk,
        "period_start": today.replace(day=1).isoformat(), "period_end": today.isoformat(),
    })  # fmt: skip
    assert sent.status_code == 302
    run = ReportRun.objects.get()
    deadline = time.monotonic() + 120
    while run.state in (ReportState.QUEUED, ReportState.RUNNING):
        assert time.monotonic() < deadline, f"report still {run.state} at {run.progress}% ({run.step})"
        time.sleep(0.5)
        run.refresh_from_db()
    assert run.state == ReportState.DONE, run.error
    listing = officer.get("/admin/reports/reportrun/")
    assert b'value="100"' in listing.content and b"report-download" in listing.content
    downloaded = officer.get(f"/admin/reports/reportrun/{run.pk}/pdf/")
    assert downloaded.status_code == 200 and downloaded["Content-Type"] == "application/pdf"
    pdf = b"".join(downloaded.streaming_content)

    auditor = Client()
    admin_login(auditor, people["auditor"])
    fetched = auditor.get(f"/api/v1/reports/{run.pk}/pdf")
    assert fetched.status_code == 200 and b"".join(fetched.streaming_content) == pdf
    assert auditor.get("/api/v1/reports/").json()["results"][0]["pdf_sha256"] == run.pdf_sha256

    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    out = io.StringIO()
    call_command("report", "verify", str(path), stdout=out)
    assert "verified" in out.getvalue()
