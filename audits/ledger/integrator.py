"""The integrator of deferred sequencing: adds recorded entries to the tree, in batches.

Writers (``services._append_deferred``) record entries at indexes they take from a sequence, each
index held by an advisory lock of their transaction. The integrator, one at a time (it holds the
ledger head's row lock), reads the entries that follow the tree, in index order, checks that each
one's bytes hash to its stored leaf hash and name its index, adds them, and writes the completed
subtree hashes and the new head in one transaction: killed at any point, it leaves the tree as it
was, and the next run does the same work again. Each entry is integrated exactly once: the head's
size only grows, and the tree's next leaf is always the entry at that index.

A hole (an index with no entry while later ones exist) is either a transaction still open, which
the integrator waits for (its entries join the next batch), or one that ended without committing:
the index's advisory lock is then free, and the integrator fills the hole with a
``ledger.index_void`` entry saying so. A writer caught between taking an index and locking it (the
two happen in one statement, microseconds apart) may see its index voided: its insert then finds
the index taken and it records its entry at a new index, so nothing is lost either way.

Entries are integrated in index order, which is the order the writers recorded them in; an entry
that commits after a later-indexed one waits for it, so integration order and index order agree.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import rfc8785
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from llmops_ledger_verify.replay import body_index

from audits.ledger import merkle
from audits.ledger.services import (
    INDEX_LOCK_BASE,
    VOID_ACTION,
    VOID_ACTOR,
    AppendRequest,
    LedgerIntegrityError,
    _entry_row,
    _insert_new,
    _lock_head,
    _write_tree,
    canonical_body,
    node_key,
)

logger = logging.getLogger("audits.ledger")


def _void(cursor: Any, index: int) -> bytes | None:
    """Fill a hole whose transaction has ended; returns the void entry's leaf hash, or ``None``
    when the index is still held (or its entry has just become visible: read it next time)."""
    cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [INDEX_LOCK_BASE + index])
    if not cursor.fetchone()[0]:
        return None
    cursor.execute('SELECT 1 FROM ledger_entry WHERE "index" = %s', [index])
    if cursor.fetchone():
        return None
    request = AppendRequest(
        actor=VOID_ACTOR,
        action=VOID_ACTION,
        payload={"reason": "the transaction that took this index ended without committing its entry"},
    )
    now = timezone.now()
    body = canonical_body(index, now, request, rfc8785.dumps(request.payload))
    leaf = merkle.leaf_hash(body)
    row = _entry_row(index, body, leaf, connection.ops.adapt_datetimefield_value(now), request)
    written = _insert_new(cursor, [row], [None])
    if index not in written:
        return None
    logger.warning("ledger index %s was taken by a transaction that did not commit: recorded as void", index)
    return leaf


def integrate_into(cursor: Any, tree: merkle.CompactRange, *, limit: int | None) -> merkle.CompactRange:
    """Integrate into ``tree`` (the head, locked by the caller) the entries that follow it."""
    sha256 = hashlib.sha256
    node_rows: list[tuple[int, bytes]] = []
    start = tree.size
    while limit is None or tree.size - start < limit:
        batch = settings.LEDGER_INTEGRATE_BATCH
        if limit is not None:
            batch = min(batch, limit - (tree.size - start))
        cursor.execute(
            'SELECT "index", body, leaf_hash FROM ledger_entry WHERE "index" >= %s ORDER BY "index" LIMIT %s',
            [tree.size, batch],
        )
        rows = cursor.fetchall()
        if not rows:
            break
        stalled = False
        for index, body, stored in rows:
            while index > tree.size:  # a hole before this entry
                leaf = _void(cursor, tree.size)
                if leaf is None:
                    stalled = True
                    break
                node_rows.extend((node_key(lv, pos), h) for (lv, pos), h in tree.append(leaf))
            if stalled:
                break
            body, stored = bytes(body), bytes(stored)
            if sha256(b"\x00" + body).digest() != stored or body_index(body) != index:
                raise LedgerIntegrityError(
                    f"refusing to integrate entry {index}: its bytes do not hash to its leaf hash or name "
                    "another index (it was written around the service)"
                )
            node_rows.extend((node_key(lv, pos), h) for (lv, pos), h in tree.append(stored))
        if stalled or len(rows) < batch:
            break
    if tree.size > start:
        _write_tree(cursor, tree, node_rows)
    return tree


def integrate(*, limit: int | None = None) -> int:
    """One integration run in a transaction of its own; returns how many entries it added."""
    if connection.vendor != "postgresql":
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        tree = _lock_head(cursor)
        before = tree.size
        tree = integrate_into(cursor, tree, limit=limit or settings.LEDGER_INTEGRATE_BATCH)
    return tree.size - before


def integrate_all() -> int:
    """Integrate everything committed so far, stopping at a transaction still open. Returns how
    many entries it added."""
    added = 0
    while step := integrate():
        added += step
    return added


def pending_count() -> int:
    """Entries recorded and not yet in the tree (PostgreSQL; always 0 inline on SQLite)."""
    with connection.cursor() as cursor:
        cursor.execute(
            'SELECT COUNT(*) FROM ledger_entry WHERE "index" >= COALESCE((SELECT size FROM ledger_ledgerhead), 0)'
        )
        return int(cursor.fetchone()[0])


def follow(*, stop: Callable[[], bool] = lambda: False, parent: int | None = None) -> None:
    """Integrate until ``stop()`` (or, with ``parent``, until that process is gone): as fast as
    entries come, sleeping ``LEDGER_INTEGRATE_IDLE_MS`` when there is nothing to add."""
    idle = settings.LEDGER_INTEGRATE_IDLE_MS / 1000
    while not stop() and (parent is None or os.getppid() == parent):
        try:
            added = integrate()
        except LedgerIntegrityError:
            logger.exception("the integrator stopped: the ledger contradicts itself")
            raise
        except Exception:  # the database restarting, a lost connection: try again shortly
            logger.exception("ledger integration failed; retrying")
            connection.close()
            time.sleep(1.0)
            continue
        if not added:
            time.sleep(idle)
