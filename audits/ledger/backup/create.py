"""Taking a backup: ``service_backup`` (``manage.py backup DIR``)."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from audits.ledger.backup.layout import (
    _BLOB_DIR,
    _BLOB_REST,
    CHECKPOINT_LOG,
    FORMAT,
    MANIFEST,
    PG_DUMP_FILE,
    SIGNING_KEY_NOTE,
    SQLITE_FILE,
    VAULT_KEK_NOTE,
    BackupError,
    Say,
    _BackupDir,
    _embedded_subject_index_key,
    _file_uri_path,
    _fsync_dir,
    _sqlite_path,
)
from audits.ledger.backup.manifest import _app_commit, _app_version, _verifier_lines
from audits.ledger.backup.postgres import _snapshot_postgresql
from audits.ledger.backup.sqlite import _snapshot_sqlite, _sqlite_copy


def service_backup(directory: Path, *, say: Say) -> dict[str, Any]:
    """Write a consistent backup of this service into ``directory`` (new or empty); returns the manifest.

    Caveats: the signing key is not included (see ``SIGNING_KEY_NOTE``); an MLflow tracking server
    or an artifact location outside this machine is named in the manifest, not copied; a blob erased
    between the database snapshot and the artifact copy is missing from the backup, as it should be.
    On failure the partial contents are removed, so a directory with a manifest is a whole backup.
    """
    if directory.exists() and not directory.is_dir():
        raise BackupError(f"{directory} is not a directory")
    if directory.exists() and any(directory.iterdir()):
        raise BackupError(f"{directory} is not empty: back up into a new or empty directory")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)  # it holds the vault's keys (in the database) and the subject index key
    out = _BackupDir(directory)
    try:
        manifest = _backup_into(out, say)
    except BaseException:
        for child in directory.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        raise
    return manifest


# The report-signing certificates a backup carries, as ``(setting, name in the backup, what)``.
# The report-signing key is not among them: like the ledger's key, it comes back from its own
# secure storage (REPORTS_SIGNING_KEY_FILE), never from a backup.
REPORT_CERTIFICATE_FILES = (
    ("REPORTS_CERTIFICATE_FILE", "keys/reports-certificate.pem", "the certificates reports were signed under"),
    ("REPORTS_SIGNING_CERTIFICATE_FILE", "keys/report-signing-certificate.pem", "the report-signing certificate chain"),
    ("REPORTS_TRUST_ANCHORS_FILE", "keys/reports-trust-anchors.pem", "the reports' trust anchors"),
)
REPORT_SIGNING_KEY_NOTE = (
    "The report-signing key (REPORTS_SIGNING_KEY_FILE) is NOT in this backup (only its certificate chain): restore "
    "it from its own secure storage; without it the embedded default makes a new key and certificate, and reports "
    "signed before stay verifiable (keys/reports-certificate.pem)."
)


def _report_certificates_into(out: _BackupDir, notes_: list[str]) -> list[str]:
    """Copy the report certificate files that exist; returns what was carried."""
    carried = []
    for setting, rel, what in REPORT_CERTIFICATE_FILES:
        configured = getattr(settings, setting)
        if configured is not None and Path(configured).is_file():
            out.copy(Path(configured), rel, mode=0o644)
            carried.append(what)
    notes_.append(REPORT_SIGNING_KEY_NOTE)
    return carried


def _backup_into(out: _BackupDir, say: Say) -> dict[str, Any]:
    from audits.ledger.backup.journal import journal_complete

    notes_: list[str] = [SIGNING_KEY_NOTE, VAULT_KEK_NOTE]
    # The journal lives outside the backup; it must name every erasure this backup could bring back.
    if added := journal_complete():
        say(f"erasure journal {settings.LEDGER_ERASURE_JOURNAL}: {added} erasure(s) it lacked added")
    started = datetime.now(UTC)
    vendor = connection.vendor
    if vendor == "sqlite":
        state = _snapshot_sqlite(out)
        say(f"database: SQLite snapshot (online backup under the writer lock) -> {SQLITE_FILE}")
    elif vendor == "postgresql":
        state = _snapshot_postgresql(out)
        say(f"database: PostgreSQL snapshot (pg_dump --format=custom) -> {PG_DUMP_FILE}")
    else:
        raise BackupError(f"cannot back up a {vendor} database")
    if CHECKPOINT_LOG in out.files:
        say(f"checkpoint log: {settings.LEDGER_CHECKPOINT_LOG} -> {CHECKPOINT_LOG}")
    else:
        notes_.append(f"No checkpoint log at {settings.LEDGER_CHECKPOINT_LOG} (no checkpoint signed yet).")

    blobs = 0
    store = Path(settings.ARTIFACT_ROOT) / "sha256"
    if store.is_dir():
        for prefix in sorted(p for p in store.iterdir() if p.is_dir() and _BLOB_DIR.match(p.name)):
            for blob in sorted(p for p in prefix.iterdir() if p.is_file() and _BLOB_REST.match(p.name)):
                name = prefix.name + blob.name
                out.copy(blob, f"artifacts/sha256/{prefix.name}/{blob.name}", mode=0o644, expect_sha256=name)
                blobs += 1
    say(f"artifacts: {blobs} blob(s), each checked against its SHA-256 name")

    mlflow_db = _sqlite_path(settings.MLFLOW_TRACKING_URI)
    if mlflow_db is None:
        notes_.append(
            f"MLflow tracking store {settings.MLFLOW_TRACKING_URI} is not a local SQLite file: back it up there."
        )
    elif mlflow_db.is_file():
        _sqlite_copy(mlflow_db, out.root / "mlflow/mlflow.sqlite3")
        out.record("mlflow/mlflow.sqlite3")
        say("MLflow store: SQLite snapshot -> mlflow/mlflow.sqlite3")
    mlflow_artifacts = _file_uri_path(settings.MLFLOW_ARTIFACT_LOCATION)
    if mlflow_artifacts is None:
        notes_.append(f"MLflow artifacts at {settings.MLFLOW_ARTIFACT_LOCATION} are not local: back them up there.")
    elif mlflow_artifacts.is_dir():
        say(f"MLflow artifacts: {out.copy_tree(mlflow_artifacts, 'mlflow/artifacts')} file(s)")

    policies = Path(settings.POLICY_DIR)
    count = out.copy_tree(policies, "policies", skip=lambda p: any(part.startswith(".") for part in p.parts))
    say(f"policies: {count} file(s) from {policies}")

    (out.root / "keys").mkdir(exist_ok=True)
    verifiers = _verifier_lines()
    (out.root / "keys/ledger-verifiers.txt").write_text("".join(f"{line}\n" for line in verifiers))
    out.record("keys/ledger-verifiers.txt")
    carried = _report_certificates_into(out, notes_)
    say(f"keys: {len(verifiers)} verifier key(s){''.join(f', {what}' for what in carried)}")
    index_key = _embedded_subject_index_key()
    if index_key is None:
        notes_.append("DATA_SUBJECT_INDEX_KEY comes from the environment: keep it with the environment's secrets.")
    elif index_key.is_file():
        out.copy(index_key, "secrets/subject-index-key", mode=0o600)
        say("data-subject index key -> secrets/subject-index-key (secret: keep this backup as private as the database)")

    logs = 0
    serving = Path(settings.SERVING_ROOT)
    for log in sorted(serving.glob("deployment-*/inference*.jsonl*")):
        if log.is_file():
            out.copy(log, f"serving/{log.relative_to(serving).as_posix()}", mode=0o640)
            logs += 1
    if logs:
        say(f"serving: {logs} inference log(s)")

    latest = state["latest_checkpoint"]
    manifest = {
        "format": FORMAT,
        "created_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "app": {"version": _app_version(), "commit": _app_commit()},
        "database": {"vendor": vendor, "file": SQLITE_FILE if vendor == "sqlite" else PG_DUMP_FILE},
        "migrations": state["migrations"],
        "ledger": {
            "origin": settings.LEDGER_ORIGIN,
            "tree_size": state["tree_size"],
            "latest_checkpoint": None
            if latest is None
            else {"tree_size": latest.tree_size, "root_hex": bytes(latest.root).hex(), "note": latest.note},
        },
        "signing_key_included": False,
        "notes": notes_,
        "files": dict(sorted(out.files.items())),
    }
    tmp = out.root / f".{MANIFEST}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, out.root / MANIFEST)
    _fsync_dir(out.root)
    return manifest
