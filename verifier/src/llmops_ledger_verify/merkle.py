"""RFC 9162 §2.1 Merkle tree hashing, proofs and their verification. Standard library only.

It is part of the standalone offline verifier: nothing here may import Django or the service.

Terms: a *perfect node* ``(level, position)`` is the root of the complete subtree over leaves
``[position * 2**level, (position + 1) * 2**level)``. Every subtree the RFC's algorithms hash,
``MTH(D[a:b])``, starts at a multiple of a power of two at least its size, so it is a right fold of
the perfect nodes that cover ``[a, b)`` from left to right (greedy, by the bits of ``b - a``). The
ledger stores every perfect node once, so any subtree hash, root or proof costs O(log n) reads and
never a rebuild. ``slow_mth`` is the RFC's recursive definition, kept as the reference the tests
compare the fast code against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeKey = tuple[int, int]  # (level, position)


class ProofError(ValueError):
    """A proof does not verify, or a proof was requested for sizes that do not allow one."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly less than ``n`` (n > 1): the RFC's split point k."""
    if n < 2:
        raise ValueError("n must be at least 2")
    return 1 << ((n - 1).bit_length() - 1)


def slow_mth(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) exactly as RFC 9162 §2.1.1 defines it, over leaf *data*. O(n log n) time."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hash(leaves[0])
    k = largest_power_of_two_below(n)
    return node_hash(slow_mth(leaves[:k]), slow_mth(leaves[k:]))


def cover(start: int, end: int) -> list[NodeKey]:
    """The perfect nodes that cover leaves ``[start, end)``, left to right."""
    nodes = []
    while start < end:
        level = (start & -start).bit_length() - 1 if start else (end - start).bit_length() - 1
        while start + (1 << level) > end:
            level -= 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """Combine the hashes of a left-to-right cover into the subtree hash (right fold)."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


# --- Which subtrees a proof needs (RFC 9162 §2.1.3.1 and §2.1.4.1) --------------------------------


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges ``[a, b)`` whose subtree hashes form PATH(index, D[size]), in proof order."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = largest_power_of_two_below(end - start)
        if m < k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, m = start + k, m - k
    ranges.reverse()  # the recursion emits the bottom of the path last
    return ranges


def consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """The ranges whose subtree hashes form PROOF(first, D[second]), in proof order."""
    if not 0 < first <= second:
        raise ProofError(f"no consistency proof from size {first} to size {second}")
    if first == second:
        return []
    ranges: list[tuple[int, int]] = []
    start, end, m, whole = 0, second, first, True
    while True:
        n = end - start
        if m == n:
            if not whole:
                ranges.append((start, end))
            break
        k = largest_power_of_two_below(n)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, m, whole = start + k, m - k, False
    ranges.reverse()
    return ranges


def nodes_for(ranges: Iterable[tuple[int, int]]) -> set[NodeKey]:
    return {node for start, end in ranges for node in cover(start, end)}


def subtree_hash(start: int, end: int, lookup: Callable[[NodeKey], bytes]) -> bytes:
    return fold([lookup(node) for node in cover(start, end)])


# --- Verification (RFC 9162 §2.1.3.2 and §2.1.4.2) -------------------------------------------------


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    if index >= size or index < 0:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash(leaf, "the leaf hash")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        _check_hash(p, "a proof hash")
        if sn == 0:
            raise ProofError("the proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is shorter than the tree is deep")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ``ProofError`` unless ``proof`` shows leaf hash ``leaf`` at ``index`` under ``root``."""
    _check_hash(root, "the root")
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError("the proof does not lead to the root")


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]) -> None:
    """Raise ``ProofError`` unless ``proof`` shows the tree of size ``second`` extends ``first``."""
    if first > second:
        raise ProofError(f"the first size {first} is larger than the second size {second}")
    if first == second:
        if proof:
            raise ProofError("trees of equal size need an empty proof")
        if first == 0 and first_root != EMPTY_ROOT:
            raise ProofError("an empty tree's root is the hash of the empty string")
        if first_root != second_root:
            raise ProofError("trees of equal size have different roots")
        return
    if first == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    _check_hash(first_root, "the first root")
    _check_hash(second_root, "the second root")
    if not proof:
        raise ProofError("the proof is empty")
    for p in proof:
        _check_hash(p, "a proof hash")
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of two: the first tree is a subtree itself
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the proof is longer than the trees are deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is shorter than the trees are deep")
    if fr != first_root:
        raise ProofError("the proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("the proof does not lead to the second root")


# --- Streaming root computation (verification of a whole log) -------------------------------------


class CompactRange:
    """The perfect subtrees of a growing tree's right edge: append leaves, read the root any time.

    Holds at most log2(n) hashes; each append costs one leaf hash plus, amortised, one node hash.
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ValueError(f"a compact range of size {size} holds {bin(size).count('1')} hashes, not {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)  # left to right, levels decreasing

    def append(self, leaf: bytes) -> list[tuple[NodeKey, bytes]]:
        """Add a leaf hash; returns the perfect nodes above level 0 that it completed."""
        index = self.size
        created: list[tuple[NodeKey, bytes]] = []
        current, level = leaf, 0
        while (index >> level) & 1:
            current = node_hash(self.hashes.pop(), current)
            level += 1
            created.append(((level, index >> level), current))
        self.hashes.append(current)
        self.size += 1
        return created

    def extend(self, following: CompactRange) -> None:
        """Add the range of the leaves that follow this one's, replayed as a tree of their own.
        Its perfect subtrees are the whole tree's only where this size is a multiple of its
        largest; ``ValueError`` otherwise."""
        levels = [level for level in range(following.size.bit_length() - 1, -1, -1) if following.size >> level & 1]
        if levels and self.size % (1 << levels[0]):
            raise ValueError(f"a range of size {following.size} cannot follow one of size {self.size}")
        for level, current in zip(levels, following.hashes, strict=True):
            bits = self.size >> level
            while bits & 1:
                current = node_hash(self.hashes.pop(), current)
                bits >>= 1
            self.hashes.append(current)
            self.size += 1 << level

    def root(self) -> bytes:
        return fold(self.hashes) if self.hashes else EMPTY_ROOT

    def encode(self) -> bytes:
        return b"".join(self.hashes)

    @classmethod
    def decode(cls, size: int, blob: bytes) -> CompactRange:
        return cls(size, [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)])
