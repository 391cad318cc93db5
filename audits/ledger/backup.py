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
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from django.conf import settings
from django.db import connection, transaction

from audits.ledger import notes
from audits.ledger.keys import KeyFileError, VerifierKey, load_signer_keys

FORMAT = 1
MANIFEST = "manifest.json"
CHECKPOINT_LOG = "ledger-checkpoints.jsonl"
SQLITE_FILE = "database/db.sqlite3"
PG_DUMP_FILE = "database/db.pgdump"
CHUNK = 1 << 20
_BLOB_DIR = re.compile(r"^[0-9a-f]{2}$")
_BLOB_REST = re.compile(r"^[0-9a-f]{62}$")
SIGNING_KEY_NOTE = (
    "The ledger's signing key is NOT in this backup (only its public half, keys/ledger-verifiers.txt): "
    "restore it from its own secure storage (the key file kept apart, or the KMS/HSM)."
)

Say = Callable[[str], None]


class BackupError(Exception):
    """A backup or restore was refused or failed; the message says which file or step."""


# --- Small helpers ---------------------------------------------------------------------------------


def _sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_into_place(source: Path, target: Path, *, mode: int = 0o644) -> None:
    """Copy ``source`` to ``target`` through a temporary file renamed into place (never half a file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as handle:
            shutil.copyfileobj(handle, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (MLflow's form), or None for anything else."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(unquote(url.removeprefix("sqlite:///"))).resolve()


def _file_uri_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and uri:
        return Path(uri)
    return None


def _sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database (online backup API, one step), as one file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # the copy is one self-contained file, no -wal
        finally:
            dst.close()
    finally:
        src.close()


@contextmanager
def _sqlite_writer_lock(database: Path, timeout_s: float) -> Iterator[None]:
    """The lock ``common.db.sqlite_queued`` takes around every write transaction: while it is held,
    no transaction of the service writes (a checkpoint included)."""
    fd = os.open(f"{database}.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BackupError(f"{database} stayed locked by a writer for {timeout_s:g} s; try again") from None
                time.sleep(0.001)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _app_commit() -> str | None:
    """The git commit of the checkout, read from .git without running git (None outside a checkout)."""
    git = Path(settings.BASE_DIR) / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head.removeprefix("ref: ")
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(f" {ref}"):
                return line.split(" ", 1)[0]
    except OSError:
        return None
    return None


def _app_version() -> str | None:
    import tomllib

    try:
        data = tomllib.loads((Path(settings.BASE_DIR) / "pyproject.toml").read_text())
    except (OSError, ValueError):
        return None
    return data.get("project", {}).get("version")


def _applied_migrations() -> list[str]:
    from django.db.migrations.recorder import MigrationRecorder

    recorder = MigrationRecorder(connection)
    if not recorder.has_table():
        return []
    return sorted(f"{app}.{name}" for app, name in recorder.applied_migrations())


def _embedded_subject_index_key() -> Path | None:
    """The data-subject index key's file, when the embedded default generated it (no variable set)."""
    if os.environ.get("DATA_SUBJECT_INDEX_KEY") or os.environ.get("DATA_SUBJECT_INDEX_KEY_FILE"):
        return None
    return Path(settings.VAR_DIR) / "subject-index-key"


def _verifier_lines() -> list[str]:
    from audits.ledger.models import PublishedKey

    lines = set(PublishedKey.objects.values_list("verifier", flat=True))
    with suppress(KeyFileError):
        lines.update(s.verifier().encode() for s in load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE))
    return sorted(lines)


# --- Backup ----------------------------------------------------------------------------------------


@dataclass
class _BackupDir:
    root: Path
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, rel: str) -> None:
        digest, size = _sha256_file(self.root / rel)
        self.files[rel] = {"sha256": digest, "size": size}

    def copy(self, source: Path, rel: str, *, mode: int = 0o600, expect_sha256: str | None = None) -> None:
        """Copy ``source`` into the backup, hashing it on the way; ``expect_sha256``: refuse a
        file whose bytes do not hash to it (a damaged blob)."""
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as out, source.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if expect_sha256 is not None and digest.hexdigest() != expect_sha256:
            raise BackupError(
                f"artifact blob {expect_sha256} does not hash to its name (its bytes hash to {digest.hexdigest()}): "
                "the artifact store is damaged; put that blob back from an earlier backup before backing up"
            )
        self.files[rel] = {"sha256": digest.hexdigest(), "size": size}

    def copy_tree(self, source: Path, rel: str, *, skip: Callable[[Path], bool] = lambda p: False) -> int:
        count = 0
        for path in sorted(source.rglob("*")):
            if path.is_file() and not path.is_symlink() and not skip(path.relative_to(source)):
                self.copy(path, f"{rel}/{path.relative_to(source).as_posix()}", mode=0o644)
                count += 1
        return count


