"""The inventory replayed from ledger entries alone: pure, no query, no Django model.

``replay`` reads entries in index order (each its index and its decoded JSON body) and keeps, for
each governed subject, what the entries say of it: its state and the index of the entry that set
it. Links between subjects come from the payloads:

- a deployment's model version: ``deployment.requested`` names the weights' digest, which is the
  ``model_version.registered`` entry's subject digest (for entries that name no model version id; where
  two registered model versions share those weights, the one of the deployment's project is taken;
  where that still leaves more than one, the first, and the link says ``ambiguous``);
- a model version's datasets: ``model_version.registered`` names dataset version digests and, for
  a fine-tune output, ``lineage.fine_tune_run``; ``fine_tune_run.requested`` names its dataset
  version digests; a digest is resolved to the dataset version whose entries carried it;
- scans and evaluations: ``*.requested`` names the weights' digest (and an evaluation's dataset
  version digest), resolved as a deployment's are;

A payload that names the model version by id (``deployment.requested``'s ``model_version``, a
check's ``model_version_id``, written since issue 29) is taken at its word; older entries are
resolved by their weights digest as above.
- approvals: the entry's subject (type, id, digest) and ``payload.request``.

States follow the services' own transitions, so that they equal the rows' states at the same time
(``deployment.rolled_back`` leaves the deployment ``replaced``, as the row is).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# The actions read; everything else in the ledger is skipped by the query already.
DEPLOYMENT_STATES = {
    "deployment.requested": "requested",
    "deployment.granted": "starting",
    "deployment.manifests_rendered": "handed_off",
    "deployment.live": "live",
    "deployment.paused": "paused",
    "deployment.resumed": "starting",
    "deployment.refused": "refused",
    "deployment.failed": "failed",
    "deployment.expired": "expired",
    "deployment.replaced": "replaced",
    "deployment.retired": "retired",
    "deployment.rolled_back": "replaced",
}
RUN_STATES = {
    "fine_tune_run.requested": "requested",
    "fine_tune_run.queued": "queued",
    "fine_tune_run.started": "running",
    "fine_tune_run.succeeded": "succeeded",
    "fine_tune_run.failed": "failed",
    "fine_tune_run.cancelled": "cancelled",
}
SEALED_MARK = "$sealed"  # audits.ledger.services.SEALED_MARK: this module imports no Django code
CHECK_KINDS = ("security_scan", "bias_evaluation")
CHECK_STATES = {
    "requested": "requested", "queued": "queued", "started": "running", "completed": "completed",
    "failed": "failed", "cancelled": "cancelled",
}  # fmt: skip
APPROVAL_STATES = {
    "approval.requested": "pending",
    "approval.slot_filled": "pending",
    "approval.approved": "approved",
    "approval.rejected": "rejected",
    "approval.withdrawn": "withdrawn",
    "approval.expired": "expired",
    "approval.lapsed": "lapsed",
    "approval.break_glass": "approved",
}
DECISIONS = ("approval.slot_filled", "approval.approved", "approval.rejected", "approval.break_glass")
DATASET_ACTIONS = ("dataset_version.registered", "dataset_version.erased")
MODEL_ACTIONS = ("model_version.registered",)
# Read only for the digests their subjects carry: a dataset version's digest changes with its PII
# verdict and review, and a fine-tune run or a model version names the digest of that moment.
DIGEST_CARRIERS = ("pii_scan.succeeded", "dataset_version.reviewed", "dataset_version.derived")


def actions_read() -> list[str]:
    """Every action ``replay`` reads (the query asks for these only)."""
    checks = [f"{kind}.{suffix}" for kind in CHECK_KINDS for suffix in CHECK_STATES]
    return sorted(
        {*DEPLOYMENT_STATES, *RUN_STATES, *checks, *APPROVAL_STATES, "approval.break_glass_reviewed",
         *DATASET_ACTIONS, *MODEL_ACTIONS, *DIGEST_CARRIERS}
    )  # fmt: skip


@dataclass
class Link:
    """A reference from one fact to a subject: its id when resolved (``None`` when no entry read
    carried that digest), the digest the payload names, and whether more than one subject of the
    citing entry's project (or of any project) fits."""

    id: str | None
    digest: str | None
    ambiguous: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "digest": self.digest, "ambiguous": self.ambiguous}


@dataclass
class Decision:
    decider: str
    role: str
    decision: str
    reason: str
    entry: int

    def as_dict(self) -> dict[str, Any]:
        return {"decider": self.decider, "role": self.role, "decision": self.decision, "reason": self.reason,
                "entry": self.entry}  # fmt: skip


