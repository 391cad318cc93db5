"""Backup and restore of a whole service: ``manage.py backup DIR`` and ``manage.py restore DIR``.

A backup directory holds::

    manifest.json                  every file below with its SHA-256 and size, and what was backed up
    database/db.sqlite3            SQLite: a copy by SQLite's online backup API, taken under the writer lock
    database/db.pgdump             PostgreSQL: pg_dump --format=custom
    ledger-checkpoints.jsonl       the checkpoint log (LEDGER_CHECKPOINT_LOG) as it was at the same instant
    artifacts/sha256/..            every blob of the content-addressed store, each checked against its name
    mlflow/mlflow.sqlite3          the MLflow store (local SQLite only; a tracking server backs up itself)
    mlflow/artifacts/..            MLflow's artifact folder (a local folder only)
    policies/..                    the policy files in force (POLICY_DIR)
    keys/ledger-verifiers.txt      the public half of the ledger's keys (C2SP verifier keys)
    keys/reports-certificate.pem   the certificates reports were signed under
    keys/report-signing-certificate.pem  the report-signing certificate chain (never its key)
    keys/reports-trust-anchors.pem the root certificates report verification trusts, when configured
    secrets/subject-index-key      the data-subject index key, when it is the embedded default's file
    serving/deployment-N/inference*.jsonl   the inference logs

Not in it: the ledger's signing key (restore it from its own secure storage: a key file kept apart,
or the KMS), the Django secret key (a new one only ends sessions), the broker and counters (the
outbox in the database re-sends pending jobs), and working folders (training, static files).

Consistency. The database snapshot and the copy of the checkpoint log are taken at one instant:
SQLite, under the backend's writer lock (no write transaction, so no checkpoint, is in flight) with
a one-step online backup; PostgreSQL, while a transaction holds the ledger head row (appends and
checkpoints lock it) a second one exports its snapshot, which pg_dump then dumps. Artifacts are
copied after the database: a blob is stored before the row that names it commits, so every blob
the snapshot names is copied.

The trust anchor. The manifest's digests catch a damaged or partly changed backup, but whoever can
rewrite the backup can recompute them. What such a party cannot forge is a checkpoint signed with
the ledger's key: the restore re-verifies the whole restored ledger against a checkpoint log kept
off-site (``--checkpoints FILE``), before anything but a staging copy of the database is written
(SQLite; on PostgreSQL the dump is loaded first and the files only after it verifies).

It sits with the ledger (floor 1) because its trust rests on the ledger's checkpoints; it needs
nothing above that floor (policies and MLflow are files and SQLite databases here).

``create`` takes a backup and ``restore`` restores one; ``layout`` names its files and writes them,
``manifest`` records and checks them, ``anchor`` verifies a restored ledger against the off-site
checkpoints, ``sqlite`` and ``postgres`` hold what each database needs.
"""

from __future__ import annotations

from audits.ledger.backup.anchor import Anchor, anchor_read
from audits.ledger.backup.create import service_backup
from audits.ledger.backup.layout import (
    CHECKPOINT_LOG,
    CHUNK,
    FORMAT,
    MANIFEST,
    PG_DUMP_FILE,
    SIGNING_KEY_NOTE,
    SQLITE_FILE,
    BackupError,
    Say,
)
from audits.ledger.backup.manifest import manifest_check, manifest_read
from audits.ledger.backup.restore import RestoreResult, service_restore

__all__ = [
    "CHECKPOINT_LOG",
    "CHUNK",
    "FORMAT",
    "MANIFEST",
    "PG_DUMP_FILE",
    "SIGNING_KEY_NOTE",
    "SQLITE_FILE",
    "Anchor",
    "BackupError",
    "RestoreResult",
    "Say",
    "anchor_read",
    "manifest_check",
    "manifest_read",
    "service_backup",
    "service_restore",
]
