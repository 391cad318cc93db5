"""The inventory at a past time: the ledger's entries read (those the reader may read, integrated
into the tree, made at or before that time, in index order), replayed (``replay.py``) and each
cited entry given its RFC 9162 inclusion proof against the latest signed checkpoint.

The proofs are computed together: the stored subtree hashes every path needs are fetched in a few
``IN`` queries (``audits.ledger.selectors.fetch_nodes``), and each path is checked against the
checkpoint's root before it is handed out. An entry past the latest checkpoint has no proof yet
(``proofs[index]`` says ``covered: false``); the next signing covers it.

Caveat: the replay reads every entry of the actions it knows that was made up to ``at``: its cost
grows with the governed history (not with the rest of the ledger), one pass, no per-entry query.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from audits.ledger import merkle
from audits.ledger.models import Checkpoint, Entry
from audits.ledger.selectors import entries_scoped, fetch_nodes, latest_checkpoint, tree_size
from audits.ledger.services import is_sealed
from audits.reports.inventory.replay import Replayed, actions_read, replay

_NODES_PER_QUERY = 500  # well under SQLite's bound on the variables of one statement
_READ_CHUNK = 2000


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


@dataclass(frozen=True)
class EntryProof:
    """Entry ``index``'s inclusion proof in the checkpoint's tree (``covered``), checked here
    against the checkpoint's root; or none yet (the entry is past the latest checkpoint)."""

    index: int
    covered: bool
    leaf_hash_b64: str = ""
    path_b64: list[str] = field(default_factory=list)

    def as_dict(self, tree_size: int | None) -> dict[str, Any]:
        found: dict[str, Any] = {"covered": self.covered}
        if self.covered:
            found.update(
                leaf_hash=self.leaf_hash_b64, tree_size=tree_size, path=self.path_b64,
                href=f"/api/v1/ledger/proofs/inclusion?index={self.index}&tree_size={tree_size}",
            )  # fmt: skip
        return found


@dataclass
class Inventory:
    at: datetime
    state: Replayed
    checkpoint: Checkpoint | None
    proofs: dict[int, EntryProof]
    integrated: int = 0  # the tree's size when read: the entries at or past it were not read

    def deployment_rows(self) -> list[dict[str, Any]]:
        """One row per deployment, with what it rests on: the model version, the approvals of the
        deployment, the dataset versions it was trained on (and inherited), its scans and
        evaluations; newest first."""
        state = self.state
        rows = []
        for deployment in sorted(state.deployments.values(), key=lambda d: -d.requested_entry):
            link = deployment.model_version
            version = state.model_versions.get(link.id or "") if link else None
            direct, inherited = state.trained_on(version.id) if version else ([], [])
            rows.append(
                {
                    "deployment": deployment,
                    "model_version": version,
                    "link": link,
                    "approvals": state.approvals_of("deployment", deployment.id),
                    "dataset_versions": [(lnk, state.dataset_versions.get(lnk.id or "")) for lnk in direct],
                    "inherited": [(lnk, state.dataset_versions.get(lnk.id or "")) for lnk in inherited],
                    "security_scans": state.checks_of("security_scan", version.id) if version else [],
                    "bias_evaluations": state.checks_of("bias_evaluation", version.id) if version else [],
                }
            )
        return rows

    def as_dict(self) -> dict[str, Any]:
        state = self.state
        size = self.checkpoint.tree_size if self.checkpoint else None
        deployments = []
        for row in self.deployment_rows():
            found = row["deployment"].as_dict()
            found["approvals"] = [a.request for a in row["approvals"]]
            found["dataset_versions"] = [lnk.id for lnk, _ in row["dataset_versions"]]
            found["inherited_dataset_versions"] = [lnk.id for lnk, _ in row["inherited"]]
            found["security_scans"] = [c.id for c in row["security_scans"]]
            found["bias_evaluations"] = [c.id for c in row["bias_evaluations"]]
            deployments.append(found)
        checks = sorted(state.checks.values(), key=lambda c: c.requested_entry)
        return _redacted(
            {
                "at": self.at.isoformat(),
                "entries_read": state.entries_read,
                "integrated": self.integrated,
                "last_entry": state.last_index,
                "checkpoint": None if self.checkpoint is None else {
                    "tree_size": self.checkpoint.tree_size, "root": _b64(bytes(self.checkpoint.root)),
                    "note": self.checkpoint.note, "created_at": self.checkpoint.created_at.isoformat(),
                },
                "deployments": deployments,
                "approvals": [a.as_dict() for a in sorted(state.approvals.values(), key=lambda a: a.requested_entry)],
                "model_versions": [m.as_dict() for m in sorted(state.model_versions.values(), key=lambda m: m.entry)],
                "fine_tune_runs": [r.as_dict() for r in sorted(state.runs.values(), key=lambda r: r.requested_entry)],
                "dataset_versions": [
                    d.as_dict() for d in sorted(state.dataset_versions.values(), key=lambda d: d.entry)
                ],
                "security_scans": [c.as_dict() for c in checks if c.kind == "security_scan"],
                "bias_evaluations": [c.as_dict() for c in checks if c.kind == "bias_evaluation"],
                "proofs": {str(i): p.as_dict(size) for i, p in sorted(self.proofs.items())},
            }
        )  # fmt: skip


