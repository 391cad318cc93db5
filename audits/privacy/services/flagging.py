"""Deadline flags of open requests: due soon or overdue, set by a periodic task that tells the
project's compliance officers by mail."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import transaction

from audits.ledger.services import ledger_append
from audits.privacy import deadlines as dl
from audits.privacy.models import OPEN_STATES, DataSubjectRequest, DeadlineFlag
from audits.privacy.services.shared import deadline_payload, now_or, subject
from governance.roles import Role

DUE_SOON = timedelta(days=7)


def deadline_status(request: DataSubjectRequest, now: datetime) -> str:
    """The worst of the request's open deadlines at ``now``: the response, and the confirmation
    of receipt while it is not given."""
    open_deadlines = [request.respond_by]
    if request.confirm_by is not None and request.receipt_confirmed_at is None:
        open_deadlines.append(request.confirm_by)
    return dl.worst_status(open_deadlines, now, soon=DUE_SOON)


def dsr_deadlines_flag(*, actor: Any, now: datetime | None = None) -> list[int]:
    """Flag open requests whose deadline is near (within ``DUE_SOON``) or past, and tell the
    project's compliance officers by mail after commit. Idempotent: a request is flagged and
    notified once per change of its flag (a conditional update claims each change). Returns the
    ids of the requests whose flag changed."""
    now = now_or(now)
    changed = []
    for request in DataSubjectRequest.objects.filter(state__in=OPEN_STATES).select_related("project"):
        flag = deadline_status(request, now)
        if flag == request.deadline_flag:
            continue
        with transaction.atomic():
            claimed = DataSubjectRequest.objects.filter(pk=request.pk, deadline_flag=request.deadline_flag).update(
                deadline_flag=flag, flagged_at=now
            )
            if not claimed:
                continue  # another run flagged it first
            worse = dl.STATUSES.index(DeadlineFlag(flag)) > dl.STATUSES.index(DeadlineFlag(request.deadline_flag))
            request.deadline_flag = flag
            ledger_append(
                actor=actor, action="data_subject_request.deadline_flagged", subject=subject(request),
                payload={"flag": flag, "at": now.isoformat(), **deadline_payload(request)},
            )  # fmt: skip
            if worse and flag != DeadlineFlag.ON_TIME:
                transaction.on_commit(lambda r=request: _notify_officers(r))
        changed.append(request.pk)
    return changed


def _notify_officers(request: DataSubjectRequest) -> None:
    """After commit: mail the compliance officers of the project (no personal data in the mail)."""
    from django.core.mail import send_mail
    from guardian.shortcuts import get_users_with_perms

    holders = get_users_with_perms(request.project, only_with_perms_in=[Role.COMPLIANCE_OFFICER.codename])
    recipients = sorted({u.email for u in holders if u.email})
    if not recipients:
        return
    flag = request.deadline_flag.replace("_", " ")
    send_mail(
        subject=f"Data-subject request #{request.pk} is {flag}",
        message=(
            f"The {request.get_regime_display()} {request.kind} request #{request.pk} in project "
            f"{request.project.slug} ({request.state}) is {flag}.\n"
            f"Respond by: {request.respond_by:%Y-%m-%d %H:%M %Z}\n"
            + (
                f"Confirm receipt by: {request.confirm_by:%Y-%m-%d %H:%M %Z}\n"
                if request.confirm_by and not request.receipt_confirmed_at
                else ""
            )
            + f"/api/v1/privacy/requests/{request.pk}\n"
        ),
        from_email=None,
        recipient_list=recipients,
        fail_silently=True,
    )
