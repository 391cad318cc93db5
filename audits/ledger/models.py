"""Models of the ledger: entries, stored subtree hashes, checkpoints, keys and the vault.

``Entry``, ``Node`` and ``Checkpoint`` are append-only: the model layer refuses update and delete
here, and database triggers (installed by a migration, see ``triggers.py``) abort UPDATE, DELETE
and TRUNCATE even for raw SQL. Rows are written only by ``audits.ledger.services``.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.db import models


class RowidKeyField(models.BigIntegerField):
    """A 64-bit primary key that SQLite keeps as the table's rowid (declared ``integer``): the
    rows are stored in the key's own B-tree, with no second index from the key to a hidden rowid.
    An append writes one B-tree page fewer per table; on PostgreSQL it is a plain ``bigint``.
    Measured on ``bench.ledger``'s one-entry transactions: see ``docs/benchmarks.md``."""

    def db_type(self, connection: Any) -> str | None:
        return "integer" if connection.vendor == "sqlite" else super().db_type(connection)


class AppendOnlyError(Exception):
    """Something tried to change or delete a ledger row."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only: no update")

    def delete(self) -> NoReturn:
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only: no delete")

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only: no update")


class AppendOnlyModel(models.Model):
    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are append-only: no update")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError(f"{type(self).__name__} rows are append-only: no delete")


class LedgerHead(models.Model):
    """One row: the tree size and the right edge of the tree (its compact range).

    Appends lock this row (PostgreSQL ``SELECT … FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE``
    already serialises writers), so indexes are contiguous and never reused.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    size = models.BigIntegerField(default=0)
    frontier = models.BinaryField(default=b"")

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="ledger_head_single_row")]

    def __str__(self) -> str:
        return f"ledger head at size {self.size}"


class Entry(AppendOnlyModel):
    """One ledger entry. ``body`` is its canonical JSON (RFC 8785), exactly the bytes hashed into
    the tree; the other columns repeat some of its fields so the admin can search them."""

    index = RowidKeyField(primary_key=True)
    body = models.BinaryField()
    leaf_hash = models.BinaryField()
    created_at = models.DateTimeField(db_index=True)
    action = models.CharField(max_length=100, db_index=True)
    actor_id = models.CharField(max_length=64)
    actor_name = models.CharField(max_length=150)
    subject_type = models.CharField(max_length=64, blank=True)
    subject_id = models.CharField(max_length=128, blank=True)
    request_id = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["index"]
        verbose_name_plural = "entries"
        indexes = [models.Index(fields=["subject_type", "subject_id"], name="ledger_entry_subject")]
        # Held by the organisation-wide auditors' group (and superusers): every entry, of every
        # project and of the organisation. Everyone else reads their projects' entries only.
        permissions = [("read_all_entries", "Can read every ledger entry, of every project")]

    def __str__(self) -> str:
        return f"#{self.index} {self.action}"


class EntryScope(AppendOnlyModel):
    """Whose entry it is: the project (its primary key) the entry is about, or ``None`` for the
    organisation. One row per entry, written in the append's transaction (``audits.ledger.scopes``);
    kept beside the entry, not in its bytes, so the tree and its proofs are untouched.

    ``entry`` is a key without a database constraint: the tests that play an attacker delete
    entries with the triggers dropped, and a dangling attribution must not stop them."""

    entry = models.OneToOneField(
        Entry, primary_key=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="scope",
        db_column="entry_index",
    )  # fmt: skip
    project_id = models.BigIntegerField(
        null=True, blank=True, help_text="the project's primary key; empty: the organisation's"
    )

    class Meta:
        indexes = [models.Index(fields=["project_id", "entry"], name="ledger_entry_scope_project")]

    def __str__(self) -> str:
        return f"entry {self.entry_id}: {'organisation' if self.project_id is None else f'project {self.project_id}'}"


class Node(AppendOnlyModel):
    """A perfect subtree hash above the leaves: ``key = level << 48 | position``."""

    key = RowidKeyField(primary_key=True)
    hash = models.BinaryField()

    def __str__(self) -> str:
        return f"node level {self.key >> 48} position {self.key & ((1 << 48) - 1)}"


class Checkpoint(AppendOnlyModel):
    """A signed C2SP checkpoint note; also appended to a file outside the database."""

    tree_size = models.BigIntegerField(db_index=True)
    root = models.BinaryField()
    note = models.TextField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["tree_size", "id"]

    def __str__(self) -> str:
        return f"checkpoint at size {self.tree_size}"


class PublishedKey(models.Model):
    """A verifier key that has signed checkpoints. Kept after the key is retired, for verification."""

    verifier = models.CharField(max_length=300, unique=True, help_text="C2SP signed-note verifier key")
    name = models.CharField(max_length=200)
    key_id = models.CharField(max_length=8)
    first_used_at = models.DateTimeField()
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["first_used_at"]

    def __str__(self) -> str:
        return f"{self.name}+{self.key_id}"


class DataSubjectKey(models.Model):
    """The vault: one AES-256-GCM key per data subject, stored wrapped (RFC 3394) by a
    key-encryption key held outside the database (``audits/ledger/kek.py``). Erasure destroys the
    wrapped key (crypto-shredding); the row stays, with ``erased_at``, so the erasure itself
    remains visible."""

    ref = models.CharField(max_length=64, unique=True, help_text="opaque reference to the data subject")
    key = models.BinaryField(null=True, help_text="the subject's key wrapped by the KEK kek_id names; NULL once erased")
    kek_id = models.CharField(
        max_length=200, blank=True, default="", help_text="the KEK that wrapped the key (file:... or pkcs11:...)"
    )
    created_at = models.DateTimeField()
    erased_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.ref


class VerificationRun(models.Model):
    """The outcome of one full verification (``ledger verify``), shown in the admin."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    ok = models.BooleanField()
    tree_size = models.BigIntegerField()
    checkpoints_checked = models.IntegerField()
    failure = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{'passed' if self.ok else 'FAILED'} at size {self.tree_size}, {self.finished_at:%Y-%m-%d %H:%M}"


from audits.ledger.models_witness import *  # noqa: E402,F403  (the witness models live beside)