def _redacted(value: Any) -> Any:
    """Sealed personal data never leaves sealed, nor with its subject's reference: what the
    inventory shows comes from payload fields that hold none, and this keeps it so."""
    if is_sealed(value):
        return {"sealed": True}
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def cited_entries(state: Replayed) -> set[int]:
    """Every entry index a fact of ``state`` cites."""
    cited: set[int] = set()
    for deployment in state.deployments.values():
        cited |= {deployment.requested_entry, deployment.entry}
    for approval in state.approvals.values():
        cited |= {approval.requested_entry, approval.entry, *(d.entry for d in approval.decisions)}
        if approval.break_glass_review_entry is not None:
            cited.add(approval.break_glass_review_entry)
    for version in state.model_versions.values():
        cited.add(version.entry)
    for dataset in state.dataset_versions.values():
        cited.add(dataset.entry)
        if dataset.erased_entry is not None:
            cited.add(dataset.erased_entry)
    for run in state.runs.values():
        cited |= {run.requested_entry, run.entry}
    for check in state.checks.values():
        cited |= {check.requested_entry, check.entry}
    return cited


def inclusion_proofs(indexes: set[int], checkpoint: Checkpoint | None) -> dict[int, EntryProof]:
    """Proofs of ``indexes`` in ``checkpoint``'s tree, from batched reads of the stored hashes;
    each checked against the checkpoint's root (a mismatch raises ``merkle.ProofError``: the
    stored tree contradicts a signed checkpoint, and nothing is handed out)."""
    size = checkpoint.tree_size if checkpoint else 0
    covered = sorted(i for i in indexes if i < size)
    proofs = {i: EntryProof(index=i, covered=False) for i in indexes if i >= size}
    if not covered or checkpoint is None:
        return proofs
    ranges = {i: merkle.inclusion_ranges(i, size) for i in covered}
    keys: set[merkle.NodeKey] = set()
    for index, paths in ranges.items():
        keys |= merkle.nodes_for([*paths, (index, index + 1)])
    ordered = sorted(keys)
    nodes: dict[merkle.NodeKey, bytes] = {}
    for start in range(0, len(ordered), _NODES_PER_QUERY):
        nodes.update(fetch_nodes(set(ordered[start : start + _NODES_PER_QUERY])))
    root = bytes(checkpoint.root)
    for index, paths in ranges.items():
        leaf = nodes[(0, index)]
        path = [merkle.subtree_hash(start, end, nodes.__getitem__) for start, end in paths]
        merkle.verify_inclusion(index, size, leaf, path, root)
        proofs[index] = EntryProof(
            index=index, covered=True, leaf_hash_b64=_b64(leaf), path_b64=[_b64(h) for h in path]
        )
    return proofs


def inventory_at(*, user: Any, at: datetime) -> Inventory:
    """The inventory as the ledger tells it at ``at``, from the entries ``user`` reads (a
    project's readers: their projects' facts; readers of every entry: all)."""
    checkpoint = latest_checkpoint()
    # Integrated entries only (below the head's size): their order is final and has no gap, so an
    # answer about the past never changes when a transaction that began earlier commits later.
    integrated = tree_size()
    entries = Entry.objects.filter(action__in=actions_read(), created_at__lte=at, index__lt=integrated)
    queryset = entries_scoped(entries.order_by("index"), user).values_list("index", "body", "scope__project_id")
    rows = ((index, json.loads(bytes(body)), project) for index, body, project in queryset.iterator(_READ_CHUNK))
    state = replay(rows)
    proofs = inclusion_proofs(cited_entries(state), checkpoint)
    return Inventory(at=at, state=state, checkpoint=checkpoint, proofs=proofs, integrated=integrated)
