"""Celery tasks of the ledger."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import connection, transaction

from audits.ledger.services import checkpoint_create, sqlite_wal_purge
from audits.ledger.witness.submit import WitnessUnavailable, witness_latest, witnessing_pending
from common.tasks import dispatch_on_commit

logger = logging.getLogger("audits.ledger")


@shared_task(name="ledger.checkpoint")
def checkpoint_if_grown() -> int | None:
    """Run by beat: sign a checkpoint when the tree has grown since the last one.

    On SQLite it first checkpoints the write-ahead log into the database file and empties it:
    this completes the purge of an erased key's old page that an open read held up at erasure
    time (see ``data_subject_erase``), at the latest one period after the read ends.
    """
    # One try (writers wait at most 50 ms for it): a read still open is left to the next run.
    if connection.vendor == "sqlite" and not connection.in_atomic_block and not sqlite_wal_purge(wait_s=0):
        logger.warning(
            "the SQLite write-ahead log could not be checkpointed (a read transaction is open): old page "
            "versions, erased vault keys' among them, remain in %s until a later run completes it",
            connection.settings_dict["NAME"],
        )
    checkpoint = checkpoint_create()
    witness_if_pending()
    return checkpoint.tree_size if checkpoint else None


def witness_if_pending() -> bool:
    """Send ``ledger.witness`` (through the outbox) when a configured witness has not co-signed the
    latest checkpoint: after a new one, and on each later run until every witness has answered,
    so a witness that was down gets it once it is back."""
    if not witnessing_pending():
        return False
    with transaction.atomic():
        dispatch_on_commit("ledger.witness")
    return True


@shared_task(
    name="ledger.witness", autoretry_for=(WitnessUnavailable,), max_retries=3, retry_backoff=5, retry_backoff_max=60
)
def witness_checkpoint() -> dict[str, str]:
    """Have the configured witnesses co-sign the latest checkpoint (C2SP tlog-witness); retried
    when one cannot be reached (beat's next ``ledger.checkpoint`` sends it again after that)."""
    return witness_latest()