def _snapshot_sqlite(out: _BackupDir) -> dict[str, Any]:
    from audits.ledger.selectors import latest_checkpoint, tree_size

    database = Path(connection.settings_dict["NAME"])
    timeout = float(connection.settings_dict["OPTIONS"].get("timeout", 20))
    connection.close()
    with _sqlite_writer_lock(database, timeout):
        state = {
            "tree_size": tree_size(),
            "latest_checkpoint": latest_checkpoint(),
            "migrations": _applied_migrations(),
        }
        log = Path(settings.LEDGER_CHECKPOINT_LOG)
        if log.is_file():
            out.copy(log, CHECKPOINT_LOG)
        connection.close()
        _sqlite_copy(database, out.root / SQLITE_FILE)
    os.chmod(out.root / SQLITE_FILE, 0o600)
    out.record(SQLITE_FILE)
    return state


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (folder / name).is_file():
                return str(folder / name)
        raise BackupError(
            f"{name} is not installed: install the PostgreSQL client tools (Debian: postgresql-client) of the "
            "server's major version or newer, or put them on PATH"
        )
    return found


def _pg_env() -> dict[str, str]:
    """libpq's variables for Django's connection settings (the password never on a command line)."""
    db = connection.settings_dict
    env = dict(os.environ)
    for variable, value in (
        ("PGDATABASE", db["NAME"]), ("PGUSER", db["USER"]), ("PGPASSWORD", db["PASSWORD"]),
        ("PGHOST", db["HOST"]), ("PGPORT", str(db["PORT"] or "")),
    ):  # fmt: skip
        if value:
            env[variable] = str(value)
    libpq = {
        "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
        "connect_timeout": "PGCONNECT_TIMEOUT", "application_name": "PGAPPNAME", "options": "PGOPTIONS",
    }  # fmt: skip
    for option, value in (db.get("OPTIONS") or {}).items():
        if option in libpq:
            env[libpq[option]] = str(value)
    return env


def _run_pg(args: list[str], what: str) -> None:
    result = subprocess.run(args, env=_pg_env(), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{what} failed (exit status {result.returncode}): {result.stderr.strip()[-2000:]}")


def _snapshot_postgresql(out: _BackupDir) -> dict[str, Any]:
    from django.db import connections

    from audits.ledger.selectors import head_tree, latest_checkpoint

    pg_dump = _pg_tool("pg_dump")
    exporter = connections.create_connection("default")  # a second session, in autocommit
    try:
        with transaction.atomic():
            head = head_tree(lock=True)  # appends and checkpoints wait: the log and the rows agree
            state = {
                "tree_size": head.size,
                "latest_checkpoint": latest_checkpoint(),
                "migrations": _applied_migrations(),
            }
            log = Path(settings.LEDGER_CHECKPOINT_LOG)
            if log.is_file():
                out.copy(log, CHECKPOINT_LOG)
            with exporter.cursor() as cursor:
                cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cursor.execute("SELECT pg_export_snapshot()")
                snapshot = str(cursor.fetchone()[0])
        # The head lock is released; pg_dump dumps the snapshot taken while it was held.
        target = out.root / PG_DUMP_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        _run_pg([pg_dump, "--format=custom", f"--snapshot={snapshot}", "--no-password", f"--file={target}"], "pg_dump")
    finally:
        exporter.close()
    os.chmod(out.root / PG_DUMP_FILE, 0o600)
    out.record(PG_DUMP_FILE)
    return state


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


def _backup_into(out: _BackupDir, say: Say) -> dict[str, Any]:
    notes_: list[str] = [SIGNING_KEY_NOTE]
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
    certificate = Path(settings.REPORTS_CERTIFICATE_FILE)
    if certificate.is_file():
        out.copy(certificate, "keys/reports-certificate.pem", mode=0o644)
    say(f"keys: {len(verifiers)} verifier key(s){' and the reports certificate' if certificate.is_file() else ''}")
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


# --- Restore ---------------------------------------------------------------------------------------


def manifest_read(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{path} is missing: {directory} is not a (complete) backup") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path} cannot be read: {exc}") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != FORMAT
        or not isinstance(manifest.get("files"), dict)
    ):
        raise BackupError(f"{path}: not a backup manifest of format {FORMAT}")
    return manifest


