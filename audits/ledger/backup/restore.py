"""Restoring a backup: ``service_restore`` (``manage.py restore DIR``)."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from audits.ledger.backup.anchor import _anchor_for, _verify_against, anchor_read, untrusted_signature
from audits.ledger.backup.layout import (
    CHECKPOINT_LOG,
    PG_DUMP_FILE,
    SQLITE_FILE,
    BackupError,
    Say,
    _copy_into_place,
    _embedded_subject_index_key,
    _file_uri_path,
    _sha256_file,
    _sqlite_path,
)
from audits.ledger.backup.manifest import _check_migrations, manifest_check, manifest_read
from audits.ledger.backup.postgres import _restore_postgresql, _restore_postgresql_staged
from audits.ledger.backup.sqlite import _restore_sqlite_staged
from audits.ledger.keys import KeyFileError, VerifierKey, load_signer_keys, load_verifier_keys, trust_verifier_keys


def _target_data() -> list[str]:
    """What already holds data where the restore would write (empty on a clean machine). Reads
    only: a SQLite database file that does not exist is not created by asking."""
    found = []
    database = Path(connection.settings_dict["NAME"]) if connection.vendor == "sqlite" else None
    if database is None or database.is_file():
        if "ledger_entry" in connection.introspection.table_names():
            with connection.cursor() as cursor:
                cursor.execute("SELECT COUNT(*) FROM ledger_entry")
                entries = cursor.fetchone()[0]
                cursor.execute("SELECT COUNT(*) FROM ledger_checkpoint")
                checkpoints = cursor.fetchone()[0]
            if entries or checkpoints:
                found.append(f"the database holds {entries} ledger entries and {checkpoints} checkpoints")
        connection.close()
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


def _trusted_keys(trust_keys: Path | None) -> tuple[list[VerifierKey], list[VerifierKey]]:
    """The keys the restore trusts (this machine's configuration, and the file the operator named
    with ``--trust-keys``), and those of the named file alone."""
    from audits.ledger.verification import trusted_verifiers

    try:
        configured = trusted_verifiers()
        given = load_verifier_keys(trust_keys) if trust_keys is not None else []
    except KeyFileError as exc:
        raise BackupError(str(exc)) from None
    trusted = sorted(set(configured) | set(given), key=lambda k: (k.name, k.key_id))
    if not trusted:
        raise BackupError(
            f"this machine trusts no ledger key: no signing key in {settings.LEDGER_SIGNING_KEY_FILE} and no "
            f"{settings.LEDGER_TRUSTED_KEYS_FILE}. Restore the signing key from its secure storage first, or pass "
            "--trust-keys FILE naming the ledger's verifier keys"
        )
    return trusted, given


def _check_backup_signatures(directory: Path, manifest: dict[str, Any], trusted: list[VerifierKey]) -> None:
    """Before anything is written: the checkpoints the backup carries (its manifest's latest, its
    copy of the checkpoint log) are signed by a trusted key for this ledger's origin. The full
    verification of its database, under the same keys, follows."""
    from audits.ledger.verification import read_checkpoint_log

    origin = manifest.get("ledger", {}).get("origin")
    if origin is not None and origin != settings.LEDGER_ORIGIN:
        raise BackupError(
            f"the backup is of the ledger {origin!r}; this service's LEDGER_ORIGIN is {settings.LEDGER_ORIGIN!r}: "
            "another organisation's backup, or a service configured with another origin (set LEDGER_ORIGIN)"
        )
    latest = manifest.get("ledger", {}).get("latest_checkpoint")
    if isinstance(latest, dict) and isinstance(latest.get("note"), str):
        untrusted_signature(latest["note"], trusted, "the backup's latest checkpoint (manifest.json)")
    log = directory / CHECKPOINT_LOG
    if log.is_file():
        from audits.ledger.replay import VerificationFailed

        try:
            logged = read_checkpoint_log(log)
        except VerificationFailed as failure:
            raise BackupError(f"the backup's checkpoint log: {failure}") from None
        for label, text in logged:
            untrusted_signature(text, trusted, f"the backup's {label}")


@dataclass
class RestoreResult:
    tree_size: int
    checkpoints_checked: int
    anchored_up_to: int
    warnings: list[str]
    erasures_reapplied: list[str]


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


def _restore_report_certificates(directory: Path, files: dict[str, Any], say: Say) -> list[str]:
    """Put back the report certificate files; returns warnings. The certificates reports were
    signed under are merged into the file here (a report signed under either stays verifiable).
    The signing chain and the trust anchors are configuration: restored where the file is
    missing, compared (a warning when they differ) where it is there. The key is not in the
    backup: a warning when there is none here."""
    from audits.ledger.backup.create import REPORT_CERTIFICATE_FILES

    warnings: list[str] = []
    signed_under, chain, anchors = REPORT_CERTIFICATE_FILES
    if signed_under[1] in files:
        target = Path(settings.REPORTS_CERTIFICATE_FILE)
        source = directory / signed_under[1]
        if not target.is_file():
            _copy_into_place(source, target)
        elif source.read_bytes() not in target.read_bytes():
            with target.open("ab") as handle:
                handle.write(source.read_bytes())
        say(f"reports certificate -> {target}")
    for setting, rel, what in (chain, anchors):
        if rel not in files:
            continue
        configured = getattr(settings, setting)
        if configured is None:
            warnings.append(f"the backup holds {what} ({rel}), but {setting} is not set here: set it to use them")
            continue
        target, source = Path(configured), directory / rel
        if not target.is_file():
            _copy_into_place(source, target)
            say(f"{what} -> {target}")
        elif target.read_bytes() != source.read_bytes():
            warnings.append(f"{setting} ({target}) differs from the backup's {what}; the backup's are in {source}")
    key = Path(settings.REPORTS_SIGNING_KEY_FILE)
    if chain[1] in files and not key.is_file():
        warnings.append(
            f"no report-signing key in {key} (REPORTS_SIGNING_KEY_FILE): restore it from its secure storage before "
            "reports are generated (the embedded default would make a new key and self-signed certificate)"
        )
    return warnings


def service_restore(
    directory: Path,
    *,
    checkpoints: Path | None,
    force: bool,
    accept_loss: bool,
    say: Say,
    trust_keys: Path | None = None,
) -> RestoreResult:
    """Restore the backup in ``directory`` onto this machine's configured stores, verify everything
    it restores, and re-apply the erasure journal before the service can start.

    Trust: checkpoints count only under the keys this machine trusts (``LEDGER_TRUSTED_KEYS_FILE``
    and the signing key's public half) or those of ``trust_keys`` (``--trust-keys``: how an
    operator restores a backup signed by keys this machine was not told about; they are added to
    ``LEDGER_TRUSTED_KEYS_FILE`` once the restore succeeds). Keys published inside the backup are
    never trusted on their own: whoever wrote the backup wrote them.

    Order: manifest digests and every blob against its content-addressed name, the code's
    migrations, the signatures of the backup's checkpoints and of the off-site ones under the
    trusted keys, the anchor file, an empty target (unless ``force``); nothing is written before
    these pass, the target's files included. Then the database (SQLite: verified, checked against
    its ledger and given the erasure journal in a staging copy before it lands; PostgreSQL:
    verified in a scratch database, then loaded into the target and given the journal), and only
    after that the files. Caveat: on PostgreSQL, when the role may not create a database, the dump
    is loaded into the target and verified there: one that fails stays loaded (the message says
    so, and a warning says it was verified in place).
    """
    from audits.ledger.backup.journal import journal_complete, journal_read, journal_reapply

    manifest = manifest_read(directory)
    manifest_check(directory, manifest)
    say(f"manifest: {len(manifest['files'])} file(s), every SHA-256 and size as listed, every blob as named")
    vendor = manifest["database"]["vendor"]
    if vendor != connection.vendor:
        raise BackupError(f"the backup is of a {vendor} database; this service is configured for {connection.vendor}")
    _check_migrations(manifest)
    trusted, given = _trusted_keys(trust_keys)
    _check_backup_signatures(directory, manifest, trusted)
    journal_read()  # a damaged journal refuses the restore before anything is written
    warnings: list[str] = []
    if not Path(settings.LEDGER_ERASURE_JOURNAL).exists():
        warnings.append(
            f"there is no erasure journal at {settings.LEDGER_ERASURE_JOURNAL} (LEDGER_ERASURE_JOURNAL): erasures made "
            "after this backup, if any, were not re-applied. If the journal is kept elsewhere, put it there and "
            "restore again with --force before starting the service"
        )
    backup_log = directory / CHECKPOINT_LOG
    anchor = anchor_read(checkpoints or backup_log, trusted)
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
        trusted_file = Path(work) / "trusted-keys.txt"
        trusted_file.write_text("".join(f"{key.encode()}\n" for key in trusted))
        log_in_backup = backup_log if backup_log.is_file() else None
        reapplied: list[str] = []

        def verify_then_erase() -> Any:
            verified = _verify_against(anchor_file, log_in_backup, trusted_file)
            reapplied.extend(journal_reapply(say=say))
            return verified

        if vendor == "sqlite":
            result = _restore_sqlite_staged(directory / SQLITE_FILE, verify_then_erase)
        else:
            staged, result = _restore_postgresql_staged(
                directory / PG_DUMP_FILE, lambda: _verify_against(anchor_file, log_in_backup, trusted_file)
            )
            if staged:
                say(f"database: {PG_DUMP_FILE} verified in a scratch database, then restored into "
                    f"{connection.settings_dict['NAME']}")  # fmt: skip
                reapplied.extend(journal_reapply(say=say))
            else:
                _restore_postgresql(directory / PG_DUMP_FILE)
                say(f"database: pg_restore of {PG_DUMP_FILE} into {connection.settings_dict['NAME']}")
                warnings.append(
                    "this database role may not create a database, so the dump was verified after it was loaded "
                    "into the target (a backup that failed would have stayed loaded there)"
                )
                try:
                    result = verify_then_erase()
                except BackupError as exc:
                    raise BackupError(
                        f"{exc}. The database holds the unverified restore: do not start the service"
                    ) from None
    anchored = max((size for _, size in anchor.sizes if size <= result.tree_size), default=0)
    say(
        f"ledger: {result.tree_size} entries re-hashed; {result.checkpoints_checked} checkpoint(s) verified under "
        f"the trusted keys, the off-site ones from {anchor.path} included (they vouch for entries 0..{anchored - 1})"
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
    journal_complete()  # erasures the backup holds that the journal did not name (a journal lost)
    if given:
        added = trust_verifier_keys(Path(settings.LEDGER_TRUSTED_KEYS_FILE), given)
        if added:
            say(
                f"trusted keys: {', '.join(k.key_id.hex() for k in added)} (from {trust_keys}) added to "
                f"{settings.LEDGER_TRUSTED_KEYS_FILE}, so `ledger verify` trusts them from now on"
            )
    return RestoreResult(
        tree_size=result.tree_size,
        checkpoints_checked=result.checkpoints_checked,
        anchored_up_to=anchored,
        warnings=warnings,
        erasures_reapplied=reapplied,
    )


def _restore_files(directory: Path, manifest: dict[str, Any], *, force: bool, say: Say) -> list[str]:
    from audits.ledger.backup.journal import journal_blobs

    warnings: list[str] = []
    files: dict[str, Any] = manifest["files"]

    store = Path(settings.ARTIFACT_ROOT)
    erased = journal_blobs()
    blobs = [rel for rel in files if rel.startswith("artifacts/sha256/")]
    withheld = [rel for rel in blobs if files[rel]["sha256"] in erased]
    for rel in blobs:
        target = store / rel.removeprefix("artifacts/")
        if rel in withheld:
            continue
        if not target.is_file() or _sha256_file(target)[0] != files[rel]["sha256"]:
            _copy_into_place(directory / rel, target)
    say(f"artifacts: {len(blobs) - len(withheld)} blob(s) -> {store / 'sha256'}")
    if withheld:
        warnings.append(
            f"{len(withheld)} blob(s) of the backup were erased after it (the erasure journal names them) and are not "
            "restored; the dataset versions that name them are back in the database without their data: carry out "
            "the data-subject requests recorded in the ledger since the backup again"
        )

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

    warnings.extend(_restore_report_certificates(directory, files, say))
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
