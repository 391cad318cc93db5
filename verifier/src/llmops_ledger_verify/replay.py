"""Replay a log: re-hash every entry, rebuild the roots, and hold them against signed checkpoints.

Standard library and ``cryptography`` only: both the service's ``manage.py ledger verify`` (over
the database) and ``ledger-verify`` (over an exported bundle, without Django) use it. The first fault
found stops the replay with a ``VerificationFailed`` that names the entry or checkpoint and why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

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


def replay(
    entries: Callable[[], Iterable[tuple[int, bytes, bytes | None]]],
    checkpoints: Sequence[SignedCheckpoint],
    *,
    progress: Callable[[int], None] | None = None,
    start: merkle.CompactRange | None = None,
) -> ReplayResult:
    """Replay the log that ``entries()`` yields as ``(index, body, stored leaf hash or None)``.

    With ``start`` (the tree's right edge at some size, already verified), ``entries()`` yields
    from that size on and only the checkpoints from that size on are given: incremental
    verification, in time proportional to what is new.

    Entries covered by a signed checkpoint are checked by the signed root alone (the fast pass);
    only if a root does not match is the log read again, entry by entry, to name the first entry
    that differs from what was stored. Entries after the last checkpoint, which no signature
    covers yet, get the entry-by-entry checks at once.
    """
    ordered = sorted(checkpoints, key=lambda c: c.checkpoint.size)
    begin = start or merkle.CompactRange()
    signed_up_to = ordered[-1].checkpoint.size if ordered else begin.size
    try:
        return _replay(entries(), ordered, thorough_from=signed_up_to, progress=progress, start=begin)
    except VerificationFailed as failure:
        if not failure.where.startswith("entry"):  # names the entry, if one is at fault
            _replay(entries(), ordered, thorough_from=begin.size, progress=None, start=begin)
        raise


def _replay(
    entries: Iterable[tuple[int, bytes, bytes | None]],
    pending: Sequence[SignedCheckpoint],
    *,
    thorough_from: int,
    progress: Callable[[int], None] | None,
    start: merkle.CompactRange,
) -> ReplayResult:
    # Written out by hand, no helper call per entry: this loop runs once per entry of the log.
    sha256 = hashlib.sha256
    index_key = _INDEX_KEY
    stack: list[bytes] = list(start.hashes)  # the right edge: perfect subtree hashes, levels decreasing
    size = start.size
    position = 0

    def settle() -> int:
        nonlocal position
        while position < len(pending) and pending[position].checkpoint.size == size:
            signed = pending[position]
            if merkle.CompactRange(size, stack).root() != signed.checkpoint.root:
                raise VerificationFailed(
                    signed.label, f"the signed root does not match the root of entries 0..{size - 1}"
                )
            position += 1
        return pending[position].checkpoint.size if position < len(pending) else -1

    next_size = settle()
    for index, body, stored_leaf in entries:
        if index != size:
            if index > size:
                raise VerificationFailed(f"entry {size}", f"missing (the next stored entry is {index})")
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
    if progress is not None:
        progress(size)
    return ReplayResult(
        tree_size=size, root=merkle.CompactRange(size, stack).root(), checkpoints_checked=len(pending),
        verified_from=start.size,
    )  # fmt: skip
