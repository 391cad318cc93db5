"""A data subject's rights over a deployment's transcripts (GDPR Art. 15 and 17): the turns whose
prompt or completion names the person, and their erasure.

Transcripts are a file the deployment's server appends to (``serving.server.TranscriptLog``),
beside its inference log, one JSON line per answered request. An erasure writes the file anew,
each turn naming the person with its prompt and completion ``[erased]`` (its time and request id
kept, so counts and feedback still line up; the preference export skips it), under the exclusive
``flock`` the server takes for each line, and swaps it in: no line the server writes meanwhile is
lost. The raters' corrections of those turns are blanked too.

Caveat: the file is swapped in last, inside the erasure's transaction; should the commit fail
after it, the turns stay erased with no ledger entry saying so (erasing again finds nothing).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.db import transaction

from audits.ledger.services import ERASED, ledger_append
from governance.permissions import require_project_role
from governance.roles import Role
from serving.models import Deployment, InferenceFeedback
from serving.rules import deployment_subject
from serving.services.preference import Turn, deployment_transcripts, transcript_path
from serving.specs import invalid_input

Find = Callable[[str], list[tuple[int, int]]]
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


def _erased_line(line: bytes, deployment: Deployment, find: Find) -> tuple[bytes, str | None]:
    """The line, and the request id of its turn when it named the person and is now erased."""
    try:
        record = json.loads(line)
        prompt, completion = str(record["prompt"]), str(record["completion"])
        mine = int(record["deployment"]) == deployment.pk
    except (ValueError, KeyError, TypeError):
        return line, None  # a torn or foreign line is left as it is
    if not mine or not (find(prompt) or find(completion)):
        return line, None
    record["prompt"] = record["completion"] = ERASED
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode(), str(record["request_id"])


def deployment_transcripts_erase(*, actor: Any, deployment: Deployment, find: Find, reason: str) -> list[str]:
    """Erase the turns of the deployment's transcripts that name the person (``find``), for an
    erasure (GDPR Art. 17): their prompt and completion become ``[erased]``, the raters'
    corrections of them too, and ``deployment.transcripts_erased`` records how many (never which
    words). Only a compliance officer of the project (or a platform admin) may. Returns the request
    ids of the turns erased; none found, nothing is written."""
    require_project_role(actor, deployment.project, OFFICERS, "erasing personal data from transcripts")
    if not reason.strip():
        raise invalid_input("reason", "may not be blank")
    path = transcript_path(deployment)
    if not path.is_file():
        return []  # the server never answered with transcripts kept
    with transaction.atomic(), _locked(path):
        deployment = Deployment.objects.select_for_update().select_related("project").get(pk=deployment.pk)
        lines, erased = [], []
        with path.open("rb") as handle:
            for line in handle:
                new, request_id = _erased_line(line, deployment, find)
                lines.append(new)
                if request_id is not None:
                    erased.append(request_id)
        if not erased:
            return []
        corrections = (
            InferenceFeedback.objects.filter(deployment=deployment, request_id__in=erased)
            .exclude(correction="")
            .update(correction=ERASED)
        )
        ledger_append(
            actor=actor, action="deployment.transcripts_erased", subject=deployment_subject(deployment),
            payload={"turns": len(erased), "corrections": corrections, "reason": reason},
        )  # fmt: skip
        fresh = path.with_name(f"{path.name}.erasing")
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
    return erased
