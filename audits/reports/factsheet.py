"""A model version's factsheet: everything the service knows about one model version, each fact
with the ledger entries behind it.

Sections: identity and digest; lineage (the dataset versions it was trained on, and those its base
versions were trained on, marked as inherited); the fine-tune runs that made it or started from
it; its security scans and bias evaluations, with their charts and, for one that failed, why and
what it saw (the model's unparseable answers, the outputs garak's detectors flagged); the waiver
requests on those audits; every other approval request about these subjects with its decisions;
its deployments.

The scans, evaluations, deployments and history are those the Annex IV document prints
(``model_version_facts`` in builders/model_documents.py), read from the live ledger rather than a
checkpoint's tree. Reads only: the admin page (factsheet_admin.py) decides who may see it.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from audits.reports.builders.model_documents import model_version_facts

# What a failed audit shows of what it saw: this many samples, each cut to this many characters.
SEEN_SAMPLES = 8
SEEN_CHARS = 300
# A garak report larger than this is not read for samples on a page view (its findings still show).
REPORT_READ_LIMIT = 16 << 20
# A detector score at or above this marks an output as a hit (garak's own threshold).
GARAK_HIT = 0.5
WAIVE_ACTIONS = ("security_scan.waive", "bias_evaluation.waive")


@dataclass
class EntryRef:
    """One ledger entry behind a fact; the page fills in its links (``href``: the entry's admin
    page, ``proof_href``: its inclusion proof) for the person reading."""

    index: int
    action: str
    actor: str
    at: Any
    href: str = ""
    proof_href: str = ""


@dataclass
class Seen:
    """One thing a failed audit saw: where (a record, a probe and detector) and the text."""

    where: str
    prompt: str
    answer: str


@dataclass
class Fact:
    """One row of a section: the object, what the page says of it, and its ledger entries."""

    obj: Any
    kind: str  # the ledger's subject type
    entries: list[EntryRef] = field(default_factory=list)
    note: str = ""
    href: str = ""  # the object's admin page, filled in by the page where the reader may open it


@dataclass
class AuditFact(Fact):
    chart_png: bytes = b""
    chart_svg: str = ""
    chart_problem: str = ""
    seen: list[Seen] = field(default_factory=list)
    seen_note: str = ""
    failed: bool = False

    @property
    def chart_src(self) -> str:
        """The stored PNG chart as a data URL: the page needs no second request (nor the API's session)."""
        return "data:image/png;base64," + base64.b64encode(self.chart_png).decode() if self.chart_png else ""


@dataclass
class DecisionRow:
    decision: Any
    entry: EntryRef

    @property
    def entries(self) -> list[EntryRef]:
        return [self.entry]


@dataclass
class ApprovalFact(Fact):
    decisions: list[DecisionRow] = field(default_factory=list)


@dataclass
class Factsheet:
    version: Any
    bases: list[Any]
    history: list[EntryRef]
    datasets: list[Fact]
    runs: list[Fact]
    scans: list[AuditFact]
    evaluations: list[AuditFact]
    waivers: list[ApprovalFact]
    approvals: list[ApprovalFact]
    deployments: list[Fact]

    def facts(self) -> list[Fact]:
        return [*self.datasets, *self.runs, *self.scans, *self.evaluations, *self.waivers, *self.approvals,
                *self.deployments]  # fmt: skip

    def entry_refs(self) -> list[EntryRef]:
        """Every ledger entry the page cites, decisions included."""
        refs = [*self.history, *(e for fact in self.facts() for e in fact.entries)]
        return refs + [row.entry for a in (*self.waivers, *self.approvals) for row in a.decisions]


def factsheet_of(version: Any) -> Factsheet:
    """The factsheet of ``version`` (a ``registry.models.ModelVersion``). Who may read it is the
    caller's question: this reads every row about the version, in its own project."""
    from django.db.models import Q

    from registry.selectors import lineage_of_model_version
    from training.models import FineTuneRun

    facts = model_version_facts(version)
    lineage = lineage_of_model_version(version)
    own = {dv.pk for dv in facts["datasets"]}
    inherited_from = _inherited_from(lineage["base_model_versions"])
    datasets = [
        Fact(dv, "dataset_version", note=_dataset_note(dv, own, inherited_from)) for dv in lineage["dataset_versions"]
    ]
    made_or_started = FineTuneRun.objects.filter(Q(output=version) | Q(base=version)).select_related("requested_by")
    runs = [
        Fact(run, "fine_tune_run", note="made this version" if run.output_id == version.pk else "started from it")
        for run in made_or_started.order_by("created_at", "pk")
    ]
    scans = [_scan_fact(scan) for scan in facts["scans"]]
    evaluations = [_evaluation_fact(evaluation) for evaluation in facts["evaluations"]]
    deployments = [Fact(d, "deployment") for d in facts["deployments"]]
    subjects = [Fact(version, "model_version"), *datasets, *runs, *scans, *evaluations, *deployments]
    waivers, approvals = _approvals(subjects)
    _attach_entries(subjects, [*waivers, *approvals])
    return Factsheet(
        version=version, bases=lineage["base_model_versions"], history=subjects[0].entries, datasets=datasets,
        runs=runs, scans=scans, evaluations=evaluations, waivers=waivers, approvals=approvals,
        deployments=deployments,
    )  # fmt: skip


def final_loss(run: Any) -> float | None:
    value = (run.metrics or {}).get("final_loss")
    return value if isinstance(value, int | float) else None


# --- Lineage ---------------------------------------------------------------------------------------


def _inherited_from(bases: list[Any]) -> dict[int, Any]:
    """Dataset version id -> the nearest base version trained on it."""
    found: dict[int, Any] = {}
    for base in bases:
        for dv in base.dataset_versions.all():
            found.setdefault(dv.pk, base)
    return found


def _dataset_note(dv: Any, own: set[int], inherited_from: dict[int, Any]) -> str:
    if dv.pk in own:
        return "trained on"
    if dv.pk in inherited_from:
        return f"inherited from {inherited_from[dv.pk]}"
    return "derived from: the version a trained-on version was made from"


# --- Audits ----------------------------------------------------------------------------------------


def _scan_fact(scan: Any) -> AuditFact:
    from common import charts

    fact = AuditFact(scan, "security_scan", failed=_failed(scan))
    findings = [f for f in scan.findings or [] if isinstance(f, dict) and "failure_rate" in f]
    if findings:
        fact.chart_svg = charts.svg(scan_chart(scan, findings))
    if fact.failed:
        fact.seen, fact.seen_note = _scan_seen(scan)
    return fact


def scan_chart(scan: Any, findings: list[dict[str, Any]]) -> Any:
    """Each detector's failure rate on its probe, the profile's allowed rate as a dashed line."""
    from common import charts

    probes = [f["probe"] for f in findings]
    labels = [f["probe"] if probes.count(f["probe"]) == 1 else f"{f['probe']} / {f['detector']}" for f in findings]
    return charts.Chart(
        "bar", labels, {"failure rate": [float(f["failure_rate"]) for f in findings]},
        title=f"Failure rate by probe (scan {scan.pk})", y_label="failure rate",
        notes=[f"{f['fails']}/{f['total']}" for f in findings],
        reference=("allowed", float((scan.profile or {}).get("max_failure_rate", 0) or 0)), y_max=1.2,
        width=max(480, 160 * len(findings) + 120), height=280, font_size=10,
    )  # fmt: skip


def _evaluation_fact(evaluation: Any) -> AuditFact:
    from common import artifacts

    fact = AuditFact(evaluation, "bias_evaluation", failed=_failed(evaluation))
    if evaluation.chart_digest:
        try:
            fact.chart_png = artifacts.read_blob(evaluation.chart_digest)
        except (artifacts.ArtifactMissing, ValueError) as exc:
            fact.chart_problem = f"its chart cannot be shown: {exc}"
    if fact.failed:
        fact.seen, fact.seen_note = _evaluation_seen(evaluation)
    return fact


def _failed(audit: Any) -> bool:
    return audit.state == "failed" or audit.verdict == "failed"


def _report(audit: Any) -> tuple[bytes | None, str]:
    """The audit's stored report, or why there is none to read."""
    from common import artifacts

    if not audit.report_digest:
        return None, "No report was stored: the run ended before the model's answers were kept."
    try:
        path = artifacts.open_blob(audit.report_digest)
        if path.stat().st_size > REPORT_READ_LIMIT:
            return None, f"The report ({path.stat().st_size} bytes) is too large to read here; it is blob " + (
                f"{audit.report_digest} in the artifact store."
            )
        return artifacts.read_blob(audit.report_digest), ""
    except (artifacts.ArtifactMissing, ValueError) as exc:
        return None, f"The report cannot be read: {exc}"


def _clip(text: Any) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= SEEN_CHARS else text[:SEEN_CHARS] + "…"


def _evaluation_seen(evaluation: Any) -> tuple[list[Seen], str]:
    """The answers the evaluation could not map to a label, by record number."""
    data, problem = _report(evaluation)
    if data is None:
        return [], problem
    try:
        report = json.loads(data)
        answers, unparsed = list(report.get("answers") or []), list(report.get("unparsed_records") or [])
    except (ValueError, AttributeError):
        return [], "The stored report is not the evaluation's JSON."
    seen = [
        Seen(f"record {number}", "", _clip(answers[number - 1]) or "(empty answer)")
        for number in unparsed[:SEEN_SAMPLES]
        if isinstance(number, int) and 0 < number <= len(answers)
    ]
    mapping = ", ".join(f"{prefix!r} -> {label}" for prefix, label in (evaluation.label_mapping or {}).items())
    total = len(answers)
    note = f"{len(unparsed)} of {total} answers matched no label ({mapping or 'no mapping'})"
    if len(unparsed) > len(seen):
        note += f"; the first {len(seen)} are shown"
    return seen, note + "."


def _scan_seen(scan: Any) -> tuple[list[Seen], str]:
    """Outputs of the model that garak's detectors flagged, and outputs it never gave."""
    data, problem = _report(scan)
    if data is None:
        return [], problem
    seen: list[Seen] = []
    hits = empties = 0
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("entry_type") != "attempt" or record.get("status") != 2:
            continue
        prompt = _prompt_text(record.get("prompt"))
        outputs = [_output_text(o) for o in record.get("outputs") or []]
        for detector, scores in (record.get("detector_results") or {}).items():
            for number, score in enumerate(scores or []):
                if isinstance(score, int | float) and score >= GARAK_HIT:
                    hits += 1
                    if len(seen) < SEEN_SAMPLES:
                        answer = outputs[number] if number < len(outputs) else None
                        where = f"{record.get('probe_classname', '?')} / {detector}"
                        seen.append(Seen(where, _clip(prompt), _clip(answer) or "(empty output)"))
        for answer in outputs:
            if not answer:
                empties += 1
                if len(seen) < SEEN_SAMPLES:
                    seen.append(Seen(f"{record.get('probe_classname', '?')}", _clip(prompt), "(no output)"))
    note = f"garak's detectors flagged {hits} outputs; {empties} outputs were empty"
    if hits + empties > len(seen):
        note += f"; the first {len(seen)} are shown"
    return seen, note + "."


def _prompt_text(prompt: Any) -> str:
    """garak writes a prompt as a conversation (``{"turns": [{"role", "content": {"text"}}]}``), older
    versions as a string; the last turn is what the model answered."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, dict):
        turns = prompt.get("turns") or []
        if turns and isinstance(turns[-1], dict):
            content = turns[-1].get("content")
            return str(content.get("text") or "") if isinstance(content, dict) else str(content or "")
    return ""


def _output_text(output: Any) -> str:
    if isinstance(output, dict):
        return str(output.get("text") or "")
    return "" if output is None else str(output)


# --- Approvals and the ledger ----------------------------------------------------------------------


def _approvals(subjects: list[Fact]) -> tuple[list[ApprovalFact], list[ApprovalFact]]:
    """Approval requests about any of the subjects: waiver requests, then the rest, oldest first."""
    from django.db.models import Q

    from governance.models import ApprovalRequest

    about = Q(pk__in=[])
    for kind, ids in _ids_by_kind(subjects).items():
        about |= Q(subject_type=kind, subject_id__in=ids)
    requests = (
        ApprovalRequest.objects.filter(about)
        .select_related("requester")
        .prefetch_related("decisions__approver")
        .order_by("created_at", "pk")
    )
    waivers, others = [], []
    for request in requests:
        decisions = sorted(request.decisions.all(), key=lambda d: d.pk)
        rows = [DecisionRow(d, EntryRef(d.ledger_index, f"approval decision: {d.decision}", d.approver.get_username(),
                                        d.created_at)) for d in decisions]  # fmt: skip
        fact = ApprovalFact(request, "approval", decisions=rows)
        (waivers if request.action in WAIVE_ACTIONS else others).append(fact)
    return waivers, others


def _ids_by_kind(subjects: list[Fact]) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = defaultdict(list)
    for fact in subjects:
        ids[fact.kind].append(str(fact.obj.pk))
    return ids


def _attach_entries(subjects: list[Fact], approvals: list[ApprovalFact]) -> None:
    """Each subject's entries; an approval entry (its payload names its request) goes to that
    request instead, and a decision's entry is shown on the decision's own row. One read for all."""
    from django.db.models import Q

    from audits.ledger.models import Entry
    from audits.reports.builders.shared import payload

    about = Q(pk__in=[])
    for kind, ids in _ids_by_kind(subjects).items():
        about |= Q(subject_type=kind, subject_id__in=ids)
    by_subject = {(fact.kind, str(fact.obj.pk)): fact for fact in subjects}
    by_request = {approval.obj.pk: approval for approval in approvals}
    on_decisions = {row.entry.index for approval in approvals for row in approval.decisions}
    for entry in Entry.objects.filter(about).exclude(index__in=on_decisions).order_by("index"):
        ref = EntryRef(entry.index, entry.action, entry.actor_name, entry.created_at)
        if entry.action.startswith("approval.") or entry.action == "separation_of_duties.refused":
            request = by_request.get(payload(entry).get("request"))
            if request is not None:
                request.entries.append(ref)
                continue
        owner = by_subject.get((entry.subject_type, entry.subject_id))
        if owner is not None:
            owner.entries.append(ref)
