"""Celery tasks of the incident register. They call services as the system account."""

from __future__ import annotations

from datetime import datetime

from celery import shared_task
from django.contrib.auth import get_user_model

from governance.permissions import SYSTEM_USERNAME


@shared_task(name="incidents.check_clocks")
def check_clocks(now: str | None = None) -> dict[str, list[int]]:
    """Run by beat: remind at half the Art. 73 clock, record once that a deadline passed
    unreported, and mail the compliance officers. ``now`` (ISO 8601, with its offset) pins the
    clock, for tests and replays. Idempotent: a second run records nothing new."""
    from incidents.services import incident_clocks_check

    system = get_user_model().objects.get(username=SYSTEM_USERNAME)
    return incident_clocks_check(actor=system, now=datetime.fromisoformat(now) if now else None)
