"""Replay a log: re-hash every entry, rebuild the roots, and hold them against signed checkpoints.

Standard library and ``cryptography`` only: both the service's ``manage.py ledger verify`` (over
the database) and ``ledger-verify`` (over an exported bundle, without Django) use it. The first fault
found stops the replay with a ``VerificationFailed`` that names the entry or checkpoint and why.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from llmops_ledger_verify import merkle, notes
from llmops_ledger_verify.keys import VerifierKey

_INDEX_KEY = b',"index":'


class VerificationFailed(Exception):
    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}")
        self.where = where
        self.why = why


@dataclass(frozen=True)
class SignedCheckpoint:
    label: str  # where it came from, for messages: "checkpoint 3 (size 120)"
    checkpoint: notes.Checkpoint


@dataclass(frozen=True)
class ReplayResult:
    tree_size: int
    root: bytes
    checkpoints_checked: int
    verified_from: int = 0  # an incremental replay's start: entries below it were not read again


def body_index(body: bytes) -> int | None:
    """The top-level ``index`` of a canonical entry, read without parsing the whole JSON.

    In canonical JSON the keys are sorted, so ``index`` follows ``action`` (a string) and
    ``actor`` (an object of two strings); a quote inside a string is always escaped, so the first
    unescaped ``,"index":`` is the top-level key.
    """
    at = body.find(_INDEX_KEY)
    if at < 0:
        return None
    start = at + len(_INDEX_KEY)
    end = start
    while end < len(body) and 48 <= body[end] <= 57:
        end += 1
    return int(body[start:end]) if end > start else None


def check_notes(
    texts: Sequence[tuple[str, str]], verifiers: Sequence[VerifierKey], origin: str | None
) -> list[SignedCheckpoint]:
    """Verify each ``(label, note)``; returns them ordered by tree size."""
    checked = []
    for label, text in texts:
        try:
            checkpoint = notes.verify(text, verifiers, origin=origin)
        except notes.NoteError as exc:
            raise VerificationFailed(label, str(exc)) from None
        checked.append(SignedCheckpoint(label=f"{label} (size {checkpoint.size})", checkpoint=checkpoint))
    checked.sort(key=lambda c: c.checkpoint.size)
    return checked


Entries = Iterable[tuple[int, bytes, bytes | None]]


@dataclass(frozen=True)
class Segmented:
    """How to replay a log of ``size`` entries in ``processes`` forked processes at once:
    ``entries(lo, hi)`` yields the entries with ``lo <= index < hi`` in index order, in the child
    that replays them; ``before_fork`` runs first (close what a fork must not share, such as a
    database connection: each child opens its own)."""

    entries: Callable[[int, int], Entries]
    size: int
    processes: int
    before_fork: Callable[[], None] | None = None


def replay(
    entries: Callable[[], Entries],
    checkpoints: Sequence[SignedCheckpoint],
    *,
    progress: Callable[[int], None] | None = None,
    start: merkle.CompactRange | None = None,
    segmented: Segmented | None = None,
) -> ReplayResult:
    """Replay the log that ``entries()`` yields as ``(index, body, stored leaf hash or None)``.

    With ``start`` (the tree's right edge at some size, already verified), ``entries()`` yields
    from that size on and only the checkpoints from that size on are given: incremental
    verification, in time proportional to what is new.

    Entries covered by a signed checkpoint are checked by the signed root alone (the fast pass);
    only if a root does not match is the log read again, entry by entry, to name the first entry
    that differs from what was stored. Entries after the last checkpoint, which no signature
    covers yet, get the entry-by-entry checks at once.

    With ``segmented`` (a full replay only), the log is replayed in segments by several processes
    at once (``replay_segments``); should anything there fail, the replay runs again in this
    process, which names the fault.
    """
    ordered = sorted(checkpoints, key=lambda c: c.checkpoint.size)
    begin = start or merkle.CompactRange()
    signed_up_to = ordered[-1].checkpoint.size if ordered else begin.size
    if segmented is not None and start is None:
        result = replay_segments(segmented, ordered, thorough_from=signed_up_to, progress=progress)
        if result is not None:
            return result
    try:
        return _replay(entries(), ordered, thorough_from=signed_up_to, progress=progress, start=begin)
    except VerificationFailed as failure:
        if not failure.where.startswith("entry"):  # names the entry, if one is at fault
            _replay(entries(), ordered, thorough_from=begin.size, progress=None, start=begin)
        raise


def _replay(
    entries: Entries,
    pending: Sequence[SignedCheckpoint],
    *,
    thorough_from: int,
    progress: Callable[[int], None] | None,
    start: merkle.CompactRange,
    offset: int = 0,
    edges: dict[int, list[bytes]] | None = None,
) -> ReplayResult:
    """The replay loop. With ``offset``, ``entries`` start at that index and are replayed as a
    tree of their own (a segment); then the right edge at each checkpoint's size is kept in
    ``edges`` rather than checked, which needs the segments before it."""
    # Written out by hand, no helper call per entry: this loop runs once per entry of the log.
    sha256 = hashlib.sha256
    index_key = _INDEX_KEY
    stack: list[bytes] = list(start.hashes)  # the right edge: perfect subtree hashes, levels decreasing
    size = start.size
    position = 0

    def settle() -> int:
        nonlocal position
        while position < len(pending) and pending[position].checkpoint.size == size + offset:
            signed = pending[position]
            if edges is not None:
                edges[size + offset] = list(stack)
            elif merkle.CompactRange(size, stack).root() != signed.checkpoint.root:
                raise VerificationFailed(
                    signed.label, f"the signed root does not match the root of entries 0..{size - 1}"
                )
            position += 1
        return pending[position].checkpoint.size - offset if position < len(pending) else -1

    next_size = settle()
    thorough_from -= offset
    for index, body, stored_leaf in entries:
        if index != size + offset:
            if index > size + offset:
                raise VerificationFailed(f"entry {size + offset}", f"missing (the next stored entry is {index})")
            raise VerificationFailed(f"entry {index}", "stored twice or out of order")
        leaf = sha256(b"\x00" + body).digest()
        if size >= thorough_from:
            at = body.find(index_key)
            if at < 0 or not body.startswith(b"%d," % index, at + 9):
                raise VerificationFailed(
                    f"entry {index}", f"its bytes say index {body_index(body)}: entries were reordered or replaced"
                )
            if stored_leaf is not None and leaf != stored_leaf:
                raise VerificationFailed(
                    f"entry {index}", "its bytes do not hash to its stored leaf hash: it was changed"
                )
        node, bits = leaf, size
        while bits & 1:
            node = sha256(b"\x01" + stack.pop() + node).digest()
            bits >>= 1
        stack.append(node)
        size += 1
        if size == next_size:
            next_size = settle()
        if progress is not None and not size & 0xFFFF:
            progress(size)
    if position < len(pending):
        raise VerificationFailed(
            pending[position].label, f"the log holds only {size} entries: entries were removed from its end"
        )
    if edges is not None:
        edges[size + offset] = list(stack)
    if progress is not None:
        progress(size)
    return ReplayResult(
        tree_size=size, root=merkle.CompactRange(size, stack).root(), checkpoints_checked=len(pending),
        verified_from=start.size,
    )  # fmt: skip


def segment_bounds(size: int, parts: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges covering ``0..size`` in about ``parts`` equal pieces, each starting at a
    multiple of the largest power of two not above its length: replayed as trees of their own,
    their right edges add up to the whole tree's (``merkle.CompactRange.extend``)."""
    bounds = [size]
    for part in range(parts - 1, 0, -1):
        target = size * part // parts
        if not 0 < target < bounds[-1]:
            continue
        step = 1 << ((bounds[-1] - target).bit_length() - 1)
        bounds.append(-(-target // step) * step)  # rounded up: still below the next bound
    bounds.append(0)
    return list(pairwise(reversed(bounds)))


def _segment_child(entries: Callable[[int, int], Entries], job: Any, send: Any) -> None:
    """A forked child's whole life: replay one segment and send its edges (or ``None``) back."""
    try:
        send.send(_replay_segment(entries, job))
    finally:
        send.close()


def _replay_segment(
    entries: Callable[[int, int], Entries], job: tuple[int, int, list[SignedCheckpoint], int]
) -> dict[int, list[bytes]] | None:
    """In a child: a segment's right edge at each checkpoint inside it and at its end, or ``None``
    on any fault (an exception does not cross back intact: the parent replays again instead)."""
    lo, hi, pending, thorough_from = job
    edges: dict[int, list[bytes]] = {}
    try:
        result = _replay(
            entries(lo, hi), pending, thorough_from=thorough_from, progress=None,
            start=merkle.CompactRange(), offset=lo, edges=edges,
        )  # fmt: skip
    except Exception:  # any fault: the replay in the parent names it
        return None
    return edges if result.tree_size == hi - lo else None


def replay_segments(
    segmented: Segmented,
    ordered: Sequence[SignedCheckpoint],
    *,
    thorough_from: int,
    progress: Callable[[int], None] | None,
) -> ReplayResult | None:
    """The full replay, its segments (``segment_bounds``) replayed by forked children at once and
    their right edges added up here, each checkpoint's root checked on the sum. ``None`` where a
    segment fails, comes short, or a checkpoint does not match (the caller replays in one process
    then, and names the fault); or where this process may not have children (a daemonic one)."""
    if multiprocessing.current_process().daemon or any(not 0 <= c.checkpoint.size <= segmented.size for c in ordered):
        return None
    bounds = segment_bounds(segmented.size, segmented.processes)
    jobs = [(lo, hi, [c for c in ordered if lo < c.checkpoint.size <= hi], thorough_from) for lo, hi in bounds]
    tree = merkle.CompactRange()
    if any(c.checkpoint.root != tree.root() for c in ordered if c.checkpoint.size == 0):
        return None
    if segmented.before_fork is not None:
        segmented.before_fork()
    # One forked child per segment, each answering through a pipe of its own (the entries are
    # inherited, not pickled). Not a multiprocessing.Pool: one left early (a segment failed) was
    # terminated while its task thread still fed it, and that thread and the pool hung for good.
    context = multiprocessing.get_context("fork")
    children: list[tuple[Any, Any]] = []
    try:
        for job in jobs:
            receive, send = context.Pipe(duplex=False)
            child = context.Process(target=_segment_child, args=(segmented.entries, job, send), daemon=True)
            child.start()
            send.close()  # the child's end: this one reads EOF once the child is gone
            children.append((child, receive))
        for (lo, hi, pending, _), (_, receive) in zip(jobs, children, strict=True):
            try:
                edges = receive.recv()
            except EOFError:  # the child ended without an answer
                return None
            if edges is None:
                return None
            for signed in pending:
                at = merkle.CompactRange(tree.size, tree.hashes)
                at.extend(merkle.CompactRange(signed.checkpoint.size - lo, edges[signed.checkpoint.size]))
                if at.root() != signed.checkpoint.root:
                    return None
            tree.extend(merkle.CompactRange(hi - lo, edges[hi]))
            if progress is not None:
                progress(tree.size)
    finally:
        for child, receive in children:
            receive.close()
            if child.is_alive():
                child.terminate()
            child.join()
    return ReplayResult(tree_size=tree.size, root=tree.root(), checkpoints_checked=len(ordered))
