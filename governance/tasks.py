"""Celery tasks of governance."""

from __future__ import annotations

from celery import shared_task
from django.contrib.auth import get_user_model

from governance.permissions import SYSTEM_USERNAME


@shared_task(name="governance.expire_approvals")
def expire_approvals() -> int:
    """Run by beat: close pending approval requests past their expiry."""
    from governance.services import approval_requests_expire_due

    return approval_requests_expire_due(actor=get_user_model().objects.get(username=SYSTEM_USERNAME))
