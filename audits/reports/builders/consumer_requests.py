"""The CCPA consumer request log (Cal. Code Regs. tit. 11, §7101) of a report's period."""

from __future__ import annotations

from typing import Any

from audits.reports.builders.shared import Progress, day, first_entries, index_of, period
from audits.reports.claims import Claims
from audits.reports.models import ReportRun
from audits.reports.pdf import Heading, Table


def ccpa_request_log(run: ReportRun, size: int, progress: Progress, claims: Claims, org: Any) -> tuple[str, list[Any]]:
    """The §7101 record of consumer requests of the period: date, nature and manner of the request,
    date and nature of the response, and the basis for any denial."""
    from audits.privacy.models import DataSubjectRequest

    progress(20, "reading consumer requests")
    start, end = period(run)
    requests = DataSubjectRequest.objects.filter(regime="ccpa", received_at__gte=start, received_at__lt=end)
    if run.project:
        requests = requests.filter(project=run.project)
    requests = list(requests.order_by("received_at", "pk"))
    received = first_entries(size, "data_subject_request.received", "data_subject_request", [r.pk for r in requests])
    rows, citations = [], []
    for r in requests:
        entry = received.get(str(r.pk))
        claims.many(f"request {r.pk}", index_of(entry), {"payload.kind": r.kind, "payload.channel": r.channel})
        rows.append([r.pk, day(r.received_at), r.get_kind_display(), r.get_channel_display(), day(r.responded_at),
                     r.response_nature or r.state, r.denial_basis or "not denied"])  # fmt: skip
        citations.append(index_of(entry))
    return "CCPA consumer request log (Cal. Code Regs. tit. 11, §7101)", [
        Heading("Consumer requests of the period (§7101(a); times in UTC)"),
        Table(["request", "received", "nature", "manner", "responded", "response", "basis for denial"], rows,
              citations),
    ]  # fmt: skip