@dataclass
class Approval:
    request: int
    action: str
    subject_type: str
    subject_id: str
    subject_digest: str | None
    requester: str
    requested_entry: int
    state: str = "pending"
    entry: int = 0  # the entry that set ``state``
    decisions: list[Decision] = field(default_factory=list)
    break_glass_review: str | None = None
    break_glass_review_entry: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "request": self.request, "action": self.action,
            "subject": {"type": self.subject_type, "id": self.subject_id, "digest": self.subject_digest},
            "requester": self.requester, "requested_entry": self.requested_entry, "state": self.state,
            "entry": self.entry, "decisions": [d.as_dict() for d in self.decisions],
            "break_glass_review": self.break_glass_review, "break_glass_review_entry": self.break_glass_review_entry,
        }  # fmt: skip


@dataclass
class DatasetVersionFact:
    id: str
    dataset: str
    number: int | None
    content_sha256: str | None
    entry: int
    erased_entry: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "dataset": self.dataset, "number": self.number, "content_sha256": self.content_sha256,
            "entry": self.entry, "erased": self.erased_entry is not None, "erased_entry": self.erased_entry,
        }  # fmt: skip


@dataclass
class ModelVersionFact:
    id: str
    model: str
    number: int | None
    weights: str | None
    entry: int
    project: int | None
    base: Link | None = None
    dataset_versions: list[Link] = field(default_factory=list)
    fine_tune_run: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "model": self.model, "number": self.number, "weights": self.weights, "entry": self.entry,
            "base": self.base.as_dict() if self.base else None,
            "dataset_versions": [link.as_dict() for link in self.dataset_versions],
            "fine_tune_run": self.fine_tune_run,
        }  # fmt: skip


@dataclass
class RunFact:
    id: str
    name: str
    requested_entry: int
    base: Link | None
    dataset_versions: list[Link]
    state: str = "requested"
    entry: int = 0
    output: Link | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "requested_entry": self.requested_entry, "state": self.state,
            "entry": self.entry, "base": self.base.as_dict() if self.base else None,
            "dataset_versions": [link.as_dict() for link in self.dataset_versions],
            "output": self.output.as_dict() if self.output else None,
        }  # fmt: skip


@dataclass
class CheckFact:
    kind: str  # security_scan or bias_evaluation
    id: str
    profile: str
    requested_entry: int
    model_version: Link
    dataset_version: Link | None = None
    state: str = "requested"
    entry: int = 0
    verdict: str | None = None
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        found = {
            "id": self.id, "profile": self.profile, "requested_entry": self.requested_entry, "state": self.state,
            "entry": self.entry, "verdict": self.verdict, "reasons": self.reasons,
            "model_version": self.model_version.as_dict(),
        }  # fmt: skip
        if self.kind == "bias_evaluation":
            found["dataset_version"] = self.dataset_version.as_dict() if self.dataset_version else None
        return found


@dataclass
class DeploymentFact:
    id: str
    name: str
    environment: str
    runtime: str
    requested_entry: int
    weights: str | None
    project: int | None
    model_version: Link | None = None
    state: str = "requested"
    entry: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "environment": self.environment, "runtime": self.runtime,
            "requested_entry": self.requested_entry, "state": self.state, "entry": self.entry,
            "model_version": self.model_version.as_dict() if self.model_version else None,
        }  # fmt: skip


@dataclass
class Replayed:
    deployments: dict[str, DeploymentFact] = field(default_factory=dict)
    model_versions: dict[str, ModelVersionFact] = field(default_factory=dict)
    dataset_versions: dict[str, DatasetVersionFact] = field(default_factory=dict)
    runs: dict[str, RunFact] = field(default_factory=dict)
    checks: dict[tuple[str, str], CheckFact] = field(default_factory=dict)
    approvals: dict[int, Approval] = field(default_factory=dict)
    entries_read: int = 0
    last_index: int | None = None

    def approvals_of(self, subject_type: str, subject_id: str) -> list[Approval]:
        return [a for a in self.approvals.values() if a.subject_type == subject_type and a.subject_id == subject_id]

    def checks_of(self, kind: str, model_version_id: str) -> list[CheckFact]:
        return [c for c in self.checks.values() if c.kind == kind and c.model_version.id == model_version_id]

    def trained_on(self, model_version_id: str) -> tuple[list[Link], list[Link]]:
        """The dataset versions a model version was trained on (its registration's, and its
        fine-tune run's), and those it inherits through its bases."""
        direct = self._own_datasets(model_version_id)
        inherited: list[Link] = []
        seen = {model_version_id}
        version = self.model_versions.get(model_version_id)
        while version is not None and version.base is not None and version.base.id and version.base.id not in seen:
            seen.add(version.base.id)
            inherited.extend(link for link in self._own_datasets(version.base.id) if link not in inherited)
            version = self.model_versions.get(version.base.id)
        return direct, [link for link in inherited if link not in direct]

    def _own_datasets(self, model_version_id: str) -> list[Link]:
        version = self.model_versions.get(model_version_id)
        if version is None:
            return []
        links = list(version.dataset_versions)
        run = self.runs.get(version.fine_tune_run or "")
        if run is not None:
            links.extend(link for link in run.dataset_versions if link not in links)
        return links


