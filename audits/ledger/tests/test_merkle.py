"""RFC 9162 conformance (the vendored transparency-dev vectors) and the fast code against the RFC's recursive text."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audits.ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    consistency_ranges,
    inclusion_ranges,
    largest_power_of_two_below,
    leaf_hash,
    node_hash,
    slow_mth,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

pytestmark = pytest.mark.pure  # the embedded pass runs it (conftest.PURE)

VECTORS = Path(__file__).resolve().parent / "vectors" / "rfc9162"  # vendored: see its SOURCE.md


def _vector_files(kind: str) -> list[Path]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    assert files, f"no {kind} vectors under {VECTORS}"
    return files


def _b64(values: list[str] | None) -> list[bytes]:
    return [base64.b64decode(v) for v in values or []]


@pytest.mark.parametrize("path", _vector_files("inclusion"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_inclusion_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    args = (
        case["leafIdx"],
        case["treeSize"],
        base64.b64decode(case["leafHash"] or ""),
        _b64(case["proof"]),
        base64.b64decode(case["root"] or ""),
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _vector_files("consistency"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_consistency_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    args = (
        case["size1"],
        case["size2"],
        base64.b64decode(case["root1"] or ""),
        base64.b64decode(case["root2"] or ""),
        _b64(case["proof"]),
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


# --- The RFC's recursive definitions, as written, for comparison ---------------------------------


def rfc_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = largest_power_of_two_below(n)
    if m < k:
        return [*rfc_path(m, leaves[:k]), slow_mth(leaves[k:])]
    return [*rfc_path(m - k, leaves[k:]), slow_mth(leaves[:k])]


def rfc_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [slow_mth(leaves)]
    k = largest_power_of_two_below(n)
    if m <= k:
        return [*rfc_subproof(m, leaves[:k], whole), slow_mth(leaves[k:])]
    return [*rfc_subproof(m - k, leaves[k:], False), slow_mth(leaves[:k])]


def _build(n: int) -> tuple[list[bytes], dict[tuple[int, int], bytes], list[bytes]]:
    leaves = [f"entry {i}".encode() for i in range(n)]
    nodes: dict[tuple[int, int], bytes] = {}
    tree = CompactRange()
    roots = []
    for i, data in enumerate(leaves):
        h = leaf_hash(data)
        nodes[(0, i)] = h
        nodes.update(tree.append(h))
        roots.append(tree.root())
    return leaves, nodes, roots


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.data())
def test_fast_proofs_match_the_recursive_reference(n: int, data: st.DataObject) -> None:
    leaves, nodes, roots = _build(n)
    assert roots[-1] == slow_mth(leaves)
    size = data.draw(st.integers(min_value=1, max_value=n), label="size")
    assert subtree_hash(0, size, nodes.__getitem__) == slow_mth(leaves[:size]) == roots[size - 1]

    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    proof = [subtree_hash(a, b, nodes.__getitem__) for a, b in inclusion_ranges(index, size)]
    assert proof == rfc_path(index, leaves[:size])
    verify_inclusion(index, size, leaf_hash(leaves[index]), proof, roots[size - 1])

    first = data.draw(st.integers(min_value=1, max_value=size), label="first")
    proof = [subtree_hash(a, b, nodes.__getitem__) for a, b in consistency_ranges(first, size)]
    assert proof == (rfc_subproof(first, leaves[:size], True) if first < size else [])
    verify_consistency(first, size, roots[first - 1], roots[size - 1], proof)
    if proof:
        tampered = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
        with pytest.raises(ProofError):
            verify_consistency(first, size, roots[first - 1], roots[size - 1], tampered)


def test_compact_range_round_trip_and_empty_root() -> None:
    assert CompactRange().root() == EMPTY_ROOT == slow_mth([])
    _, _, roots = _build(13)
    tree = CompactRange()
    for i in range(13):
        tree.append(leaf_hash(f"entry {i}".encode()))
    again = CompactRange.decode(13, tree.encode())
    assert again.root() == roots[-1]
    assert node_hash(b"a" * 32, b"b" * 32) != node_hash(b"b" * 32, b"a" * 32)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (5, 5), (-1, 3)])
def test_inclusion_ranges_refuse_impossible_requests(index: int, size: int) -> None:
    with pytest.raises(ProofError):
        inclusion_ranges(index, size)


@pytest.mark.parametrize(("first", "second"), [(0, 4), (5, 4)])
def test_consistency_ranges_refuse_impossible_requests(first: int, second: int) -> None:
    with pytest.raises(ProofError):
        consistency_ranges(first, second)