def manifest_check(directory: Path, manifest: dict[str, Any]) -> None:
    """Every file the manifest lists is there with its size and SHA-256, and no other file is."""
    listed: dict[str, dict[str, Any]] = manifest["files"]
    for rel, expected in listed.items():
        path = directory / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise BackupError(f"the manifest names a path outside the backup: {rel}")
        if not path.is_file():
            raise BackupError(f"backup file {rel} is missing")
        digest, size = _sha256_file(path)
        if size != expected.get("size") or digest != expected.get("sha256"):
            raise BackupError(f"backup file {rel} was changed: its SHA-256 or size differs from the manifest")
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and rel != MANIFEST and rel not in listed:
            raise BackupError(f"backup file {rel} is not listed in the manifest")


def _target_data() -> list[str]:
    """What already holds data where the restore would write (empty on a clean machine)."""
    found = []
    if "ledger_entry" in connection.introspection.table_names():
        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM ledger_entry")
            entries = cursor.fetchone()[0]
            cursor.execute("SELECT COUNT(*) FROM ledger_checkpoint")
            checkpoints = cursor.fetchone()[0]
        if entries or checkpoints:
            found.append(f"the database holds {entries} ledger entries and {checkpoints} checkpoints")
    log = Path(settings.LEDGER_CHECKPOINT_LOG)
    if log.is_file() and log.stat().st_size:
        found.append(f"the checkpoint log {log} is not empty")
    store = Path(settings.ARTIFACT_ROOT) / "sha256"
    if store.is_dir() and any(p.is_file() for p in store.rglob("*")):
        found.append(f"the artifact store {store} holds blobs")
    mlflow_db = _sqlite_path(settings.MLFLOW_TRACKING_URI)
    if mlflow_db is not None and mlflow_db.is_file():
        found.append(f"the MLflow store {mlflow_db} exists")
    return found


def _check_migrations(manifest: dict[str, Any]) -> None:
    from django.db.migrations.loader import MigrationLoader

    known = {f"{app}.{name}" for app, name in MigrationLoader(None, ignore_no_migrations=True).disk_migrations}
    unknown = [m for m in manifest.get("migrations", []) if m not in known]
    if unknown:
        commit = manifest.get("app", {}).get("commit") or "unknown"
        raise BackupError(
            f"the backup's database has migrations this code does not know ({', '.join(unknown[:5])}): "
            f"restore with the code the backup was made with (commit {commit})"
        )


@dataclass(frozen=True)
class Anchor:
    """The checkpoints the restore verifies against: (line number, size) of each, and the file."""

    path: Path
    sizes: list[tuple[int, int]]


def anchor_read(path: Path) -> Anchor:
    if not path.is_file():
        raise BackupError(f"the checkpoint file {path} does not exist")
    sizes = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            parsed, _ = notes.parse(json.loads(line)["note"])
        except (ValueError, KeyError, TypeError, notes.NoteError):
            raise BackupError(f"{path}, line {number}: not a signed checkpoint record") from None
        sizes.append((number, parsed.size))
    if not sizes:
        raise BackupError(f"the checkpoint file {path} holds no checkpoint: nothing outside the database vouches")
    return Anchor(path=path, sizes=sizes)


@dataclass
class RestoreResult:
    tree_size: int
    checkpoints_checked: int
    anchored_up_to: int
    warnings: list[str]