class _Resolver:
    """Digests to subject ids, from every entry read so far."""

    def __init__(self) -> None:
        self.by_digest: dict[tuple[str, str], list[str]] = {}
        self.project: dict[tuple[str, str], int | None] = {}

    def note(self, subject: dict[str, Any] | None, project: int | None) -> None:
        if not subject or not subject.get("digest"):
            return
        ids = self.by_digest.setdefault((subject["type"], subject["digest"]), [])
        if subject["id"] not in ids:
            ids.append(subject["id"])
        self.project.setdefault((subject["type"], subject["id"]), project)

    def link(self, subject_type: str, digest: Any, project: int | None = None) -> Link:
        if not isinstance(digest, str):
            return Link(id=None, digest=None)
        ids = self.by_digest.get((subject_type, digest), [])
        if len(ids) > 1 and project is not None:
            mine = [i for i in ids if self.project.get((subject_type, i)) == project]
            ids = mine or ids
        return Link(id=ids[0] if ids else None, digest=digest, ambiguous=len(ids) > 1)


def replay(entries: Iterable[tuple[int, dict[str, Any], int | None]]) -> Replayed:
    """The state the entries describe: ``entries`` are ``(index, body, project)`` in index order,
    ``project`` being the entry's attribution (used only to choose between subjects that share a
    digest)."""
    state = Replayed()
    resolve = _Resolver()
    for index, body, project in entries:
        state.entries_read += 1
        state.last_index = index
        subject = body.get("subject") or {}
        resolve.note(subject, project)
        action = body["action"]
        payload = body.get("payload") if isinstance(body.get("payload"), dict) else {}
        actor = (body.get("actor") or {}).get("name", "")
        subject_id = str(subject.get("id", ""))
        if action.startswith("deployment."):
            _deployment(state, resolve, action, index, subject_id, payload, project)
        elif action.startswith("approval."):
            _approval(state, action, index, subject, payload, actor)
        elif action.startswith("fine_tune_run."):
            _run(state, resolve, action, index, subject_id, payload, project)
        elif action.split(".", 1)[0] in CHECK_KINDS:
            _check(state, resolve, action, index, subject_id, payload, project)
        elif action == "model_version.registered":
            _model_version(state, resolve, index, subject, payload, project)
        elif action == "dataset_version.registered":
            state.dataset_versions[subject_id] = DatasetVersionFact(
                id=subject_id, dataset=str(payload.get("dataset", "")), number=payload.get("number"),
                content_sha256=payload.get("content_sha256"), entry=index,
            )  # fmt: skip
        elif action == "dataset_version.erased" and subject_id in state.dataset_versions:
            state.dataset_versions[subject_id].erased_entry = index
    return state


def _deployment(
    state: Replayed, resolve: _Resolver, action: str, index: int, subject_id: str, payload: dict[str, Any],
    project: int | None,
) -> None:  # fmt: skip
    if action == "deployment.requested":
        weights = payload.get("weights")
        link = _named_or_resolved(resolve, payload.get("model_version"), weights, project)
        state.deployments[subject_id] = DeploymentFact(
            id=subject_id, name=str(payload.get("name", "")), environment=str(payload.get("environment", "")),
            runtime=str(payload.get("runtime", "")), requested_entry=index, weights=weights, project=project,
            model_version=link, state="requested", entry=index,
        )  # fmt: skip
        return
    deployment = state.deployments.get(subject_id)
    new_state = DEPLOYMENT_STATES.get(action)
    if deployment is None or new_state is None:
        return
    deployment.state, deployment.entry = new_state, index


