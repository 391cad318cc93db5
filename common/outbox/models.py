from __future__ import annotations

from django.db import models


class OutboxJob(models.Model):
    """A Celery job recorded with the transaction that caused it. ``task_id`` is also the Celery
    task id, so a job sent twice (a relay that crashed after sending, before marking) carries the
    same id; the tasks themselves are idempotent (they claim their work by a conditional update)."""

    task = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    queue = models.CharField(max_length=100, blank=True)
    task_id = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["dispatched_at", "created_at"], name="outbox_pending")]

    def __str__(self) -> str:
        return f"{self.task}{tuple(self.args)} ({'sent' if self.dispatched_at else 'pending'})"
