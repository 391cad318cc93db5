"""Replay a log: re-hash every entry, rebuild the roots, and hold them against signed checkpoints.

Standard library and ``cryptography`` only: both ``manage.py ledger verify`` (over the database)
and ``python -m audits.verify`` (over an exported bundle, without Django) use it. The first fault
found stops the replay with a ``VerificationFailed`` that names the entry or checkpoint and why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from audits.ledger import merkle, notes
from audits.ledger.keys import VerifierKey

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
    entries: Iterable[tuple[int, bytes, bytes | None]],
    checkpoints: Sequence[SignedCheckpoint],
    *,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """``entries`` yields ``(index, body, stored leaf hash or None)`` in index order."""
    tree = merkle.CompactRange()
    pending = list(checkpoints)
    position = 0

    def settle() -> None:
        nonlocal position
        while position < len(pending) and pending[position].checkpoint.size == tree.size:
            signed = pending[position]
            if tree.root() != signed.checkpoint.root:
                raise VerificationFailed(
                    signed.label, f"the signed root does not match the root of entries 0..{tree.size - 1}"
                )
            position += 1

    settle()
    for index, body, stored_leaf in entries:
        expected = tree.size
        if index != expected:
            if index > expected:
                raise VerificationFailed(f"entry {expected}", f"missing (the next stored entry is {index})")
            raise VerificationFailed(f"entry {index}", "stored twice or out of order")
        if body_index(body) != index:
            raise VerificationFailed(
                f"entry {index}", f"its bytes say index {body_index(body)}: entries were reordered or replaced"
            )
        leaf = merkle.leaf_hash(body)
        if stored_leaf is not None and leaf != stored_leaf:
            raise VerificationFailed(f"entry {index}", "its bytes do not hash to its stored leaf hash: it was changed")
        tree.append(leaf)
        settle()
        if progress is not None and tree.size % 65536 == 0:
            progress(tree.size)
    if position < len(pending):
        signed = pending[position]
        raise VerificationFailed(
            signed.label, f"the log holds only {tree.size} entries: entries were removed from its end"
        )
    if progress is not None:
        progress(tree.size)
    return ReplayResult(tree_size=tree.size, root=tree.root(), checkpoints_checked=len(checkpoints))
