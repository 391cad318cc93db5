"""Celery tasks of the data-subject request workflow. They call services as the system account."""

from __future__ import annotations

from datetime import datetime

from celery import shared_task
from django.contrib.auth import get_user_model

from governance.permissions import SYSTEM_USERNAME


@shared_task(name="privacy.flag_deadlines")
def flag_deadlines(now: str | None = None) -> list[int]:
    """Run by beat: flag due-soon and overdue requests and notify their compliance officers.
    ``now`` (ISO 8601, with its offset) pins the clock, for tests and replays."""
    from audits.privacy.services import dsr_deadlines_flag

    system = get_user_model().objects.get(username=SYSTEM_USERNAME)
    return dsr_deadlines_flag(actor=system, now=datetime.fromisoformat(now) if now else None)
