"""The CCPA consumer request log (Cal. Code Regs. tit. 11, §7101) of a report's period."""

from __future__ import annotations

from typing import Any

from audits.reports.builders.shared import Progress, day, period
from audits.reports.models import ReportRun
from audits.reports.pdf import Table


def ccpa_request_log(run: ReportRun, size: int, progress: Progress) -> tuple[str, list[Any]]:
    """The §7101 record of consumer requests of the period: date, nature and manner of the request,
    date and nature of the response, and the basis for any denial."""
    from audits.privacy.models import DataSubjectRequest

    progress(20, "reading consumer requests")
    start, end = period(run)
    requests = DataSubjectRequest.objects.filter(regime="ccpa", received_at__gte=start, received_at__lt=end)
    if run.project:
        requests = requests.filter(project=run.project)
    rows = [
        [day(r.received_at), r.get_kind_display(), r.channel, day(r.responded_at), r.response_nature or r.state,
         r.denial_basis]
        for r in requests.order_by("received_at", "pk")
    ]  # fmt: skip
    return "CCPA consumer request log (Cal. Code Regs. tit. 11, §7101)", [
        Table(["received", "nature", "manner", "responded", "response", "basis for denial"], rows),
    ]
