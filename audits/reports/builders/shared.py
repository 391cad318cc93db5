"""What the report builders share: the progress callback, cell formats, the report's period, and
reads of the ledger entries inside the checkpoint a report is built from."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from typing import Any

from django.utils import timezone

from audits.reports.claims import Claims
from audits.reports.models import ReportRun
from audits.reports.pdf import Table

Progress = Callable[[int, str], None]


def short(digest: str | None, n: int = 19) -> str:
    return (digest or "")[:n]


def day(moment: dt.datetime | None) -> str:
    return f"{timezone.localtime(moment, dt.UTC):%Y-%m-%d %H:%M}" if moment else ""


def period(run: ReportRun) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(run.period_start, dt.time.min, tzinfo=dt.UTC)
    end = dt.datetime.combine(run.period_end + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
    return start, end


def entries(size: int | None, **filters: Any) -> Any:
    """Ledger entries matching ``filters`` inside a tree of ``size`` entries; all of them for ``None``."""
    from audits.ledger.models import Entry

    bound = {} if size is None else {"index__lt": size}
    return Entry.objects.filter(**bound, **filters).order_by("index")


def payload(entry: Any) -> dict[str, Any]:
    return json.loads(bytes(entry.body)).get("payload") or {}


def scope(run: ReportRun) -> str:
    return f"project {run.project.slug} ({run.project.name})" if run.project else "the whole organisation"


def first_entries(size: int | None, action: str, subject_type: str, ids: Iterable[object]) -> dict[str, Any]:
    """The first entry of ``action`` about each subject id (as a string), inside the tree: one query."""
    wanted = [str(i) for i in ids]
    found: dict[str, Any] = {}
    if not wanted:
        return found
    for entry in entries(size, action=action, subject_type=subject_type, subject_id__in=wanted).only(
        "index", "body", "subject_id", "created_at", "actor_name"
    ):
        found.setdefault(entry.subject_id, entry)
    return found


def index_of(entry: Any) -> int | None:
    return None if entry is None else entry.index


def descendants(model_versions: Iterable[Any]) -> dict[int, list[Any]]:
    """Per model version given: every model version built on it through ``base``, at any depth
    (fine-tunes of fine-tunes), one query per level."""
    from registry.models import ModelVersion

    roots = {mv.pk for mv in model_versions}
    found: dict[int, list[Any]] = {pk: [] for pk in roots}
    frontier = {pk: [pk] for pk in roots}  # a model version's pk -> the roots it descends from
    while frontier:
        children = list(ModelVersion.objects.filter(base_id__in=list(frontier)).select_related("model", "base__model"))
        next_frontier: dict[int, list[int]] = {}
        for child in children:
            for root in frontier[child.base_id]:
                if child not in found[root]:
                    found[root].append(child)
                next_frontier.setdefault(child.pk, []).append(root)
        frontier = {pk: rs for pk, rs in next_frontier.items() if pk not in roots}
    return found


def model_name(mv: Any) -> str:
    return f"{mv.model.slug} v{mv.number}"


def waiver_table(waivers: list[Any], size: int, claims: Claims) -> Table:
    """Waivers (approval requests of ``*.waive``) with what an auditor asks of each: what was
    waived and for what use, the justification given, who approved it (role, reason, when), the
    state and the expiry. Each row cites the approval's last decision entry."""
    from governance.models import ApprovalDecision

    decisions: dict[int, list[Any]] = {}
    for d in ApprovalDecision.objects.filter(request__in=waivers).select_related("approver").order_by("ledger_index"):
        if d.ledger_index < size:
            decisions.setdefault(d.request_id, []).append(d)
    rows, citations = [], []
    for w in waivers:
        mine = decisions.get(w.pk, [])
        scope = ", ".join(f"{k}: {v}" for k, v in sorted((w.context or {}).items())) or "any use"
        approvers = "; ".join(f"{d.approver.username} ({d.role}) {d.decision}d {day(d.created_at)}: {d.reason}"
                              for d in mine) or "no decision yet"  # fmt: skip
        for d in mine:
            field, value = ("action", "approval.break_glass") if d.role == "break_glass" else ("payload.decision",
                                                                                                d.decision)  # fmt: skip
            claims.add(f"waiver {w.pk}: decision by {d.approver.username}", d.ledger_index, field, value)
        rows.append([w.pk, f"{w.action} of {w.subject_type} {w.subject_id}", scope, w.comment or "none given",
                     approvers, w.state, day(w.expires_at) or "no expiry"])  # fmt: skip
        citations.append(mine[-1].ledger_index if mine else None)
    return Table(["waiver", "what", "for which use", "justification", "approved by", "state", "expires"], rows,
                 citations)  # fmt: skip
