"""Reads of the ledger: the head, roots and proofs from stored subtree hashes, entries decoded.

Every proof or root costs two queries (leaf hashes and upper nodes, each one ``IN`` lookup of at
most 2·log2(n) keys), whatever the size of the tree.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from audits.ledger import merkle
from audits.ledger.models import Checkpoint, Entry, LedgerHead, Node
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
    return head_tree().size


def fetch_nodes(keys: set[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
    leaves = [position for level, position in keys if level == 0]
    upper = {node_key(level, position): (level, position) for level, position in keys if level > 0}
    found: dict[merkle.NodeKey, bytes] = {}
    if leaves:
        for index, digest in Entry.objects.filter(index__in=leaves).values_list("index", "leaf_hash"):
            found[(0, index)] = bytes(digest)
    if upper:
        for key, digest in Node.objects.filter(key__in=list(upper)).values_list("key", "hash"):
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
    _check_size(size, "tree_size")
    if not 0 <= index < size:
        raise LedgerError("index_out_of_range", f"index {index} is not in a tree of size {size}")
    return _hashes_for(merkle.inclusion_ranges(index, size))


def consistency_proof(first: int, second: int) -> list[bytes]:
    if first > second:
        raise LedgerError("invalid_range", f"first={first} is larger than second={second}")
    if first < 1:
        raise LedgerError("invalid_range", "first must be at least 1: nothing is proved about the empty tree")
    _check_size(second, "second")
    return _hashes_for(merkle.consistency_ranges(first, second))


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


def entries_in_range(start: int, end: int) -> list[Entry]:
    return list(Entry.objects.filter(index__gte=start, index__lt=end).order_by("index"))
