"""Reads of the ledger: the head, roots and proofs from stored subtree hashes, entries decoded.

Every proof or root costs two queries (leaf hashes and upper nodes, each one ``IN`` lookup of at
most 2·log2(n) keys), whatever the size of the tree. Roots, proofs and checkpoints carry hashes
only and answer anyone; entries answer a reader only those of the projects they read
(``entries_readable``, ``audits/ledger/scopes.py``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from django.db import connection
from django.db.models import QuerySet

from audits.ledger import merkle, scopes
from audits.ledger.models import Checkpoint, Entry, LedgerHead
from audits.ledger.services import LedgerError, is_sealed, node_key


def head_tree(*, lock: bool = False) -> merkle.CompactRange:
    """The current tree's size and right edge. ``lock`` serialises with appends (PostgreSQL)."""
    queryset = LedgerHead.objects.filter(id=1)
    if lock:
        queryset = queryset.select_for_update()
    head = queryset.first()
    if head is None:
        return merkle.CompactRange()
    return merkle.CompactRange.decode(head.size, bytes(head.frontier))


def tree_size() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT size FROM ledger_ledgerhead WHERE id = 1")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def fetch_nodes(keys: set[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
    """The stored hashes of ``keys``: one query for leaves, one for upper nodes (raw SQL: this is
    the hot path of every proof)."""
    leaves = [position for level, position in keys if level == 0]
    upper = {node_key(level, position): (level, position) for level, position in keys if level > 0}
    found: dict[merkle.NodeKey, bytes] = {}
    with connection.cursor() as cursor:
        if leaves:
            marks = ", ".join(["%s"] * len(leaves))
            cursor.execute(f'SELECT "index", leaf_hash FROM ledger_entry WHERE "index" IN ({marks})', leaves)  # noqa: S608
            for index, digest in cursor.fetchall():
                found[(0, index)] = bytes(digest)
        if upper:
            marks = ", ".join(["%s"] * len(upper))
            cursor.execute(f'SELECT "key", hash FROM ledger_node WHERE "key" IN ({marks})', list(upper))  # noqa: S608
            for key, digest in cursor.fetchall():
                found[upper[key]] = bytes(digest)
    missing = keys - found.keys()
    if missing:
        raise merkle.ProofError(f"the stored tree lacks {len(missing)} node(s), e.g. {sorted(missing)[0]}")
    return found


def _hashes_for(ranges: list[tuple[int, int]]) -> list[bytes]:
    nodes = fetch_nodes(merkle.nodes_for(ranges))
    return [merkle.subtree_hash(start, end, nodes.__getitem__) for start, end in ranges]


def _check_size(size: int, name: str) -> None:
    current = tree_size()
    if size > current:
        raise LedgerError("beyond_tree", f"{name}={size} is beyond the tree, which has {current} entries")


def root_at(size: int) -> bytes:
    if size == 0:
        return merkle.EMPTY_ROOT
    _check_size(size, "tree_size")
    return _hashes_for([(0, size)])[0]


def inclusion_proof(index: int, size: int) -> list[bytes]:
    return inclusion_proof_with_root(index, size)[1]


def inclusion_proof_with_root(index: int, size: int) -> tuple[bytes, list[bytes], bytes]:
    """Leaf hash, inclusion proof and root of the tree of ``size``, from one fetch of stored hashes."""
    _check_size(size, "tree_size")
    if not 0 <= index < size:
        raise LedgerError("index_out_of_range", f"index {index} is not in a tree of size {size}")
    ranges = merkle.inclusion_ranges(index, size)
    nodes = fetch_nodes(merkle.nodes_for([*ranges, (0, size), (index, index + 1)]))
    proof = [merkle.subtree_hash(start, end, nodes.__getitem__) for start, end in ranges]
    return nodes[(0, index)], proof, merkle.subtree_hash(0, size, nodes.__getitem__)


def consistency_proof(first: int, second: int) -> list[bytes]:
    return consistency_proof_with_roots(first, second)[0]


def consistency_proof_with_roots(first: int, second: int) -> tuple[list[bytes], bytes, bytes]:
    """Consistency proof and both roots, from one fetch of stored hashes."""
    if first > second:
        raise LedgerError("invalid_range", f"first={first} is larger than second={second}")
    if first < 1:
        raise LedgerError("invalid_range", "first must be at least 1: nothing is proved about the empty tree")
    _check_size(second, "second")
    ranges = merkle.consistency_ranges(first, second)
    nodes = fetch_nodes(merkle.nodes_for([*ranges, (0, first), (0, second)]))
    proof = [merkle.subtree_hash(start, end, nodes.__getitem__) for start, end in ranges]
    return proof, merkle.subtree_hash(0, first, nodes.__getitem__), merkle.subtree_hash(0, second, nodes.__getitem__)


def entries_scoped(queryset: QuerySet[Entry], user: Any) -> QuerySet[Entry]:
    """``queryset`` narrowed to the entries ``user`` reads: every entry for a reader of all
    (``ledger.read_all_entries``), else those attributed to a project where they hold a reading
    role; never the organisation's entries, never an entry not attributed."""
    projects = scopes.readable_projects(user)
    if projects is None:
        return queryset
    if not projects:
        return queryset.none()
    return queryset.filter(scope__project_id__in=sorted(projects))


def entries_readable(user: Any) -> QuerySet[Entry]:
    """The entries ``user`` reads, by index."""
    return entries_scoped(Entry.objects.order_by("index"), user)


def entries_readable_count(user: Any) -> int:
    """How many entries ``user`` reads: the tree size for a reader of every entry (no count)."""
    if scopes.reads_every_entry(user):
        return tree_size()
    return entries_readable(user).count()


def entry_readable(user: Any, index: int) -> Entry | None:
    """Entry ``index`` if ``user`` reads it; ``None`` for another project's entry as for no entry."""
    return entries_readable(user).filter(index=index).first()


def latest_checkpoint() -> Checkpoint | None:
    return Checkpoint.objects.order_by("-tree_size", "-id").first()


def _redact_sealed(value: Any) -> Any:
    """Sealed personal data is shown as sealed: opening it is a separate, recorded act."""
    if is_sealed(value):
        return {"sealed": True, "subject": value["subject"]}
    if isinstance(value, dict):
        return {k: _redact_sealed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_sealed(v) for v in value]
    return value


def entry_decoded(entry: Entry) -> dict[str, Any]:
    body = bytes(entry.body)
    return {
        "index": entry.index,
        "leaf_hash": base64.b64encode(bytes(entry.leaf_hash)).decode(),
        "body_b64": base64.b64encode(body).decode(),
        "entry": _redact_sealed(json.loads(body)),
    }


def last_payload(action: str, subject_type: str, subject_id: str) -> Any:
    """The payload of the latest entry of ``action`` about that subject, or ``None`` if there is
    none (for a service that records a repeated outcome only when it changes)."""
    body = (
        Entry.objects.filter(action=action, subject_type=subject_type, subject_id=subject_id)
        .order_by("-index")
        .values_list("body", flat=True)
        .first()
    )
    return None if body is None else json.loads(bytes(body))["payload"]