def _anchor_for(anchor: Anchor, tree_size: int, accept_loss: bool, workdir: Path) -> tuple[Path, list[str]]:
    """The anchor file to verify against: checkpoints signed after the backup (larger than its
    tree) cannot be checked against it; by default they refuse the restore, with ``accept_loss``
    they are left out (lines blanked, so line numbers in messages stay those of the file)."""
    newer = [(line, size) for line, size in anchor.sizes if size > tree_size]
    if not newer:
        return anchor.path, []
    largest = max(size for _, size in newer)
    message = (
        f"the off-site checkpoints go up to tree size {largest} (line {newer[-1][0]} of {anchor.path}); this backup "
        f"holds {tree_size} entries: entries {tree_size}..{largest - 1}, signed after the backup, are not in it"
    )
    if not accept_loss:
        raise BackupError(
            f"{message}. Restore a newer backup, or pass --accept-loss-after-backup to restore this one anyway"
        )
    blank = {line for line, _ in newer}
    lines = anchor.path.read_text(encoding="utf-8").splitlines()
    filtered = workdir / "anchor.jsonl"
    filtered.write_text("".join(("" if n in blank else text) + "\n" for n, text in enumerate(lines, start=1)))
    return filtered, [f"DATA LOSS: {message}"]


def _verify_against(anchor_file: Path, backup_log: Path | None) -> Any:
    """``ledger verify`` with the checkpoint log replaced by ``anchor_file``, then the backup's own
    log checked to be part of the restored database (what ``ledger verify`` will read from now on)."""
    from audits.ledger.models import Checkpoint
    from audits.ledger.replay import VerificationFailed
    from audits.ledger.verification import ledger_verify, read_checkpoint_log

    configured = settings.LEDGER_CHECKPOINT_LOG
    settings.LEDGER_CHECKPOINT_LOG = anchor_file
    try:
        result = ledger_verify()
    except VerificationFailed as failure:
        raise BackupError(f"the restored ledger does NOT verify against {anchor_file}: {failure}") from None
    finally:
        settings.LEDGER_CHECKPOINT_LOG = configured
    if backup_log is not None:
        stored = set(Checkpoint.objects.values_list("note", flat=True))
        try:
            logged = read_checkpoint_log(backup_log)
        except VerificationFailed as failure:
            raise BackupError(f"the backup's checkpoint log: {failure}") from None
        for label, text in logged:
            if text not in stored:
                raise BackupError(f"the backup's checkpoint log, {label}: this checkpoint is missing from its database")
    return result


def _restore_sqlite_staged(source: Path, anchor_file: Path, backup_log: Path | None) -> Any:
    """Copy the backup's database next to the target, verify it there, then copy it into the target
    (online backup API, under the writer lock): a database that fails verification never lands."""
    db = connection.settings_dict
    target = Path(db["NAME"])
    timeout = float(db["OPTIONS"].get("timeout", 20))
    staging = target.with_name(f"{target.name}.restoring")
    staged = [staging, *(Path(f"{staging}{suffix}") for suffix in ("-wal", "-shm", ".writer-lock"))]
    try:
        _sqlite_copy(source, staging)
        connection.close()
        db["NAME"] = str(staging)
        try:
            result = _verify_against(anchor_file, backup_log)
        finally:
            connection.close()
            db["NAME"] = str(target)
        with _sqlite_writer_lock(target, timeout):
            src = sqlite3.connect(staging)
            dst = sqlite3.connect(target, timeout=timeout)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
    finally:
        for path in staged:
            with suppress(FileNotFoundError):
                path.unlink()
    return result


def _restore_postgresql(dump: Path) -> None:
    pg_restore = _pg_tool("pg_restore")
    connection.close()
    # --clean: a migrated but empty database (or, with --force, an old one) is replaced object by
    # object; one transaction, so a failed load leaves the database as it was.
    _run_pg(
        [pg_restore, "--clean", "--if-exists", "--no-owner", "--no-privileges", "--single-transaction",
         "--exit-on-error", "--no-password", f"--dbname={connection.settings_dict['NAME']}", str(dump)],
        "pg_restore",
    )  # fmt: skip


def _files_differ(a: Path, b: Path) -> list[str]:
    def listing(root: Path) -> dict[str, str]:
        if not root.is_dir():
            return {}
        return {
            p.relative_to(root).as_posix(): _sha256_file(p)[0]
            for p in root.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        }

    left, right = listing(a), listing(b)
    return sorted(name for name in left.keys() | right.keys() if left.get(name) != right.get(name))


