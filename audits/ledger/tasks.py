"""Celery tasks of the ledger."""

from __future__ import annotations

from celery import shared_task

from audits.ledger.services import checkpoint_create


@shared_task(name="ledger.checkpoint")
def checkpoint_if_grown() -> int | None:
    """Run by beat: sign a checkpoint when the tree has grown since the last one."""
    checkpoint = checkpoint_create()
    return checkpoint.tree_size if checkpoint else None
