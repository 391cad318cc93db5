"""What the report builders share: the progress callback, cell formats, the report's period, and
reads of the ledger entries inside the checkpoint a report is built from."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from django.utils import timezone

from audits.reports.models import ReportRun

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