def service_restore(
    directory: Path, *, checkpoints: Path | None, force: bool, accept_loss: bool, say: Say
) -> RestoreResult:
    """Restore the backup in ``directory`` onto this machine's configured stores, and verify the
    restored ledger against ``checkpoints`` (the off-site checkpoint log; default: the backup's copy).

    Order: manifest digests, the code's migrations, the anchor file, an empty target (unless
    ``force``); nothing is written before these pass. Then the database (SQLite: verified in a
    staging copy before it lands; PostgreSQL: loaded, then verified), and only after verification
    the files. Caveat: on PostgreSQL a database that fails verification stays loaded (the message
    says so) and the files are not restored.
    """
    manifest = manifest_read(directory)
    manifest_check(directory, manifest)
    say(f"manifest: {len(manifest['files'])} file(s), every SHA-256 and size as listed")
    vendor = manifest["database"]["vendor"]
    if vendor != connection.vendor:
        raise BackupError(f"the backup is of a {vendor} database; this service is configured for {connection.vendor}")
    _check_migrations(manifest)
    warnings: list[str] = []
    backup_log = directory / CHECKPOINT_LOG
    anchor = anchor_read(checkpoints or backup_log)
    if checkpoints is None:
        warnings.append(
            "verifying against the backup's own copy of the checkpoint log; pass --checkpoints with the copy "
            "kept off-site: whoever altered this backup could have altered its log too"
        )
    tree_size = int(manifest["ledger"]["tree_size"])
    if not force:
        found = _target_data()
        if found:
            raise BackupError(
                "the target is not empty: " + "; ".join(found) + ". Restore onto a clean machine, or pass --force "
                "to replace what is there"
            )

    with tempfile.TemporaryDirectory(prefix="restore-") as work:
        anchor_file, loss = _anchor_for(anchor, tree_size, accept_loss, Path(work))
        warnings += loss
        log_in_backup = backup_log if backup_log.is_file() else None
        if vendor == "sqlite":
            result = _restore_sqlite_staged(directory / SQLITE_FILE, anchor_file, log_in_backup)
        else:
            _restore_postgresql(directory / PG_DUMP_FILE)
            say(f"database: pg_restore of {PG_DUMP_FILE} into {connection.settings_dict['NAME']}")
            try:
                result = _verify_against(anchor_file, log_in_backup)
            except BackupError as exc:
                raise BackupError(
                    f"{exc}. The database holds the unverified restore: do not start the service"
                ) from None
    anchored = max((size for _, size in anchor.sizes if size <= result.tree_size), default=0)
    say(
        f"ledger: {result.tree_size} entries re-hashed; {result.checkpoints_checked} checkpoint(s) verified, the "
        f"off-site ones from {anchor.path} included (they vouch for entries 0..{anchored - 1})"
    )
    if result.tree_size != tree_size:
        raise BackupError(f"the restored ledger has {result.tree_size} entries; the manifest says {tree_size}")
    from audits.ledger.selectors import latest_checkpoint

    latest = latest_checkpoint()
    signed = latest.tree_size if latest is not None else 0
    if anchored < signed:
        warnings.append(
            f"entries {anchored}..{signed - 1} are covered only by checkpoints inside the backup (the off-site "
            "file has none that large): they are as trustworthy as the backup itself"
        )
    if signed < result.tree_size:
        warnings.append(
            f"entries {signed}..{result.tree_size - 1} were appended after the last checkpoint: no signature "
            "covers them yet (each was checked against its stored leaf hash only)"
        )
    if vendor == "sqlite":
        say(f"database: {SQLITE_FILE} -> {connection.settings_dict['NAME']}")
    warnings += _restore_files(directory, manifest, force=force, say=say)
    return RestoreResult(
        tree_size=result.tree_size,
        checkpoints_checked=result.checkpoints_checked,
        anchored_up_to=anchored,
        warnings=warnings,
    )


