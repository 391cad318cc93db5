"""Models of witnessing: co-signatures of this ledger's checkpoints, and the logs this service witnesses.

``WitnessCosignature`` (this log's side) is append-only like the checkpoints: each row keeps the
signed note the witness co-signed, so the co-signature still proves what it proves if the
checkpoint row is lost. ``WitnessedLog`` (the witness's side) is one row per witnessed origin,
moved forward, never back, under its row lock; ``WitnessConflict`` keeps the validly signed
checkpoints the witness refused, which are evidence of a log's misbehaviour.
"""

from __future__ import annotations

from django.db import models

from audits.ledger.models import AppendOnlyModel

__all__ = ["WitnessConflict", "WitnessCosignature", "WitnessedLog"]


class WitnessCosignature(AppendOnlyModel):
    """A witness's co-signature (C2SP tlog-cosignature) of one of this ledger's checkpoints."""

    checkpoint = models.ForeignKey(
        "ledger.Checkpoint", on_delete=models.DO_NOTHING, db_constraint=False, related_name="cosignatures"
    )
    witness = models.CharField(max_length=300, help_text="the witness's verifier key (cosignature/v1)")
    tree_size = models.BigIntegerField()
    note = models.TextField(help_text="the signed checkpoint note the witness co-signed")
    line = models.TextField(help_text="the co-signature line, as the witness answered it")
    timestamp = models.BigIntegerField(help_text="the co-signature's time, POSIX seconds")
    received_at = models.DateTimeField()

    class Meta:
        ordering = ["tree_size", "id"]
        constraints = [models.UniqueConstraint(fields=["checkpoint", "witness"], name="ledger_cosignature_once")]
        indexes = [models.Index(fields=["witness", "tree_size"], name="ledger_cosignature_witness")]

    def __str__(self) -> str:
        return f"co-signature of size {self.tree_size} by {self.witness.split('+', 1)[0]}"


class WitnessedLog(models.Model):
    """The latest checkpoint this service co-signed for one log (C2SP tlog-witness state)."""

    origin = models.CharField(max_length=300, unique=True)
    size = models.BigIntegerField(default=0)
    root = models.BinaryField(default=b"")
    note = models.TextField(blank=True, help_text="the last checkpoint co-signed, with its log's signatures")
    updated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.origin} at size {self.size}"


class WitnessConflict(models.Model):
    """A checkpoint with a valid log signature that the witness refused: a different tree at the
    size it co-signed (HTTP 409), or a consistency proof that does not hold (HTTP 422)."""

    origin = models.CharField(max_length=300, db_index=True)
    old_size = models.BigIntegerField()
    request = models.TextField(help_text="the whole add-checkpoint request body")
    reason = models.TextField()
    received_at = models.DateTimeField()

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.origin}: {self.reason[:60]}"
