"""A data subject's rights over a deployment's transcripts (GDPR Art. 15 and 17): the turns whose
prompt or completion names the person, and their erasure.

Transcripts are a file the deployment's server appends to (``serving.server.TranscriptLog``),
beside its inference log, one JSON line per answered request. An erasure writes the file anew,
each turn naming the person with its prompt and completion ``[erased]`` (its time and request id
kept, so counts and feedback still line up; the preference export skips it), under the exclusive
``flock`` the server takes for each line, and swaps it in: no line the server writes meanwhile is
lost. The raters' corrections of those turns are blanked too.

Turns older than ``SERVING_TRANSCRIPT_RETENTION_DAYS`` are dropped the same way, daily
(``transcripts_expire``).

Caveat: the file is swapped in last, inside the transaction; should the commit fail after it, the
turns stay changed with no ledger entry saying so (doing it again finds nothing to do).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audits.ledger.services import ERASED, ledger_append
from governance.permissions import require_project_role
from governance.roles import Role
from serving.models import Deployment, InferenceFeedback
from serving.rules import deployment_subject
from serving.services.preference import Turn, deployment_transcripts, transcript_path
from serving.specs import invalid_input

Find = Callable[[str], list[tuple[int, int]]]
Change = Callable[[dict[str, Any]], dict[str, Any] | None]
TURN_KEYS = ("time", "request_id", "deployment", "prompt", "completion")  # what serving.server writes
OFFICERS = {Role.COMPLIANCE_OFFICER, Role.PLATFORM_ADMIN}


def transcript_turns_naming(deployment: Deployment, find: Find) -> list[Turn]:
    """The deployment's turns whose prompt or completion holds the person (``find``'s spans), in
    the order the server answered them."""
    turns = deployment_transcripts(deployment).values()
    return sorted((t for t in turns if find(t.prompt) or find(t.completion)), key=lambda t: (t.time, t.request_id))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    from serving.server import transcript_lock_path

    with transcript_lock_path(path).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _record(line: bytes, deployment: Deployment) -> dict[str, Any] | None:
    """The line's turn, when it is a whole turn of this deployment (a torn or foreign line is
    ``None``: left as it is)."""
    try:
        record = json.loads(line)
        whole = isinstance(record, dict) and all(k in record for k in TURN_KEYS)
        mine = whole and int(record["deployment"]) == deployment.pk
    except (ValueError, TypeError):
        return None
    return record if mine else None


def _rewritten(path: Path, deployment: Deployment, change: Change) -> tuple[list[bytes], list[str]]:
    """The transcripts' lines with each turn as ``change`` gives it back (``None``: dropped; equal:
    kept as it was, byte for byte), and the request ids of the turns changed or dropped."""
    lines, changed = [], []
    with path.open("rb") as handle:
        for line in handle:
            record = _record(line, deployment)
            new = None if record is None else change(dict(record))
            if record is None or new == record:
                lines.append(line)
                continue
            changed.append(str(record["request_id"]))
            if new is not None:
                lines.append((json.dumps(new, ensure_ascii=False, separators=(",", ":")) + "\n").encode())
    return lines, changed


def _swap_in(path: Path, lines: list[bytes]) -> None:
    """Write ``lines`` to a file beside ``path``, durably, and put it in ``path``'s place."""
    fresh = path.with_name(f"{path.name}.rewriting")
    with fresh.open("wb") as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(fresh, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _blank_corrections(deployment: Deployment, request_ids: list[str]) -> int:
    rated = []
    for request_id in request_ids:
        try:
            rated.append(uuid.UUID(request_id))
        except ValueError:
            continue  # not an id the server hands out: nobody can have rated it
    return (
        InferenceFeedback.objects.filter(deployment=deployment, request_id__in=rated)
        .exclude(correction="")
        .update(correction=ERASED)
    )


def deployment_transcripts_erase(*, actor: Any, deployment: Deployment, find: Find, reason: str) -> list[str]:
    """Erase the turns of the deployment's transcripts that name the person (``find``), for an
    erasure (GDPR Art. 17): their prompt and completion become ``[erased]``, the raters'
    corrections of them too, and ``deployment.transcripts_erased`` records how many (never which
    words). Only a compliance officer of the project (or a platform admin) may. Returns the request
    ids of the turns erased; none found, nothing is written."""
    require_project_role(actor, deployment.project, OFFICERS, "erasing personal data from transcripts")
    if not reason.strip():
        raise invalid_input("reason", "may not be blank")

    def erase(record: dict[str, Any]) -> dict[str, Any]:
        if find(str(record["prompt"])) or find(str(record["completion"])):
            record["prompt"] = record["completion"] = ERASED
        return record

    return _changed_under_lock(
        deployment, erase, "deployment.transcripts_erased", lambda turns, corrections: {
            "turns": turns, "corrections": corrections, "reason": reason}, actor=actor,
    )  # fmt: skip


def transcripts_expire(*, actor: Any, now: datetime | None = None) -> dict[int, int]:
    """Drop the turns older than ``SERVING_TRANSCRIPT_RETENTION_DAYS`` from every deployment's
    transcripts (GDPR Art. 5(1)(e), storage limitation; 0 keeps them for good), and blank the
    raters' corrections of them; ``deployment.transcripts_expired`` records how many per
    deployment. The beat runs it daily (``serving.expire_transcripts``). Returns the turns dropped
    by deployment id."""
    days = settings.SERVING_TRANSCRIPT_RETENTION_DAYS
    if not days:
        return {}
    cutoff = ((now or timezone.now()) - timedelta(days=days)).astimezone(UTC)
    stamp = cutoff.strftime("%Y-%m-%dT%H:%M:%S")  # the server writes UTC ISO times: they sort as text

    def expire(record: dict[str, Any]) -> dict[str, Any] | None:
        return None if str(record["time"])[:19] < stamp else record

    dropped = {}
    for deployment in Deployment.objects.select_related("project").order_by("pk"):
        turns = _changed_under_lock(
            deployment, expire, "deployment.transcripts_expired", lambda turns, corrections: {
                "turns": turns, "corrections": corrections, "before": f"{stamp}Z", "retention_days": days},
            actor=actor,
        )  # fmt: skip
        if turns:
            dropped[deployment.pk] = len(turns)
    return dropped


def _changed_under_lock(
    deployment: Deployment, change: Change, action: str, payload: Callable[[int, int], dict[str, Any]], *, actor: Any
) -> list[str]:
    """The deployment's transcripts rewritten by ``change`` in one transaction, under the lock the
    server writes under: the raters' corrections of the turns changed blanked, ``action``
    ledgered, and the file swapped in last. Returns the request ids of the turns changed."""
    path = transcript_path(deployment)
    if not path.is_file():
        return []  # the server never answered with transcripts kept
    with transaction.atomic(), _locked(path):
        deployment = Deployment.objects.select_for_update().select_related("project").get(pk=deployment.pk)
        lines, changed = _rewritten(path, deployment, change)
        if not changed:
            return []
        corrections = _blank_corrections(deployment, changed)
        ledger_append(actor=actor, action=action, subject=deployment_subject(deployment),
                      payload=payload(len(changed), corrections))  # fmt: skip
        _swap_in(path, lines)
    return changed