def _restore_files(directory: Path, manifest: dict[str, Any], *, force: bool, say: Say) -> list[str]:
    warnings: list[str] = []
    files: dict[str, Any] = manifest["files"]

    store = Path(settings.ARTIFACT_ROOT)
    blobs = [rel for rel in files if rel.startswith("artifacts/sha256/")]
    for rel in blobs:
        target = store / rel.removeprefix("artifacts/")
        if not target.is_file() or _sha256_file(target)[0] != files[rel]["sha256"]:
            _copy_into_place(directory / rel, target)
    say(f"artifacts: {len(blobs)} blob(s) -> {store / 'sha256'}")

    mlflow_db = _sqlite_path(settings.MLFLOW_TRACKING_URI)
    if "mlflow/mlflow.sqlite3" in files:
        if mlflow_db is None:
            warnings.append(f"the backup has an MLflow SQLite store; MLflow here is {settings.MLFLOW_TRACKING_URI}")
        else:
            mlflow_db.parent.mkdir(parents=True, exist_ok=True)
            src = sqlite3.connect(f"file:{directory / 'mlflow/mlflow.sqlite3'}?mode=ro", uri=True)
            dst = sqlite3.connect(mlflow_db)
            try:
                src.backup(dst)
            finally:
                dst.close()
                src.close()
            say(f"MLflow store -> {mlflow_db}")
    mlflow_files = [rel for rel in files if rel.startswith("mlflow/artifacts/")]
    if mlflow_files:
        location = _file_uri_path(settings.MLFLOW_ARTIFACT_LOCATION)
        if location is None:
            warnings.append(
                f"MLflow artifacts in the backup not restored: {settings.MLFLOW_ARTIFACT_LOCATION} is not local"
            )
        else:
            for rel in mlflow_files:
                _copy_into_place(directory / rel, location / rel.removeprefix("mlflow/artifacts/"))
            say(f"MLflow artifacts: {len(mlflow_files)} file(s) -> {location}")

    # Policies are reviewed like code and live in the checkout: they are compared, not overwritten
    # (an empty POLICY_DIR is filled). Approvals record the policy-set hash they were decided under.
    policies = Path(settings.POLICY_DIR)
    policy_files = [rel for rel in files if rel.startswith("policies/")]
    if not policies.is_dir() or not any(policies.iterdir()):
        for rel in policy_files:
            _copy_into_place(directory / rel, policies / rel.removeprefix("policies/"))
        say(f"policies: {len(policy_files)} file(s) -> {policies}")
    else:
        differ = _files_differ(directory / "policies", policies)
        if differ:
            warnings.append(
                f"the policies in {policies} differ from the backup's ({', '.join(differ[:5])}): the service will "
                f"apply those of {policies}; the backup's are in {directory / 'policies'}"
            )
        else:
            say(f"policies: {policies} matches the backup ({len(policy_files)} file(s))")

    if "keys/reports-certificate.pem" in files:
        target = Path(settings.REPORTS_CERTIFICATE_FILE)
        source = directory / "keys/reports-certificate.pem"
        if not target.is_file():
            _copy_into_place(source, target)
        elif source.read_bytes() not in target.read_bytes():
            with target.open("ab") as handle:
                handle.write(source.read_bytes())
        say(f"reports certificate -> {target}")
    verifiers = {
        VerifierKey.decode(line).encode()
        for line in (directory / "keys/ledger-verifiers.txt").read_text().splitlines()
        if line.strip()
    }
    try:
        local = {s.verifier().encode() for s in load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE)}
    except KeyFileError as exc:
        warnings.append(f"no usable signing key here ({exc}): restore it from its secure storage before starting")
    else:
        if not local & verifiers:
            warnings.append(
                f"the signing key in {settings.LEDGER_SIGNING_KEY_FILE} is not one that signed this ledger: restore "
                "the ledger's key from its secure storage (a new key is added only by `ledger rotate-key`)"
            )
    if "secrets/subject-index-key" in files:
        index_key = _embedded_subject_index_key()
        backed_up = (directory / "secrets/subject-index-key").read_text().strip()
        if index_key is None:
            if settings.DATA_SUBJECT_INDEX_KEY != backed_up:
                warnings.append("DATA_SUBJECT_INDEX_KEY here differs from the backup's: data-subject lookups will miss")
        else:
            _copy_into_place(directory / "secrets/subject-index-key", index_key, mode=0o600)
            say(f"data-subject index key -> {index_key}")
    serving = [rel for rel in files if rel.startswith("serving/")]
    for rel in serving:
        _copy_into_place(directory / rel, Path(settings.SERVING_ROOT) / rel.removeprefix("serving/"), mode=0o640)
    if serving:
        say(f"serving: {len(serving)} inference log(s) -> {settings.SERVING_ROOT}")

    log = Path(settings.LEDGER_CHECKPOINT_LOG)
    if CHECKPOINT_LOG in files:
        if force and log.is_file() and log.stat().st_size:
            aside = log.with_name(f"{log.name}.before-restore-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
            os.replace(log, aside)
            warnings.append(f"the checkpoint log that was here is kept as {aside}")
        _copy_into_place(directory / CHECKPOINT_LOG, log, mode=0o640)
        say(f"checkpoint log -> {log}")
    return warnings