def _approval(
    state: Replayed, action: str, index: int, subject: dict[str, Any], payload: dict[str, Any], actor: str
) -> None:
    request = payload.get("request")
    if not isinstance(request, int):
        return
    if action == "approval.requested":
        state.approvals[request] = Approval(
            request=request, action=str(payload.get("action", "")), subject_type=str(subject.get("type", "")),
            subject_id=str(subject.get("id", "")), subject_digest=subject.get("digest"), requester=actor,
            requested_entry=index, state="pending", entry=index,
        )  # fmt: skip
        return
    approval = state.approvals.get(request)
    if approval is None:
        return
    if action in DECISIONS:
        role = "break_glass" if action == "approval.break_glass" else str(payload.get("role", ""))
        decision = "approve" if action == "approval.break_glass" else str(payload.get("decision", ""))
        reason = payload.get("justification") if action == "approval.break_glass" else payload.get("reason")
        approval.decisions.append(
            Decision(decider=actor, role=role, decision=decision, reason=_text(reason), entry=index)
        )
    if action == "approval.break_glass_reviewed":
        approval.break_glass_review, approval.break_glass_review_entry = str(payload.get("outcome", "")), index
        return
    new_state = APPROVAL_STATES.get(action)
    if new_state is not None and new_state != approval.state:
        approval.state, approval.entry = new_state, index


def _text(value: Any) -> str:
    """A free-text field as text; sealed personal data (``{"$sealed": ...}``) is never opened or
    shown here, not even as ciphertext."""
    if isinstance(value, str):
        return value
    return "[sealed]" if isinstance(value, dict) and SEALED_MARK in value else ""


def _run(
    state: Replayed, resolve: _Resolver, action: str, index: int, subject_id: str, payload: dict[str, Any],
    project: int | None,
) -> None:  # fmt: skip
    if action == "fine_tune_run.requested":
        digests = payload.get("dataset_versions") or []
        state.runs[subject_id] = RunFact(
            id=subject_id, name=str(payload.get("name", "")), requested_entry=index,
            base=resolve.link("model_version", payload.get("base"), project),
            dataset_versions=[resolve.link("dataset_version", d, project) for d in digests], entry=index,
        )  # fmt: skip
        return
    run = state.runs.get(subject_id)
    new_state = RUN_STATES.get(action)
    if run is None or new_state is None:
        return
    run.state, run.entry = new_state, index
    if action == "fine_tune_run.succeeded" and payload.get("output"):
        run.output = Link(id=None, digest=str(payload["output"]))  # resolved when the output is registered


def _check(
    state: Replayed, resolve: _Resolver, action: str, index: int, subject_id: str, payload: dict[str, Any],
    project: int | None,
) -> None:  # fmt: skip
    kind, _, suffix = action.partition(".")
    key = (kind, subject_id)
    if suffix == "requested":
        weights = payload.get("model_version")
        state.checks[key] = CheckFact(
            kind=kind, id=subject_id, profile=str(payload.get("profile", "")), requested_entry=index,
            model_version=_named_or_resolved(resolve, payload.get("model_version_id"), weights, project),
            dataset_version=resolve.link("dataset_version", payload["dataset_version"], project)
            if kind == "bias_evaluation" and payload.get("dataset_version") else None,
            entry=index,
        )  # fmt: skip
        return
    check = state.checks.get(key)
    new_state = CHECK_STATES.get(suffix)
    if check is None or new_state is None or suffix == "requested":
        return
    check.state, check.entry = new_state, index
    if suffix in ("completed", "failed"):
        check.verdict = payload.get("verdict") or None
        check.reasons = [str(r) for r in payload.get("reasons") or []]


def _named_or_resolved(resolve: _Resolver, named: Any, weights: Any, project: int | None) -> Link:
    """The model version a payload names by id (see the module's docstring), else the one its
    weights' digest resolves to."""
    if named is not None:
        return Link(id=str(named), digest=weights if isinstance(weights, str) else None)
    return resolve.link("model_version", weights, project)


def _model_version(
    state: Replayed, resolve: _Resolver, index: int, subject: dict[str, Any], payload: dict[str, Any],
    project: int | None,
) -> None:  # fmt: skip
    version_id = str(subject.get("id", ""))
    lineage = payload.get("lineage") if isinstance(payload.get("lineage"), dict) else {}
    run = lineage.get("fine_tune_run")
    version = ModelVersionFact(
        id=version_id, model=str(payload.get("model", "")), number=payload.get("number"),
        weights=subject.get("digest"), entry=index, project=project,
        base=resolve.link("model_version", payload["base"], project) if payload.get("base") else None,
        dataset_versions=[resolve.link("dataset_version", d, project) for d in payload.get("dataset_versions") or []],
        fine_tune_run=str(run) if run is not None else None,
    )  # fmt: skip
    state.model_versions[version_id] = version
    # Links made before this registration (a run's output, a scan requested later never comes
    # first) are resolved now that the weights have an id.
    for fact in state.runs.values():
        if fact.output is not None and fact.output.id is None and fact.output.digest == version.weights:
            fact.output = Link(id=version_id, digest=version.weights)
