"""An incident's clock through the real worker: a serious incident the provider became aware of
16 days ago (a 15-day clock, Art. 73(2)) is recorded overdue once by ``incidents.check_clocks``
running in a real Celery worker, its compliance officer is mailed (the worker's console mail
backend writes to its log), and a second run does nothing."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from audits.ledger.models import Entry
from incidents.models import Incident
from incidents.services import incident_classify, incident_register
from incidents.tasks import check_clocks

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def _worker_logs_mentioning(text: str) -> list[str]:
    logs = Path(os.environ["GOV_VAR_DIR"]).glob("worker-*.log")
    return [line for log in logs for line in log.read_text(errors="replace").splitlines() if text in line]


def test_the_worker_records_an_overdue_incident_once(
    people: dict[str, Any], celery_worker_process: subprocess.Popen[bytes]
) -> None:
    officer = people["compliance_officer"]
    officer.email = "dpo@example.org"
    officer.save()
    incident = incident_register(
        actor=people["ml_engineer"], project=people["project"], title="Wrong dosage advice",
        description="The assistant told a patient to double a dose.", aware_at=timezone.now() - timedelta(days=16),
    )  # fmt: skip
    incident = incident_classify(actor=officer, incident=incident, serious=True, serious_kind="health")
    assert incident.report_due_at < timezone.now()

    assert check_clocks.delay().get(timeout=60) == {"reminded": [], "overdue": [incident.pk]}
    incident.refresh_from_db()
    assert incident.overdue_recorded_at is not None
    [entry] = Entry.objects.filter(action="incident.overdue", subject_id=str(incident.pk))
    assert entry.actor_name == "system"
    subject = f"Incident assistant/{incident.reference} is OVERDUE for its report"
    deadline = time.monotonic() + 30
    while not _worker_logs_mentioning(subject):
        assert time.monotonic() < deadline, "the worker's mail did not reach its log"
        time.sleep(0.2)
    assert not _worker_logs_mentioning("double a dose")  # the mail names the incident, never its text

    assert check_clocks.delay().get(timeout=60) == {"reminded": [], "overdue": []}
    assert Entry.objects.filter(action="incident.overdue").count() == 1
    assert Incident.objects.get(pk=incident.pk).overdue_recorded_at == incident.overdue_recorded_at
