"""The manifest: what a backup records about the service it was taken of (code, migrations,
verifier keys), and how a restore reads it and checks every file against it.
"""

from __future__ import annotations

import json
from contextlib import suppress
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection

from audits.ledger.backup.layout import _BLOB_DIR, _BLOB_REST, FORMAT, MANIFEST, BackupError, _sha256_file
from audits.ledger.keys import KeyFileError, load_signer_keys


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


def _verifier_lines() -> list[str]:
    from audits.ledger.models import PublishedKey

    lines = set(PublishedKey.objects.values_list("verifier", flat=True))
    with suppress(KeyFileError):
        lines.update(s.verifier().encode() for s in load_signer_keys(settings.LEDGER_SIGNING_KEY_FILE))
    return sorted(lines)


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
    # Content-addressed: a blob's name is the SHA-256 of its bytes. Whoever changes a blob can
    # recompute the manifest, never the name the database refers to it by.
    for rel, expected in listed.items():
        if not rel.startswith("artifacts/"):
            continue
        parts = rel.split("/")
        if len(parts) != 4 or parts[1] != "sha256" or not _BLOB_DIR.match(parts[2]) or not _BLOB_REST.match(parts[3]):
            raise BackupError(f"backup file {rel} is not a blob of the content-addressed store (artifacts/sha256/..)")
        if expected.get("sha256") != parts[2] + parts[3]:
            raise BackupError(
                f"artifact blob {rel}: its bytes hash to {expected.get('sha256')}, not to its name: the blob was "
                "changed (and the manifest recomputed); nothing restored"
            )


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
