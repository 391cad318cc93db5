"""What a backup directory holds and how its files are written: names, format, the error type,
the hashing and copying helpers, and where this machine keeps the files a backup takes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from django.conf import settings

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

VAULT_KEK_NOTE = (
    "The vault's key-encryption key is NOT in this backup (the data subjects' keys in it are wrapped by it): "
    "restore LEDGER_VAULT_KEK_FILE from where it is kept apart, or reach the same PKCS#11 token, including any "
    "older KEK a rotation left (`ledger rotate-kek`); without it no sealed value of this backup can be read."
)

Say = Callable[[str], None]


class BackupError(Exception):
    """A backup or restore was refused or failed; the message says which file or step."""


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


def _embedded_subject_index_key() -> Path | None:
    """The data-subject index key's file, when the embedded default generated it (no variable set)."""
    if os.environ.get("DATA_SUBJECT_INDEX_KEY") or os.environ.get("DATA_SUBJECT_INDEX_KEY_FILE"):
        return None
    return Path(settings.VAR_DIR) / "subject-index-key"


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
