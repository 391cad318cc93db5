"""Supervising the servers the worker started: which process is a deployment's server (never a
stranger that reuses its pid), stopping it, and recording live deployments whose server stopped."""

from __future__ import annotations

import os
import signal
from typing import Any

from django.db import transaction
from django.utils import timezone

from audits.ledger.services import ledger_append
from serving.models import Deployment, DeploymentState
from serving.rules import RUNNING_STATES, deployment_subject
from serving.selectors import deployment_folder, system_account


def _server_process(deployment: Deployment) -> Any:
    """The deployment's server process, or ``None``: only while the deployment is starting or live,
    and only if the process at ``pid`` is still the server started for it (its command line names
    the deployment's grant file). A pid left from a server that exited may since belong to any
    other process, which must never be signalled."""
    import psutil

    if not deployment.pid or deployment.state not in RUNNING_STATES:
        return None
    try:
        proc = psutil.Process(deployment.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        cmdline = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc if str(deployment_folder(deployment) / "grant.note") in cmdline else None


def server_stop(deployment: Deployment) -> None:
    """Stop the deployment's server (its whole session), if it is still the one started for it.
    The caller clears ``pid`` as the deployment leaves ``starting`` or ``live``."""
    if _server_process(deployment) is None:
        return
    try:
        os.killpg(deployment.pid, signal.SIGTERM)  # type: ignore[arg-type]
    except ProcessLookupError:
        pass


def deployments_supervise() -> int:
    """Record live deployments whose server stopped: ``expired`` when its grant ran out (the
    server stops itself then), ``failed`` otherwise; then rewrite the client lists of running
    deployments that differ from the database (a write after a revocation that was lost, a
    credential that expired). Returns how many deployments changed state."""
    from serving.services.clients import client_lists_refresh

    changed = 0
    for deployment in Deployment.objects.filter(state=DeploymentState.LIVE):
        grant = deployment.grants.first()
        expired = grant is not None and grant.expires_at <= timezone.now()
        if _server_process(deployment) is not None and not expired:
            continue
        server_stop(deployment)
        with transaction.atomic():
            if not Deployment.objects.filter(pk=deployment.pk, state=DeploymentState.LIVE).update(
                state=DeploymentState.EXPIRED if expired else DeploymentState.FAILED,
                stopped_at=timezone.now(),
                pid=None,
            ):
                continue
            reason = f"the grant expired at {grant.expires_at:%Y-%m-%d %H:%M:%S} UTC" if expired and grant else (
                "the server process exited"
            )  # fmt: skip
            Deployment.objects.filter(pk=deployment.pk).update(refusal_reason=reason)
            ledger_append(
                actor=system_account(), action="deployment.expired" if expired else "deployment.failed",
                subject=deployment_subject(deployment), payload={"reason": reason},
            )  # fmt: skip
            changed += 1
    client_lists_refresh()
    return changed
